"""The C module alone (pylogicaldecoding._core), without the Python Reader:
the wire parser against a fake walsender, the primitives, the helpers."""

import datetime
import gc
import select
import struct
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import pylogicaldecoding._core as core

from fakeserver import (FakeWalSender, drive, keepalive, read_all,
                        streaming_reader, xlogdata)


# -- helpers of the module --

def test_lsn_round_trip():
    assert core.parse_lsn("16/B374D848") == 0x16B374D848
    assert core.format_lsn(0x16B374D848) == "16/B374D848"
    assert core.parse_lsn("0/0") == 0
    assert core.format_lsn(2 ** 64 - 1) == "FFFFFFFF/FFFFFFFF"


@pytest.mark.parametrize("bad", ["", "/", "1/", "/1", "x/1", "1/1/1",
                                 "123456789/0", "1 /2", "1/2 "])
def test_lsn_parse_errors(bad):
    with pytest.raises(ValueError, match="invalid LSN"):
        core.parse_lsn(bad)


def test_lsn_format_errors():
    with pytest.raises(ValueError):
        core.format_lsn(-1)
    with pytest.raises(ValueError):
        core.format_lsn(2 ** 64)
    with pytest.raises(TypeError):
        core.format_lsn("1/1")


@given(st.integers(min_value=0, max_value=2 ** 64 - 1))
def test_lsn_property(n):
    assert core.parse_lsn(core.format_lsn(n)) == n
    assert core.parse_lsn(core.format_lsn(n).lower()) == n


def test_conninfo_parse():
    assert core.conninfo_parse("host=a port=5 dbname='x y'") == \
        {"host": "a", "port": "5", "dbname": "x y"}
    assert core.conninfo_parse("postgresql://u@h:7/d") == \
        {"user": "u", "host": "h", "port": "7", "dbname": "d"}
    with pytest.raises(core.ProgrammingError):
        core.conninfo_parse("host=a nonsense")
    assert "sslmode" in core.conninfo_keywords()
    assert core.libpq_version() >= 100000


def test_message_type():
    m = core.Message("hello", 5, 6, 0)
    assert (m.payload, m.data_start, m.wal_end) == ("hello", 5, 6)
    assert m.send_time == datetime.datetime(2000, 1, 1,
                                            tzinfo=datetime.timezone.utc)
    assert core.Message(b"x", send_time=-1).send_time == datetime.datetime(
        1999, 12, 31, 23, 59, 59, 999999, tzinfo=datetime.timezone.utc)
    assert m.change is None
    m.change = {"a": 1}
    assert m.change == {"a": 1}
    assert m.data_start_lsn == "0/5"
    with pytest.raises(TypeError):
        core.Message(1)
    with pytest.raises(AttributeError):
        m.payload = "x"


def test_message_gc_cycle():
    m = core.Message("x")
    m.change = [m]
    del m
    assert gc.collect() >= 1


def test_reader_base_defaults():
    r = core.ReaderBase()
    assert r.closed and not r.copying and not r.streaming
    assert r.status_interval == 10.0
    assert r.confirm_keepalives is True
    assert (r.flushed_lsn, r.received_lsn, r.server_wal_end) == (0, 0, 0)
    with pytest.raises(ValueError):
        r.status_interval = 0
    with pytest.raises(ValueError):
        r.status_interval = -1
    r.keepalive_interval = 0    # off is allowed
    with pytest.raises(core.InterfaceError):
        r.execute("SELECT 1")
    with pytest.raises(core.InterfaceError):
        r.ack()
    r.close()   # closing a closed reader is fine


# -- the wire parser, against a fake walsender --

def test_xlogdata_parsed():
    frames = [xlogdata(0x10, b"BEGIN 1", wal_end=0x20, send_time=1_000_000),
              xlogdata(0x11, "table x: é".encode()),
              xlogdata(0x12, b"")]
    r, srv = streaming_reader(frames)
    msgs = read_all(r, timeout=30, count=3)
    assert [m.payload for m in msgs] == ["BEGIN 1", "table x: é", ""]
    assert [m.data_start for m in msgs] == [0x10, 0x11, 0x12]
    assert msgs[0].wal_end == 0x20
    assert msgs[0].send_time_us == 1_000_000
    assert r.received_lsn == 0x12
    assert r.server_wal_end == 0x20
    assert r.message_count == 3
    r.close()


def test_binary_payload():
    r, srv = streaming_reader([xlogdata(1, b"\xff\x00")])
    r.binary = True
    assert read_all(r, timeout=30, count=1)[0].payload == b"\xff\x00"
    r.close()


def test_keepalive_reply_requested_is_answered_at_once():
    """A keepalive asking for a reply is answered while reading, before
    any periodic update would be due (status_interval an hour, the
    keepalive thread off); one that does not ask is not."""
    r, srv = streaming_reader([keepalive(0x99, reply=False),
                               keepalive(0x100, reply=True)], hold=60)
    r.status_interval = 3600
    r.keepalive_interval = 0
    r.confirm_keepalives = False
    deadline = time.monotonic() + 30
    while r.server_wal_end < 0x100 and time.monotonic() < deadline:
        assert r.read_message() is None
        select.select([r.fileno()], [], [], 0.05)
    assert r.server_wal_end == 0x100
    updates = srv.wait_status_updates(1, timeout=30)
    # before close(): the answer to the request, and only it
    assert len(updates) == 1 and r.status_count == 1
    written, flushed, applied, clock, reply = updates[0]
    assert (written, flushed, reply) == (0x100, 0, False)
    r.close()


def test_feedback_reports_only_acked_positions():
    r, srv = streaming_reader([xlogdata(0x10, b"a"), xlogdata(0x20, b"b")])
    r.confirm_keepalives = False
    msgs = []
    deadline = time.monotonic() + 30
    while len(msgs) < 2:
        assert time.monotonic() < deadline, msgs
        m = r.read_message()
        if m is None:
            select.select([r.fileno()], [], [], 0.05)
            continue
        msgs.append(m)
        if len(msgs) == 1:
            r.ack()
    r.send_feedback()
    with pytest.raises(core.ProgrammingError, match="beyond"):
        r.ack(0x21)
    r.close()
    srv.closed.wait(5)
    written, flushed, applied, clock, reply = srv.status_updates()[0]
    assert (written, flushed, applied) == (0x20, 0x10, 0x10)
    now = (time.time() - 946684800) * 1e6
    assert abs(clock - now) < 60e6


def test_confirm_keepalives_rule():
    """A keepalive position is confirmed only when all delivered is acked."""
    frames = [xlogdata(0x10, b"a"), keepalive(0x50),
              xlogdata(0x60, b"b"), keepalive(0x70)]
    r, srv = streaming_reader(frames)
    got = []
    deadline = time.monotonic() + 30
    # every frame read, the last keepalive (0x70) included
    while len(got) < 2 or r.server_wal_end < 0x70:
        assert time.monotonic() < deadline, (got, r.server_wal_end)
        m = r.read_message()
        if m is None:
            select.select([r.fileno()], [], [], 0.05)
            continue
        got.append(m)
        if m.data_start == 0x10:
            r.ack()             # acked: the keepalive at 0x50 may follow
    assert r.flushed_lsn == 0x50    # b (0x60) is not acked: 0x70 is not
    r.close()


@pytest.mark.parametrize("frame, what", [
    (b"w" + b"\0" * 23, "'w' message of 24 bytes"),
    (b"w", "'w' message of 1 bytes"),
    (b"k" + b"\0" * 16, "'k' message of 17 bytes"),
    (b"z123", "unknown message type 0x7a"),
    (b"\x00", "unknown message type 0x00"),
])
def test_malformed_messages(frame, what):
    r, srv = streaming_reader([xlogdata(0x10, b"ok"), frame])
    with pytest.raises(core.DecodingError, match=what):
        read_all(r, timeout=30)
    assert issubclass(core.DecodingError, core.Error)
    r.close()


def test_invalid_utf8_names_the_lsn():
    r, srv = streaming_reader([xlogdata(0xABC, b"\xff\xfe")])
    with pytest.raises(core.DecodingError, match="0/ABC"):
        read_all(r, timeout=30)
    r.close()


def test_server_closing_is_connection_lost():
    r, srv = streaming_reader([xlogdata(1, b"x")], hold=0)
    with pytest.raises(core.ConnectionLost):
        read_all(r, timeout=30)
    r.close()


def test_server_ending_copy_is_connection_lost():
    r, srv = streaming_reader([], end_copy=True)
    with pytest.raises(core.ConnectionLost, match="ended"):
        read_all(r, timeout=30)
    r.close()


frame_strategy = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda a, b, p, n: (xlogdata(a, p) if b else keepalive(a))[:n],
              st.integers(0, 2 ** 64 - 1), st.booleans(),
              st.binary(max_size=32), st.integers(0, 60)),
)


@settings(max_examples=2000, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frame_strategy, min_size=1, max_size=6))
def test_fuzz_frames_never_crash(frames):
    """Random and truncated frames: parsed, or a clear error; no crash,
    no hang. (Coverage-guided fuzzing from real streams: scripts/run-fuzz.sh.)"""
    msgs, error = drive(frames)
    assert error is not None        # at the latest, the end of the stream
    assert len(msgs) <= len(frames)


# -- the loop with the fake server --

class Slow(core.ReaderBase):
    def __init__(self):
        self.seen = []

    def event(self, msg):
        self.seen.append(msg.payload)
        time.sleep(1.0)
        self.ack()
        if len(self.seen) == 2:
            self.stop()


def test_keepalive_thread_reports_during_slow_event():
    """While event() is busy (the loop does not read or write), the
    keepalive thread sends status updates, never beyond what was acked."""
    class Waiting(core.ReaderBase):
        def __init__(self):
            self.seen = []
            self.during = []

        def event(self, msg):
            self.seen.append(msg.payload)
            # only the keepalive thread can send these 3 while we wait;
            # status_count is read meanwhile (under ThreadSanitizer: read
            # under the lock the thread counts under)
            n = len(srv.status_updates())
            count = self.status_count
            deadline = time.monotonic() + 60
            while self.status_count < count + 3:
                assert time.monotonic() < deadline, "no keepalive updates"
                time.sleep(0.01)
            self.during.append(
                len(srv.wait_status_updates(n + 3, timeout=60)) - n)
            self.ack()
            if len(self.seen) == 2:
                self.stop()

    srv = FakeWalSender([xlogdata(1, b"a"), xlogdata(2, b"b")], hold=120)
    r = Waiting()
    srv.connect(r)
    r.start_copy("START_REPLICATION SLOT fake LOGICAL 0/0")
    r.status_interval = 3600
    r.keepalive_interval = 0.2
    r._stream()
    assert r.seen == ["a", "b"]
    assert min(r.during) >= 3, r.during
    r.close()
    srv.closed.wait(10)
    updates = srv.status_updates()
    flushed = [u[1] for u in updates]
    assert flushed == sorted(flushed) and set(flushed) <= {0, 1, 2}
    assert flushed[-1] == 2


def test_stop_from_other_thread_wakes_the_loop():
    # nothing else would end the loop for 120 s (server, status interval)
    srv = FakeWalSender([], hold=120)
    r = Slow()
    r.status_interval = 3600
    srv.connect(r)
    r.start_copy("START_REPLICATION SLOT fake LOGICAL 0/0")
    threading.Timer(0.3, r.stop).start()
    t0 = time.monotonic()
    r._stream()
    assert time.monotonic() - t0 < 30
    assert not r.copying        # CopyDone was exchanged
    r.close()


def test_exception_in_event_closes():
    class Bad(core.ReaderBase):
        def event(self, msg):
            raise KeyError("boom")
    srv = FakeWalSender([xlogdata(1, b"a")], hold=5)
    r = Bad()
    srv.connect(r)
    r.start_copy("START_REPLICATION SLOT fake LOGICAL 0/0")
    with pytest.raises(KeyError, match="boom"):
        r._stream()
    assert r.closed


def test_decoder_fills_change():
    class Keep(core.ReaderBase):
        def event(self, msg):
            self.change = msg.change
            self.stop()
    srv = FakeWalSender([xlogdata(1, b"abc")], hold=5)
    r = Keep()
    r.decoder = lambda msg: msg.payload.upper()
    srv.connect(r)
    r.start_copy("START_REPLICATION SLOT fake LOGICAL 0/0")
    r._stream()
    assert r.change == "ABC"
    r.close()


# -- against the real server --

def test_primitives_on_real_server(dsn, sql, slot_name, table):
    params = core.conninfo_parse(dsn)
    params["replication"] = "database"
    r = core.ReaderBase()
    r.connection.connect(list(params), list(params.values()))
    names, rows = r.execute("IDENTIFY_SYSTEM")
    assert names == ("systemid", "timeline", "xlogpos", "dbname")
    r.execute('CREATE_REPLICATION_SLOT "%s" LOGICAL "test_decoding"'
              " (SNAPSHOT 'nothing')" % slot_name)
    with pytest.raises(core.DataError) as info:
        r.execute("SELECT 1/0")
    assert info.value.pgcode == "22012"
    r.start_copy('START_REPLICATION SLOT "%s" LOGICAL 0/0' % slot_name)
    sql("INSERT INTO %s(data) VALUES('x')" % table)
    msgs = read_all(r, timeout=30, count=3)
    assert [m.payload.split()[0] for m in msgs] == ["BEGIN", "table", "COMMIT"]
    r.ack()
    assert r.end_copy() is True
    assert not r.copying
    assert slot_status_confirmed(sql, slot_name) == msgs[-1].data_start
    r.close()


def slot_status_confirmed(sql, slot):
    rows = sql("SELECT confirmed_flush_lsn::text FROM pg_replication_slots"
               " WHERE slot_name = %s", slot)
    return core.parse_lsn(rows[0][0])
