"""The ``pld`` command, run as a user runs it: a subprocess against the
real server."""

import json
import os
import pty
import random
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import pylogicaldecoding as pld
from pylogicaldecoding import formats
from pylogicaldecoding.testing import Server

from decode_support import create_type_table, insert_type_row
from readers import Collector, current_lsn, slot_row, wait_for, wait_inactive
from test_faults import Writer

PLD = [sys.executable, "-m", "pylogicaldecoding"]
ENV = dict(os.environ, PYTHONUNBUFFERED="1")
for _var in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD",
             "PGSERVICE"):
    ENV.pop(_var, None)


def run(*args, timeout=120, **kwargs):
    """Run pld; return the CompletedProcess (text, stdout and stderr)."""
    kwargs.setdefault("env", ENV)
    return subprocess.run(PLD + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kwargs)


def spawn(*args, **kwargs):
    kwargs.setdefault("env", ENV)
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(PLD + [str(a) for a in args],
                            stdin=subprocess.DEVNULL, **kwargs)


def lines(text):
    return [json.loads(line) for line in text.splitlines()]


def create_slot(sql, slot, plugin="test_decoding"):
    return pld.parse_lsn(sql(
        "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, %s)",
        slot, plugin)[0][0])


@pytest.fixture
def slot2(pg_server, slot_name):
    """A second slot name, dropped after the test."""
    from conftest import drop_slot
    name = slot_name + "_2"
    yield name
    drop_slot(pg_server.dsn, name)


# -- stream --

def test_json_lines_are_the_typed_changes(dsn, sql, slot_name, slot2,
                                          request):
    """`pld stream --drain` prints one JSON record per change, equal to
    what formats makes of the Reader's typed changes, then exits 0 with
    the slot acked up to the last commit."""
    table = "cli_" + slot_name[-8:]
    create_type_table(sql, table)
    request.addfinalizer(lambda: sql("DROP TABLE IF EXISTS %s" % table))
    create_slot(sql, slot_name)
    create_slot(sql, slot2)
    insert_type_row(sql, table)
    sql("UPDATE %s SET t = 'changed'" % table)
    sql("DELETE FROM %s" % table)
    sql("SELECT pg_logical_emit_message(true, 'pfx', 'hello')")

    p = run("-d", dsn, "stream", "--slot", slot_name, "--drain")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    got = lines(p.stdout)

    with Collector(dsn, slot=slot2, create_slot=False,
                   options={"include-timestamp": "1"}) as r:
        r.start(until_lsn=current_lsn(sql))
    f = formats.Formatter("json")
    want = [json.loads(formats.dumps(rec)) for m in r.msgs
            for rec in f.records(m)]
    assert got == want
    kinds = [g["kind"] for g in got]
    for k in ("insert", "update", "delete", "message", "begin", "commit"):
        assert k in kinds
    ins = got[kinds.index("insert")]
    assert ins["table"] == table and ins["new"]["n"] == \
        "12345678901234567890.0123456789"
    assert ins["new"]["by"] == "\\x00ff27" and ins["xid"] == got[0]["xid"]
    commits = [g for g in got if g["kind"] == "commit"]
    assert all(c["commit_time"] for c in commits)
    # acked up to the last commit written
    last_commit = pld.parse_lsn(commits[-1]["lsn"])
    assert slot_row(sql, slot_name)["confirmed_flush_lsn"] >= last_commit
    # nothing left: a second drain prints nothing
    again = run("-d", dsn, "stream", "--slot", slot_name, "--drain")
    assert again.returncode == 0 and again.stdout == ""


def test_debezium_envelopes_with_pgoutput(dsn, sql, slot_name, table):
    pub = "pub_" + table
    sql("CREATE PUBLICATION %s FOR TABLE %s" % (pub, table))
    try:
        sql("ALTER TABLE %s REPLICA IDENTITY FULL" % table)
        create_slot(sql, slot_name, "pgoutput")
        xid = sql("INSERT INTO %s (data) VALUES ('a') RETURNING "
                  "pg_current_xact_id()::text" % table)[0][0]
        sql("UPDATE %s SET data = 'b'" % table)
        sql("DELETE FROM %s" % table)
        sql("TRUNCATE %s" % table)
        p = run("-d", dsn, "stream", "--slot", slot_name, "--plugin",
                "pgoutput", "--option", "publication_names=" + pub,
                "--drain", "--format", "debezium")
    finally:
        sql("DROP PUBLICATION IF EXISTS %s" % pub)
    assert p.returncode == 0, p.stderr
    envs = lines(p.stdout)
    assert [e["op"] for e in envs] == ["c", "u", "d", "t"]
    c, u, d, t = envs
    assert c["before"] is None and c["after"] == {"id": 1, "data": "a"}
    assert u["before"] == {"id": 1, "data": "a"} and u["after"] == {
        "id": 1, "data": "b"}
    assert d["before"] == {"id": 1, "data": "b"} and d["after"] is None
    for e in envs:
        src = e["source"]
        assert set(src) >= {"lsn", "txId", "ts_ms", "schema", "table",
                            "db", "snapshot"}
        assert (src["schema"], src["table"], src["db"]) == (
            "public", table, "test")
        assert isinstance(src["lsn"], int) and src["lsn"] > 0
        assert abs(src["ts_ms"] - time.time() * 1000) < 600000
        assert isinstance(e["ts_ms"], int)
    assert c["source"]["txId"] == int(xid)
    assert c["source"]["lsn"] < u["source"]["lsn"] < d["source"]["lsn"]


def test_raw_format_and_endpos(dsn, sql, slot_name, table):
    start = create_slot(sql, slot_name)
    sql("INSERT INTO %s (data) VALUES ('one')" % table)
    end = current_lsn(sql)
    sql("INSERT INTO %s (data) VALUES ('two')" % table)
    p = run("-d", dsn, "stream", "-S", slot_name, "--endpos",
            pld.format_lsn(end), "-F", "raw", "-o", "include-xids=0",
            "--start", pld.format_lsn(start))
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert out[0] == "BEGIN" and out[-1].startswith("COMMIT (at ")
    assert "'one'" in out[1] and "two" not in p.stdout


def test_create_slot_if_not_exists_and_options(dsn, sql, slot_name, table):
    sql("INSERT INTO %s (data) VALUES ('before')" % table)
    p = run("-d", dsn, "stream", "--slot", slot_name, "--create-slot",
            "--drain")
    assert p.returncode == 0 and p.stdout == "", p.stderr
    sql("INSERT INTO %s (data) VALUES ('after')" % table)
    p = run("-d", dsn, "stream", "--slot", slot_name, "--create-slot",
            "--drain")
    assert p.returncode == 1
    assert p.stderr == ('pld: error: replication slot "%s" already exists '
                        "(pass --if-not-exists to use it)\n" % slot_name)
    p = run("-d", dsn, "stream", "--slot", slot_name, "--create-slot",
            "--if-not-exists", "--drain", "--option", "skip-empty-xacts")
    assert p.returncode == 0, p.stderr
    recs = lines(p.stdout)
    assert [r["kind"] for r in recs] == ["begin", "insert", "commit"]
    assert recs[1]["new"]["data"] == "after"


def test_file_output_survives_sigkill(dsn, sql, slot_name, slot2, table,
                                      tmp_path):
    """`-f FILE` appends, fsyncs, then acks each commit: a pld killed with
    SIGKILL at random points while a writer commits never leaves the slot
    confirming a transaction the file lacks, and the runs together write
    every transaction."""
    create_slot(sql, slot_name)
    create_slot(sql, slot2)         # the reference: every commit's LSN
    out = tmp_path / "changes.jsonl"
    rng = random.Random(1313)
    kills = 0
    writer = Writer(dsn, table, pause=0.002)
    try:
        for cycle in range(5):
            size = out.stat().st_size if out.exists() else 0
            proc = spawn("-d", dsn, "stream", "--slot", slot_name, "-f", out)
            try:
                wait_for(lambda: out.exists() and out.stat().st_size > size,
                         timeout=60, what="pld to write")
                time.sleep(rng.uniform(0.0, 0.4))
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
            if proc.returncode == -signal.SIGKILL:
                kills += 1
            wait_inactive(sql, slot_name)
            confirmed = slot_row(sql, slot_name)["confirmed_flush_lsn"]
            text = out.read_bytes().decode()
            complete = text[:text.rfind("\n") + 1]
            written = {pld.parse_lsn(r["lsn"]) for r in lines(complete)
                       if r["kind"] == "commit"}
            # the slot rests on a commit that is in the file (or where it
            # began): nothing confirmed that the file lacks
            assert confirmed in written or not written, cycle
    finally:
        writer.stop()
    assert kills >= 4 and len(writer.committed) > 100
    p = run("-d", dsn, "stream", "--slot", slot_name, "-f", out, "--drain")
    assert p.returncode == 0, p.stderr
    recs = lines(out.read_text())          # every line whole
    values = {int(r["new"]["data"]) for r in recs if r["kind"] == "insert"}
    assert not set(writer.committed) - values
    with Collector(dsn, slot=slot2, create_slot=False) as r:
        r.start(until_lsn=current_lsn(sql))
    commits = {m.data_start for m in r.msgs if isinstance(m.change, pld.Commit)}
    assert {pld.parse_lsn(x["lsn"]) for x in recs
            if x["kind"] == "commit"} == commits


def test_sigterm_and_ctrl_c_stop_cleanly(dsn, sql, slot_name, table):
    """SIGTERM or SIGINT while streaming: exit 0, acks sent."""
    create_slot(sql, slot_name)
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = spawn("-d", dsn, "stream", "--slot", slot_name)
        wait_for(lambda: (slot_row(sql, slot_name) or {}).get("active"),
                 what="pld streaming")
        sql("INSERT INTO %s (data) VALUES ('%s')" % (table, sig))
        line = proc.stdout.readline()     # begin
        while b'"commit"' not in line:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert err == b""
        commit = json.loads(line)
        wait_inactive(sql, slot_name)
        assert slot_row(sql, slot_name)["confirmed_flush_lsn"] >= \
            pld.parse_lsn(commit["lsn"])


def test_metrics_port(dsn, sql, slot_name, table):
    create_slot(sql, slot_name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = spawn("-d", dsn, "stream", "--slot", slot_name, "--metrics-port",
                 port, "--metrics-address", "127.0.0.1")
    try:
        sql("INSERT INTO %s (data) VALUES ('m')" % table)
        from prometheus_client.parser import text_string_to_metric_families

        def scrape():
            try:
                with urllib.request.urlopen(
                        "http://127.0.0.1:%d/metrics" % port, timeout=5) as f:
                    text = f.read().decode()
            except OSError:
                return None
            samples = {s.name: s for fam in
                       text_string_to_metric_families(text)
                       for s in fam.samples}
            if samples["pld_transactions_total"].value >= 1:
                return samples
        samples = wait_for(scrape, timeout=60, interval=0.2,
                           what="a transaction in the metrics")
        assert samples["pld_messages_total"].value == 3
        assert samples["pld_acks_total"].value == 1
        assert samples["pld_messages_total"].labels == {"slot": slot_name}
        assert samples["pld_lag_bytes"].value >= 0
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


# -- progress --

def read_pty(*args):
    """Run pld with stderr on a pseudo-terminal; return (status, what the
    terminal received)."""
    master, slave = pty.openpty()
    try:
        proc = spawn(*args, stderr=slave, stdout=subprocess.DEVNULL)
        os.close(slave)
        slave = None
        err = b""
        while True:
            r, _, _ = select.select([master], [], [], 60)
            assert r, "no output from pld"
            try:
                chunk = os.read(master, 4096)
            except OSError:             # EIO: the child closed the pty
                break
            if not chunk:
                break
            err += chunk
        return proc.wait(60), err.decode()
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)


def test_snapshot_progress_line(dsn, sql, slot_name, table):
    sql("INSERT INTO %s (data) SELECT 'p' FROM generate_series(1, 3000)"
        % table)
    status, text = read_pty("-d", dsn, "snapshot", "--slot", slot_name,
                            "--table", table, "--drain")
    assert status == 0, text
    assert "pld: snapshot of public.%s: " % table in text
    assert " rows/s" in text and text.endswith("\r\x1b[K")


def test_progress_line_on_a_terminal_only(dsn, sql, slot_name, table):
    create_slot(sql, slot_name)
    sql("INSERT INTO %s (data) SELECT 'p' FROM generate_series(1, 20000)"
        % table)
    master, slave = pty.openpty()
    try:
        proc = spawn("-d", dsn, "stream", "--slot", slot_name, "--drain",
                     "--start", "0/0", stderr=slave,
                     stdout=subprocess.DEVNULL)
        os.close(slave)
        slave = None
        err = b""
        while True:
            r, _, _ = select.select([master], [], [], 60)
            assert r, "no output from pld"
            try:
                chunk = os.read(master, 4096)
            except OSError:             # EIO: the child closed the pty
                break
            if not chunk:
                break
            err += chunk
        assert proc.wait(60) == 0
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    text = err.decode()
    assert "to go" in text and "changes/s" in text and "ETA" in text, text
    assert text.startswith("\r\x1b[Kpld: ")
    assert text.endswith("\r\x1b[K")        # cleared at the end
    assert text.count("\r\x1b[Kpld: ") < 60    # a few redraws a second

    sql("INSERT INTO %s (data) SELECT 'q' FROM generate_series(1, 2000)"
        % table)
    p = run("-d", dsn, "stream", "--slot", slot_name, "--drain")
    assert p.returncode == 0 and p.stderr == ""
    assert len(p.stdout.splitlines()) == 2002


# -- slots --

def test_slots_active_idle_and_invalidated(dsn, sql, slot_name, slot2, table,
                                           request):
    create_slot(sql, slot_name)
    create_slot(sql, slot2)
    proc = spawn("-d", dsn, "stream", "--slot", slot_name)
    try:
        wait_for(lambda: (slot_row(sql, slot_name) or {}).get("active"),
                 what="pld streaming")
        pid = slot_row(sql, slot_name)["active_pid"]
        sql("INSERT INTO %s (data) SELECT 'x' FROM generate_series(1, 100)"
            % table)
        p = run("-d", dsn, "slots", "--json")
        assert p.returncode == 0, p.stderr
        rows = {r["slot_name"]: r for r in lines(p.stdout)}
        active, idle = rows[slot_name], rows[slot2]
        assert active["active"] is True and active["active_pid"] == pid
        assert idle["active"] is False and idle["active_pid"] is None
        assert idle["lag_bytes"] > 0 and idle["retained_bytes"] >= \
            idle["lag_bytes"]
        assert idle["wal_status"] in ("reserved", "extended")
        assert idle["plugin"] == "test_decoding" and idle["database"] == "test"
        table_out = run("-d", dsn, "slots").stdout.splitlines()
        head = table_out[0].split()
        assert head[:3] == ["slot", "plugin", "database"]
        assert "lag" in head and "wal_status" in head
        server_cols = {r[0] for r in sql(
            "SELECT attname FROM pg_attribute WHERE attrelid = "
            "'pg_replication_slots'::regclass")}
        assert ("failover" in head) == ("failover" in server_cols)
        assert ("invalidated" in head) == ("invalidation_reason" in server_cols)
        line = [x for x in table_out if x.startswith(slot_name + " ")][0]
        assert " %d " % pid in line
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    # invalidate slot2: more WAL than max_slot_wal_keep_size, a checkpoint
    sql("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
    sql("SELECT pg_reload_conf()")
    try:
        def lost():
            sql("INSERT INTO %s (data) SELECT 'w' FROM generate_series(1, 5000)"
                % table)
            sql("SELECT pg_switch_wal()")
            sql("CHECKPOINT")
            return sql("SELECT wal_status FROM pg_replication_slots WHERE "
                       "slot_name = %s", slot2)[0][0] == "lost"
        wait_for(lost, timeout=60, interval=0.1, what="slot invalidated")
    finally:
        sql("ALTER SYSTEM RESET max_slot_wal_keep_size")
        sql("SELECT pg_reload_conf()")
    p = run("-d", dsn, "slots", slot2, "--json")
    assert p.returncode == 0, p.stderr
    (row,) = lines(p.stdout)
    assert row["wal_status"] == "lost" and row["retained_bytes"] is None
    if "invalidation_reason" in row:
        assert row["invalidation_reason"] == "wal_removed"
    p = run("-d", dsn, "stream", "--slot", slot2, "--drain")
    assert p.returncode == 1
    assert p.stderr.startswith("pld: error: ") and "slot" in p.stderr
    assert p.stderr.count("\n") == 1


def test_slots_watch_and_ctrl_c(dsn, slot_name, sql):
    create_slot(sql, slot_name)
    proc = spawn("-d", dsn, "slots", "--watch", "0.2")
    seen = b""
    deadline = time.monotonic() + 60
    while seen.count(b"Ctrl-C to stop") < 2:
        assert time.monotonic() < deadline, seen
        seen += proc.stdout.readline()
    assert slot_name.encode() in seen
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err == b"pld: interrupted\n"


# -- slot and publication commands --

def test_create_and_drop_slot(dsn, sql, slot_name):
    p = run("-d", dsn, "create-slot", slot_name, "--plugin", "test_decoding",
            "--two-phase")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("created replication slot %r (plugin "
                               "test_decoding) at " % slot_name)
    assert sql("SELECT two_phase FROM pg_replication_slots WHERE slot_name "
               "= %s", slot_name) == [(True,)]
    p = run("-d", dsn, "create-slot", slot_name, "--plugin", "test_decoding")
    assert p.returncode == 1 and "already exists" in p.stderr
    p = run("-d", dsn, "create-slot", slot_name, "--plugin", "test_decoding",
            "--if-not-exists")
    assert p.returncode == 0
    if sql("SHOW server_version_num")[0][0] < "170000":
        p = run("-d", dsn, "create-slot", slot_name + "x", "--plugin",
                "test_decoding", "--failover")
        assert p.returncode == 1
        assert p.stderr == ("pld: error: failover slots need PostgreSQL 17 "
                            "or later\n")
    # a consumer holds it: refused, or waited for with --wait
    proc = spawn("-d", dsn, "stream", "--slot", slot_name)
    try:
        wait_for(lambda: slot_row(sql, slot_name)["active"], what="active")
        p = run("-d", dsn, "drop-slot", slot_name)
        assert p.returncode == 1
        assert p.stderr.startswith("pld: error: replication slot")
        assert "is active" in p.stderr and "'pld slots'" in p.stderr
        waiter = spawn("-d", dsn, "drop-slot", slot_name, "--wait")
        time.sleep(0.5)
        assert waiter.poll() is None        # waiting
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert out.decode() == "dropped replication slot %r\n" % slot_name
    assert slot_row(sql, slot_name) is None
    p = run("-d", dsn, "drop-slot", slot_name)
    assert p.returncode == 1 and "does not exist" in p.stderr
    p = run("-d", dsn, "drop-slot", slot_name, "--if-exists")
    assert p.returncode == 0


def test_publications(dsn, sql, table):
    name = "pub_" + table
    try:
        p = run("-d", dsn, "publication", "create", name, table, "--where",
                "%s:id > 10" % table, "--columns", "%s:id,data" % table)
        assert p.returncode == 0, p.stderr
        p = run("-d", dsn, "publication", "list", "--json")
        (pub,) = [x for x in lines(p.stdout) if x["name"] == name]
        assert pub["all_tables"] is False and pub["insert"] is True
        assert pub["tables"] == [{"schema": "public", "table": table,
                                  "columns": ["id", "data"],
                                  "row_filter": "(id > 10)"}]
        text = run("-d", dsn, "publication", "list").stdout
        assert "public.%s (id, data) WHERE (id > 10)" % table in text
        p = run("-d", dsn, "publication", "create", name, table)
        assert p.returncode == 1 and "already exists" in p.stderr
        p = run("-d", dsn, "publication", "create", name + "x", table,
                "--where", "other:id > 1")
        assert p.returncode == 1
        assert "not in the publication: other" in p.stderr
    finally:
        p = run("-d", dsn, "publication", "drop", name)
    assert p.returncode == 0
    p = run("-d", dsn, "publication", "drop", name)
    assert p.returncode == 1
    assert p.stderr == 'pld: error: publication "%s" does not exist\n' % name
    assert run("-d", dsn, "publication", "drop", name,
               "--if-exists").returncode == 0


# -- errors --

@pytest.mark.parametrize("args, message", [
    (["stream"], "the following arguments are required: --slot/-S"),
    (["stream", "-S", "s", "--endpos", "zz"], "invalid LSN 'zz'"),
    (["stream", "-S", "s", "--endpos", "0/1", "--drain"],
     "not allowed with argument"),
    (["stream", "-S", "s", "--if-not-exists"],
     "--if-not-exists goes with --create-slot"),
    (["stream", "-S", "s", "--format", "xml"], "invalid choice: 'xml'"),
    (["stream", "-S", "s", "--option", "=x"], "invalid --option '=x'"),
    (["publication", "create", "p"], "give the tables to publish"),
    (["publication", "create", "p", "t", "--all-tables"],
     "give either --all-tables or tables"),
    (["publication", "create", "p", "t", "--where", "nocolon"],
     "use TABLE:VALUE"),
    (["nosuchcommand"], "invalid choice: 'nosuchcommand'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_usage_errors_exit_2(args, message):
    p = run(*args)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr.splitlines()[-1]
    assert p.stderr.splitlines()[-1].startswith("pld")
    assert p.stdout == ""


def test_runtime_errors_exit_1(dsn, sql, slot_name):
    if sql("SELECT 1 FROM pg_settings WHERE name = 'output_plugin_libraries'"):
        # 18.6, 17.11, 16.15 refuse an unlisted plugin before looking for it
        no_plugin = ('pld: error: library "no_such_plugin" may not be used '
                     'as an output plugin')
    else:
        no_plugin = 'pld: error: could not access file "no_such_plugin"'
    cases = [
        (["-d", dsn, "stream", "--slot", slot_name, "--drain"],
         'pld: error: replication slot "%s" does not exist (create it with '
         "'pld create-slot', or pass --create-slot to 'pld stream')"
         % slot_name),
        (["-d", dsn, "stream", "--slot", "Bad-Name"],
         "pld: error: invalid replication slot name 'Bad-Name': use 1 to 63 "
         "lower-case letters, digits and underscores"),
        (["-h", "127.0.0.1", "-p", "1", "-d", "test", "slots"],
         'pld: error: connection to server at "127.0.0.1", port 1 failed: '
         "Connection refused"),
        (["-d", dsn, "stream", "--slot", slot_name, "--create-slot",
          "--plugin", "no_such_plugin", "--drain"],
         no_plugin),
        (["-d", dsn, "slots", slot_name],
         'pld: error: replication slot %r does not exist' % slot_name),
        (["-d", dsn, "stream", "--slot", slot_name, "-f",
          "/nonexistent/dir/x.jsonl"],
         "pld: error: cannot open /nonexistent/dir/x.jsonl: No such file or "
         "directory"),
    ]
    for args, message in cases:
        p = run(*args)
        assert p.returncode == 1, (args, p.stderr)
        assert p.stderr.startswith(message), (args, p.stderr)
        assert p.stderr.count("\n") == 1, p.stderr       # one line
        assert "Traceback" not in p.stderr
    # --debug adds the traceback
    p = run("-d", dsn, "--debug", "stream", "--slot", slot_name, "--drain")
    assert p.returncode == 1 and "Traceback (most recent call last)" in p.stderr
    assert p.stderr.rstrip().splitlines()[-1].startswith(
        'pld: error: replication slot "%s" does not exist' % slot_name)


def test_psql_connection_options_and_pg_variables(pg_server, sql, slot_name):
    p = pg_server.dsn_params
    create_slot(sql, slot_name)
    a = run("-h", p["host"], "-p", p["port"], "-U", p["user"], "-d",
            p["dbname"], "slots", slot_name, "--json")
    assert a.returncode == 0, a.stderr
    env = dict(ENV, PGHOST=p["host"], PGPORT=str(p["port"]),
               PGUSER=p["user"], PGDATABASE=p["dbname"])
    b = run("slots", slot_name, "--json", env=env)
    assert b.returncode == 0, b.stderr
    assert lines(a.stdout)[0]["slot_name"] == lines(b.stdout)[0][
        "slot_name"] == slot_name
    # options after the command work too
    c = run("slots", slot_name, "-h", p["host"], "-p", p["port"], "-U",
            p["user"], "-d", p["dbname"])
    assert c.returncode == 0 and slot_name in c.stdout


def test_password_never_printed():
    pw = "cli-Secr3t-pw"
    with Server(password=pw) as srv:
        p = srv.dsn_params
        base = ["-h", p["host"], "-p", p["port"], "-U", p["user"], "-d",
                p["dbname"]]
        env = dict(ENV, PGPASSWORD=pw + "x")
        r = run("--debug", "-v", *base, "stream", "--slot", "s", env=env)
        assert r.returncode == 1
        assert "password authentication failed" in r.stderr
        assert pw not in r.stderr and pw not in r.stdout
        uri = "postgresql://%s:%s@%s:%s/%s" % (p["user"], pw, p["host"],
                                               p["port"], p["dbname"])
        # the right password; then an error, with --debug and -v
        r = run("--debug", "-v", "-d", uri, "stream", "--slot", "nope",
                "--drain")
        assert r.returncode == 1 and "does not exist" in r.stderr
        assert "pld: INFO: connected to " in r.stderr
        assert pw not in r.stderr and pw not in r.stdout
        r = run("--debug", "-d", uri.replace(str(p["port"]), "1"), "slots")
        assert r.returncode == 1 and pw not in r.stderr


def test_console_script_and_version():
    script = os.path.join(os.path.dirname(sys.executable), "pld")
    assert os.path.exists(script), "pip install -e . makes the pld script"
    p = subprocess.run([script, "--version"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0
    assert p.stdout.strip() == "pld (pylogicaldecoding) %s" % pld.__version__
    p = subprocess.run([script, "stream", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0
    for opt in ("--slot", "--plugin", "--create-slot", "--if-not-exists",
                "--option", "--start", "--endpos", "--drain", "--file",
                "--format", "--status-interval", "--metrics-port", "-d",
                "-h HOST", "-p PORT", "-U USER"):
        assert opt in p.stdout


# -- snapshot and backfill --

def test_snapshot_then_stream(dsn, sql, slot_name, table):
    """`pld snapshot`: the rows as of the new slot's consistent point as
    'read' records, then the changes committed after it."""
    sql("INSERT INTO %s (data) SELECT 's' || i FROM generate_series(1, 50) i"
        % table)
    p = run("-d", dsn, "snapshot", "--slot", slot_name, "--table", table,
            "--drain")
    assert p.returncode == 0, p.stderr
    recs = lines(p.stdout)
    assert recs[0]["kind"] == "snapshot_start" and recs[-1]["kind"] == \
        "snapshot_end"
    reads = [r for r in recs if r["kind"] == "read"]
    assert sorted(r["new"]["id"] for r in reads) == list(range(1, 51))
    assert all(r["table"] == table and r["old"] is None for r in reads)
    sql("INSERT INTO %s (data) VALUES ('after')" % table)
    p = run("-d", dsn, "stream", "--slot", slot_name, "--drain", "-F",
            "debezium")
    assert p.returncode == 0, p.stderr
    (env,) = lines(p.stdout)
    assert env["op"] == "c" and env["after"] == {"id": 51, "data": "after"}
    p = run("-d", dsn, "snapshot", "--slot", slot_name, "--table", table)
    assert p.returncode == 1
    assert p.stderr.startswith("pld: error: replication slot exists already")
    assert "'pld backfill TABLE --slot SLOT'" in p.stderr


def test_backfill_until_done(dsn, sql, slot_name, table):
    """`pld backfill TABLE --slot S`: the table's rows again, in chunks,
    with the live changes; exit 0 once it is done."""
    create_slot(sql, slot_name)
    sql("INSERT INTO %s (data) SELECT 'b' || i FROM generate_series(1, 30) i"
        % table)
    # consumed and acked: from now on the rows come only from the backfill
    assert run("-d", dsn, "stream", "--slot", slot_name,
               "--drain").returncode == 0
    p = run("-d", dsn, "backfill", table, "--slot", slot_name,
            "--chunk-size", "7", "-F", "debezium")
    assert p.returncode == 0, p.stderr
    envs = lines(p.stdout)
    reads = [e for e in envs if e["op"] == "r"]
    assert sorted(e["after"]["id"] for e in reads) == list(range(1, 31))
    assert all(e["source"]["snapshot"] in ("true", "last") for e in reads)
    assert all(e["source"]["table"] == table for e in reads)
