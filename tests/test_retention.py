"""WAL retention: a quiet, fully acked slot follows the server's keepalives,
and never skips a transaction that was not acked."""

import psycopg2
import pytest

from readers import (Background, Collector, current_lsn, drain, slot_row,
                     wait_for, wait_inactive)


@pytest.fixture
def other_db(pg_server):
    """Writes in another database: WAL moves, our slot has nothing to send."""
    conn = psycopg2.connect(pg_server.dsn, dbname="postgres")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS noise(x int)")

    def write(n=5):
        for i in range(n):
            cur.execute("INSERT INTO noise VALUES (%s)", (i,))
    yield write
    conn.close()


def confirmed(sql, slot):
    return slot_row(sql, slot)["confirmed_flush_lsn"]


def wait_keepalive_then_updates(r, sql, target, updates=3):
    """Wait until the server told the reader of a WAL end at or past
    ``target`` (a keepalive: the slot has nothing to send), the reader sent
    ``updates`` status updates after that, and the server read one sent
    later still: a test that the slot did not move can no longer pass for
    want of anything to move it to, or of time to move it."""
    wait_for(lambda: r.server_wal_end >= target, timeout=60,
             what="a keepalive past %X" % target)
    count = r.status_count
    wait_for(lambda: r.status_count >= count + updates, timeout=60,
             what="status updates after the keepalive")
    (now,) = sql("SELECT clock_timestamp()")[0]
    wait_for(lambda: sql("SELECT reply_time >= %s FROM pg_stat_replication "
                         "WHERE pid = %s", now, r.backend_pid)[0][0],
             timeout=60, what="the server to read a later update")


def test_quiet_slot_follows_keepalives(dsn, sql, slot_name, other_db):
    r = Collector(dsn, slot=slot_name)
    bg = Background(r)
    wait_for(lambda: r.streaming, what="streaming")
    start = confirmed(sql, slot_name)
    other_db()
    target = current_lsn(sql)
    wait_for(lambda: confirmed(sql, slot_name) >= target, timeout=15,
             what="the slot to follow the server")
    assert confirmed(sql, slot_name) > start
    assert r.msgs == []
    r.stop()
    assert bg.join() is None
    r.close()


def test_setting_off_keeps_position(dsn, sql, slot_name, other_db):
    r = Collector(dsn, slot=slot_name, confirm_keepalives=False,
                  status_interval=0.1)
    bg = Background(r)
    wait_for(lambda: r.streaming, what="streaming")
    start = confirmed(sql, slot_name)
    other_db()
    target = current_lsn(sql)
    # the reader has heard of a position past the writes, which it would
    # confirm with the setting on, and reported after that
    wait_keepalive_then_updates(r, sql, target)
    assert confirmed(sql, slot_name) == start
    r.stop()
    assert bg.join() is None
    r.close()


def test_unacked_delivered_transaction_holds_position(dsn, sql, slot_name,
                                                      table, other_db):
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    sql("INSERT INTO %s(data) VALUES('unacked')" % table)
    r = Collector(dsn, slot=slot_name, status_interval=0.1)
    bg = Background(r)
    wait_for(lambda: r.commits() == 1, what="the transaction")
    before = confirmed(sql, slot_name)
    other_db()
    wait_keepalive_then_updates(r, sql, current_lsn(sql))
    assert confirmed(sql, slot_name) == before < r.msgs[-1].data_start
    r.stop()
    assert bg.join() is None
    r.close()
    again = drain(dsn, slot_name, sql)
    assert "'unacked'" in again.payloads[1]


def test_in_progress_transaction_never_skipped(dsn, sql, slot_name, table,
                                               pg_server, other_db):
    """A transaction open on the server while the slot advances is still
    delivered once it commits, and again if it was not acked."""
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    writer = psycopg2.connect(pg_server.dsn)
    try:
        wcur = writer.cursor()
        wcur.execute("INSERT INTO %s(data) VALUES('in flight')" % table)
        inflight = current_lsn(sql)

        class Crash(Exception):
            pass

        def crash_on_it(reader, msg):
            if "in flight" in msg.payload:
                raise Crash()

        r = Collector(dsn, slot=slot_name, ack_commits=True,
                      on_event=crash_on_it)
        bg = Background(r)
        wait_for(lambda: r.streaming, what="streaming")
        other_db()
        target = current_lsn(sql)
        # the slot moves past the open transaction's first change...
        wait_for(lambda: confirmed(sql, slot_name) >= target, timeout=15,
                 what="the slot to advance")
        assert confirmed(sql, slot_name) > inflight
        writer.commit()
        # ...yet the transaction arrives when it commits, and the crash in
        # event() leaves it unacked
        assert isinstance(bg.join(), Crash)
    finally:
        writer.close()
    wait_inactive(sql, slot_name)
    again = drain(dsn, slot_name, sql)
    assert any("in flight" in p for p in again.payloads)
