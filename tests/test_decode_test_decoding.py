"""test_decoding output decoded into changes, against the real server."""

import datetime
from decimal import Decimal

import pytest

import pylogicaldecoding as pld
from pylogicaldecoding import _core, decoders, types

from decode_support import (
    assert_same_row, capture, changes_of, create_slot, create_type_table,
    expected_row, insert_type_row)


def M(text, lsn=0x16B374D848):
    return _core.Message(text, lsn)


@pytest.fixture
def td():
    return decoders.make_decoder("test_decoding")


# -- unit: the parser on known lines --

def test_begin_commit(td):
    b = td(M("BEGIN 730"))
    assert b == pld.Begin(730, 0x16B374D848)
    assert td.xid == 730
    c = td(M("COMMIT 730 (at 2026-11-24 23:43:41.824859+00)"))
    assert isinstance(c, pld.Commit)
    assert c.xid == 730
    assert c.commit_time == datetime.datetime(
        2026, 11, 24, 23, 43, 41, 824859, tzinfo=datetime.timezone.utc)
    assert td.xid is None
    assert td(M("BEGIN")) == pld.Begin(None, 0x16B374D848)
    assert td(M("COMMIT")).xid is None


def test_insert_quoting(td):
    ch = td(M("table \"S 1\".\"Odd \"\"Tab\": INSERT: id[integer]:1 "
              "\"My Col\"[text]:'it''s\nx[integer]:2 ' "
              "x[\"My]:Type\"]:'a' y[character varying[]]:'{a,\"b c\"}' "
              "z[text]:null t[text]:unchanged-toast-datum"))
    assert isinstance(ch, pld.Insert)
    assert (ch.schema, ch.table) == ("S 1", 'Odd "Tab')
    assert ch.new == {"id": 1, "My Col": "it's\nx[integer]:2 ", "x": "a",
                      "y": ["a", "b c"], "z": None, "t": pld.UNCHANGED}
    assert ch.old is None
    assert ch.lsn == 0x16B374D848


def test_update_delete_truncate(td):
    ch = td(M("table public.a: UPDATE: old-key: id[integer]:1 "
              "new-tuple: id[integer]:2 data[text]:'x'"))
    assert ch == pld.Update("public", "a", {"id": 2, "data": "x"}, {"id": 1},
                            0x16B374D848)
    ch = td(M("table public.a: UPDATE: id[integer]:2"))
    assert ch.old is None and ch.new == {"id": 2}
    ch = td(M("table public.a: DELETE: id[integer]:2"))
    assert ch.old == {"id": 2} and ch.new is None
    ch = td(M("table public.a: DELETE: (no-tuple-data)"))
    assert ch.old is None and ch.new is None
    ch = td(M("table public.a, s.\"B\": TRUNCATE: restart_seqs cascade"))
    assert ch.tables == [("public", "a"), ("s", "B")]
    assert ch.cascade is True and ch.restart_identity is True
    ch = td(M("table public.a: TRUNCATE: (no-flags)"))
    assert ch.tables == [("public", "a")]
    assert ch.cascade is False and ch.restart_identity is False


def test_messages(td):
    ch = td(M("message: transactional: 1 prefix: pre, sz: 3 content:, "
              "sz: 5 content:a b\nc"))
    assert ch.prefix == "pre, sz: 3 content:"
    assert ch.content == b"a b\nc"
    assert ch.transactional is True
    ch = td(M(b"message: transactional: 0 prefix: nt, sz: 2 content:\x00\xff"))
    assert ch == pld.Message("nt", b"\x00\xff", False, 0x16B374D848, None)


def test_two_phase_and_stream_lines(td):
    ch = td(M("PREPARE TRANSACTION 'g''1', txid 737 "
              "(at 2026-11-24 23:43:41.828488+00)"))
    assert isinstance(ch, pld.Prepare) and ch.gid == "g'1" and ch.xid == 737
    assert isinstance(td(M("COMMIT PREPARED 'g''1', txid 737")),
                      pld.CommitPrepared)
    assert isinstance(td(M("ROLLBACK PREPARED 'g2'")), pld.RollbackPrepared)
    # include-timestamp: the time of the event the line reports
    at = "(at 2026-11-24 23:43:41.828488+00)"
    when = datetime.datetime(2026, 11, 24, 23, 43, 41, 828488,
                             tzinfo=datetime.timezone.utc)
    ch = td(M("ROLLBACK PREPARED 'g2', txid 738 " + at))
    assert ch.rollback_time == when and ch.prepare_time is None
    ch = td(M("COMMIT PREPARED 'g2', txid 738 " + at))
    assert ch.commit_time == when
    ch = td(M("PREPARE TRANSACTION 'g2', txid 738 " + at))
    assert ch.prepare_time == when
    assert td(M("opening a streamed block for transaction TXN 740")) == \
        pld.StreamStart(740)
    assert td(M("closing a streamed block for transaction TXN 740")) == \
        pld.StreamStop()
    ch = td(M("committing streamed transaction TXN 740 "
              "(at 2026-11-24 23:43:46.686531+00)"))
    assert isinstance(ch, pld.StreamCommit) and ch.xid == 740
    assert td(M("aborting streamed (sub)transaction TXN 741")) == \
        pld.StreamAbort(741)
    ch = td(M("preparing streamed transaction TXN 'sp', txid 741 "
              "(at 2026-11-24 23:43:46.687511+00)"))
    assert isinstance(ch, pld.StreamPrepare) and ch.gid == "sp"
    assert td(M("streaming change for TXN 740")) is None
    ch = td(M("streaming message: transactional: 1 prefix: p, sz: 1"))
    assert ch.prefix == "p" and ch.content is None


@pytest.mark.parametrize("text", [
    "table ", "table x", "table a.b", "table a.b: INSERT: x",
    "table a.b: INSERT: x[integer", "table a.b: INSERT: x[integer]:",
    "table a.b: INSERT: x[integer]:abc", "table a.b: INSERT: x[text]:'abc",
    "table a.b: INSERT: x[text]:'a'b", "table a.b: FROB:",
    "table a.b: UPDATE: old-key: x[integer]:1",
    "table a.b: TRUNCATE: sideways", "BEGIN x", "nonsense",
    "table \"a.b: INSERT:",
])
def test_garbage_raises_decoding_error_with_lsn(td, text):
    with pytest.raises(pld.DecodingError) as e:
        td(M(text))
    assert "16/B374D848" in str(e.value)


@pytest.mark.parametrize("line", [
    b"table \xff.b: INSERT: x[integer]:1",
    b"table a.\"\xff\": INSERT: x[integer]:1",
    b"table a.b: INSERT: \xff\xff[integer]:4 y[text]:'r'",
    b"table a.b: INSERT: \"q\xfe\"[integer]:4",
    b"table a.b: INSERT: x[\xff]:4",
])
def test_invalid_utf8_in_names_is_decoding_error(td, line):
    # found by the fuzzer (scripts/run-fuzz.sh): a bytes payload whose names
    # are not UTF-8 raised UnicodeDecodeError, not the library's error
    with pytest.raises(pld.DecodingError) as e:
        td(M(line))
    assert "16/B374D848" in str(e.value)


def test_registry_override():
    reg = types.registry.copy()
    reg.register("numeric", text=float)
    reg.register("pld_mood", text=str.upper)
    td = decoders.make_decoder("test_decoding", registry=reg)
    ch = td(M("table public.a: INSERT: n[numeric]:1.5 m[pld_mood]:'ok' "
              "i[integer]:3"))
    assert ch.new == {"n": 1.5, "m": "OK", "i": 3}
    reg.register(23, text=lambda s: "int:" + s)
    td = decoders.make_decoder("test_decoding", registry=reg)
    assert td(M("table public.a: INSERT: i[integer]:3")).new == {"i": "int:3"}


# -- against the server --

def test_every_type_round_trips(dsn, sql, slot_name, table):
    name = table + "_types"
    create_type_table(sql, name)
    try:
        create_slot(sql, slot_name, "test_decoding")
        insert_type_row(sql, name)
        msgs = capture(dsn, sql, slot_name, "test_decoding",
                       {"include-timestamp": "1"})
        inserts = changes_of(msgs, pld.Insert)
        assert len(inserts) == 1
        assert_same_row(inserts[0].new, expected_row(sql, name))
        begin, commit = changes_of(msgs, pld.Begin, pld.Commit)
        assert begin.xid == commit.xid == inserts[0].xid
        assert isinstance(commit.commit_time, datetime.datetime)
    finally:
        sql("DROP TABLE %s" % name)


def test_replica_identity_and_toast(dsn, sql, slot_name, table):
    sql("ALTER TABLE %s ALTER data SET STORAGE EXTERNAL" % table)
    sql("ALTER TABLE %s ADD other int" % table)
    sql("INSERT INTO %s (data, other) VALUES (repeat('x', 5000), 1)" % table)
    create_slot(sql, slot_name, "test_decoding")
    sql("UPDATE %s SET other = 2" % table)          # TOAST unchanged
    sql("UPDATE %s SET id = 10" % table)            # key changed
    sql("ALTER TABLE %s REPLICA IDENTITY FULL" % table)
    sql("UPDATE %s SET other = 3" % table)
    sql("DELETE FROM %s" % table)
    sql("INSERT INTO %s (data, other) VALUES ('y', 5)" % table)
    sql("ALTER TABLE %s REPLICA IDENTITY NOTHING" % table)
    sql("UPDATE %s SET other = 6" % table)
    sql("DELETE FROM %s" % table)
    sql("TRUNCATE %s RESTART IDENTITY" % table)
    msgs = capture(dsn, sql, slot_name, "test_decoding")
    rows = changes_of(msgs, pld.Update, pld.Delete, pld.Truncate)
    u1, u2, u3, d1, u4, d2, t = rows
    assert u1.new == {"id": 1, "data": pld.UNCHANGED, "other": 2}
    assert u1.old is None
    assert u2.old == {"id": 1} and u2.new["id"] == 10
    # FULL: the whole old row (the unchanged TOAST value too)
    assert u3.old == {"id": 10, "data": "x" * 5000, "other": 2}
    assert d1.old == {"id": 10, "data": "x" * 5000, "other": 3}
    assert u4.old is None and u4.new["other"] == 6
    assert d2.old is None and d2.new is None
    assert t.tables == [("public", table)] and t.restart_identity


def test_options_and_messages(dsn, sql, slot_name, table):
    create_slot(sql, slot_name, "test_decoding")
    sql("SELECT pg_logical_emit_message(true, 'p', 'hello')")
    sql("SELECT pg_logical_emit_message(false, 'q', '\\x00ff'::bytea)")
    sql("BEGIN; COMMIT")
    # a non-transactional message is not flushed: write something after it
    sql("INSERT INTO %s (data) VALUES ('a')" % table)
    msgs = capture(dsn, sql, slot_name, "test_decoding",
                   {"include-xids": "0", "skip-empty-xacts": "1"},
                   reader_kwargs={"binary": True})
    chs = [m.change for m in msgs]
    kinds = [type(c) for c in chs]
    if sql.connection.server_version >= 180000:
        # 18: skip-empty-xacts wraps a message-only transaction in
        # BEGIN/COMMIT (a transaction with a message is not empty)
        assert kinds == [pld.Begin, pld.Message, pld.Commit, pld.Message,
                         pld.Begin, pld.Insert, pld.Commit]
        chs = chs[1:2] + chs[3:]
        msgs = msgs[1:2] + msgs[3:]
    else:
        # 15: no BEGIN/COMMIT around a message-only transaction
        assert kinds == [pld.Message, pld.Message, pld.Begin, pld.Insert,
                         pld.Commit]
    assert chs[0] == pld.Message("p", b"hello", True, msgs[0].data_start,
                                 None)
    assert chs[1].content == b"\x00\xff" and chs[1].transactional is False
    assert chs[2].xid is None and chs[3].xid is None


def test_ddl_between_changes(dsn, sql, slot_name, table):
    create_slot(sql, slot_name, "test_decoding")
    sql("INSERT INTO %s (data) VALUES ('a')" % table)
    sql("ALTER TABLE %s ADD n numeric, ALTER data TYPE int USING 1" % table)
    sql("INSERT INTO %s (data, n) VALUES (2, 1.5)" % table)
    msgs = capture(dsn, sql, slot_name, "test_decoding")
    a, b = changes_of(msgs, pld.Insert)
    assert a.new == {"id": 1, "data": "a"}
    assert b.new == {"id": 2, "data": 2, "n": Decimal("1.5")}


def test_decoder_errors_name_the_lsn_through_the_reader(dsn, sql, slot_name,
                                                          table):
    create_slot(sql, slot_name, "test_decoding")
    sql("INSERT INTO %s (data) VALUES ('a')" % table)
    reg = types.registry.copy()

    def boom(s):
        raise ValueError("no")
    reg.register("text", text=boom)
    with pytest.raises(pld.DecodingError) as e:
        capture(dsn, sql, slot_name, "test_decoding", registry=reg)
    assert "test_decoding output at " in str(e.value)
    assert isinstance(e.value.__cause__, ValueError)


def test_two_phase_times(tp):
    """With include-timestamp, PREPARE's time is prepare_time, COMMIT
    PREPARED's commit_time, ROLLBACK PREPARED's rollback_time."""
    dsn, sql, slot, table, _ = tp
    sql("SELECT pg_create_logical_replication_slot(%s, 'test_decoding', "
        "false, true)", slot)
    with sql.connection.cursor() as cur:
        for gid, end in (("c1", "COMMIT"), ("r1", "ROLLBACK")):
            cur.execute("BEGIN")
            cur.execute("INSERT INTO %s (data) VALUES ('x')" % table)
            cur.execute("PREPARE TRANSACTION '%s'" % gid)
            cur.execute("%s PREPARED '%s'" % (end, gid))
    msgs = capture(dsn, sql, slot, "test_decoding",
                   {"include-timestamp": "1"})
    p1, p2 = changes_of(msgs, pld.Prepare)
    (cp,) = changes_of(msgs, pld.CommitPrepared)
    (rp,) = changes_of(msgs, pld.RollbackPrepared)
    assert (p1.gid, p2.gid, cp.gid, rp.gid) == ("c1", "r1", "c1", "r1")
    assert isinstance(p2.prepare_time, datetime.datetime)
    assert isinstance(rp.rollback_time, datetime.datetime)
    assert rp.prepare_time is None
    assert rp.rollback_time >= p2.prepare_time
    assert cp.commit_time >= p1.prepare_time
