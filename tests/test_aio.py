"""AsyncReader against the real server: the API, the event loop never
blocked, backpressure, cancellation, reconnection, under asyncio's default
loop and under uvloop."""

import array
import asyncio
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import termios
import textwrap
import threading
import time

import pytest

import pylogicaldecoding as pld
from pylogicaldecoding.aio import AsyncReader

from readers import current_lsn, slot_row, wait_for, wait_inactive
from sanitized import relaxed

LOOPS = ["asyncio", "uvloop"]


def run(coro, loop="asyncio"):
    """Run ``coro`` to completion on a new loop of the given kind."""
    if loop == "uvloop":
        import uvloop       # the test extra installs it
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    loop_obj = factory()
    try:
        return loop_obj.run_until_complete(coro)
    finally:
        loop_obj.run_until_complete(loop_obj.shutdown_asyncgens())
        loop_obj.close()


def make_slot(dsn, slot, plugin="test_decoding"):
    with pld.Reader(dsn, slot=slot, plugin=plugin) as r:
        r.create_slot(snapshot="nothing")


def commit_lsns(sql, slot):
    """Not used by the reader: what the slot would send, for checks."""
    return sql("SELECT lsn::text, data FROM pg_logical_slot_peek_changes("
               "%s, NULL, NULL)", slot)


def inactive_now(sql, slot):
    """The slot is free (checked once, no waiting)."""
    row = slot_row(sql, slot)
    return row is not None and row["active"] is False


class SilentServer:
    """A TCP listener that accepts and never answers: a connection attempt
    to it waits until connect_timeout (an unreachable server, without
    depending on the network of the machine)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.dsn = ("host=127.0.0.1 port=%d dbname=test user=postgres "
                    "sslmode=disable" % self.port)

    def close(self):
        self.sock.close()


def _run_delay():
    """Seconds this thread has spent runnable but waiting for a CPU
    (/proc/thread-self/schedstat, field 2), or None where the kernel does
    not say."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


class LagProbe:
    """A task sleeping 10 ms in a loop, recording how late it wakes.

    ``worst`` is the worst lateness as measured; ``worst_own`` leaves out
    the time the loop's thread spent waiting for a CPU meanwhile (the
    kernel's run-queue delay): on a machine loaded by other work that is
    the scheduler's doing, while a blocking call (the thread asleep in a
    syscall) or a long callback (the thread on a CPU) stays in full."""

    def __init__(self):
        self.worst = 0.0
        self.worst_own = 0.0
        self.wakes = 0
        self.task = asyncio.ensure_future(self._run())

    def reset(self):
        self.worst = self.worst_own = 0.0

    async def _run(self):
        while True:
            d0 = _run_delay()
            t0 = time.monotonic()
            await asyncio.sleep(0.01)
            late = time.monotonic() - t0 - 0.01
            d1 = _run_delay()
            self.wakes += 1
            self.worst = max(self.worst, late)
            own = late if d0 is None or d1 is None else late - (d1 - d0)
            self.worst_own = max(self.worst_own, own)

    async def stop(self):
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


# -- the API as written --

@pytest.mark.parametrize("loop", LOOPS)
def test_walkthrough_pgoutput(dsn, sql, slot_name, table, loop):
    """async with / async for / typed changes / ack at Commit / stop();
    on exit the slot is free and confirmed exactly up to the last ack."""
    pub = slot_name + "_pub"
    sql("CREATE PUBLICATION %s FOR TABLE %s" % (pub, table))
    make_slot(dsn, slot_name, "pgoutput")
    for i in range(3):
        sql("INSERT INTO %s(data) VALUES(%%s)" % table, "row%d" % i)

    async def main():
        got = []
        async with AsyncReader(dsn, slot=slot_name, plugin="pgoutput",
                               options={"publication_names": pub}) as r:
            async for msg in r:
                assert isinstance(msg, pld.StreamMessage)
                got.append(msg.change)
                if isinstance(msg.change, pld.Commit):
                    await r.ack()
                    assert r.flushed_lsn == msg.data_start
                    if sum(isinstance(c, pld.Commit) for c in got) == 3:
                        r.stop()
            acked = r.flushed_lsn
            assert not r.copying
        assert r.closed
        return got, acked

    try:
        got, acked = run(main(), loop)
    finally:
        sql("DROP PUBLICATION %s" % pub)
    inserts = [c for c in got if isinstance(c, pld.Insert)]
    assert [c.new["data"] for c in inserts] == ["row0", "row1", "row2"]
    assert isinstance(inserts[0].new["id"], int)
    assert inactive_now(sql, slot_name)
    assert slot_row(sql, slot_name)["confirmed_flush_lsn"] == acked


def test_stream_until_lsn_and_drain(dsn, sql, slot_name, table):
    make_slot(dsn, slot_name)
    sql("INSERT INTO %s(data) VALUES('a')" % table)
    middle = current_lsn(sql)
    sql("INSERT INTO %s(data) VALUES('b')" % table)

    async def main():
        async with AsyncReader(dsn, slot=slot_name) as r:
            first = [m.payload async for m in r.stream(until_lsn=middle)]
            # a drain is a new stream from the acked position: nothing was
            # acked, so it starts over and ends at the current WAL end
            rest = []
            async for m in r.drain():
                rest.append(m.payload)
                if isinstance(m.change, pld.Commit):
                    r.ack_nowait()
            again = [m.payload async for m in r.drain()]
        return first, rest, again

    first, rest, again = run(asyncio.wait_for(main(), 60))
    assert len(first) == 3 and "'a'" in first[1]
    assert len(rest) == 6 and "'b'" in rest[4]
    assert again == []


def test_ack_rules(dsn, sql, slot_name, table):
    make_slot(dsn, slot_name)
    sql("INSERT INTO %s(data) VALUES('a')" % table)
    end = current_lsn(sql)

    async def main():
        r = AsyncReader(dsn, slot=slot_name)
        with pytest.raises(pld.InterfaceError):
            r.ack_nowait()                      # outside the stream
        async with r:
            async for msg in r.stream(until_lsn=end):
                with pytest.raises(pld.ProgrammingError, match="beyond"):
                    await r.ack(msg.data_start + 1)
                if isinstance(msg.change, pld.Commit):
                    await r.ack(msg.data_start)
                    await r.ack(msg.data_start - 1)     # never backwards
                    assert r.flushed_lsn == msg.data_start
                    commit = msg.data_start
        return commit

    commit = run(asyncio.wait_for(main(), 60))
    assert slot_row(sql, slot_name)["confirmed_flush_lsn"] == commit


def test_stop_from_another_thread_and_task(dsn, slot_name):
    make_slot(dsn, slot_name)

    async def main(from_thread):
        async with AsyncReader(dsn, slot=slot_name) as r:
            async def stopper():
                await asyncio.sleep(0.5)
                if from_thread:
                    threading.Thread(target=r.stop).start()
                else:
                    r.stop()
            task = asyncio.ensure_future(stopper())
            t0 = time.monotonic()
            async for _ in r:
                pass
            await task
            return time.monotonic() - t0

    assert run(asyncio.wait_for(main(True), 30)) < 10
    assert run(asyncio.wait_for(main(False), 30)) < 10


def test_subclass_style(dsn, sql, slot_name, table):
    make_slot(dsn, slot_name)
    sql("INSERT INTO %s(data) VALUES('x')" % table)
    sql("INSERT INTO %s(data) VALUES('boom')" % table)
    end = current_lsn(sql)

    class R(AsyncReader):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.changes = []

        async def event(self, msg):
            await asyncio.sleep(0)
            self.changes.append(msg.change)
            if isinstance(msg.change, pld.Insert) and \
                    msg.change.new["data"] == "boom":
                raise RuntimeError("boom")
            if isinstance(msg.change, pld.Commit):
                await self.ack()

    async def main():
        r = R(dsn, slot=slot_name)
        with pytest.raises(RuntimeError, match="boom"):
            await r.start(until_lsn=end)
        assert r.closed
        first_commit = r.flushed_lsn
        with pytest.raises(NotImplementedError):
            await AsyncReader(dsn, slot=slot_name).start(until_lsn=end)
        return first_commit

    acked = run(asyncio.wait_for(main(), 60))
    assert slot_row(sql, slot_name)["confirmed_flush_lsn"] == acked
    rows = sql("SELECT data FROM pg_logical_slot_peek_changes(%s, NULL, "
               "NULL)", slot_name)
    assert any("'boom'" in d for (d,) in rows)     # not confirmed


def test_commands(dsn, slot_name):
    async def main():
        async with AsyncReader(dsn, slot=slot_name) as r:
            info = await r.create_slot(snapshot="nothing")
            assert info.slot_name == slot_name and info.consistent_point > 0
            with pytest.raises(pld.SlotExists):
                await r.create_slot()
            status = await r.slot_status()
            assert status["plugin"] == "test_decoding"
            assert status["active"] is False
            system = await r.identify_system()
            assert system.dbname == "test" and system.xlogpos > 0
            names, rows = await r.execute("SELECT 1 AS one")
            assert names == ("one",) and rows == [("1",)]
            await r.drop_slot()
            with pytest.raises(pld.SlotNotFound):
                await r.drop_slot()
            await r.drop_slot(missing_ok=True)
            assert await r.slot_status() is None
            with pytest.raises(pld.DatabaseError):
                await r.execute("SELECT * FROM no_such_table")
            # the connection is still usable after a failed command
            assert (await r.execute("SELECT 2"))[1] == [("2",)]
        assert r.closed

    run(asyncio.wait_for(main(), 60))


def test_bad_arguments_are_refused():
    with pytest.raises(pld.InvalidName):
        AsyncReader("", slot="Bad Name")
    with pytest.raises(pld.InterfaceError, match="temporary"):
        AsyncReader("", slot="s", temporary=True, reconnect=True)


def test_bad_password_is_connection_failed_without_secret(pg_server,
                                                          slot_name):
    params = dict(pg_server.dsn_params)
    params["user"] = "no_such_user_x"

    async def main():
        r = AsyncReader(slot=slot_name, password="s3cr3t-pw", **params)
        with pytest.raises(pld.ConnectionFailed) as info:
            await r.connect()
        assert "s3cr3t-pw" not in str(info.value)
        assert "s3cr3t-pw" not in repr(r)
        assert r.closed

    run(asyncio.wait_for(main(), 30))


# -- the event loop is never blocked --

@pytest.mark.parametrize("loop", LOOPS)
def test_loop_never_blocked(dsn, sql, slot_name, table, loop):
    """A task sleeping 10 ms never wakes more than 50 ms late while an
    AsyncReader connects to a server that never answers (connect_timeout=3),
    runs its commands and drains a 20k-change backlog (300k: the
    benchmark, bench/bench_async.py --phases lag).

    A blocking call shows up as seconds of lateness (3 s for the connect).
    On a machine loaded by other work a wake-up can also be late for want
    of a CPU: the goal applies to the lateness that the loop's thread did
    not spend waiting for a CPU (LagProbe.worst_own); both are printed.
    On a sanitized build (PLD_SANITIZED=1) the bound is 2 s: a blocked
    connect (3 s late) still fails it."""
    limit = 0.05
    if relaxed("a lateness under 50 ms (under 2 s instead)"):
        limit = 2.0
    pub = slot_name + "_pub"
    sql("CREATE PUBLICATION %s FOR TABLE %s" % (pub, table))
    silent = SilentServer()

    async def main(slot):
        probe = LagProbe()
        lags = {}
        t0 = time.monotonic()
        r = AsyncReader(silent.dsn, slot=slot, connect_timeout=3)
        with pytest.raises(pld.ConnectionFailed, match="timeout"):
            await r.connect()
        waited = time.monotonic() - t0
        lags["connect"] = (probe.worst_own, probe.worst)
        probe.reset()
        async with AsyncReader(dsn, slot=slot, plugin="pgoutput",
                               options={"publication_names": pub}) as r:
            for _ in range(5):
                await r.identify_system()
                await r.slot_status()
            lags["commands"] = (probe.worst_own, probe.worst)
            probe.reset()
            n = 0
            async for msg in r.drain():
                n += 1
                if isinstance(msg.change, pld.Commit):
                    await r.ack()
            lags["drain"] = (probe.worst_own, probe.worst)
        await probe.stop()
        return waited, n, lags, probe.wakes

    make_slot(dsn, slot_name, "pgoutput")
    try:
        sql("INSERT INTO %s(data) SELECT 'v' || g FROM "
            "generate_series(1, 20000) g" % table)
        waited, n, lags, wakes = run(asyncio.wait_for(main(slot_name), 120),
                                     loop)
    finally:
        silent.close()
        sql("DROP PUBLICATION %s" % pub)
    print("worst lateness (own, measured) per phase", lags)
    assert 2.5 < waited < 10
    assert n == 20003      # Relation, Begin, 20000 Insert, Commit
    assert wakes > 100
    assert max(own for own, _ in lags.values()) < limit, lags


class BatchingCore:
    """Stands for the C core in `AsyncReader._idle_wait()` while the
    batching rule holds (a backlog: every wait capped at 0.5 ms, as
    reader_type.c's rule says), on a socket where nothing arrives."""

    status_interval = 10.0

    def __init__(self, fd, pause=0.0):
        self.fd = fd
        self.pause = pause
        self.waits = 0

    def fileno(self):
        return self.fd

    def _liveness_before(self):
        return -1.0

    def _batch_before_wait(self):
        self.waits += 1
        return 0.0005, self.pause

    def _liveness_after(self, ready):
        pass


class _Yielded:
    yielded = 0.0


class _StreamStub:
    it = _Yielded()


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("pause", [0.0, 0.0002], ids=["tcp", "unix"])
def test_batched_waits_do_not_spin(loop, pause):
    """A batched wait (the rule caps it below a millisecond; on a Unix
    socket a shorter pause comes first) waits on the loop's clock: uvloop
    rounds a timer under 0.5 ms to zero, and a wait that never waited spun
    the loop at 100% CPU for as long as a backlog batched. Over 0.3 s of
    silence: at most one wait per 0.5 ms (the fixed code makes about one
    per ms; the spinning one thousands)."""
    a, b = socket.socketpair()
    r = AsyncReader("", slot="s")
    r._core = core = BatchingCore(a.fileno(), pause)

    async def main():
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            await r._idle_wait(_StreamStub())

    try:
        run(main(), loop)
    finally:
        a.close()
        b.close()
    assert 0 < core.waits <= 0.3 / 0.0005, core.waits


@pytest.mark.parametrize("loop", LOOPS)
def test_idle_reader_sleeps(dsn, slot_name, loop):
    """An AsyncReader streaming a slot where nothing happens waits on the
    socket: over 1 s it wakes up a few times at most (its status updates,
    every 10 s here) and uses next to no CPU."""
    make_slot(dsn, slot_name)

    async def main():
        async with AsyncReader(dsn, slot=slot_name) as r:
            task = asyncio.ensure_future(_consume(r))
            await wait_for_async(lambda: r.copying and r._waiter is not None)
            waits0, cpu0 = r._core.wait_count, time.process_time()
            await asyncio.sleep(1.0)
            waits, cpu = (r._core.wait_count - waits0,
                          time.process_time() - cpu0)
            r.stop()
            await asyncio.wait_for(task, 30)
        return waits, cpu

    waits, cpu = run(main(), loop)
    assert waits <= 3, waits
    assert cpu < 0.1, cpu


@pytest.mark.parametrize("loop", LOOPS)
def test_busy_consumer_leaves_the_loop_idle(dsn, sql, slot_name, table,
                                            loop):
    """While the consumer awaits something slow with the rest of a backlog
    waiting in the socket, nothing polls the socket: the loop sleeps (a
    reader callback left registered would run at every turn of the loop,
    at 100% CPU), and the socket is not read meanwhile (backpressure)."""
    make_slot(dsn, slot_name)
    sql("INSERT INTO %s(data) SELECT 'v' || g FROM generate_series(1, 5000) g"
        % table)
    end = current_lsn(sql)

    async def main():
        n = 0
        async with AsyncReader(dsn, slot=slot_name) as r:
            async for _ in r.stream(until_lsn=end):
                n += 1
                if n == 1:
                    cpu0 = time.process_time()
                    await asyncio.sleep(1.0)
                    cpu = time.process_time() - cpu0
                    # the server sent meanwhile; nobody read
                    assert socket_queue(r._core.fileno()) > 0
        return n, cpu

    n, cpu = run(main(), loop)
    assert n == 5002
    assert cpu < 0.1, cpu


def socket_queue(fd):
    """Bytes received by the socket and not read yet (FIONREAD)."""
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


async def _consume(r):
    async for _ in r:
        pass


async def wait_for_async(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


# -- the keepalive thread; backpressure --

def test_slow_consumer_survives_wal_sender_timeout(dsn, sql, slot_name,
                                                   table):
    """The consumer awaits 3 s on a message against a 1 s
    wal_sender_timeout: not dropped, nothing confirmed beyond the acks."""
    make_slot(dsn, slot_name)
    sql("INSERT INTO %s(data) VALUES('1')" % table)
    sql("INSERT INTO %s(data) VALUES('2')" % table)
    start = slot_row(sql, slot_name)["confirmed_flush_lsn"]

    async def main():
        confirmed_during = []
        commits = 0
        async with AsyncReader(dsn + " options='-c wal_sender_timeout=1s'",
                               slot=slot_name) as r:
            pid = r.backend_pid if not r.closed else None
            async for msg in r:
                pid = pid or r.backend_pid
                if "'1'" in msg.payload:
                    await asyncio.sleep(3)
                    confirmed_during.append(
                        slot_row(sql, slot_name)["confirmed_flush_lsn"])
                if isinstance(msg.change, pld.Commit):
                    commits += 1
                    await r.ack()
                    if commits == 2:
                        r.stop()
            assert r.backend_pid == pid           # the same connection
            assert r.wal_sender_timeout == 1.0
            return confirmed_during, r.flushed_lsn

    during, acked = run(asyncio.wait_for(main(), 60))
    assert during == [start]
    assert slot_row(sql, slot_name)["confirmed_flush_lsn"] == acked


RSS_CHILD = textwrap.dedent("""
    import asyncio, json, sys
    import pylogicaldecoding as pld

    def rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024

    async def main(dsn, slot, pub, count):
        n, idle, peak = 0, None, 0
        async with pld.AsyncReader(
                dsn, slot=slot, plugin="pgoutput",
                options={"publication_names": pub}) as r:
            async for msg in r:
                n += 1
                await asyncio.sleep(0.001)
                if n == 200:
                    idle = rss()
                elif n > 200 and n % 50 == 0:
                    peak = max(peak, rss())
                if n >= count:
                    break
        print(json.dumps({"idle": idle, "peak": peak, "n": n}))

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
""")


def test_backpressure_rss(dsn, sql, slot_name, table):
    """A consumer sleeping 1 ms per message over a 200k-change backlog:
    the socket is read only as fast as it iterates, so its RSS stays
    within 10 MiB of idle (here over its first 3000 messages; the
    benchmark, bench/bench_async.py --rss, goes through 1M)."""
    make_slot(dsn, slot_name, "pgoutput")
    pub = slot_name + "_pub"
    sql("CREATE PUBLICATION %s FOR TABLE %s" % (pub, table))
    sql("INSERT INTO %s(data) SELECT repeat('x', 100) || g FROM "
        "generate_series(1, 200000) g" % table)
    try:
        out = subprocess.run(
            [sys.executable, "-c", RSS_CHILD, dsn, slot_name, pub, "3000"],
            capture_output=True, text=True, timeout=120)
    finally:
        sql("DROP PUBLICATION %s" % pub)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["n"] == 3000
    print("RSS", res)
    # ASan keeps freed memory in quarantine (256 MiB): RSS grows anyway
    if not relaxed("the RSS bound"):
        assert res["peak"] - res["idle"] < 10 * 1024 * 1024, res


# -- cancellation --

def _two_transactions(sql, table, big=3000):
    sql("INSERT INTO %s(data) VALUES('small')" % table)
    sql("INSERT INTO %s(data) SELECT 'big' || g FROM generate_series(1, %d)"
        " g" % (table, big))


def _check_redelivered(dsn, sql, slot, big=3000):
    """The next reader gets the whole unacked (big) transaction again."""
    end = current_lsn(sql)

    async def main():
        async with AsyncReader(dsn, slot=slot) as r:
            return [m.payload async for m in r.stream(until_lsn=end)]

    payloads = run(asyncio.wait_for(main(), 60))
    assert payloads[0].startswith("BEGIN")
    assert sum("'big" in p for p in payloads) == big
    assert not any("'small'" in p for p in payloads)


@pytest.mark.parametrize("loop", LOOPS)
def test_cancel_mid_transaction(dsn, sql, slot_name, table, loop):
    """Cancelling the consuming task in the middle of a transaction ends the
    stream (CopyDone), closes the connection, frees the slot at once and
    confirms nothing beyond the last ack."""
    make_slot(dsn, slot_name)
    _two_transactions(sql, table)

    async def main():
        inside = asyncio.Event()
        reader = AsyncReader(dsn, slot=slot_name)
        acked = []

        async def consume():
            async with reader:
                n = 0
                async for msg in reader:
                    if isinstance(msg.change, pld.Commit):
                        await reader.ack()
                        acked.append(msg.data_start)
                    if "'big" in msg.payload:
                        n += 1
                        if n == 100:
                            inside.set()
                        await asyncio.sleep(0.001)

        task = asyncio.ensure_future(consume())
        await asyncio.wait_for(inside.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        free = inactive_now(sql, slot_name)
        return reader, acked, free

    reader, acked, free = run(asyncio.wait_for(main(), 60), loop)
    assert reader.closed and free
    assert len(acked) == 1
    assert slot_row(sql, slot_name)["confirmed_flush_lsn"] <= \
        _big_begin(sql, slot_name)
    assert reader.flushed_lsn == acked[0]
    _check_redelivered(dsn, sql, slot_name)


def _big_begin(sql, slot):
    rows = sql("SELECT lsn::text, data FROM pg_logical_slot_peek_changes("
               "%s, NULL, NULL)", slot)
    for lsn, data in rows:
        if "'big1'" in data:
            return pld.parse_lsn(lsn)
    raise AssertionError("the big transaction is not in the slot")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout")
def test_asyncio_timeout_expires_mid_stream(dsn, sql, slot_name, table):
    make_slot(dsn, slot_name)
    _two_transactions(sql, table, big=500)

    async def main():
        acked = None
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2):
                async with AsyncReader(dsn, slot=slot_name) as r:
                    async for msg in r:
                        if isinstance(msg.change, pld.Commit) and \
                                acked is None:
                            await r.ack()
                            acked = msg.data_start
                        await asyncio.sleep(0.01)   # 500 rows: > 2 s
        return r, acked, inactive_now(sql, slot_name)

    r, acked, free = run(asyncio.wait_for(main(), 60))
    assert r.closed and free and r.flushed_lsn == acked
    _check_redelivered(dsn, sql, slot_name, big=500)


@pytest.mark.parametrize("loop", LOOPS)
def test_cancel_mid_connect_and_mid_command(dsn, slot_name, loop):
    silent = SilentServer()

    async def main():
        r = AsyncReader(silent.dsn, slot=slot_name, connect_timeout=30)
        task = asyncio.ensure_future(r.connect())
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - t0 < 1 and r.closed
        # mid-command: DROP_REPLICATION_SLOT ... WAIT on a slot in use
        holder = AsyncReader(dsn, slot=slot_name)
        stream = holder.__aiter__()
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(1.0)        # streaming (idle) now
        dropper = AsyncReader(dsn, slot=slot_name)
        task = asyncio.ensure_future(dropper.drop_slot(wait=True))
        await asyncio.sleep(0.5)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert dropper.closed           # state unknown: closed
        # the holder's stream is unharmed; stopping it ends it cleanly
        # (the server may still complete the dropped-out DROP ... WAIT
        # once the slot is free: closing does not cancel a command)
        holder.stop()
        with pytest.raises(StopAsyncIteration):
            await first
        assert not holder.closed and not holder.copying
        await holder.close()

    make_slot(dsn, slot_name)
    try:
        run(asyncio.wait_for(main(), 60), loop)
    finally:
        silent.close()


CTRL_C_CHILD = textwrap.dedent("""
    import asyncio, sys
    import pylogicaldecoding as pld

    async def main(dsn, slot):
        async with pld.AsyncReader(dsn, slot=slot) as r:
            async for msg in r:
                if isinstance(msg.change, pld.Commit):
                    await r.ack()
                    print("acked", msg.data_start, flush=True)
                if "'big" in msg.payload:
                    await asyncio.sleep(0.01)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def test_ctrl_c_under_asyncio_run(dsn, sql, slot_name, table):
    make_slot(dsn, slot_name)
    _two_transactions(sql, table, big=2000)
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_CHILD, dsn, slot_name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("acked"), proc.stderr.read()
        acked = int(line.split()[1])
        time.sleep(0.5)             # inside the big transaction
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err
    assert inactive_now(sql, slot_name)
    assert slot_row(sql, slot_name)["confirmed_flush_lsn"] <= \
        _big_begin(sql, slot_name)
    assert slot_row(sql, slot_name)["confirmed_flush_lsn"] >= acked
    _check_redelivered(dsn, sql, slot_name, big=2000)


# -- reconnection --

@pytest.mark.parametrize("loop", LOOPS)
def test_reconnect_after_server_restart(pg_server, dsn, sql, slot_name,
                                        table, loop):
    if not pg_server.can_restart:
        pytest.fail("this test restarts the server: unset PLD_TEST_DSN")
    make_slot(dsn, slot_name)
    sql("INSERT INTO %s(data) VALUES('before')" % table)

    async def main():
        hooks = []
        values = []

        class R(AsyncReader):
            async def on_reconnect(self, attempt, error, delay):
                await asyncio.sleep(0)
                hooks.append((attempt, type(error).__name__))

        async with R(dsn, slot=slot_name, reconnect=pld.Reconnect(
                initial_delay=0.05, max_delay=0.5)) as r:
            async for msg in r:
                if isinstance(msg.change, pld.Insert):
                    values.append(msg.change.new["data"])
                    if msg.change.new["data"] == "before":
                        await asyncio.get_running_loop().run_in_executor(
                            None, pg_server.restart)
                        sql("INSERT INTO %s(data) VALUES('after')" % table)
                if isinstance(msg.change, pld.Commit):
                    await r.ack()
                    if "after" in values:
                        r.stop()
            return hooks, values, r.reconnections

    hooks, values, reconnections = run(asyncio.wait_for(main(), 120), loop)
    assert values[0] == "before" and values[-1] == "after"
    assert reconnections >= 1 and hooks and hooks[0][0] == 1
    assert hooks[0][1] in ("ConnectionLost", "ConnectionFailed")


def test_silent_network_is_detected(pg_server, dsn, sql, slot_name, table):
    """A network that silently stops carrying packets: the AsyncReader asks
    the server for a reply at half of recv_timeout, gives the connection up
    after all of it, and reconnects (the liveness rule of Reader)."""
    from proxy import Proxy
    make_slot(dsn, slot_name)
    proxy = Proxy(pg_server.port)
    proxied = ("host=127.0.0.1 port=%d dbname=test user=postgres "
               "sslmode=disable" % proxy.port)

    async def main():
        got = []
        lost = []

        class R(AsyncReader):
            async def on_reconnect(self, attempt, error, delay):
                lost.append((time.monotonic(), type(error).__name__))
                proxy.thaw()

        async with R(proxied, slot=slot_name, recv_timeout=1.0,
                     reconnect=pld.Reconnect(initial_delay=0.05)) as r:
            it = r.__aiter__()
            first = asyncio.ensure_future(it.__anext__())
            await asyncio.sleep(0.5)            # streaming, idle
            t0 = time.monotonic()
            proxy.freeze()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                None, sql, "INSERT INTO %s(data) VALUES('after')" % table)
            msg = await asyncio.wait_for(first, 20)
            got.append(msg.payload)
            async for msg in it:
                got.append(msg.payload)
                if isinstance(msg.change, pld.Commit):
                    break
        return t0, lost, got

    try:
        t0, lost, got = run(asyncio.wait_for(main(), 60))
    finally:
        proxy.close()
    assert lost and lost[0][1] == "ConnectionLost"
    assert lost[0][0] - t0 < 3
    assert any("'after'" in p for p in got)


# -- the non-blocking primitives of the C core, used directly --

def test_core_non_blocking_primitives(pg_server):
    """Connection.connect_start/connect_poll, send_query/poll_result and
    flush on a reader's connection, driven with select() as the event loop
    does."""
    import select
    from pylogicaldecoding import _core
    params = dict(pg_server.dsn_params)
    params["replication"] = "database"
    keys = list(params)
    r = _core.ReaderBase()
    conn = r.connection
    assert isinstance(conn, _core.Connection)
    assert conn.status == "closed" and conn.owner_pid is None
    with pytest.raises(pld.InterfaceError):
        conn.poll_result()                   # no command running
    conn.connect_start(keys, [str(params[k]) for k in keys])
    assert conn.status == "connecting" and r.closed is False
    with pytest.raises(pld.InterfaceError, match="being opened"):
        r.execute("SELECT 1")
    deadline = time.monotonic() + 30
    state = 2
    while state:
        fd = conn.fileno()
        rl, wl = ([fd], []) if state == 1 else ([], [fd])
        select.select(rl, wl, [], 1.0)
        assert time.monotonic() < deadline
        state = conn.connect_poll()
    assert conn.status == "ready" and conn.owner_pid == os.getpid()
    if conn.send_query("SELECT 41 + 1 AS answer"):
        while conn.flush():
            select.select([], [conn.fileno()], [], 1.0)
    assert conn.status == "command"
    with pytest.raises(pld.InterfaceError, match="command is running"):
        r.execute("SELECT 1")                # the blocking path refuses
    result = None
    while result is None:
        select.select([conn.fileno()], [], [], 1.0)
        result = conn.poll_result()
        assert time.monotonic() < deadline
    assert result == (("answer",), [("42",)]) and conn.status == "ready"
    conn.send_query("SELECT * FROM no_such_table")
    with pytest.raises(pld.DatabaseError, match="no_such_table"):
        while conn.poll_result() is None:
            select.select([conn.fileno()], [], [], 1.0)
    assert r.execute("SELECT 1")[1] == [("1",)]  # still usable
    r.close()
    assert conn.status == "closed" and r.closed


# -- the example service --

def test_asyncio_consumer_example_demo():
    """examples/asyncio_consumer.py --demo: the in-memory view served over
    HTTP matches the table after inserts, updates, deletes and a key
    change (it starts its own throwaway server)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, os.path.join(root, "examples", "asyncio_consumer.py"),
         "--demo"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "the view matches the table" in out.stdout
    assert '"4": {"id": 4, "name": "pad", "qty": 7}' in out.stdout
