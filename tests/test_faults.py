"""Faults against the real server: restarts, killed walsenders, a cut
network, a consumer killed with SIGKILL; nothing committed is lost."""

import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psycopg2
import pytest

import pylogicaldecoding as pld

from proxy import Proxy
from readers import (Background, Collector, current_lsn, drain, slot_row,
                     wait_for, wait_inactive)


class Writer:
    """Commit one-row transactions continuously; keep the values whose
    commit returned (a commit that failed may or may not have happened)."""

    def __init__(self, dsn, table, pause=0.005):
        self.dsn, self.table, self.pause = dsn, table, pause
        self.committed = []
        #: value -> the WAL position read right after its commit returned:
        #: at or past the end of its commit record (under ``lock``)
        self.after_commit = {}
        self.lock = threading.Lock()
        self.next = 1
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conn = None
        while self.running:
            try:
                if conn is None or conn.closed:
                    conn = psycopg2.connect(self.dsn, connect_timeout=2)
                value = self.next
                self.next += 1
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO %s(data) VALUES (%%s)"
                                % self.table, (str(value),))
                conn.commit()
                self.committed.append(value)
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_current_wal_lsn()::text")
                    lsn = pld.parse_lsn(cur.fetchone()[0])
                with self.lock:
                    self.after_commit[value] = lsn
                conn.rollback()
            except psycopg2.Error:
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
            time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def stop(self):
        self.running = False
        self.thread.join(30)


def values_of(payloads):
    out = set()
    for p in payloads:
        if ": INSERT: " in p:
            out.add(int(p.rsplit("data[text]:'", 1)[1].rstrip("'")))
    return out


def run_through_fault(dsn, sql, slot_name, table, fault, **reader_kwargs):
    """Stream with reconnect=True while a writer runs and ``fault()``
    strikes twice; then check every committed value arrived."""
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    reader = Collector(dsn, slot=slot_name, ack_commits=True,
                       reconnect=pld.Reconnect(initial_delay=0.05,
                                               max_delay=0.5),
                       **reader_kwargs)
    writer = Writer(dsn, table)
    bg = Background(reader)
    try:
        for _ in range(2):
            seen = len(reader.msgs)
            wait_for(lambda: len(reader.msgs) > seen + 30, timeout=30,
                     what="changes before the fault")
            fault()
            seen = len(reader.msgs)
            wait_for(lambda: len(reader.msgs) > seen + 30, timeout=60,
                     what="changes after the fault")
    finally:
        writer.stop()
    end = current_lsn(sql)
    wait_for(lambda: reader.received_lsn >= end or
             values_of(reader.payloads) >= set(writer.committed),
             timeout=30, what="the end of the stream")
    assert reader.stop(timeout=30)
    assert bg.error is None, bg.error
    missing = set(writer.committed) - values_of(reader.payloads)
    assert not missing, sorted(missing)[:10]
    assert reader.reconnections >= 2
    reader.close()
    return reader, writer


def test_reconnect_after_walsender_terminated(dsn, sql, slot_name, table,
                                              caplog):

    def kill():
        pid = slot_row(sql, slot_name)["active_pid"]
        sql("SELECT pg_terminate_backend(%s)", pid)

    with caplog.at_level(logging.WARNING, logger="pylogicaldecoding"):
        reader, writer = run_through_fault(dsn, sql, slot_name, table, kill)
    assert any("reconnecting" in r.message for r in caplog.records)
    assert len(writer.committed) > 20


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_reconnect_after_server_restart(pg_server, dsn, sql, slot_name, table,
                                        mode):
    if not pg_server.can_restart:
        pytest.fail("this test restarts the server: unset PLD_TEST_DSN")
    run_through_fault(dsn, sql, slot_name, table,
                      lambda: pg_server.restart(mode=mode))


def test_reconnect_after_network_cut(pg_server, dsn, sql, slot_name, table):
    proxy = Proxy(pg_server.port)
    try:
        proxied = "host=127.0.0.1 port=%d dbname=test user=postgres " \
                  "sslmode=disable" % proxy.port
        run_through_fault(proxied, sql, slot_name, table, proxy.cut)
        assert proxy.connections >= 3
    finally:
        proxy.close()


def test_on_reconnect_hook_and_limit(pg_server, dsn, sql, slot_name):
    """The hook sees every attempt; a policy with a limit gives up."""
    proxy = Proxy(pg_server.port)
    calls = []

    class Hooked(Collector):
        def on_reconnect(self, attempt, error, delay):
            calls.append((attempt, type(error)))
            if attempt == 1:
                proxy.close()       # from now on nothing answers

    proxied = "host=127.0.0.1 port=%d dbname=test user=postgres " \
              "sslmode=disable" % proxy.port
    r = Hooked(proxied, slot=slot_name, reconnect=pld.Reconnect(
        initial_delay=0.01, max_attempts=3))
    bg = Background(r)
    wait_for(lambda: r.streaming, what="streaming")
    proxy.cut()
    error = bg.join()
    assert isinstance(error, pld.ConnectionFailed), repr(error)
    assert [a for a, _ in calls] == [1, 2, 3]
    assert calls[0][1] is pld.ConnectionLost
    r.close()


def test_hook_can_give_up(dsn, sql, slot_name):
    class GiveUp(Collector):
        def on_reconnect(self, attempt, error, delay):
            raise RuntimeError("no more")

    r = GiveUp(dsn, slot=slot_name, reconnect=True)
    bg = Background(r)
    wait_for(lambda: r.streaming, what="streaming")
    sql("SELECT pg_terminate_backend(%s)", r.backend_pid)
    assert str(bg.join()) == "no more"
    r.close()


def test_stop_during_backoff(pg_server, dsn, sql, slot_name):
    # a backoff of 300 s: stop() must not wait for it to end
    r = Collector(dsn, slot=slot_name, reconnect=pld.Reconnect(
        initial_delay=300, jitter=0))
    bg = Background(r)
    wait_for(lambda: r.streaming, what="streaming")
    sql("SELECT pg_terminate_backend(%s)", r.backend_pid)
    wait_for(lambda: r.reconnections == 1, what="the backoff")
    t0 = time.monotonic()
    assert r.stop(timeout=60)
    assert bg.join() is None
    assert time.monotonic() - t0 < 60
    r.close()


def test_temporary_slot_cannot_reconnect(dsn):
    with pytest.raises(pld.InterfaceError, match="temporary"):
        Collector(dsn, slot="s", temporary=True, reconnect=True)


def test_slow_consumer_survives_wal_sender_timeout(dsn, sql, slot_name,
                                                   table):
    """event() runs 3 s against a 1 s wal_sender_timeout: not dropped,
    and nothing beyond the last ack is confirmed meanwhile."""
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    sql("INSERT INTO %s(data) VALUES('1')" % table)
    sql("INSERT INTO %s(data) VALUES('2')" % table)
    confirmed_during = []

    def slow(reader, msg):
        if "'1'" in msg.payload:
            time.sleep(3)
            confirmed_during.append(slot_row(sql, slot_name)
                                    ["confirmed_flush_lsn"])

    r = Collector(dsn + " options='-c wal_sender_timeout=1s'", slot=slot_name,
                  ack_commits=True, on_event=slow,
                  until=lambda r: r.commits() == 2)
    start = slot_row(sql, slot_name)["confirmed_flush_lsn"]
    r.start()
    assert r.commits() == 2 and r.wal_sender_timeout == 1.0
    assert confirmed_during == [start]      # nothing confirmed while slow
    assert slot_row(sql, slot_name)["confirmed_flush_lsn"] == r.flushed_lsn
    r.close()


@pytest.mark.needs("ssl")
def test_tls_with_self_signed_certificate(slot_name):
    from pylogicaldecoding.testing import Server
    with Server(ssl=True) as srv:
        srv.execute("CREATE TABLE t(id serial primary key, data text)")
        r = Collector(srv.dsn, slot=slot_name, sslmode="verify-ca",
                      sslrootcert=srv.ssl_cert,
                      until=lambda r: r.commits() == 1)
        bg = Background(r)
        wait_for(lambda: r.streaming, what="streaming")
        rows = srv.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = %d"
                           % r.backend_pid)
        assert rows == [["t"]]
        srv.execute("INSERT INTO t(data) VALUES('over tls')")
        assert bg.join() is None
        assert "'over tls'" in r.payloads[1]
        r.close()
        # a client that checks the certificate against another CA refuses
        bad = Collector(srv.dsn, slot=slot_name, sslmode="verify-ca",
                        sslrootcert=os.devnull)
        with pytest.raises(pld.ConnectionFailed):
            bad.connect()


CONSUMER = textwrap.dedent("""
    import os, sys
    import pylogicaldecoding as pld

    log = os.open(sys.argv[3], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    class R(pld.Reader):
        def event(self, msg):
            p = msg.payload
            if ": INSERT: " in p:
                v = p.rsplit("data[text]:'", 1)[1].rstrip("'")
                os.write(log, b"V %s\\n" % v.encode())
            elif p.startswith("COMMIT"):
                os.write(log, b"C %d\\n" % msg.data_start)
                self.commits = getattr(self, "commits", 0) + 1
                if self.commits % int(sys.argv[5]) == 0:
                    self.ack()
                    os.write(log, b"A %d\\n" % msg.data_start)

    # "off": only acks move the slot, so the test can check each position
    # it takes; "default": keepalives are confirmed too, when all is acked
    kwargs = {"confirm_keepalives": False} if sys.argv[4] == "off" else {}
    R(sys.argv[1], slot=sys.argv[2], create_slot=False, **kwargs).start()
""")


def log_lines(log):
    try:
        return log.read_text().splitlines()
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("keepalives", ["off", "default"])
def test_sigkill_cycles_lose_nothing(dsn, sql, slot_name, table, tmp_path,
                                     keepalives):
    """A consumer killed at random points, mid-stream, 10 times while a
    writer commits: every committed transaction is delivered at least once,
    and after each kill the slot never confirms a commit the consumer did
    not ack -- with the default settings (keepalives confirmed once all is
    acked) and with only acks moving the slot."""
    with Collector(dsn, slot=slot_name) as r:
        initial = r.create_slot(snapshot="nothing").consistent_point
    log = tmp_path / "consumer.log"
    writer = Writer(dsn, table, pause=0.002)
    rng = random.Random(4242)
    cycles = 10
    try:
        for cycle in range(cycles):
            start = len(log_lines(log))
            # it acks every 1 to 3 commits, as consumers that batch do
            proc = subprocess.Popen([sys.executable, "-c", CONSUMER, dsn,
                                     slot_name, str(log), keepalives,
                                     str(rng.randint(1, 3))],
                                    stderr=subprocess.PIPE)
            # Kill it once it has streamed a random number of changes and
            # holds processed changes it has not acked. To know that for
            # sure it is frozen (SIGSTOP) while its log is read; if it is
            # between acks it is killed (SIGKILL) as it stands.
            changes = rng.randint(1, 20)
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.communicate()[1]
                proc.send_signal(signal.SIGSTOP)
                lines = log_lines(log)
                streamed = sum(1 for line in lines[start:]
                               if line.startswith("V "))
                if streamed >= changes and not lines[-1].startswith("A "):
                    break
                proc.send_signal(signal.SIGCONT)
                assert time.monotonic() < deadline, \
                    "the consumer did not stream %d changes" % changes
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            wait_inactive(sql, slot_name)
            lines = log_lines(log)
            confirmed = slot_row(sql, slot_name)["confirmed_flush_lsn"]
            if keepalives == "off":
                processed = {int(line.split()[1]) for line in lines
                             if line.startswith("C ")}
                # the slot is at a commit the consumer had processed (logged
                # before its ack()), never elsewhere: nothing confirmed early
                assert confirmed == initial or confirmed in processed, cycle
            # with either setting: every transaction the slot confirmed
            # (its commit at or before the slot's position) was processed
            seen = {int(line.split()[1]) for line in lines
                    if line.startswith("V ")}
            with writer.lock:
                after_commit = dict(writer.after_commit)
            skipped = {v for v, lsn in after_commit.items()
                       if lsn <= confirmed} - seen
            assert not skipped, (cycle, sorted(skipped)[:10])
    finally:
        writer.stop()
    assert len(writer.committed) > 500
    # a last, graceful run drains the rest
    final = drain(dsn, slot_name, sql, ack_commits=True)
    seen = set()
    for line in log.read_text().splitlines():
        if line.startswith("V "):
            seen.add(int(line.split()[1]))
    seen |= values_of(final.payloads)
    missing = set(writer.committed) - seen
    assert not missing, sorted(missing)[:10]
    acks = [int(line.split()[1]) for line in log.read_text().splitlines()
            if line.startswith("A ")]
    assert slot_row(sql, slot_name)["confirmed_flush_lsn"] >= max(acks)
    print("sigkill (%s): %d cycles, each killed mid-stream with unacked "
          "changes; %d transactions committed, %d acks logged"
          % (keepalives, cycles, len(writer.committed), len(acks)))


def test_silent_network_is_detected(pg_server, dsn, sql, slot_name, table):
    """A network that silently stops carrying packets (no reset): the
    Reader asks the server for a reply, hears nothing, gives the connection
    up after recv_timeout and reconnects."""
    proxy = Proxy(pg_server.port)
    try:
        proxied = "host=127.0.0.1 port=%d dbname=test user=postgres " \
                  "sslmode=disable" % proxy.port
        r = Collector(proxied, slot=slot_name, recv_timeout=1.0,
                      until=lambda r: r.commits() == 1,
                      reconnect=pld.Reconnect(initial_delay=0.05))
        bg = Background(r)
        wait_for(lambda: r.streaming, what="streaming")
        proxy.freeze()
        # TCP alone would take many minutes to give up (no reset): a
        # minute is a generous bound for recv_timeout's 1 s on a busy machine
        wait_for(lambda: r.reconnections == 1, timeout=60,
                 what="the dead connection to be noticed")
        proxy.thaw()
        wait_for(lambda: r.streaming, what="streaming again")
        sql("INSERT INTO %s(data) VALUES('after')" % table)
        assert bg.join() is None
        assert "'after'" in r.payloads[1]
        r.close()
    finally:
        proxy.close()


def test_idle_healthy_connection_is_not_presumed_dead(dsn, slot_name):
    r = Collector(dsn, slot=slot_name, recv_timeout=1.0, status_interval=3600)
    bg = Background(r)
    wait_for(lambda: r.streaming, what="streaming")
    # nothing to stream: each status update is a ping at half recv_timeout;
    # five answered ones span more than two whole recv_timeouts
    first = r.status_count
    wait_for(lambda: r.status_count >= first + 5, timeout=60,
             what="five pings")
    assert bg.thread.is_alive() and bg.error is None
    assert r.reconnections == 0
    r.stop()
    assert bg.join() is None
    r.close()
