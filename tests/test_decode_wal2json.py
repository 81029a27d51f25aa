"""wal2json output (format-version 1 and 2) decoded into changes."""

from decimal import Decimal

import pytest

import pylogicaldecoding as pld
from pylogicaldecoding import _core, decoders

from decode_support import (
    assert_same_row, capture, changes_of, create_slot, create_type_table,
    expected_row, insert_type_row)

# wal2json prints NaN and infinite floats and numerics as null
NULLED = {"f8n", "f8i", "nn", "ni"}


def M(text, lsn=0x16B374D848):
    return _core.Message(text, lsn)


def test_v2_unit():
    d = decoders.make_decoder("wal2json")
    b = d(M('{"action":"B","xid":759,"timestamp":"2026-11-24 23:50:03.776+00",'
            '"lsn":"0/1A5E190","nextlsn":"0/1A5E1C0"}'))
    assert b.xid == 759 and b.lsn == 0x1A5E190
    i = d(M('{"action":"I","xid":759,"schema":"public","table":"w",'
            '"columns":[{"name":"id","type":"integer","value":1},'
            '{"name":"n","type":"numeric(30,20)","value":'
            '1.00000000000000000001},'
            '{"name":"a","type":"integer[]","value":"{1,NULL}"},'
            '{"name":"b","type":"boolean","value":true}]}'))
    assert i.new == {"id": 1, "n": Decimal("1.00000000000000000001"),
                     "a": [1, None], "b": True}
    d2 = d(M('{"action":"D","schema":"s","table":"t","identity":'
             '[{"name":"id","type":"integer","value":1}]}'))
    assert d2.old == {"id": 1} and d2.new is None and d2.xid == 759
    c = d(M('{"action":"C","xid":759,"lsn":"0/1A5E190","nextlsn":"0/1A5E1C0"}'))
    assert c.end_lsn == 0x1A5E1C0
    t = d(M('{"action":"T","schema":"s","table":"t"}'))
    assert t.tables == [("s", "t")]


@pytest.mark.parametrize("text", [
    "", "{", "[]", '{"action":"Z"}', '{"action":"I"}',
    '{"change":[{"kind":"frob"}]}', '{"action":"I","schema":"s","table":"t",'
    '"columns":[{"name":"x","type":"integer","value":"abc"}]}',
])
def test_garbage_raises_decoding_error_with_lsn(text):
    d = decoders.make_decoder("wal2json")
    with pytest.raises(pld.DecodingError) as e:
        d(M(text))
    assert "16/B374D848" in str(e.value)


def _round_trip(dsn, sql, slot_name, table, version):
    name = table + "_types"
    create_type_table(sql, name)
    try:
        create_slot(sql, slot_name, "wal2json")
        insert_type_row(sql, name)
        want = expected_row(sql, name)
        sql("UPDATE %s SET i4 = 1" % name)
        sql("DELETE FROM %s" % name)
        sql("SELECT pg_logical_emit_message(true, 'p', 'hello')")
        opts = decoders.default_options(
            "wal2json", {"format-version": version}, 150000)
        msgs = capture(dsn, sql, slot_name, "wal2json", opts)
    finally:
        sql("DROP TABLE %s" % name)
    return msgs, want


@pytest.mark.parametrize("version", ["1", "2"])
def test_round_trip(dsn, sql, slot_name, table, version):
    msgs, want = _round_trip(dsn, sql, slot_name, table, version)
    if version == "1":
        assert all(isinstance(m.change, list) for m in msgs)
    (ins,) = changes_of(msgs, pld.Insert)
    (up,) = changes_of(msgs, pld.Update)
    (de,) = changes_of(msgs, pld.Delete)
    (msg,) = changes_of(msgs, pld.Message)
    got = dict(ins.new)
    for k in NULLED:
        assert got[k] is None
        got[k] = want[k]
    assert_same_row(got, want)
    assert msg.prefix == "p" and msg.content == b"hello"
    assert up.new["i4"] == 1 and up.old == {"id": want["id"]}
    assert de.old == {"id": want["id"]} and de.new is None
    begins = changes_of(msgs, pld.Begin)
    commits = changes_of(msgs, pld.Commit)
    assert len(begins) == len(commits) >= 3
    assert all(b.xid for b in begins)
    assert all(c.commit_time is not None for c in commits)
