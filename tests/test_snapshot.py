"""The initial snapshot (Reader(snapshot=True)) and the C CopyConnection,
against the real server."""

import os
import pickle
import random
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

import pylogicaldecoding as pld
from pylogicaldecoding import _core
from pylogicaldecoding import commands
from pylogicaldecoding import snapshot as snapmod

import snapshot_support as ss
from decode_support import same_json
from conftest import unique_name


@pytest.fixture
def schema(sql):
    name = ss.unique_schema()
    yield name
    sql('DROP SCHEMA IF EXISTS "%s" CASCADE' % name)


@pytest.fixture
def publication(sql, request):
    name = unique_name("pub", request)
    yield name
    sql("DROP PUBLICATION IF EXISTS %s" % name)


def copyconn(dsn):
    params = snapmod.worker_params(pld.Reader(dsn, slot="x")._params)
    return snapmod.connect(params)


# -- the C type ---------------------------------------------------------------

@pytest.mark.parametrize("binary", [False, True])
def test_copyconnection_rows(dsn, binary):
    """COPY rows are parsed (escapes, NULLs) and converted in C."""
    conn = copyconn(dsn)
    fmt = " (FORMAT binary)" if binary else ""
    conv = [_core.bin_int, _core.bin_str] if binary else [_core.text_int,
                                                         _core.text_str]
    conn.copy_start(
        "COPY (SELECT g, CASE WHEN g = 2 THEN NULL ELSE E'a\\tb\\n\\\\c' || g "
        "END FROM generate_series(1, 3) g) TO STDOUT" + fmt,
        ["id", "t"], conv, binary, "s", "t")
    rows = conn.read(10)
    assert [r.new for r in rows] == [
        {"id": 1, "t": "a\tb\n\\c1"}, {"id": 2, "t": None},
        {"id": 3, "t": "a\tb\n\\c3"}]
    assert all(isinstance(r, pld.SnapshotRow) and r.schema == "s"
               and r.table == "t" and r.backfill is False for r in rows)
    assert conn.read(10) == []
    assert conn.rows == 3
    names, result = conn.execute("SELECT 1 AS one, NULL AS two")
    assert (names, result) == (["one", "two"], [("1", None)])
    conn.close()
    assert conn.closed


def test_copyconnection_messages_and_errors(dsn):
    conn = copyconn(dsn)
    conn.copy_start("COPY (SELECT 'x') TO STDOUT", ["a"], [_core.text_int],
                    False, "s", "t")
    with pytest.raises(pld.DecodingError, match="column 'a' of s.t"):
        conn.read(10)
    conn = copyconn(dsn)
    conn.copy_start("COPY (SELECT 7) TO STDOUT", ["a"], [_core.text_int],
                    False, "s", "t")
    (m,) = conn.read(10, 1234, "")
    assert isinstance(m, pld.StreamMessage) and m.data_start == 1234
    assert m.change == pld.SnapshotRow("s", "t", {"a": 7}, False)
    with pytest.raises(pld.ProgrammingError):
        conn.execute("SELECT * FROM no_such_table")
    conn.close()


def test_copyconnection_read_without_waiting(dsn):
    """read(wait=False) never blocks: [] while `copying` means nothing has
    arrived yet (poll fileno()); two COPYs read so, interleaved, give all
    their rows, in order for each."""
    conns = [copyconn(dsn), copyconn(dsn)]
    for i, conn in enumerate(conns):
        # the second copy pauses after 2500 rows (more than the server's
        # 8 kB output buffer: copy_start() returns when that much is sent)
        conn.copy_start(
            "COPY (SELECT g FROM generate_series(1, 3000) g, LATERAL (SELECT"
            " CASE WHEN g = 2500 THEN pg_sleep(%d * 3) END) s) TO STDOUT"
            % i, ["g"], [_core.text_int], False, "s", "t%d" % i)
    got = {0: [], 1: []}
    empty = 0
    poller = select.poll()
    for conn in conns:
        poller.register(conn.fileno(), select.POLLIN)
    deadline = time.monotonic() + 60
    while any(c.copying for c in conns):
        assert time.monotonic() < deadline
        progress = False
        for i, conn in enumerate(conns):
            t0 = time.monotonic()
            batch = conn.read(100, wait=False)
            assert time.monotonic() - t0 < 2.5     # never the 3 s sleep
            got[i] += [r.new["g"] for r in batch]
            progress = progress or bool(batch)
            empty += not batch and conn.copying
        if not progress:
            poller.poll(1000)
    assert got == {0: list(range(1, 3001)), 1: list(range(1, 3001))}
    assert empty > 0            # the second copy's pause was seen
    assert conns[0].read(10, wait=False) == []
    for conn in conns:
        conn.close()
    with pytest.raises(pld.InterfaceError, match="closed"):
        conns[0].fileno()


# -- the snapshot ---------------------------------------------------------

class Consumer(pld.Reader):
    """Applies every change to a Downstream; stops at the end marker."""

    def __init__(self, *args, keys, tag, **kwargs):
        super().__init__(*args, **kwargs)
        self.down = ss.Downstream(keys)
        self.tag = tag
        self.order = []         # (kind, table) of the snapshot's markers
        self.snapshot_ended = False
        self.writes_at_start = self.writes_at_end = None
        self.writer = None
        self.points = set()

    def event(self, msg):
        ch = msg.change
        if isinstance(ch, (pld.SnapshotStart, pld.SnapshotEnd,
                           pld.SnapshotRow)):
            assert not self.snapshot_ended, "snapshot row after the stream"
            self.points.add(msg.data_start)
            if isinstance(ch, pld.SnapshotStart):
                if self.writes_at_start is None:
                    self.writes_at_start = self.writer.count
                self.order.append(("start", (ch.schema, ch.table)))
            elif isinstance(ch, pld.SnapshotEnd):
                self.order.append(("end", (ch.schema, ch.table), ch.rows))
                self.writes_at_end = self.writer.count
            else:
                if not any(o[0] == "row" for o in self.order):
                    # the writer writes during the copy (a consumer as
                    # fast as the writer is slow could finish first)
                    ss.wait_for(
                        lambda: self.writer.count > self.writes_at_start,
                        what="a write during the copy")
                self.order.append(("row", (ch.schema, ch.table)))
            self.ack()          # allowed; confirms nothing
        elif ch is not None and not isinstance(ch, pld.Relation):
            self.snapshot_ended = True
        self.down.apply(ch)
        if ss.is_end(ch, self.tag):
            self.ack()
            self.stop()


@pytest.mark.parametrize("plugin,workers", [
    ("pgoutput", 2), ("test_decoding", 1),
    pytest.param("wal2json", 1, marks=pytest.mark.needs("wal2json"))])
def test_snapshot_then_stream_is_consistent(dsn, sql, schema, publication,
                                            slot_name, plugin, workers,
                                            monkeypatch):
    """A writer changes the tables during the snapshot; applying the
    snapshot rows then the stream gives exactly the tables' final state."""
    monkeypatch.setattr(snapmod, "SPLIT_MIN_PAGES", 4)   # split: 2 workers
    monkeypatch.setattr(snapmod, "BATCH_ROWS", 50)
    keys = ss.make_schema(sql, schema, rows=3000, publication=publication)
    kwargs = {}
    if plugin == "pgoutput":
        kwargs["options"] = {"publication_names": publication}
    else:   # the partitioned table by name: its partitions are copied too
        kwargs["tables"] = [(schema, "types"), '"%s".parted_a' % schema,
                            (schema, "parted_b"), (schema, ss.QUOTED_TABLE),
                            (schema, "empty")]
    writer = ss.Writer(dsn, schema, 3000).start()
    ss.wait_for(lambda: writer.count > 20, what="the writer")
    r = Consumer(dsn, slot=slot_name, plugin=plugin, keys=keys, tag=schema,
                 snapshot=True, snapshot_workers=workers, **kwargs)
    r.writer = writer
    try:
        done = threading.Event()

        def finish():
            ss.wait_for(lambda: r.snapshot_ended or writer.error, 120,
                        "the end of the snapshot")
            writer.stop()
            ss.end_marker(sql, schema)
            done.set()
        t = threading.Thread(target=finish, daemon=True)
        t.start()
        r.start()
        t.join(60)
        assert done.is_set()
    finally:
        r.close()
        if writer.thread.is_alive():
            writer.stop()
    # the writer really wrote during the copy
    assert r.writes_at_end - r.writes_at_start > 0
    # one consistent point, every table bracketed once, rows inside
    assert len(r.points) == 1
    starts = [o[1] for o in r.order if o[0] == "start"]
    ends = [o for o in r.order if o[0] == "end"]
    assert sorted(starts) == sorted(keys) and len(ends) == len(keys)
    open_tables = set()
    for o in r.order:
        if o[0] == "start":
            open_tables.add(o[1])
        elif o[0] == "row":
            assert o[1] in open_tables
        else:
            open_tables.remove(o[1])
            assert o[2] == sum(1 for x in r.order if x == ("row", o[1]))
    if workers == 1:    # table after table
        kinds = [o[0] for o in r.order if o[0] != "row"]
        assert kinds == ["start", "end"] * len(keys)
    ss.assert_same(r.down, ss.table_state(dsn, keys))
    assert len(r.down.tables[(schema, "empty")]) == 0
    assert len(r.down.tables[(schema, "types")]) > 1000


def test_snapshot_on_existing_slot_is_an_error(dsn, sql, schema, slot_name):
    keys = ss.make_schema(sql, schema, rows=10)
    tables = ['"%s".types' % schema]
    r = Consumer(dsn, slot=slot_name, keys=keys, tag="x", snapshot=True,
                 tables=tables)
    r.writer = ss.Writer(dsn, schema, 10)
    r.create_slot(snapshot="nothing")
    r.close()
    with pytest.raises(pld.SnapshotError) as e:
        r.start()
    assert "drop the slot" in str(e.value) and "backfill" in str(e.value)
    assert r.order == []
    r.close()
    r.writer.conn.close()


def test_snapshot_bad_tables(dsn, sql, schema, publication, slot_name):
    ss.make_schema(sql, schema, rows=10)
    sql('CREATE TABLE "%s".outside (id int)' % schema)
    sql('CREATE PUBLICATION %s FOR TABLE "%s".types' % (publication, schema))
    with pytest.raises(pld.SnapshotError, match="tables="):
        pld.Reader(dsn, slot=slot_name, snapshot=True)   # test_decoding
    cases = [
        ('"%s".missing' % schema, "does not exist"),
        ('"%s".outside' % schema, "not in the publication"),
    ]
    for table, match in cases:
        r = Consumer(dsn, slot=slot_name, plugin="pgoutput", keys={},
                     tag="x", snapshot=True, tables=[table],
                     options={"publication_names": publication})
        with pytest.raises(pld.SnapshotError, match=match):
            r.start()
        assert r.order == []        # nothing delivered
        r.drop_slot()
        r.close()


def test_snapshot_ack_rules(dsn, sql, schema, slot_name):
    ss.make_schema(sql, schema, rows=5)

    class R(pld.Reader):
        seen = []

        def event(self, msg):
            if isinstance(msg.change, pld.SnapshotRow):
                R.point = msg.data_start
                self.ack(msg.data_start)
                with pytest.raises(pld.ProgrammingError):
                    self.ack(msg.data_start + 1)
                self.seen.append(msg.change)
            elif isinstance(msg.change, pld.SnapshotEnd):
                self.stop()

    r = R(dsn, slot=slot_name, snapshot=True, tables=['"%s".types' % schema])
    r.start()
    assert len(R.seen) == 6
    # the acks confirmed nothing: the slot is still at its start
    status = r.slot_status()
    r.close()
    assert r.flushed_lsn == 0
    assert status["confirmed_flush_lsn"] == R.point


# -- backfills ----------------------------------------------------------------

class BackfillConsumer(pld.Reader):
    """Applies every change; backfill rows too; stops at the end marker.
    The downstream starts empty: updates of rows it does not have yet keep
    their unchanged TOAST values as UNCHANGED (a backfill row replaces the
    whole row later; a left-over UNCHANGED fails the comparison)."""

    def __init__(self, *args, keys, tag, **kwargs):
        super().__init__(*args, **kwargs)
        self.down = ss.Downstream(keys, strict=False)
        self.tag = tag
        self.ended = set()
        self.order = []
        self.writer = None
        self.writes_at = {}
        self.on_message = None
        # tables whose backfill must see a write between its start and
        # end: at the first row, wait for one (a backfill as fast as the
        # writer is slow could otherwise end first, as on a quiet machine)
        self.write_during = set()
        self._rows_seen = set()

    def event(self, msg):
        # wal2json format-version 1: a transaction is a list of changes
        chs = msg.change if isinstance(msg.change, list) else [msg.change]
        for ch in chs:
            self.apply(ch)
        self.ack()

    def apply(self, ch):
        if isinstance(ch, pld.SnapshotStart):
            assert ch.backfill
            self.order.append(("start", (ch.schema, ch.table)))
            self.writes_at[(ch.schema, ch.table)] = self.writer.count
        elif isinstance(ch, pld.SnapshotEnd):
            assert ch.backfill
            self.order.append(("end", (ch.schema, ch.table), ch.rows))
            self.ended.add((ch.schema, ch.table))
            self.writes_at[(ch.schema, ch.table)] = (
                self.writer.count - self.writes_at[(ch.schema, ch.table)])
        elif isinstance(ch, pld.SnapshotRow):
            assert ch.backfill
            table = (ch.schema, ch.table)
            if table in self.write_during and table not in self._rows_seen:
                since = self.writes_at[table]
                ss.wait_for(lambda: self.writer.count > since,
                            what="a write during the backfill")
            self._rows_seen.add(table)
            self.order.append(("row", table))
        elif isinstance(ch, pld.LogicalMessage):
            assert ch.prefix != snapmod.WATERMARK_PREFIX
        self.down.apply(ch)
        if self.on_message:
            self.on_message(self)
        if ss.is_end(ch, self.tag):
            self.stop()


@pytest.mark.parametrize("plugin", [
    "pgoutput", "test_decoding",
    pytest.param("wal2json", marks=pytest.mark.needs("wal2json")),
    pytest.param("wal2json-v1", marks=pytest.mark.needs("wal2json"))])
def test_backfill_is_consistent(dsn, sql, schema, publication, slot_name,
                                plugin):
    """Backfills of every table while a writer changes them: applying the
    stream and the backfill rows in order gives the tables' final state."""
    keys = ss.make_schema(sql, schema, rows=1500, publication=publication)
    kwargs = {}
    if plugin == "pgoutput":
        kwargs["options"] = {"publication_names": publication}
    elif plugin == "wal2json-v1":
        plugin = "wal2json"
        kwargs["options"] = {"format-version": "1"}
    writer = ss.Writer(dsn, schema, 1500, seed=1).start()
    r = BackfillConsumer(dsn, slot=slot_name, plugin=plugin, keys=keys,
                         tag=schema, **kwargs)
    r.writer = writer
    r.write_during.add((schema, "types"))
    r.create_slot(snapshot="nothing")
    ss.wait_for(lambda: writer.count > 20, what="the writer")
    # before start(): three tables, the partitioned one by its root
    assert r.backfill('"%s".types' % schema, chunk_size=200) == [
        (schema, "types")]
    assert sorted(r.backfill((schema, "parted"), chunk_size=300)) == [
        (schema, "parted_a"), (schema, "parted_b")]
    r.backfill((schema, "empty"))

    def later(reader):          # from event(): the last one
        if (schema, "types") in reader.ended and not reader.later_done:
            reader.later_done = True
            reader.backfill((schema, ss.QUOTED_TABLE), chunk_size=250)
    r.later_done = False
    r.on_message = later
    done = threading.Event()

    def finish():
        ss.wait_for(lambda: len(r.ended) == len(keys) or writer.error, 120,
                    "the end of the backfills")
        writer.stop()
        ss.end_marker(sql, schema)
        done.set()
    t = threading.Thread(target=finish, daemon=True)
    t.start()
    try:
        r.start()
    finally:
        r.close()
        if writer.thread.is_alive():
            writer.stop()
    t.join(60)
    assert done.is_set()
    assert r.writes_at[(schema, "types")] > 0     # written meanwhile
    # every table bracketed once, rows inside
    starts = [o[1] for o in r.order if o[0] == "start"]
    assert sorted(starts) == sorted(keys)
    open_tables = set()
    for o in r.order:
        if o[0] == "start":
            open_tables.add(o[1])
        elif o[0] == "row":
            assert o[1] in open_tables
        else:
            open_tables.remove(o[1])
    ss.assert_same(r.down, ss.table_state(dsn, keys))
    assert len(r.down.tables[(schema, "types")]) > 1000
    _, rows = snapmod.connect(snapmod.worker_params(r._params)).execute(
        "SELECT count(*) FROM %s WHERE slot = '%s' AND done"
        % (snapmod.PROGRESS_TABLE, slot_name))
    assert rows == [(str(len(keys)),)]
    # chunks of chunk_size rows in key order (1500 rows, 200 a chunk)
    _, rows = snapmod.connect(snapmod.worker_params(r._params)).execute(
        "SELECT chunks FROM %s WHERE slot = '%s' AND table_name = '\"%s\".\"types\"'"
        % (snapmod.PROGRESS_TABLE, slot_name, schema))
    assert int(rows[0][0]) >= 1500 // 200


def test_backfill_errors(dsn, sql, schema, publication, slot_name):
    ss.make_schema(sql, schema, rows=10)
    sql('CREATE TABLE "%s".nokey (id int, x text)' % schema)
    sql('CREATE TABLE "%s".outside (id int PRIMARY KEY)' % schema)
    sql('CREATE PUBLICATION %s FOR TABLE "%s".types, "%s".nokey'
        % (publication, schema, schema))
    r = pld.Reader(dsn, slot=slot_name, plugin="pgoutput",
                   options={"publication_names": publication})
    cases = [
        ('"%s".missing' % schema, "does not exist"),
        ('"%s".nokey' % schema, "no primary key"),
        ('"%s".outside' % schema, "not in the publication"),
    ]
    for table, match in cases:
        with pytest.raises(pld.SnapshotError, match=match):
            r.backfill(table)
    with pytest.raises(ValueError):
        r.backfill('"%s".types' % schema, chunk_size=0)
    with pytest.raises(pld.InterfaceError, match="decode"):
        pld.Reader(dsn, slot=slot_name, decode=False).backfill("x")
    for opts in ({"messages": "false"}, ):
        opts["publication_names"] = publication
        with pytest.raises(pld.SnapshotError, match="messages"):
            pld.Reader(dsn, slot=slot_name, plugin="pgoutput",
                       options=opts).backfill("x")
    # wal2json: its options can drop the watermarks
    for opts in ({"filter-msg-prefixes": "a,pld.backfill"},
                 {"add-msg-prefixes": "app"}):
        with pytest.raises(pld.SnapshotError, match="add-msg-prefixes"):
            pld.Reader(dsn, slot=slot_name, plugin="wal2json",
                       options=opts).backfill("x")
    assert r._backfills.jobs == []
    r.close()


# -- killed consumers ---------------------------------------------------------

CHILD = os.path.join(os.path.dirname(__file__), "snapshot_child.py")


def read_log(prefix):
    """The records of the children's logs (one per run, in order), each
    up to its torn last record (a SIGKILL in the middle of a write)."""
    out = []
    n = 0
    while os.path.exists("%s.%d" % (prefix, n)):
        with open("%s.%d" % (prefix, n), "rb") as f:
            while True:
                try:
                    out.append(pickle.load(f))
                except (EOFError, pickle.UnpicklingError, ValueError,
                        AttributeError, IndexError, KeyError, TypeError):
                    break
        n += 1
    return out


def next_log(prefix):
    n = 0
    while os.path.exists("%s.%d" % (prefix, n)):
        n += 1
    return "%s.%d" % (prefix, n)


def copying(path):
    """The run's log shows a copy under way."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False
    return b"SnapshotRow" in data


def run_child(dsn, slot, schema, mode, log, kill_after=None):
    """Run the child; once its copy is under way (its log holds a row: on
    a busy machine a delay counted from its start could kill it before it
    did anything), wait ``kill_after`` s more and SIGKILL it (None: let it
    run; the caller ends it). Returns the Popen."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(CHILD))] + sys.path)
    path = next_log(log)
    proc = subprocess.Popen([sys.executable, CHILD, dsn, slot, schema, mode,
                             path], stdout=subprocess.PIPE, env=env)
    if kill_after is not None:
        deadline = time.monotonic() + 120
        while not copying(path) and proc.poll() is None:
            assert time.monotonic() < deadline, "the child never copied"
            time.sleep(0.02)
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    return proc


@pytest.mark.parametrize("mode", ["snapshot", "backfill"])
def test_killed_consumer_ends_consistent(dsn, sql, schema, slot_name, mode,
                                         tmp_path):
    """SIGKILL the consumer at random points of the snapshot or the
    backfills, restart it each time: the end is consistent; an interrupted
    snapshot gives the documented error, and the backfills repair it."""
    keys = ss.make_schema(sql, schema, rows=1200)
    log = str(tmp_path / "log")
    rnd = random.Random(slot_name)
    writer = ss.Writer(dsn, schema, 1200, seed=2).start()
    if mode == "backfill":
        r = pld.Reader(dsn, slot=slot_name)
        r.create_slot(snapshot="nothing")
        r.close()
    kills = 10
    mid = 0
    try:
        for i in range(kills):
            before = len(read_log(log))
            run_child(dsn, slot_name, schema, mode, log,
                      kill_after=rnd.uniform(0.0, 0.6))
            recs = read_log(log)[before:]
            # the kill landed in the middle of a copy
            if any(isinstance(x, pld.SnapshotRow) for x in recs) and not (
                    recs and isinstance(recs[-1], pld.SnapshotEnd)):
                mid += 1
        # The writer stops before the last run: the kills above happened
        # under its writes; an unthrottled writer could otherwise outrun a
        # consumer starved of CPU on a loaded machine, and the last copy
        # (whose chunks end when their high watermark comes through the
        # stream) would never finish.
        writer.stop()
        proc = run_child(dsn, slot_name, schema, mode, log)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 300)
            assert ready, "the last consumer did not finish its copy"
            line = proc.stdout.readline()
            assert line.strip() == b"DONE", line
        except BaseException:
            proc.kill()
            proc.wait(30)
            raise
        ss.end_marker(sql, schema)
        assert proc.wait(60) == 0
    finally:
        if writer.thread.is_alive():
            writer.stop()
    assert mid >= kills // 2, "only %d kills landed mid-copy" % mid
    records = read_log(log)
    errors = [x for x in records if isinstance(x, tuple)
              and x[0] == "snapshot_error"]
    if mode == "snapshot":
        # the first run was killed during its snapshot: every restart
        # reports the documented error, then backfills
        assert errors and "backfill" in errors[0][1]
        assert isinstance(records[0], pld.SnapshotStart)
    else:
        assert not errors
    down = ss.Downstream(keys, strict=False)
    for x in records:
        if not isinstance(x, tuple):
            down.apply(x)
    ss.assert_same(down, ss.table_state(dsn, keys))


def test_copyconnection_uuid_and_json_fast_paths(dsn):
    """uuid.UUID and json.loads run in C for the forms PostgreSQL prints;
    the values equal what the Python functions give, other forms and
    errors go to the functions themselves."""
    import json
    import uuid
    conn = copyconn(dsn)
    conn.copy_start(
        "COPY (VALUES (md5('a')::uuid, '{\"a\": [1, 2.5, null, \"x\\\\ny\"]}'),"
        " (NULL, ' [true] '), ('00000000-0000-0000-0000-000000000000', '3'),"
        " ('ffffffff-ffff-ffff-ffff-ffffffffffff', '\"s\"')) TO STDOUT",
        ["u", "j"], [uuid.UUID, json.loads], False, "s", "t")
    rows = [r.new for r in conn.read(10)]
    assert rows == [
        {"u": uuid.UUID(hashlib_md5("a")), "j": {"a": [1, 2.5, None, "x\\ny"]}},
        {"u": None, "j": [True]},
        {"u": uuid.UUID(int=0), "j": 3},
        {"u": uuid.UUID(int=2 ** 128 - 1), "j": "s"}]
    u = rows[0]["u"]
    assert type(u) is uuid.UUID and u.is_safe is uuid.SafeUUID.unknown
    assert str(u) == hashlib_md5("a") and hash(u) == hash(uuid.UUID(str(u)))
    conn.copy_start("COPY (SELECT '{\"a\": ') TO STDOUT", ["j"],
                    [json.loads], False, "s", "t")
    with pytest.raises(pld.DecodingError, match="Expecting value"):
        conn.read(10)
    conn = copyconn(dsn)
    conn.copy_start("COPY (SELECT '{12345678-1234-5678-1234-567812345678}')"
                    " TO STDOUT", ["u"], [uuid.UUID], False, "s", "t")
    (r,) = conn.read(10)
    assert r.new["u"] == uuid.UUID("12345678-1234-5678-1234-567812345678")
    conn.close()


JSON_TEXTS = [
    '{}', '[]', '""', '0', '-0', '1', '-1', '12345678901234567890123',
    '1.5', '-0.0', '1e5', '1E+5', '2.5e-3', '1e400', '-1e400', '0.1',
    '123456789012345678901234567890.5', '9007199254740993.0', 'true',
    'false', 'null', ' {"a" : 1 , "b":[ 1 ,2 ] }\n', '\t[1]\r\n',
    '{"a": 1, "a": 2}', '{"b": 1, "a": 2, "b": 3}',
    '"\\" \\\\ \\/ \\b \\f \\n \\r \\t"', '"\\u0041\\u00e9\\u20ac"',
    '"\\ud83d\\ude00 \\uD83D\\uDE00"', '"\\ud800"', '"\\udc00x"',
    '"\\ud800\\u0041"', '"caf\u00e9 \u20ac \U0001f600"',
    '{"caf\u00e9": {"\\u00e9": "\\n"}}', '[[[[[[[[[[]]]]]]]]]]',
    '[' * 300 + ']' * 300, 'NaN', '[Infinity, -Infinity]',
    '{"id": 1, "tag": "x"}', '[1.0, 2, 3.25, -4e-7, 0e0, 0.0e+0]',
]


def random_json(rnd, depth=0):
    kind = rnd.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rnd.randrange(-10 ** rnd.randrange(1, 25), 10 ** 20)
    if kind == 1:
        return rnd.choice([0.0, -0.0, 1e300, 5e-324]) if rnd.random() < 0.2 \
            else rnd.uniform(-1e6, 1e6) * 10 ** rnd.randrange(-30, 30)
    if kind == 2:
        return rnd.choice([True, False, None])
    if kind in (3, 4, 5):
        return "".join(rnd.choice('ab"\\/\n\t\x01\x7f\u00e9\u20ac\U0001f600 ')
                       for _ in range(rnd.randrange(0, 12)))
    if kind in (6, 7):
        return {rnd.choice(["id", "tag", "key%d" % rnd.randrange(20),
                            "k\u00e9", 'q"\\', "", "x" * 50]):
                random_json(rnd, depth + 1) for _ in range(rnd.randrange(5))}
    return [random_json(rnd, depth + 1) for _ in range(rnd.randrange(5))]


def read_all(conn):
    out = []
    while True:
        batch = conn.read(1000)
        if not batch:
            return out
        out.extend(batch)


def test_copyconnection_json_equals_json_loads(dsn, sql, schema):
    """The C JSON parser gives exactly json.loads's value (types, key
    order, duplicate keys, escapes, surrogates, big and odd numbers,
    whitespace); texts it leaves to json.loads give json.loads's value or
    its error."""
    import json
    rnd = random.Random(11)
    texts = list(JSON_TEXTS)
    for _ in range(400):
        v = random_json(rnd)
        texts.append(json.dumps(v, ensure_ascii=rnd.random() < 0.5,
                                separators=rnd.choice([(",", ":"),
                                                       (", ", ": ")])))
    sql('CREATE SCHEMA "%s"' % schema)
    sql('CREATE TABLE "%s".js (i int, j text)' % schema)
    conn = copyconn(dsn)
    conn.execute('INSERT INTO "%s".js VALUES %s' % (schema, ", ".join(
        "(%d, %s)" % (i, commands.quote_literal(t))
        for i, t in enumerate(texts))))
    conn.copy_start('COPY (SELECT j FROM "%s".js ORDER BY i) TO STDOUT'
                    % schema, ["j"], [json.loads], False, "s", "t")
    got = [m.new["j"] for m in read_all(conn)]
    assert len(got) == len(texts)
    for text, value in zip(texts, got):
        assert same_json(value, json.loads(text)), text
    # and jsonb's own output of them
    conn.copy_start('COPY (SELECT j::jsonb FROM "%s".js WHERE j NOT IN'
                    " ('NaN', '[Infinity, -Infinity]', '\"\\ud800\"',"
                    " '\"\\udc00x\"', '\"\\ud800\\u0041\"') ORDER BY i) TO"
                    " STDOUT" % schema, ["j"], [json.loads], False, "s", "t")
    got = [m.new["j"] for m in read_all(conn)]
    _, rows = conn.execute(
        'SELECT j::jsonb::text FROM "%s".js WHERE j NOT IN (\'NaN\','
        " '[Infinity, -Infinity]', '\"\\ud800\"', '\"\\udc00x\"',"
        " '\"\\ud800\\u0041\"') ORDER BY i" % schema)
    assert len(got) == len(rows) > 400
    for (text,), value in zip(rows, got):
        assert same_json(value, json.loads(text)), text
    conn.close()
    for bad in ['{"a": 1,}', '[1 2]', '01', '{"a" 1}', '"\x01"', '[1]]',
                '"\\x"', '{"a": tru}', '-', '1.', '"abc']:
        with pytest.raises(ValueError) as ref:
            json.loads(bad)
        conn = copyconn(dsn)
        conn.copy_start("COPY (SELECT %s) TO STDOUT"
                        % commands.quote_literal(bad), ["j"],
                        [json.loads], False, "s", "t")
        with pytest.raises(pld.DecodingError) as err:
            conn.read(10)
        assert str(ref.value) in str(err.value), bad
        conn.close()


def hashlib_md5(text):
    import hashlib
    h = hashlib.md5(text.encode()).hexdigest()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


# -- AsyncReader --------------------------------------------------------------

def test_async_snapshot_then_stream_is_consistent(dsn, sql, schema,
                                                  publication, slot_name,
                                                  monkeypatch):
    """AsyncReader(snapshot=True): the same guarantee as Reader's."""
    import asyncio
    monkeypatch.setattr(snapmod, "SPLIT_MIN_PAGES", 4)
    monkeypatch.setattr(snapmod, "BATCH_ROWS", 50)
    keys = ss.make_schema(sql, schema, rows=3000, publication=publication)
    writer = ss.Writer(dsn, schema, 3000, seed=3).start()
    ss.wait_for(lambda: writer.count > 20, what="the writer")
    down = ss.Downstream(keys)
    seen = {"start": 0, "end": 0, "rows": 0, "writes": None}

    async def main():
        streamed = False
        async with pld.AsyncReader(
                dsn, slot=slot_name, plugin="pgoutput",
                options={"publication_names": publication}, snapshot=True,
                snapshot_workers=2) as r:
            async for msg in r:
                ch = msg.change
                if isinstance(ch, pld.SnapshotStart):
                    assert not streamed
                    seen["start"] += 1
                    if seen["writes"] is None:
                        seen["writes"] = writer.count
                elif isinstance(ch, pld.SnapshotEnd):
                    seen["end"] += 1
                    if seen["end"] == len(keys):
                        seen["writes"] = writer.count - seen["writes"]
                        await asyncio.get_running_loop().run_in_executor(
                            None, lambda: (writer.stop(),
                                           ss.end_marker(sql, schema)))
                elif isinstance(ch, pld.SnapshotRow):
                    assert not streamed
                    seen["rows"] += 1
                    if seen["rows"] == 1:
                        # the writer writes during the copy (under ASan
                        # it did not once, on its own)
                        start = seen["writes"]
                        await asyncio.get_running_loop().run_in_executor(
                            None, lambda: ss.wait_for(
                                lambda: writer.count > start,
                                what="a write during the copy"))
                    r.ack_nowait()      # allowed; confirms nothing
                elif ch is not None and not isinstance(ch, pld.Relation):
                    streamed = True
                down.apply(ch)
                if ss.is_end(ch, schema):
                    await r.ack()
                    break

    try:
        asyncio.run(main())
    finally:
        if writer.thread.is_alive():
            writer.stop()
    assert seen["start"] == seen["end"] == len(keys)
    assert seen["writes"] > 0 and seen["rows"] > 3000
    ss.assert_same(down, ss.table_state(dsn, keys))


def test_async_snapshot_on_existing_slot(dsn, slot_name):
    import asyncio
    with pld.Reader(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")

    async def main():
        async with pld.AsyncReader(dsn, slot=slot_name, snapshot=True,
                                   tables=["pg_catalog.pg_class"]) as r:
            async for _ in r:
                pass
    with pytest.raises(pld.SnapshotError, match="backfill"):
        asyncio.run(main())


def test_async_backfill_is_consistent(dsn, sql, schema, publication,
                                      slot_name):
    """AsyncReader.backfill(): the same guarantee as Reader's."""
    import asyncio
    keys = ss.make_schema(sql, schema, rows=1500, publication=publication)
    writer = ss.Writer(dsn, schema, 1500, seed=4).start()
    ss.wait_for(lambda: writer.count > 20, what="the writer")
    down = ss.Downstream(keys, strict=False)
    ended = set()

    async def main():
        loop = asyncio.get_running_loop()
        async with pld.AsyncReader(
                dsn, slot=slot_name, plugin="pgoutput",
                options={"publication_names": publication}) as r:
            await r.create_slot(snapshot="nothing")
            assert await r.backfill((schema, "types"), chunk_size=200) == [
                (schema, "types")]
            await r.backfill((schema, "parted"), chunk_size=300)
            await r.backfill((schema, "empty"))
            later = False
            async for msg in r:
                ch = msg.change
                if isinstance(ch, pld.SnapshotEnd):
                    assert ch.backfill
                    ended.add((ch.schema, ch.table))
                    if not later:       # one more, from inside the loop
                        later = True
                        await r.backfill((schema, ss.QUOTED_TABLE),
                                         chunk_size=250)
                    if len(ended) == len(keys):
                        await loop.run_in_executor(
                            None, lambda: (writer.stop(),
                                           ss.end_marker(sql, schema)))
                elif isinstance(ch, pld.LogicalMessage):
                    assert ch.prefix != snapmod.WATERMARK_PREFIX
                down.apply(ch)
                r.ack_nowait()
                if ss.is_end(ch, schema):
                    break

    try:
        asyncio.run(main())
    finally:
        if writer.thread.is_alive():
            writer.stop()
    assert ended == set(keys)
    ss.assert_same(down, ss.table_state(dsn, keys))
