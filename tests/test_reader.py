"""The Reader API against the real server: events, acks, restarts, stop."""

import datetime
import subprocess
import sys
import threading
import time

import psycopg2
import pytest

import pylogicaldecoding as pld

from readers import (Background, Collector, current_lsn, drain, is_commit,
                     slot_row, wait_for, wait_inactive)


def test_seed_walkthrough(dsn, sql, slot_name, table):
    """Every step of the 2015 README, through test_decoding."""
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    sql("INSERT INTO %s(data) VALUES('1')" % table)
    sql("BEGIN; UPDATE %s SET data='2' WHERE id=1; DELETE FROM %s WHERE id=1;"
        " COMMIT" % (table, table))
    sql("BEGIN; INSERT INTO %s(data) VALUES('rolled back'); ROLLBACK" % table)
    sql("ALTER TABLE %s REPLICA IDENTITY FULL" % table)
    sql("BEGIN; INSERT INTO %s(data) VALUES('1'); UPDATE %s SET data='2' "
        "WHERE id=3; DELETE FROM %s WHERE id=3; COMMIT" % (table, table, table))

    got = drain(dsn, slot_name, sql, options={"skip-empty-xacts": "1"}).payloads
    t = "table public.%s: " % table
    body = [p for p in got if not p.startswith(("BEGIN", "COMMIT"))]
    assert body == [
        t + "INSERT: id[integer]:1 data[text]:'1'",
        t + "UPDATE: id[integer]:1 data[text]:'2'",
        t + "DELETE: id[integer]:1",
        t + "INSERT: id[integer]:3 data[text]:'1'",
        t + "UPDATE: old-key: id[integer]:3 data[text]:'1' "
            "new-tuple: id[integer]:3 data[text]:'2'",
        t + "DELETE: id[integer]:3 data[text]:'2'",
    ]
    assert "rolled back" not in "".join(got)
    # three transactions, each framed by BEGIN xid / COMMIT xid
    begins = [p for p in got if p.startswith("BEGIN")]
    commits = [p for p in got if p.startswith("COMMIT")]
    assert len(begins) == len(commits) == 3
    assert [b.split()[1] for b in begins] == [c.split()[1] for c in commits]


def test_message_attributes(dsn, sql, slot_name, table):
    before = datetime.datetime.now(datetime.timezone.utc)
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    sql("INSERT INTO %s(data) VALUES('x')" % table)
    msgs = drain(dsn, slot_name, sql, decode=False).msgs
    assert [type(m.payload) for m in msgs] == [str] * 3
    lsns = [m.data_start for m in msgs]
    assert all(isinstance(x, int) and x > 0 for x in lsns)
    assert lsns == sorted(lsns)
    assert msgs[0].data_start_lsn == pld.format_lsn(msgs[0].data_start)
    assert all(m.wal_end >= m.data_start for m in msgs)
    sent = msgs[0].send_time
    assert sent.tzinfo is not None
    assert before - datetime.timedelta(seconds=5) <= sent
    assert sent <= datetime.datetime.now(datetime.timezone.utc) + \
        datetime.timedelta(seconds=5)
    assert msgs[0].change is None   # decode=False
    assert "data_start=" in repr(msgs[0])


def test_binary_payloads(dsn, sql, slot_name, table):
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    sql("INSERT INTO %s(data) VALUES('é')" % table)
    got = drain(dsn, slot_name, sql, binary=True).payloads
    assert all(isinstance(p, bytes) for p in got)
    # (another transaction may come first on a busy server: look for ours)
    inserts = [p for p in got if b": INSERT: " in p]
    assert len(inserts) == 1 and "'é'".encode() in inserts[0]


def test_ack_and_restart(dsn, sql, slot_name, table):
    """The seed's story: acked transactions are not sent again after a
    restart, unacked ones are, from their BEGIN."""
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    for i in range(3):
        sql("INSERT INTO %s(data) VALUES('%d')" % (table, i))

    # first consumer: acks the first transaction only
    def ack_first(reader, msg):
        if is_commit(msg) and reader.commits() == 1:
            reader.ack()
    first = drain(dsn, slot_name, sql, on_event=ack_first)
    assert first.commits() == 3
    first_commit = next(m for m in first.msgs if is_commit(m))
    assert slot_row(sql, slot_name)["confirmed_flush_lsn"] == \
        first_commit.data_start

    # second consumer: transactions 2 and 3 again, whole, not the first
    second = drain(dsn, slot_name, sql)
    assert second.payloads == first.payloads[3:]
    assert second.payloads[0].startswith("BEGIN")

    # ack everything: a third consumer gets nothing
    third = drain(dsn, slot_name, sql, ack_commits=True)
    assert third.commits() == 2
    assert drain(dsn, slot_name, sql).payloads == []


def test_ack_is_sent_before_start_returns(dsn, sql, slot_name, table):
    sql("INSERT INTO %s(data) VALUES('a')" % table)
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    sql("INSERT INTO %s(data) VALUES('b')" % table)
    with Collector(dsn, slot=slot_name, ack_commits=True,
                   until=lambda r: r.commits() == 1) as r:
        # a long interval: only the end of the stream can send the ack
        r.status_interval = 3600
        r.start()
        assert r.flushed_lsn == r.msgs[-1].data_start
        # no waiting: the server has the ack when start() returns
        assert slot_row(sql, slot_name)["confirmed_flush_lsn"] == r.flushed_lsn
        assert not r.closed     # stop() keeps the connection


def test_ack_reaches_server_promptly_while_streaming(dsn, sql, slot_name,
                                                     table):
    with Collector(dsn, slot=slot_name, ack_commits=True) as r:
        r.status_interval = 3600
        bg = Background(r)
        wait_for(lambda: r.streaming, what="streaming")
        sql("INSERT INTO %s(data) VALUES('a')" % table)
        wait_for(lambda: r.commits() == 1, what="the commit")
        commit = r.msgs[-1].data_start
        wait_for(lambda: slot_row(sql, slot_name)["confirmed_flush_lsn"]
                 == commit, timeout=5, what="the ack on the server")
        assert r.stop(timeout=30)
        assert bg.join() is None


def test_ack_rules(dsn, sql, slot_name, table):
    sql("SELECT 1")
    errors = []

    def check(reader, msg):
        if len(reader.msgs) == 1:
            with pytest.raises(pld.ProgrammingError, match="beyond"):
                reader.ack(msg.data_start + 1)
            reader.ack(msg.data_start)
            reader.ack(0)        # never backwards
            reader.ack("0/1")
            errors.append(reader.flushed_lsn == msg.data_start)
            with pytest.raises(TypeError):
                reader.ack(1.5)
            with pytest.raises(ValueError):
                reader.ack("nonsense")

    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
        with pytest.raises(pld.InterfaceError, match="outside the stream"):
            r.ack()
    sql("INSERT INTO %s(data) VALUES('a')" % table)
    drain(dsn, slot_name, sql, on_event=check)
    assert errors == [True]


def test_stop_from_another_thread(dsn, sql, slot_name, table):
    with Collector(dsn, slot=slot_name, ack_commits=True) as r:
        r.status_interval = 3600
        bg = Background(r)
        wait_for(lambda: r.streaming, what="streaming")
        sql("INSERT INTO %s(data) VALUES('a')" % table)
        wait_for(lambda: r.commits() == 1, what="the commit")
        # status_interval 3600 s and the server's pings at 30 s: only
        # stop() can end the wait this soon
        t0 = time.monotonic()
        assert r.stop(timeout=60) is True
        assert time.monotonic() - t0 < 20
        assert not bg.thread.is_alive()      # stop() waited for the end
        assert bg.error is None
        assert not r.streaming
        assert slot_row(sql, slot_name)["confirmed_flush_lsn"] == \
            r.msgs[-1].data_start


def test_stop_while_idle_is_prompt(dsn, slot_name):
    r = Collector(dsn, slot=slot_name, status_interval=3600)
    bg = Background(r)
    wait_for(lambda: r.streaming, what="streaming")
    time.sleep(0.2)         # into its wait
    t0 = time.monotonic()
    r.stop()
    assert bg.join(timeout=60) is None
    # nothing else wakes the idle loop for 30 s (the server's pings)
    assert time.monotonic() - t0 < 20
    r.close()
    assert r.closed


def test_close_from_event(dsn, sql, slot_name, table):
    sql("SELECT 1")
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    sql("INSERT INTO %s(data) VALUES('a')" % table)
    r = Collector(dsn, slot=slot_name, on_event=lambda r, m: r.close())
    r.start()
    assert r.closed
    assert len(r.msgs) == 1
    wait_inactive(sql, slot_name)


class Boom(Exception):
    pass


def test_exception_in_event(dsn, sql, slot_name, table):
    """The exception propagates unchanged, the connection is closed and
    nothing past the last ack is confirmed: the failed transaction comes
    again."""
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    sql("INSERT INTO %s(data) VALUES('ok')" % table)
    sql("INSERT INTO %s(data) VALUES('bad')" % table)
    raised = Boom("in event")

    def fail(reader, msg):
        if "'bad'" in msg.payload:
            raise raised

    r = Collector(dsn, slot=slot_name, ack_commits=True, on_event=fail)
    with pytest.raises(Boom) as info:
        r.start()
    assert info.value is raised
    assert r.closed and not r.streaming
    wait_inactive(sql, slot_name)
    first_commit = next(m for m in r.msgs if is_commit(m))
    assert slot_row(sql, slot_name)["confirmed_flush_lsn"] == \
        first_commit.data_start
    again = drain(dsn, slot_name, sql)
    assert again.payloads[:2] == r.payloads[3:5]    # BEGIN, INSERT 'bad'
    assert again.payloads[2].startswith("COMMIT") and len(again.payloads) == 3


def test_event_must_be_overridden(dsn, sql, slot_name, table):
    sql("INSERT INTO %s(data) VALUES('a')" % table)
    r = pld.Reader(dsn, slot=slot_name, temporary=True)
    bg = Background(r)
    wait_for(lambda: r.streaming, what="streaming")
    sql("INSERT INTO %s(data) VALUES('b')" % table)
    assert isinstance(bg.join(), NotImplementedError)
    assert r.closed


def test_options_are_sent(dsn, sql, slot_name, table):
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    sql("INSERT INTO %s(data) VALUES('a')" % table)
    got = drain(dsn, slot_name, sql, options={"include-xids": False,
                                              "include-timestamp": True})
    assert got.payloads[0] == "BEGIN"
    assert got.payloads[-1].startswith("COMMIT (at ")


def test_temporary_slot(dsn, sql, slot_name, table):
    r = Collector(dsn, slot=slot_name, temporary=True,
                  until=lambda r: r.commits() == 1)
    bg = Background(r)
    wait_for(lambda: r.streaming, what="streaming")
    assert sql("SELECT temporary FROM pg_replication_slots WHERE slot_name=%s",
               slot_name) == [(True,)]
    sql("INSERT INTO %s(data) VALUES('a')" % table)
    assert bg.join() is None
    r.close()
    wait_for(lambda: slot_row(sql, slot_name) is None, what="slot gone")


def test_create_slot_and_snapshot(dsn, sql, slot_name, table):
    sql("INSERT INTO %s(data) VALUES('before')" % table)
    with Collector(dsn, slot=slot_name) as r:
        info = r.create_slot()
        assert isinstance(info, pld.SlotInfo)
        assert info.slot_name == slot_name
        assert info.output_plugin == "test_decoding"
        assert isinstance(info.consistent_point, int)
        assert info.snapshot_name
        # the exported snapshot sees the table as of the slot's creation
        sql("INSERT INTO %s(data) VALUES('after')" % table)
        conn = psycopg2.connect(dsn)
        try:
            cur = conn.cursor()
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SET TRANSACTION SNAPSHOT %s", (info.snapshot_name,))
            cur.execute("SELECT data FROM %s ORDER BY id" % table)
            assert cur.fetchall() == [("before",)]
        finally:
            conn.close()
        status = r.slot_status()
        assert status["plugin"] == "test_decoding"
        assert status["confirmed_flush_lsn"] == info.consistent_point
        with pytest.raises(pld.SlotExists):
            r.create_slot(snapshot="nothing")
        r.drop_slot()
        assert r.slot_status() is None
        with pytest.raises(pld.SlotNotFound):
            r.drop_slot()
        r.drop_slot(missing_ok=True)


def test_identify_system(dsn, sql, slot_name):
    with Collector(dsn, slot=slot_name) as r:
        info = r.identify_system()
    assert info.dbname == "test"
    assert info.timeline >= 1
    assert int(info.systemid) > 0
    assert 0 < info.xlogpos <= current_lsn(sql)


def test_start_lsn(dsn, sql, slot_name, table):
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    sql("INSERT INTO %s(data) VALUES('skipped')" % table)
    middle = current_lsn(sql)
    sql("INSERT INTO %s(data) VALUES('kept')" % table)
    got = drain(dsn, slot_name, sql, start_lsn=pld.format_lsn(middle))
    assert got.commits() == 1
    assert "'kept'" in got.payloads[1]


def test_until_lsn_returns_when_caught_up(dsn, sql, slot_name, table):
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    sql("INSERT INTO %s(data) VALUES('1')" % table)
    end = current_lsn(sql)
    sql("INSERT INTO %s(data) VALUES('2')" % table)
    with Collector(dsn, slot=slot_name) as r:
        r.start(until_lsn=end)
        assert r.commits() == 1
        assert all(m.data_start <= end for m in r.msgs)
    # nothing to read: returns promptly all the same (a generous bound for
    # a loaded machine, below the server's first ping at 30 s)
    t0 = time.monotonic()
    with Collector(dsn, slot=slot_name, start_lsn=current_lsn(sql)) as r:
        r.start(until_lsn=current_lsn(sql))
    assert time.monotonic() - t0 < 20


def test_restart_same_reader(dsn, sql, slot_name, table):
    r = Collector(dsn, slot=slot_name, ack_commits=True,
                  until=lambda r: r.commits() >= 1)
    with r:
        bg = Background(r)
        wait_for(lambda: r.streaming, what="streaming")
        sql("INSERT INTO %s(data) VALUES('1')" % table)
        assert bg.join() is None
        r.until = lambda r: r.commits() >= 2
        sql("INSERT INTO %s(data) VALUES('2')" % table)
        r.start()
        assert [p for p in r.payloads if "INSERT" in p][-1].endswith("'2'")
        assert r.commits() == 2


def test_idle_reader_survives_wal_sender_timeout(dsn, sql, slot_name, table):
    """No data for several wal_sender_timeouts: still connected."""
    # until our own row arrives: a transaction of autovacuum's (an ANALYZE
    # writes pg_statistic) is decoded as an empty BEGIN/COMMIT, and under
    # load one came during the idle time and ended the run early
    r = Collector(dsn + " options='-c wal_sender_timeout=2s'", slot=slot_name,
                  until=lambda r: any("'late'" in p for p in r.payloads))
    bg = Background(r)
    wait_for(lambda: r.streaming, what="streaming")
    assert r.wal_sender_timeout == 2.0
    time.sleep(6.5)     # more than three timeouts without data
    assert bg.thread.is_alive() and bg.error is None, bg.error
    sql("INSERT INTO %s(data) VALUES('late')" % table)
    assert bg.join() is None
    assert any("'late'" in p for p in r.payloads)
    r.close()


def test_status_updates_are_periodic(dsn, slot_name):
    """status_interval 0.1 s on an idle stream: updates keep coming (3 in
    at most 10 s; at the default 10 s interval they would take 30 s)."""
    r = Collector(dsn, slot=slot_name, status_interval=0.1)
    bg = Background(r)
    wait_for(lambda: r.streaming, what="streaming")
    count = r.status_count
    wait_for(lambda: r.status_count >= count + 3, timeout=10,
             what="3 periodic status updates")
    r.stop()
    assert bg.join() is None
    r.close()


def test_context_manager_closes(dsn, slot_name):
    with Collector(dsn, slot=slot_name) as r:
        r.connect()
        assert not r.closed
    assert r.closed


def test_repr(dsn, slot_name):
    r = Collector(dsn, slot=slot_name)
    text = repr(r)
    assert slot_name in text and "closed" in text and "test_decoding" in text


def test_typed_changes_by_default(dsn, sql, slot_name, table):
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    sql("INSERT INTO %s(data) VALUES('typed')" % table)
    sql("UPDATE %s SET data = NULL" % table)
    changes = [m.change for m in drain(dsn, slot_name, sql).msgs]
    kinds = [type(c).__name__ for c in changes]
    assert kinds == ["Begin", "Insert", "Commit", "Begin", "Update", "Commit"]
    insert, update = changes[1], changes[4]
    assert (insert.schema, insert.table) == ("public", table)
    assert insert.new == {"id": 1, "data": "typed"}
    assert update.new == {"id": 1, "data": None}
    assert isinstance(changes[0].xid, int)
    assert changes[0].xid == changes[2].xid


def test_drain_reads_what_is_there_and_returns(dsn, sql, slot_name, table):
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    for i in range(3):
        sql("INSERT INTO %s(data) VALUES('%d')" % (table, i))
    with Collector(dsn, slot=slot_name, ack_commits=True) as r:
        r.drain()
        assert r.commits() == 3
    sql("INSERT INTO %s(data) VALUES('later')" % table)
    with Collector(dsn, slot=slot_name, ack_commits=True) as r:
        t0 = time.monotonic()
        r.drain()
        assert r.commits() == 1 and "'later'" in r.payloads[1]
        # without waiting for the server's first ping (30 s)
        assert time.monotonic() - t0 < 20
    with Collector(dsn, slot=slot_name) as r:
        r.drain()
        assert r.msgs == []


def test_output_settings_are_fixed_for_decoding(pg_server, sql, table):
    """A database whose DateStyle/IntervalStyle differ from the defaults:
    the replication session still prints what the decoders parse."""
    import datetime as dt
    sql("DROP DATABASE IF EXISTS pld_styles")
    sql("CREATE DATABASE pld_styles")
    try:
        sql("ALTER DATABASE pld_styles SET datestyle = 'SQL, DMY'")
        sql("ALTER DATABASE pld_styles SET intervalstyle = 'sql_standard'")
        conn = psycopg2.connect(pg_server.dsn, dbname="pld_styles")
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE TABLE t(d date, ts timestamp, iv interval)")
        dsn = pg_server.dsn.replace("dbname=test", "dbname=pld_styles")
        with Collector(dsn, slot="pld_styles_slot") as r:
            r.create_slot(snapshot="nothing")
            cur.execute("INSERT INTO t VALUES ('2024-03-01', "
                        "'2024-03-01 10:20:30', '1 day 02:00:00')")
            r.drain()
            row = [m.change for m in r.msgs if type(m.change).__name__ ==
                   "Insert"][0].new
            r.drop_slot()
        assert row == {"d": dt.date(2024, 3, 1),
                       "ts": dt.datetime(2024, 3, 1, 10, 20, 30),
                       "iv": dt.timedelta(days=1, hours=2)}
        conn.close()
    finally:
        sql("DROP DATABASE IF EXISTS pld_styles (FORCE)")


# A blocking consumer's process holds only what it needs: asyncio's ~7,000
# objects made its first full collection of the cyclic GC 2-7 ms of CPU,
# a pause every message waiting behind it paid (bench/README.md, "Latency:
# where the tail comes from").
NO_ASYNCIO_CHILD = r"""
import sys
import pylogicaldecoding as pld
assert "asyncio" not in sys.modules, "import pylogicaldecoding loaded asyncio"
class R(pld.Reader):
    n = 0
    def event(self, msg):
        self.n += 1
r = R(sys.argv[1], slot=sys.argv[2], create_slot=False)
r.start(until_lsn=int(sys.argv[3]))
r.close()
assert r.n > 0, "nothing streamed"
assert "asyncio" not in sys.modules, "Reader.start() loaded asyncio"
pld.AsyncReader
assert "asyncio" in sys.modules
print("ok")
"""


def test_blocking_reader_does_not_load_asyncio(dsn, sql, slot_name, table):
    """Importing the package and streaming with a Reader leave asyncio
    unloaded; AsyncReader loads it on first use."""
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    sql("INSERT INTO %s(data) VALUES('1')" % table)
    out = subprocess.run(
        [sys.executable, "-c", NO_ASYNCIO_CHILD, dsn, slot_name,
         str(current_lsn(sql))], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "ok"
