"""Batching: while the server streams a backlog, the stream loop waits for a
buffer full of data (SO_RCVLOWAT) rather than waking up for every few
messages; it must undo that whenever the loop ends, or the next waits (the
end of the copy, commands) would sleep on small answers. A Unix socket
ignores SO_RCVLOWAT: there the loop pauses briefly before each wait of a
backlog instead, and never while it streams live changes. The CPU it saves
is measured by bench/bench_drain.py, not here: these tests count events
(waits, batched waits, pauses), never time."""

import asyncio
import socket

import pytest

import pylogicaldecoding as pld
from pylogicaldecoding.aio import AsyncReader

from readers import current_lsn
from sanitized import relaxed


class LowatProbe(pld.Reader):
    """Record the socket's SO_RCVLOWAT every 1000 messages."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.count = 0
        self.lowats = set()

    def lowat(self):
        s = socket.socket(fileno=self.fileno())
        try:
            return s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)
        finally:
            s.detach()      # the socket stays libpq's

    def event(self, msg):
        self.count += 1
        if self.count % 1000 == 0:
            self.lowats.add(self.lowat())


class AckingProbe(LowatProbe):
    """Ack the last COMMIT of the backlog: the next one starts after it."""

    def event(self, msg):
        super().event(msg)
        if self.count == 200002:
            self.ack()


def test_backlog_batches_then_resets(dsn, sql, slot_name, table):
    with LowatProbe(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    # Whether a backlog is read fast enough to batch depends on the CPU the
    # consumer gets: on a busy machine a drain may not. The reset is what
    # this test is about, so it drains backlogs until one batched (a few at
    # most), and checks the reset after each.
    for attempt in range(5):
        sql("INSERT INTO %s (data) SELECT 'row ' || i "
            "FROM generate_series(1, 200000) i" % table)
        end = current_lsn(sql)
        r = AckingProbe(dsn, slot=slot_name, decode=False, create_slot=False)
        try:
            r.start(until_lsn=end)
            assert r.count == 200002
            # the loop ended: back to waking up for every byte, connection
            # usable (the end of the copy did not wait for 16 kB)
            assert not r.closed
            assert r.lowat() == 1
            assert r.execute("SELECT 1")[1] == [("1",)]
        finally:
            r.close()
        if max(r.lowats) > 1:
            break
    else:
        raise AssertionError("5 backlogs of 200000 rows, never batched")


def test_live_stream_does_not_batch(dsn, sql, slot_name, table):
    """A few transactions at a time: every wait wakes up on any data."""
    seen = []

    class Live(LowatProbe):
        def event(self, msg):
            seen.append(self.lowat())
            if msg.payload.startswith("COMMIT"):
                if len(seen) >= 30:
                    self.stop()
                else:
                    sql("INSERT INTO %s (data) VALUES ('x')" % table)

    with Live(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    sql("INSERT INTO %s (data) VALUES ('x')" % table)
    r = Live(dsn, slot=slot_name, decode=False)
    try:
        r.start()
    finally:
        r.close()
    assert set(seen) == {1}
    # counted by the rule itself: the stream waited (its transactions
    # come one at a time), and none of its waits batched (the server was
    # never known to be ahead: true at any speed, sanitizers included)
    assert r.wait_count > 0
    assert r.batch_wait_count == 0 and r.batch_pause_count == 0


def unix_dsn(pg_server):
    """The test database over the server's Unix socket."""
    socket_dir = getattr(pg_server, "socket_dir", None)
    if not socket_dir:
        pytest.fail("the batching tests need the server's Unix socket; %r "
                    "has none (an external server named by the "
                    "environment?)" % (pg_server,))
    params = dict(pg_server.dsn_params, host=socket_dir)
    return " ".join("%s='%s'" % kv for kv in params.items())


BACKLOG = 100000
MESSAGES = BACKLOG + 2      # BEGIN, the rows, COMMIT


class Counter(pld.Reader):
    """Count; ack the backlog's COMMIT (the next backlog starts after it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.count = 0

    def event(self, msg):
        self.count += 1
        if self.count == MESSAGES:
            self.ack()


def drain_until_batched(sql, table, drain, attempts=5):
    """Write a backlog of BACKLOG rows in one transaction and drain it with
    ``drain(end)`` (which returns the reader), until a drain batched (at
    most ``attempts``: on a busy machine the consumer may not keep up
    closely enough to batch). On a sanitized build, one drain, batched or
    not (None): the trigger, wake-ups less than 0.2 ms apart, is beyond
    its speed."""
    for attempt in range(attempts):
        sql("INSERT INTO %s (data) SELECT 'row ' || i "
            "FROM generate_series(1, %d) i" % (table, BACKLOG))
        r = drain(current_lsn(sql))
        if r.batch_wait_count:
            return r
        if relaxed("that a backlog's drain batches"):
            return None
    raise AssertionError("%d backlogs of 100000 rows, never batched"
                         % attempts)


def test_unix_socket_backlog_pauses(pg_server, sql, slot_name, table):
    """Over a Unix socket a backlog's batched waits each follow a pause
    (the kernel ignores SO_RCVLOWAT there); over TCP none does."""
    dsn = unix_dsn(pg_server)
    with Counter(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")

    def drain(end):
        r = Counter(dsn, slot=slot_name, decode=False, create_slot=False)
        try:
            r.start(until_lsn=end)
            assert r.count == MESSAGES
            s = socket.socket(fileno=r.fileno())
            try:
                assert s.family == socket.AF_UNIX
            finally:
                s.detach()
            # the stream ended: the connection answers at once
            assert r.execute("SELECT 1")[1] == [("1",)]
        finally:
            r.close()
        return r

    r = drain_until_batched(sql, table, drain)
    if r is not None:
        assert r.batch_pause_count == r.batch_wait_count > 0
        # fewer waits than messages (each wait served several messages)
        assert r.wait_count < r.count

    def drain_tcp(end):
        r = Counter(pg_server.dsn, slot=slot_name, decode=False,
                    create_slot=False)
        try:
            r.start(until_lsn=end)
            assert r.count == MESSAGES
        finally:
            r.close()
        return r

    r = drain_until_batched(sql, table, drain_tcp)
    if r is not None:
        assert r.batch_pause_count == 0


def test_async_reader_unix_backlog_pauses(pg_server, sql, slot_name, table):
    """AsyncReader applies the same rule (the core's): it pauses on a Unix
    socket backlog too, and never on a live stream."""
    dsn = unix_dsn(pg_server)
    with Counter(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")

    async def drain_async(end):
        async with AsyncReader(dsn, slot=slot_name, decode=False,
                               create_slot=False) as r:
            n = 0
            async for msg in r.stream(until_lsn=end):
                n += 1
                if n == MESSAGES:
                    r.ack_nowait()
            assert n == MESSAGES
            return r._core

    r = drain_until_batched(sql, table,
                            lambda end: asyncio.run(drain_async(end)))
    if r is not None:
        assert r.batch_pause_count == r.batch_wait_count > 0

    async def live():
        async with AsyncReader(dsn, slot=slot_name, decode=False,
                               create_slot=False) as r:
            commits = 0
            sql("INSERT INTO %s (data) VALUES ('x')" % table)
            async for msg in r.stream():
                if msg.payload.startswith("COMMIT"):
                    commits += 1
                    if commits >= 30:
                        break
                    sql("INSERT INTO %s (data) VALUES ('x')" % table)
            return r._core

    core = asyncio.run(live())
    assert core.wait_count > 0
    assert core.batch_wait_count == 0 and core.batch_pause_count == 0


STALL_TRANSACTIONS = 20
STALL_ROWS = 5000       # rows per transaction committed during the stall


def test_catch_up_after_a_stall_does_not_batch(pg_server, sql, slot_name,
                                                table):
    """A stream that started with nothing behind it is live: when its
    consumer stalls (here event() itself commits transactions) and then
    catches up, the catch-up looks like a backlog (quick wake-ups, each
    with data) but the server was not known to be ahead, so no wait
    batches and none pauses: a live stream's latency never pays for
    batching. Over a Unix socket, where batching means a pause."""
    dsn = unix_dsn(pg_server)
    with Counter(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")
    expected = 3 + STALL_TRANSACTIONS * (STALL_ROWS + 2)

    class Stalling(pld.Reader):
        count = 0

        def event(self, msg):
            self.count += 1
            if self.count == 1:
                # the stall: transactions pile up while event() runs
                sql("DO $$ BEGIN FOR i IN 1..%d LOOP "
                    "INSERT INTO %s (data) SELECT 'row ' || j "
                    "FROM generate_series(1, %d) j; COMMIT; "
                    "END LOOP; END $$" % (STALL_TRANSACTIONS, table,
                                          STALL_ROWS))
            elif self.count == expected:
                self.ack()
                self.stop()

    sql("INSERT INTO %s (data) VALUES ('first')" % table)
    r = Stalling(dsn, slot=slot_name, decode=False, create_slot=False)
    try:
        r.start()
    finally:
        r.close()
    assert r.count == expected
    assert r.wait_count > 0
    assert r.batch_wait_count == 0 and r.batch_pause_count == 0
