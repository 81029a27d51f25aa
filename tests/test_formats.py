"""Output formats (pylogicaldecoding.formats): typed changes as JSON records
and Debezium envelopes, on built changes and on a real stream."""

import datetime as dt
import ipaddress
import json
import uuid
from decimal import Decimal

import pytest

import pylogicaldecoding as pld
from pylogicaldecoding import formats

from decode_support import (
    capture, create_slot, create_type_table, expected_row, insert_type_row)

UTC = dt.timezone.utc


def roundtrip(record):
    """The record as a consumer reads it back: strict JSON, one line."""
    text = formats.dumps(record)
    assert "\n" not in text
    return json.loads(text, parse_constant=lambda c: pytest.fail(
        "non-standard JSON constant %s" % c))


# -- values --

@pytest.mark.parametrize("value, want", [
    (None, None), (True, True), (0, 0), (-(2 ** 63), -(2 ** 63)),
    ("é\n", "é\n"), (1.5, 1.5),
    (float("nan"), "NaN"), (float("inf"), "Infinity"),
    (float("-inf"), "-Infinity"),
    (Decimal("12345678901234567890.0123456789"),
     "12345678901234567890.0123456789"),
    (Decimal("NaN"), "NaN"), (Decimal("-0.000001"), "-0.000001"),
    (b"\x00\xff'", "\\x00ff27"), (b"", "\\x"),
    (dt.date(2024, 2, 29), "2024-02-29"),
    (dt.date.max, "9999-12-31"),
    (dt.datetime(2024, 1, 2, 3, 4, 5, 678000), "2024-01-02T03:04:05.678000"),
    (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
     "2024-01-02T03:04:05+02:00"),
    (dt.time(12, 34, 56, 789000), "12:34:56.789000"),
    (dt.timedelta(days=392, hours=4, minutes=5, seconds=6, microseconds=500000),
     "P392DT4H5M6.5S"),
    (dt.timedelta(seconds=-1), "-PT1S"), (dt.timedelta(0), "PT0S"),
    (dt.timedelta(days=2), "P2D"),
    (uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
     "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    (ipaddress.ip_interface("192.168.0.1/24"), "192.168.0.1/24"),
    (ipaddress.ip_network("10.0.0.0/8"), "10.0.0.0/8"),
    ([[1, None], [Decimal("1.5"), float("nan")]], [[1, None], ["1.5", "NaN"]]),
    ({"a": [1, 2.5, None], "b": {"c": True}}, {"a": [1, 2.5, None], "b": {"c": True}}),
])
def test_values(value, want):
    got = formats.jsonable(value)
    assert got == want and type(got) is type(want)
    assert roundtrip({"v": got}) == {"v": want}


def test_unchanged_marker():
    assert formats.jsonable(pld.UNCHANGED) == formats.UNCHANGED_MARKER
    assert formats.jsonable([pld.UNCHANGED], unchanged=None) == [None]
    upd = pld.Update("public", "t", {"id": 1, "big": pld.UNCHANGED}, None, 10, 5)
    assert formats.change_to_json(upd)["new"]["big"] == formats.UNCHANGED_MARKER
    env, = formats.change_to_debezium(upd)
    assert env["after"]["big"] == formats.DEBEZIUM_UNAVAILABLE \
        == "__debezium_unavailable_value"


# -- --format json --

T0 = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def test_json_rows():
    ins = pld.Insert("public", "data", {"id": 1, "n": Decimal("1.10")}, None,
                     0x16B3748, 731)
    assert roundtrip(formats.change_to_json(ins, commit_time=T0)) == {
        "lsn": "0/16B3748", "xid": 731, "kind": "insert", "schema": "public",
        "table": "data", "new": {"id": 1, "n": "1.10"}, "old": None,
        "commit_time": "2024-05-06T07:08:09.123456+00:00"}
    # xid and lsn from the context when the change lacks them
    upd = pld.Update("s", "t", {"id": 2}, {"id": 1}, None, None)
    rec = formats.change_to_json(upd, lsn=0x100000010, xid=9)
    assert (rec["kind"], rec["lsn"], rec["xid"], rec["old"], rec["new"]) == (
        "update", "1/10", 9, {"id": 1}, {"id": 2})
    rec = formats.change_to_json(pld.Delete("s", "t", None, {"id": 1}))
    assert (rec["kind"], rec["lsn"], rec["xid"], rec["new"], rec["old"]) == (
        "delete", None, None, None, {"id": 1})


class IntLike(int):
    pass


class StrLike(str):
    pass


# every kind of value a row can hold, and the odd ones a custom converter
# could return (subclasses, non-string keys, NaN inside a list)
ODD_VALUES = [
    None, True, False, 0, -(2 ** 63), 2 ** 80, 1.5, -0.0, float("nan"),
    float("inf"), float("-inf"), "", "é\n\"\\\x00\u2028", StrLike("s"),
    IntLike(7), Decimal("1.10"), Decimal("NaN"), b"\x00\xff", bytearray(b"a"),
    dt.date(2024, 2, 29), T0, dt.time(1, 2), dt.timedelta(seconds=-1),
    uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ipaddress.ip_network("10.0.0.0/8"), pld.UNCHANGED,
    [1, [2.5, float("nan")], None], (1, "a"), {"a": {"b": [True]}},
    {1: "int key", None: "none key", True: "bool key"}, object,
]


@pytest.mark.parametrize("cls", [pld.Insert, pld.Update, pld.Delete])
def test_json_text_is_the_same_text_as_dumps(cls):
    """The JetStream sink's fast path writes exactly what --format json
    prints, for every kind of value, context and missing field."""
    rows = [None, {}, {"id": 1, "data": "row 1"}] + [
        {"id": 1, "v": v} for v in ODD_VALUES]
    for new in rows:
        for old in (None, {"id": 0}, new):
            for lsn, xid, ctx_lsn, ctx_xid, when in [
                    (None, None, None, None, None),
                    (0x16B3748, 731, 0x1000, 5, T0),
                    (None, None, 0x100000010, 9, None),
                    (0, 0, 0, 0, dt.datetime(2024, 1, 1))]:
                ch = cls("pub lic", "ta\"ble\u00e9", new, old, lsn, xid)
                for unchanged in (formats.UNCHANGED_MARKER, None):
                    want = formats.dumps(formats.change_to_json(
                        ch, lsn=ctx_lsn, xid=ctx_xid, commit_time=when,
                        unchanged=unchanged))
                    got = formats.json_text(
                        ch, lsn=ctx_lsn, xid=ctx_xid, commit_time=when,
                        unchanged=unchanged)
                    assert got == want
    # other changes take the general path, with the same result
    begin = pld.Begin(731, 0x10, T0, 0x30)
    assert formats.json_text(begin, lsn=0x10) == formats.dumps(
        formats.change_to_json(begin, lsn=0x10))


def test_json_every_change_class():
    """Every change class has a kind and gives strict JSON."""
    rel = pld.Relation(16384, "public", "t", "d",
                       [pld.Column("id", 23, -1, True)], 0x20, None)
    samples = [
        pld.Begin(731, 0x10, T0, 0x30),
        pld.Commit(731, 0x30, T0, 0x38, 0),
        pld.Insert("public", "t", {"id": 1}, None, 0x20, 731),
        pld.Update("public", "t", {"id": 1}, None, 0x20, 731),
        pld.Delete("public", "t", None, {"id": 1}, 0x20, 731),
        pld.Truncate([("public", "t"), ("s", "u")], True, False, 0x20, 731,
                     [1, 2]),
        pld.Message("pfx", b"hello \xc3\xa9", True, 0x20, 731),
        rel,
        pld.Type(16400, "public", "mood", None),
        pld.Origin("up", 0x40),
        pld.StreamStart(731, True),
        pld.StreamStop(),
        pld.StreamCommit(731, 0x30, T0, 0x38, 0),
        pld.StreamAbort(731, 732, 0x50, T0),
        pld.BeginPrepare(731, "g'1", 0x10, 0x30, T0, 0),
        pld.Prepare(731, "g'1", 0x10, 0x30, T0, 0),
        pld.CommitPrepared(731, "g'1", 0x10, 0x30, T0, 0),
        pld.RollbackPrepared(731, "g'1", 0x10, 0x30, T0, T0, 0),
        pld.StreamPrepare(731, "g'1", 0x10, 0x30, T0, 0),
        pld.SnapshotStart("public", "t", False),
        pld.SnapshotRow("public", "t", {"id": 1}, False),
        pld.SnapshotEnd("public", "t", 1, False),
    ]
    classes = {type(c) for c in samples}
    missing = [c.__name__ for c in vars(pld).values()
               if isinstance(c, type) and issubclass(c, pld.Change)
               and c not in (pld.Change, pld.Column) and c not in classes]
    assert not missing, "no sample of %s" % missing
    kinds = [roundtrip(formats.change_to_json(c))["kind"] for c in samples]
    assert kinds == [
        "begin", "commit", "insert", "update", "delete", "truncate", "message",
        "relation", "type", "origin", "stream_start", "stream_stop",
        "stream_commit", "stream_abort", "begin_prepare", "prepare",
        "commit_prepared", "rollback_prepared", "stream_prepare",
        "snapshot_start", "read", "snapshot_end"]
    assert roundtrip(formats.change_to_json(samples[20], lsn=0x20)) == {
        "lsn": "0/20", "xid": None, "kind": "read", "schema": "public",
        "table": "t", "new": {"id": 1}, "old": None, "commit_time": None}
    (env,) = formats.change_to_debezium(samples[20], lsn=0x20)
    assert env["op"] == "r" and env["after"] == {"id": 1}
    begin = roundtrip(formats.change_to_json(samples[0]))
    assert begin == {"lsn": "0/10", "xid": 731, "kind": "begin",
                     "commit_time": "2024-05-06T07:08:09.123456+00:00",
                     "final_lsn": "0/30"}
    commit = roundtrip(formats.change_to_json(samples[1]))
    assert commit["end_lsn"] == "0/38" and commit["commit_time"] == begin["commit_time"]
    trunc = roundtrip(formats.change_to_json(samples[5]))
    assert trunc["tables"] == [["public", "t"], ["s", "u"]] and trunc["cascade"] is True
    msg = roundtrip(formats.change_to_json(samples[6]))
    assert msg == {"lsn": "0/20", "xid": 731, "kind": "message", "prefix": "pfx",
                   "transactional": True, "content": "\\x68656c6c6f20c3a9",
                   "content_text": "hello é"}
    bad = formats.change_to_json(pld.Message("p", b"\xff", False, 1, None))
    assert bad["content_text"] is None and bad["content"] == "\\xff"
    relj = roundtrip(formats.change_to_json(rel))
    assert relj["columns"] == [{"name": "id", "type_oid": 23,
                                "type_modifier": -1, "key": True}]
    assert roundtrip(formats.change_to_json(samples[15]))["gid"] == "g'1"


# -- --format debezium --

def test_debezium_envelopes():
    ins = pld.Insert("public", "data", {"id": 1, "b": b"\x01"}, None, 0x16B3748, 731)
    env, = formats.change_to_debezium(ins, commit_time=T0, name="slot1", db="app")
    env = roundtrip(env)
    assert env["op"] == "c" and env["before"] is None
    assert env["after"] == {"id": 1, "b": "\\x01"}
    src = env["source"]
    assert (src["lsn"], src["txId"], src["schema"], src["table"], src["db"],
            src["name"], src["snapshot"]) == (
        0x16B3748, 731, "public", "data", "app", "slot1", "false")
    assert src["ts_ms"] == 1714979289123
    assert isinstance(env["ts_ms"], int) and env["ts_ms"] >= src["ts_ms"]
    upd, = formats.change_to_debezium(
        pld.Update("public", "data", {"id": 2}, {"id": 1}, 5, 7), ts_ms=99)
    assert (upd["op"], upd["before"], upd["after"], upd["source"]["ts_ms"]) == (
        "u", {"id": 1}, {"id": 2}, 99)
    dele, = formats.change_to_debezium(
        pld.Delete("public", "data", None, {"id": 2}, 5, 7))
    assert (dele["op"], dele["before"], dele["after"]) == ("d", {"id": 2}, None)
    t1, t2 = formats.change_to_debezium(
        pld.Truncate([("public", "a"), ("public", "b")], False, False, 5, 7, None))
    assert (t1["op"], t1["source"]["table"], t2["source"]["table"]) == ("t", "a", "b")
    m, = formats.change_to_debezium(pld.Message("p", b"hi", False, 5, None))
    assert m["op"] == "m" and m["message"] == {"prefix": "p", "content": "aGk="}
    for framing in (pld.Begin(1, 2, T0, 3), pld.Commit(1, 2, T0, 3, 0),
                    pld.StreamStop(), pld.Origin("o", 1)):
        assert formats.change_to_debezium(framing) == []
    r = roundtrip(formats.read_to_debezium("public", "data", {"id": 3},
                                           lsn="0/10", last=True))
    assert (r["op"], r["before"], r["after"], r["source"]["snapshot"],
            r["source"]["lsn"]) == ("r", None, {"id": 3}, "last", 16)
    assert formats.read_to_json("public", "data", {"id": 3})["kind"] == "read"


# -- on a real stream: the Formatter --

def test_formatter_on_pgoutput_stream(dsn, sql, slot_name, request):
    """Every type the decoders produce becomes strict JSON with the
    documented conversions; rows carry the xid and commit time of their
    transaction (from pgoutput's BEGIN)."""
    table = "fmt_" + slot_name[-8:]
    pub = "pub_" + table
    create_type_table(sql, table)
    request.addfinalizer(lambda: sql("DROP TABLE IF EXISTS %s" % table))
    sql("CREATE PUBLICATION %s FOR TABLE %s" % (pub, table))
    request.addfinalizer(lambda: sql("DROP PUBLICATION IF EXISTS %s" % pub))
    create_slot(sql, slot_name, "pgoutput")
    sql("SELECT pg_logical_emit_message(false, 'wm', 'x')")
    insert_type_row(sql, table)
    msgs = capture(dsn, sql, slot_name, "pgoutput",
                   options={"publication_names": pub})
    want = expected_row(sql, table)

    fj = formats.Formatter("json")
    recs = [roundtrip(r) for m in msgs for r in fj.records(m)]
    recs = [r for r in recs if r["kind"] not in ("type", "relation")]
    kinds = [r["kind"] for r in recs]
    assert kinds == ["message", "begin", "insert", "commit"], kinds
    msg, begin, ins, commit = recs
    assert ins["xid"] == begin["xid"] == commit["xid"] and ins["xid"]
    assert ins["commit_time"] == begin["commit_time"] and ins["commit_time"]
    assert ins["lsn"] and pld.parse_lsn(ins["lsn"]) > 0
    assert ins["new"] == roundtrip({k: formats.jsonable(v) for k, v in want.items()})
    assert ins["new"]["n"] == "12345678901234567890.0123456789"
    assert ins["new"]["by"] == "\\x00ff27"
    assert ins["new"]["f8n"] == "NaN" and ins["new"]["ni"] == "Infinity"
    assert ins["new"]["tstz"] == "2024-01-02T01:04:05.678000+00:00" or \
        dt.datetime.fromisoformat(ins["new"]["tstz"]) == want["tstz"]
    assert msg["content_text"] == "x" and msg["xid"] is None

    fd = formats.Formatter("debezium", name=slot_name, db="test")
    envs = [roundtrip(r) for m in msgs for r in fd.records(m)]
    assert [e["op"] for e in envs] == ["m", "c"]
    src = envs[1]["source"]
    assert src["txId"] == ins["xid"] and src["table"] == table
    assert src["lsn"] == pld.parse_lsn(ins["lsn"])
    assert src["ts_ms"] == int(dt.datetime.fromisoformat(
        begin["commit_time"]).timestamp() * 1000)


def test_formatter_test_decoding_xid_and_fallback_time(dsn, sql, slot_name, table):
    """test_decoding sends no commit time at BEGIN: rows still get the xid
    of their transaction, and Debezium's ts_ms falls back to the send time."""
    create_slot(sql, slot_name, "test_decoding")
    sql("INSERT INTO %s (data) VALUES ('a')" % table)
    msgs = capture(dsn, sql, slot_name, "test_decoding")
    recs = [r for m in msgs for r in formats.Formatter("json").records(m)]
    fj = formats.Formatter("json")
    recs = [r for m in msgs for r in fj.records(m)]
    assert [r["kind"] for r in recs] == ["begin", "insert", "commit"]
    assert recs[1]["xid"] == recs[0]["xid"] is not None
    assert recs[1]["new"] == {"id": 1, "data": "a"}
    env, = [e for m in msgs for e in formats.Formatter("debezium").records(m)]
    assert abs(env["source"]["ts_ms"] - env["ts_ms"]) < 600000
    raw = pld.StreamMessage("x")
    assert formats.Formatter("json").records(raw) == []
    with pytest.raises(ValueError, match="json, debezium"):
        formats.Formatter("xml")
