"""The hand-off between a slot and a sink (pylogicaldecoding.jetstream.Handoff)
with a fake source and a fake sink: the window, the order of the acks,
retries after transient failures, fatal errors, stop and until_lsn.

The source is an async iterator of stream messages with ``await ack(lsn)``,
like AsyncReader; the sink follows the `Sink` protocol and lets each test
decide when and how every record is confirmed.
"""

import asyncio

import pytest

import pylogicaldecoding as pld
from pylogicaldecoding.jetstream import Handoff, Record, Retry, Sink, SinkError


class Msg:
    def __init__(self, data_start, change):
        self.data_start = data_start
        self.change = change


def transactions(n_tx, rows, start=0x1000):
    """Messages of n_tx transactions of `rows` inserts each; returns the
    messages and the commit LSNs."""
    msgs, commits, lsn = [], [], start
    for x in range(n_tx):
        xid = 700 + x
        msgs.append(Msg(lsn, pld.Begin(xid=xid)))
        lsn += 0x10
        for r in range(rows):
            msgs.append(Msg(lsn, pld.Insert(schema="public", table="t",
                                            new={"id": r}, xid=xid)))
            lsn += 0x10
        msgs.append(Msg(lsn, pld.Commit(xid=xid)))
        commits.append(lsn)
        lsn += 0x10
    return msgs, commits


class FakeSource:
    """Yields `msgs`, then waits (like a live slot) until closed."""

    batch = 1       # yield to the loop after this many messages

    def __init__(self, msgs, *, end=True):
        self.msgs = list(msgs)
        self.end = end
        self.acks = []
        self.delivered = 0

    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        for i, m in enumerate(self.msgs):
            self.delivered += 1
            yield m
            if i % self.batch == 0:
                await asyncio.sleep(0)
        if not self.end:
            await asyncio.Event().wait()

    async def ack(self, lsn):
        assert lsn <= self.msgs[self.delivered - 1].data_start, \
            "ack beyond what was delivered"
        assert not self.acks or lsn > self.acks[-1], "ack moved backwards"
        self.acks.append(lsn)


class FakeSink(Sink):
    """One record per message; the test settles the futures (or `auto`
    confirms them at once); `published` lists every publish, resends too."""

    def __init__(self, auto=False):
        self.auto = auto
        self.published = []
        self.futures = []
        self.resets = 0
        self.opened = self.closed = False
        self.max_open = 0

    async def open(self):
        self.opened = True

    def records(self, msg):
        return [Record("r%X" % msg.data_start, "s", b"", None)]

    async def publish(self, record):
        fut = asyncio.get_running_loop().create_future()
        self.published.append(record.id)
        self.futures.append((record.id, fut))
        self.max_open = max(self.max_open,
                            sum(1 for _, f in self.futures if not f.done()))
        if self.auto:
            fut.set_result(None)
        return fut

    async def reset(self):
        self.resets += 1
        for _, f in self.futures:
            if not f.done():
                f.set_exception(Retry("reset"))

    async def close(self):
        self.closed = True

    def open_futures(self):
        return [(rid, f) for rid, f in self.futures if not f.done()]


async def until(cond, timeout=10):
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_everything_confirmed_is_acked_at_each_commit():
    msgs, commits = transactions(5, 3)

    async def main():
        src, sink = FakeSource(msgs), FakeSink(auto=True)
        h = Handoff(src, sink, window=4)
        await h.run()
        return src, sink, h

    src, sink, h = run(main())
    assert sink.opened and sink.closed
    assert sink.published == ["r%X" % m.data_start for m in msgs]
    assert src.acks[-1] == commits[-1]
    assert set(src.acks) <= set(commits)
    assert h.confirmed == len(msgs) and sink.max_open <= 4


def test_window_bounds_records_in_flight_and_pauses_reading():
    msgs, commits = transactions(10, 9)

    async def main():
        src, sink = FakeSource(msgs, end=False), FakeSink()
        h = Handoff(src, sink, window=7)
        task = asyncio.ensure_future(h.run())
        await until(lambda: len(sink.futures) == 7)
        await asyncio.sleep(0.05)
        # full window: nothing more is published, nor read from the source
        assert len(sink.futures) == 7
        assert src.delivered <= 8
        for i in range(len(msgs)):
            await until(lambda: len(sink.futures) > i)
            sink.futures[i][1].set_result(None)
            assert len(sink.open_futures()) <= 7
        await until(lambda: src.acks and src.acks[-1] == commits[-1])
        h.stop()
        await task
        return sink

    sink = run(main())
    assert sink.max_open == 7


def test_no_ack_before_every_earlier_record_is_confirmed():
    msgs, commits = transactions(3, 2)     # 4 records per transaction

    async def main():
        src, sink = FakeSource(msgs, end=False), FakeSink()
        h = Handoff(src, sink, window=100)
        task = asyncio.ensure_future(h.run())
        await until(lambda: len(sink.futures) == len(msgs))
        # confirm the second and third transactions, not the first's last row
        for rid, f in sink.futures[4:]:
            f.set_result(None)
        for rid, f in sink.futures[:2]:
            f.set_result(None)
        await asyncio.sleep(0.05)
        assert src.acks == []          # the first transaction is not whole
        sink.futures[2][1].set_result(None)
        await asyncio.sleep(0.05)
        assert src.acks == []          # its commit is not confirmed
        sink.futures[3][1].set_result(None)
        await until(lambda: src.acks and src.acks[-1] == commits[-1])
        h.stop()
        await task
        return src

    src = run(main())
    assert src.acks[-1] == commits[-1]
    assert all(a in commits for a in src.acks)


def test_transient_failure_resends_every_unconfirmed_record_in_order():
    msgs, commits = transactions(4, 2)

    async def main():
        src, sink = FakeSource(msgs, end=False), FakeSink()
        h = Handoff(src, sink, window=100, ack_timeout=30)
        task = asyncio.ensure_future(h.run())
        n = len(msgs)
        await until(lambda: len(sink.futures) == n)
        for rid, f in sink.futures[:5]:   # first transaction and one more
            f.set_result(None)
        sink.futures[5][1].set_exception(Retry("leader lost"))
        for rid, f in sink.futures[7:]:    # stored after the lost one
            f.set_result(None)
        sink.futures[6][1].set_exception(Retry("leader lost"))
        await until(lambda: len(sink.futures) == n + (n - 5))
        assert sink.resets == 1
        assert src.acks == [commits[0]]       # nothing past the lost one
        # the resend is every record from the first unconfirmed, in order
        assert sink.published[n:] == sink.published[5:n]
        for rid, f in sink.futures[n:]:
            f.set_result(None)
        await until(lambda: src.acks[-1] == commits[-1])
        h.stop()
        await task
        return h

    h = run(main())
    assert h.retries == 1


def test_a_record_not_confirmed_in_time_is_sent_again():
    msgs, commits = transactions(1, 1)

    async def main():
        src, sink = FakeSource(msgs, end=False), FakeSink()
        h = Handoff(src, sink, window=10, ack_timeout=0.2)
        task = asyncio.ensure_future(h.run())
        await until(lambda: len(sink.futures) == 3)
        sink.futures[0][1].set_result(None)
        # the other two never answer: sent again after 0.2 s
        await until(lambda: len(sink.futures) == 5)
        assert src.acks == []
        assert sink.published[3:] == sink.published[1:3]
        for rid, f in sink.futures[3:]:
            f.set_result(None)
        await until(lambda: src.acks == [commits[0]])
        h.stop()
        await task

    run(main())


def test_fatal_error_stops_and_acks_nothing_after_it():
    msgs, commits = transactions(3, 1)

    async def main():
        src, sink = FakeSource(msgs, end=False), FakeSink()
        h = Handoff(src, sink, window=100)
        task = asyncio.ensure_future(h.run())
        await until(lambda: len(sink.futures) == len(msgs))
        for rid, f in sink.futures[:3]:
            f.set_result(None)
        sink.futures[3][1].set_exception(SinkError("message too large"))
        for rid, f in sink.futures[4:]:
            f.set_result(None)
        with pytest.raises(SinkError, match="too large"):
            await task
        return src, sink

    src, sink = run(main())
    assert src.acks == [commits[0]]
    assert sink.closed


def test_retry_timeout_gives_up_with_sink_unavailable():
    msgs, _ = transactions(1, 1)

    class Down(FakeSink):
        async def reset(self):
            await super().reset()
            raise Retry("no server")

    async def main():
        src, sink = FakeSource(msgs, end=False), Down()
        h = Handoff(src, sink, ack_timeout=0.05, retry_timeout=0.5)
        from pylogicaldecoding.jetstream import SinkUnavailable
        with pytest.raises(SinkUnavailable, match="nothing could be stored"):
            await h.run()
        return src

    assert run(main()).acks == []


def test_stop_ends_a_run_that_waits_for_an_unavailable_sink():
    """stop() (SIGTERM in the CLI) ends the run while the sink is down and
    retried without limit; only what was stored before is acked."""
    msgs, commits = transactions(2, 1)

    class Down(FakeSink):
        down = False

        async def publish(self, record):
            fut = await super().publish(record)
            if not self.down and record.id == "r%X" % msgs[3].data_start:
                self.down = True        # the second transaction never lands
            elif not self.down:
                fut.set_result(None)
            return fut

        async def reset(self):
            await super().reset()
            raise Retry("no server")

    async def main():
        src, sink = FakeSource(msgs, end=False), Down()
        h = Handoff(src, sink, ack_timeout=0.05)    # no retry_timeout
        task = asyncio.ensure_future(h.run())
        await until(lambda: h.retries > 0)
        h.stop()
        await asyncio.wait_for(task, 10)
        return src

    src = run(main())
    assert src.acks == [commits[0]]


def test_until_lsn_ends_after_acking_it():
    msgs, commits = transactions(4, 2)

    async def main():
        src, sink = FakeSource(msgs, end=False), FakeSink(auto=True)
        await Handoff(src, sink, until_lsn=commits[1]).run()
        return src

    src = run(main())
    assert src.acks[-1] >= commits[1]


def test_stop_waits_for_records_in_flight_then_acks():
    msgs, commits = transactions(2, 2)

    async def main():
        src, sink = FakeSource(msgs, end=False), FakeSink()
        h = Handoff(src, sink)
        task = asyncio.ensure_future(h.run())
        await until(lambda: len(sink.futures) == len(msgs))
        h.stop()
        await asyncio.sleep(0.05)
        assert not task.done()          # still waiting for confirmations
        for rid, f in sink.futures:
            f.set_result(None)
        await task
        return src

    src = run(main())
    assert src.acks[-1] == commits[-1]


def test_non_transactional_message_is_an_ack_point():
    msgs = [Msg(0x100, pld.Message(prefix="p", content=b"x",
                                   transactional=False, lsn=0x100))]

    async def main():
        src, sink = FakeSource(msgs), FakeSink(auto=True)
        await Handoff(src, sink).run()
        return src

    assert run(main()).acks == [0x100]


def test_until_lsn_reached_by_the_source_position_alone():
    """A bounded run ends when the source says it is past until_lsn (an
    AsyncReader's keepalive) and everything before is stored and acked,
    even when no message at or past it comes."""
    msgs, commits = transactions(2, 1)

    class Idle(FakeSource):
        server_wal_end = 0

    async def main():
        src, sink = Idle(msgs, end=False), FakeSink(auto=True)
        h = Handoff(src, sink, until_lsn=commits[-1] + 0x100)
        task = asyncio.ensure_future(h.run())
        await until(lambda: src.acks and src.acks[-1] == commits[-1])
        await asyncio.sleep(0.2)
        assert not task.done()          # the source is not past it yet
        src.server_wal_end = commits[-1] + 0x100
        await task
        return src

    assert run(main()).acks[-1] == commits[-1]


def test_a_record_stored_after_a_later_one_is_counted_as_a_reorder():
    msgs, commits = transactions(1, 2)

    async def main():
        src, sink = FakeSource(msgs, end=False), FakeSink()
        h = Handoff(src, sink)
        task = asyncio.ensure_future(h.run())
        await until(lambda: len(sink.futures) == len(msgs))
        for (rid, f), pos in zip(sink.futures, [1, 2, 4, 3]):
            f.set_result(pos)
        await until(lambda: src.acks == [commits[0]])
        h.stop()
        await task
        return h

    h = run(main())
    assert h.reorders == 1


class GroupingSink(FakeSink):
    """Records share one future until every `every`-th record (as the
    JetStream sink's records without an answer of their own do)."""

    every = 4

    def __init__(self):
        super().__init__()
        self.group = None

    async def publish(self, record):
        if self.group is None or self.group.done():
            self.group = asyncio.get_running_loop().create_future()
        fut = self.group
        self.published.append(record.id)
        self.futures.append((record.id, fut))
        if len(self.published) % self.every == 0:
            self.group = None
        return fut

    async def reset(self):
        await super().reset()
        self.group = None


def test_records_sharing_a_future_are_confirmed_and_resent_together():
    """Records confirmed by one future: the commits among them are acked
    only once it resolves; when it fails, every record not confirmed is
    sent again, one by one and in order, and the window counts each."""
    msgs, commits = transactions(3, 3)     # 15 records: 4 futures

    async def main():
        src, sink = FakeSource(msgs, end=False), GroupingSink()
        h = Handoff(src, sink, window=100, ack_timeout=30)
        task = asyncio.ensure_future(h.run())
        n = len(msgs)
        await until(lambda: len(sink.futures) == n)
        groups = list(dict.fromkeys(f for _, f in sink.futures))
        assert len(groups) == 4
        groups[0].set_result(None)       # records 0-3: no commit among them
        await asyncio.sleep(0.05)
        assert src.acks == [] and h.confirmed == 4
        groups[1].set_result(None)       # 4-7: the first commit (4)
        await until(lambda: src.acks == [commits[0]])
        groups[3].set_result(None)       # 12-14 stored, 8-11 lost
        groups[2].set_exception(Retry("leader lost"))
        await until(lambda: len(sink.futures) == n + (n - 8))
        assert sink.published[n:] == sink.published[8:n]
        assert src.acks == [commits[0]]     # nothing past the lost ones
        assert h._inflight == n - 8
        for f in dict.fromkeys(f for _, f in sink.futures[n:]):
            f.set_result(None)
        await until(lambda: src.acks[-1] == commits[-1])
        assert h.confirmed == n and h._inflight == 0
        h.stop()
        await task
        return h

    h = run(main())
    assert h.retries == 1
