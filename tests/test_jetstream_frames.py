"""The bytes the JetStream sink puts on the wire, without a server: the
rows' fast path in JetStreamSink.records() makes the same JSON text as
formats (the CLI's records), and every frame publish_nowait() queues is a
well-formed HPUB whose lengths, header lines and body are the record's
(plus the expected predecessor on an ordered stream), answered or not, and
so is the probe that asks again about the last record of a burst.
"""

import asyncio
import datetime
import decimal
import uuid

import pytest

import pylogicaldecoding as pld
from pylogicaldecoding import formats, jetstream
from pylogicaldecoding.jetstream import JetStreamSink

from test_jetstream_handoff import Msg

CT = datetime.datetime(2026, 3, 4, 5, 6, 7, 890,
                       tzinfo=datetime.timezone(datetime.timedelta(hours=2)))


def rows(xid):
    """Row changes of every shape the fast path takes or gives up on."""
    return [
        pld.Insert(schema="public", table="t", new={"id": 1, "s": "a"},
                   xid=xid),
        # escapes, non-ASCII, bool, None, a big int
        pld.Insert(schema="public", table="t",
                   new={"s": 'x"y\\z\n\t\x01\x1f\x7f é 日本', "b": True,
                        "f": False, "n": None, "i": -2 ** 70}, xid=xid),
        pld.Insert(schema="sch.ema", table='ta"ble*>', new={}, xid=None),
        pld.Update(schema="public", table="t", new={"id": 2},
                   old={"id": 1}, lsn=0x1234, xid=xid),
        pld.Delete(schema="public", table="t", old={"id": 2}, xid=xid),
        # values jsonable() converts: the general path
        pld.Insert(schema="public", table="t",
                   new={"f": 1.5, "nan": float("nan"),
                        "d": decimal.Decimal("1.10"), "ts": CT,
                        "u": uuid.UUID(int=5), "by": b"\x00\xff",
                        "a": [1, None, "x"], "j": {"k": True},
                        "t": pld.UNCHANGED}, xid=xid),
        pld.Update(schema="public", table="t", new={"t": pld.UNCHANGED},
                   old=None, xid=xid),
        # an xid of its own, not the transaction's: the general path
        pld.Insert(schema="public", table="t", new={"id": 3},
                   xid=(xid or 0) + 1),
    ]


def transactions():
    """(messages, the (xid, commit_time) of each row's transaction)."""
    msgs, ctx, lsn = [], [], 0x1_0000_0000
    for xid in (7, 2 ** 32 + 5, None):
        for begin_ct in (None, CT):
            lsn += 0x100
            msgs.append(Msg(lsn, pld.Begin(xid=xid, commit_time=begin_ct)))
            for i, ch in enumerate(rows(xid)):
                lsn += 0x10
                # a message without data_start: the change's LSN is used
                msgs.append(Msg(0 if i == 4 else lsn, ch))
                ctx.append((xid, begin_ct))
            lsn += 0x10
            msgs.append(Msg(lsn, pld.Commit(xid=xid, commit_time=CT)))
    return msgs, ctx


def test_row_bodies_are_the_json_records():
    """Each row's body is formats' JSON text of the change with the
    transaction's xid and commit time, byte for byte; ids and headers as
    documented."""
    sink = JetStreamSink("nats://127.0.0.1:4222", slot="s1")
    msgs, ctx = transactions()
    it = iter(ctx)
    n_rows = 0
    for msg in msgs:
        recs = sink.records(msg)
        assert len(recs) == 1
        rec = recs[0]
        if type(msg.change) not in (pld.Insert, pld.Update, pld.Delete):
            continue
        xid, ct = next(it)
        want = formats.dumps(formats.change_to_json(
            msg.change, lsn=msg.data_start, xid=xid, commit_time=ct,
            unchanged=formats.UNCHANGED_MARKER)).encode("utf-8")
        assert rec.body == want
        assert rec.body == formats.json_text(
            msg.change, lsn=msg.data_start, xid=xid, commit_time=ct
        ).encode("utf-8")
        lsn = msg.data_start or msg.change.lsn
        lines = [b"Nats-Msg-Id: " + rec.id]
        if xid is not None:
            lines.append(b"Pld-Xid: %d" % xid)
        lines.append(b"Pld-Kind: " + formats.kind_of(msg.change).encode())
        if lsn:
            lines.append(b"Pld-Lsn: " + pld.format_lsn(lsn).encode())
        if ct is not None:
            lines.append(b"Pld-Commit-Time: " + ct.isoformat().encode())
        assert rec.headers == b"".join(x + b"\r\n" for x in lines)
        n_rows += 1
    assert n_rows == len(ctx)


class StubConnection:
    """What publish_nowait() uses of nats-py's client, connected."""

    _status = 1
    _max_pending_size = 2 ** 30
    _pending_data_size = 0
    _flush_queue = None
    _max_payload = 1024 * 1024
    is_connected, is_closed = True, False
    max_payload = _max_payload

    def __init__(self):
        self._pending = []


def parse_frames(data):
    """HPUB frames -> [(subject, reply or None, header block, body)],
    checking the byte counts of each."""
    out = []
    while data:
        line, data = data.split(b"\r\n", 1)
        parts = line.split(b" ")
        assert parts[0] == b"HPUB" and len(parts) in (4, 5), line
        hlen, total = int(parts[-2]), int(parts[-1])
        payload, rest = data[:total], data[total:]
        assert rest[:2] == b"\r\n", "frame length mismatch"
        data = rest[2:]
        hdr, body = payload[:hlen], payload[hlen:]
        assert hdr.startswith(b"NATS/1.0\r\n") and hdr.endswith(b"\r\n\r\n")
        out.append((parts[1], parts[2] if len(parts) == 5 else None,
                    hdr[10:-2], body))
    return out


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("answer_every", [1, 3, 256])
def test_frames_carry_each_record_as_made(ordered, answer_every):
    """Every queued frame is the record (subject, header lines, body) with
    the id of the record before it as Nats-Expected-Last-Msg-Id on an
    ordered stream; frames that ask for an answer carry the inbox; the
    probe sent when the loop runs repeats the last unanswered record,
    asking."""
    loop = asyncio.new_event_loop()
    try:
        sink = JetStreamSink("nats://127.0.0.1:4222", slot="s1",
                             answer_every=answer_every)
        sink.nc, sink._loop, sink.ordered = StubConnection(), loop, ordered
        sink._inbox_b = b"_INBOX.x."
        sink._inbox_len = len(sink._inbox_b)
        msgs, _ = transactions()
        published, prev = [], None
        for i, msg in enumerate(msgs):
            for rec in sink.records(msg):
                fut = sink.publish_nowait(rec)
                assert isinstance(fut, asyncio.Future)
                published.append((rec, prev))
                prev = rec.id
            if i % 5 == 4:      # a burst ends: the probe goes out
                loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(asyncio.sleep(0))
        frames = parse_frames(b"".join(sink.nc._pending))
        assert sink.nc._pending_data_size == sum(map(len, sink.nc._pending))
    finally:
        loop.close()
    k = 0
    answered = probes = 0
    for rec, prev in published:
        want_hdr = rec.headers
        if ordered and prev is not None:
            want_hdr += b"Nats-Expected-Last-Msg-Id: " + prev + b"\r\n"
        subject, reply, hdr, body = frames[k]
        k += 1
        assert (subject, hdr, body) == (rec.subject, want_hdr, rec.body)
        if reply is not None:
            assert reply.startswith(b"_INBOX.x.")
            answered += 1
        elif k < len(frames) and frames[k][1] is not None \
                and frames[k][2] == hdr:
            # the probe: the same message again, asking
            assert (frames[k][0], frames[k][3]) == (subject, body)
            k += 1
            probes += 1
    assert k == len(frames)
    if not ordered or answer_every == 1:
        assert answered == len(published) and probes == 0
    else:
        assert probes > 0 and answered < len(published)
    assert jetstream.Record is type(published[0][0])
