"""Reference leaks: loops over the C core must not grow Python memory.

tracemalloc sees every object the core creates (payloads, messages,
exceptions, results); a missing Py_DECREF on any path shows as growth
proportional to the number of loops.

Kept beside scripts/run-refleak.sh (the exact check, on a debug CPython, in
CI): these run in every ordinary run of the suite, on the release
interpreter a developer has, and at volume (20,000 messages a loop), so a
per-message leak in the stream loop shows before CI.
"""

import gc
import tracemalloc

import pytest

import pylogicaldecoding._core as core

from fakeserver import FakeWalSender, keepalive, read_all, xlogdata
from readers import Collector, drain


def growth(work, loops):
    """Bytes still allocated after ``loops`` more runs of ``work``."""
    work()      # warm-up: caches, interned strings, first imports
    gc.collect()
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(loops):
            work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


class Counter(core.ReaderBase):
    def __init__(self, n):
        self.n = n
        self.count = 0

    def event(self, msg):
        self.count += 1
        msg.change      # the getters too
        msg.send_time
        msg.data_start_lsn
        if self.count % 100 == 0:
            self.ack()
        if self.count == self.n:
            self.stop()


def test_stream_loop_does_not_leak():
    frames = [xlogdata(i + 1, b"table public.t: INSERT: id[integer]:%d" % i)
              for i in range(2000)] + [keepalive(5000, reply=True)]

    def work():
        srv = FakeWalSender(frames, hold=5)
        r = Counter(2000)
        r.decoder = lambda msg: (msg.data_start, msg.payload)
        srv.connect(r)
        r.start_copy("START_REPLICATION SLOT fake LOGICAL 0/0")
        r._stream()
        assert r.count == 2000
        r.close()
        srv.thread.join(10)

    # 10 loops, 20000 messages: a leak of one object per message would be
    # hundreds of kilobytes
    assert growth(work, 10) < 64 * 1024


def test_error_paths_do_not_leak():
    def work():
        for frame in (b"w" + b"\0" * 10, b"k", b"?", xlogdata(1, b"\xff")):
            srv = FakeWalSender([frame], hold=1)
            r = core.ReaderBase()
            srv.connect(r)
            r.start_copy("START_REPLICATION SLOT fake LOGICAL 0/0")
            with pytest.raises(core.DecodingError):
                read_all(r, timeout=1)
            r.close()
            srv.thread.join(10)
        with pytest.raises(ValueError):
            core.parse_lsn("bad")
        with pytest.raises(core.ProgrammingError):
            core.conninfo_parse("a b")

    assert growth(work, 10) < 32 * 1024


def test_reader_cycles_on_real_server_do_not_leak(dsn, sql, slot_name, table):
    with Collector(dsn, slot=slot_name) as r:
        r.create_slot(snapshot="nothing")

    def work():
        sql("INSERT INTO %s(data) SELECT g::text FROM generate_series(1, 50) g"
            % table)
        got = drain(dsn, slot_name, sql, ack_commits=True)
        # the 50 rows, in one transaction (not "one COMMIT": autovacuum's
        # ANALYZE can add an empty transaction of its own)
        assert sum(1 for p in got.payloads if ": INSERT: " in p) == 50
        assert got.commits() >= 1
        with pytest.raises(core.DataError):
            with Collector(dsn, slot=slot_name) as r:
                r.execute("SELECT 1/0")

    assert growth(work, 15) < 64 * 1024
