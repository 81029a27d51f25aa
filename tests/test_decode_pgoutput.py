"""pgoutput messages decoded into changes, against the real server."""

import datetime
from decimal import Decimal
import struct

import pytest

import pylogicaldecoding as pld
from pylogicaldecoding import _core, decoders, types

from decode_support import (
    assert_same_row, capture, changes_of, create_slot, create_type_table,
    expected_row, insert_type_row)


# a streamed transaction: spill to the client past 64kB (a user setting);
# in the dsn: the Reader's `options` keyword is the plugin's options
WORK_MEM_64K = " options='-c logical_decoding_work_mem=64kB'"


@pytest.fixture
def publication(sql, table, request):
    """A publication of `table` (name: the table's name)."""
    name = "pub_" + table
    sql("CREATE PUBLICATION %s FOR TABLE %s" % (name, table))
    yield name
    sql("DROP PUBLICATION IF EXISTS %s" % name)


def opts(pub, proto, **extra):
    o = {"proto_version": str(proto), "publication_names": pub}
    o.update({k: v for k, v in extra.items()})
    return o


# -- unit --

def test_default_options():
    with pytest.raises(pld.ProgrammingError, match="create_publication"):
        decoders.default_options("pgoutput", {}, 150004)
    o = decoders.default_options("pgoutput", {"publication_names": "p"},
                                 150004)
    assert o == {"publication_names": "p", "proto_version": "3",
                 "messages": "true"}
    assert decoders.default_options(
        "pgoutput", {"publication_names": "p"}, 130000)["proto_version"] == "1"
    assert decoders.default_options(
        "pgoutput", {"publication_names": "p"}, 160001)["proto_version"] == "4"
    assert decoders.default_options(
        "pgoutput", {"publication_names": "p", "proto_version": "1"},
        150000)["proto_version"] == "1"
    assert decoders.default_options("test_decoding", None, 150000) == {}
    w = decoders.default_options("wal2json", {}, 150000)
    assert w["format-version"] == "2" and w["include-xids"] == "1"
    assert decoders.make_decoder("no_such_plugin", {}, 150000) is None


def _str(s):
    return s.encode() + b"\0"


def relation_msg(relid=16400, cols=(("id", 23, True), ("data", 25, False)),
                 schema="public", table="t"):
    out = b"R" + struct.pack("!I", relid) + _str(schema) + _str(table) + b"d"
    out += struct.pack("!H", len(cols))
    for name, oid, key in cols:
        out += struct.pack("!B", key) + _str(name) + struct.pack("!Ii", oid, -1)
    return out


def tuple_data(*values):
    out = struct.pack("!H", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is pld.UNCHANGED:
            out += b"u"
        elif isinstance(v, bytes):
            out += b"b" + struct.pack("!I", len(v)) + v
        else:
            v = str(v).encode()
            out += b"t" + struct.pack("!I", len(v)) + v
    return out


def M(payload, lsn=0x16B374D848):
    return _core.Message(payload, lsn)


def test_decoder_unit():
    d = decoders.make_decoder("pgoutput")
    rel = d(M(relation_msg()))
    assert isinstance(rel, pld.Relation)
    assert rel.columns[0] == pld.Column("id", 23, -1, True)
    assert rel.replica_identity == "d"
    b = d(M(b"B" + struct.pack("!QqI", 0x100, 0, 7)))
    assert b.xid == 7 and b.final_lsn == 0x100
    assert b.commit_time == datetime.datetime(2000, 1, 1,
                                              tzinfo=datetime.timezone.utc)
    ins = d(M(b"I" + struct.pack("!I", 16400) + b"N"
              + tuple_data(1, "x")))
    assert ins == pld.Insert("public", "t", {"id": 1, "data": "x"}, None,
                             0x16B374D848, 7, 16400)
    up = d(M(b"U" + struct.pack("!I", 16400) + b"K" + tuple_data(1, None)
             + b"N" + tuple_data(2, pld.UNCHANGED)))
    assert up.old == {"id": 1, "data": None}
    assert up.new == {"id": 2, "data": pld.UNCHANGED}
    de = d(M(b"D" + struct.pack("!I", 16400) + b"O"
             + tuple_data(struct.pack("!i", -5), b"bin")))
    assert de.old == {"id": -5, "data": "bin"} and de.new is None
    tr = d(M(b"T" + struct.pack("!IBI", 1, 3, 16400)))
    assert tr.tables == [("public", "t")] and tr.cascade and \
        tr.restart_identity and tr.relids == [16400]
    c = d(M(b"C" + struct.pack("!BQQq", 0, 0x100, 0x108, 0)))
    assert c.xid == 7 and c.lsn == 0x100 and c.end_lsn == 0x108
    m = d(M(b"M" + struct.pack("!BQ", 1, 0x90) + _str("pre")
            + struct.pack("!I", 3) + b"abc"))
    assert m == pld.Message("pre", b"abc", True, 0x90, None)


@pytest.mark.parametrize("payload", [
    b"", b"Z", b"B", b"B" + b"\0" * 19, b"B" + b"\0" * 21,
    b"I" + struct.pack("!I", 1) + b"N" + tuple_data(1),   # unknown relation
    b"R\0\0\0\1public",                                      # no NUL
    b"M" + struct.pack("!BQ", 1, 0) + b"p\0" + struct.pack("!I", 10) + b"ab",
])
def test_garbage_raises_decoding_error_with_lsn(payload):
    d = decoders.make_decoder("pgoutput")
    with pytest.raises(pld.DecodingError) as e:
        d(M(payload))
    assert "16/B374D848" in str(e.value)


def test_garbage_rows():
    d = decoders.make_decoder("pgoutput")
    d(M(relation_msg()))
    head = b"I" + struct.pack("!I", 16400) + b"N"
    for bad in [head + tuple_data(1, 2, 3),             # too many columns
                head + struct.pack("!H", 1) + b"x",     # unknown kind
                head + struct.pack("!H", 1) + b"t\0\0\0\x09ab",
                head + tuple_data("abc"),               # not an int
                b"U" + struct.pack("!I", 16400) + b"Q",
                b"D" + struct.pack("!I", 16400) + b"N" + tuple_data(1)]:
        with pytest.raises(pld.DecodingError):
            d(M(bad))


def test_wrong_payload_type():
    d = decoders.make_decoder("pgoutput")
    with pytest.raises(TypeError, match="binary=True"):
        d(M("text"))
    for args, kwargs in [((), {}), ((M(b"E"), M(b"E")), {}),
                         ((), {"msg": M(b"E")}), ((M(b"E"),), {"x": 1})]:
        with pytest.raises(TypeError, match="one argument"):
            d(*args, **kwargs)
    with pytest.raises(pld.InterfaceError, match="__init__"):
        _core.PgoutputDecoder.__new__(_core.PgoutputDecoder)(M(b"E"))
    assert isinstance(d(M(b"E")), pld.StreamStop)


def test_numeric_and_float_values():
    """numeric (Decimal, called inline) and float8 (read in C) as the
    server prints them; a registered converter still wins."""
    d = decoders.make_decoder("pgoutput")
    d(M(relation_msg(cols=(("n", 1700, False), ("f", 701, False)))))
    rows = [("1.50", "0.42857142857142855"), ("-0.001", "-1.2345e-05"),
            ("NaN", "NaN"), ("-Infinity", "Infinity"),
            ("123456789012345678901234567890.123", "1e+100")]
    for n, f in rows:
        new = d(M(b"I" + struct.pack("!I", 16400) + b"N"
                  + tuple_data(n, f))).new
        assert type(new["n"]) is Decimal and str(new["n"]) == n
        assert type(new["f"]) is float and repr(new["f"]) == \
            repr(float(f))
    with pytest.raises(pld.DecodingError, match="column n"):
        d(M(b"I" + struct.pack("!I", 16400) + b"N" + tuple_data("1,5", "1")))
    reg = types.registry.copy()
    reg.register("numeric", text=float)
    d = decoders.make_decoder("pgoutput", registry=reg)
    d(M(relation_msg(cols=(("n", 1700, False),))))
    new = d(M(b"I" + struct.pack("!I", 16400) + b"N" + tuple_data("1.5"))).new
    assert new == {"n": 1.5} and type(new["n"]) is float
    with pytest.raises(pld.DecodingError, match="column n"):
        d(M(b"I" + struct.pack("!I", 16400) + b"N" + tuple_data("x")))


# -- against the server --

@pytest.mark.parametrize("proto,binary", [
    (1, False), (2, False), (3, False), (1, True), (2, True), (3, True)])
def test_every_type_round_trips(dsn, sql, slot_name, table, proto, binary):
    name = table + "_types"
    create_type_table(sql, name)
    pub = "pub_" + name
    sql("CREATE PUBLICATION %s FOR TABLE %s" % (pub, name))
    try:
        create_slot(sql, slot_name, "pgoutput")
        insert_type_row(sql, name)
        o = opts(pub, proto)
        if binary:
            o["binary"] = "true"
        msgs = capture(dsn, sql, slot_name, "pgoutput", o)
        kinds = [type(c) for c in changes_of(msgs)]
        assert kinds[0] is pld.Begin and kinds[-1] is pld.Commit
        assert pld.Relation in kinds and pld.Type in kinds
        (ins,) = changes_of(msgs, pld.Insert)
        assert_same_row(ins.new, expected_row(sql, name))
        (begin,) = changes_of(msgs, pld.Begin)
        (commit,) = changes_of(msgs, pld.Commit)
        assert begin.xid == ins.xid == commit.xid
        assert begin.final_lsn == commit.lsn
        assert commit.end_lsn > commit.lsn
    finally:
        sql("DROP PUBLICATION %s" % pub)
        sql("DROP TABLE %s" % name)


def test_binary_float4_as_the_server_prints_it(dsn, sql, slot_name, table,
                                               publication):
    """binary=true gives a real column the Python float its text form
    gives (876.5635, 0.1: the server's shortest round-trip digits), not
    the float4 widened exactly (876.5634765625, 0.10000000149011612)."""
    sql("ALTER TABLE %s ADD r real" % table)
    create_slot(sql, slot_name, "pgoutput")
    values = ["876.563452345", "0.1", "-3.4e38", "1.17549435e-38", "1e-45",
              "16777217", "-0", "NaN", "-Infinity"]
    for v in values:
        sql("INSERT INTO %s (r) VALUES ('%s')" % (table, v))
    server = [float(t) for (t,) in sql(
        "SELECT r::text FROM %s ORDER BY id" % table)]
    got = {}
    for binary in (False, True):
        o = opts(publication, 2, binary="true") if binary else \
            opts(publication, 2)
        msgs = capture(dsn, sql, slot_name, "pgoutput", o)
        got[binary] = [i.new["r"] for i in changes_of(msgs, pld.Insert)]
    assert got[True][:2] == [876.5635, 0.1]
    for b in (False, True):
        assert [repr(x) for x in got[b]] == [repr(x) for x in server]


@pytest.mark.parametrize("binary", [False, True])
def test_replica_identity_and_toast(dsn, sql, slot_name, table, publication,
                                    binary):
    sql("ALTER TABLE %s ALTER data SET STORAGE EXTERNAL" % table)
    sql("ALTER TABLE %s ADD other int" % table)
    sql("INSERT INTO %s (data, other) VALUES (repeat('x', 5000), 1)" % table)
    create_slot(sql, slot_name, "pgoutput")
    sql("UPDATE %s SET other = 2" % table)          # TOAST unchanged
    sql("UPDATE %s SET id = 10" % table)            # key changed
    sql("ALTER TABLE %s REPLICA IDENTITY FULL" % table)
    sql("UPDATE %s SET other = 3" % table)
    sql("DELETE FROM %s" % table)
    sql("INSERT INTO %s (data, other) VALUES ('y', 5)" % table)
    sql("ALTER TABLE %s REPLICA IDENTITY NOTHING" % table)
    sql("INSERT INTO %s (data, other) VALUES ('z', 7)" % table)
    sql("TRUNCATE %s RESTART IDENTITY CASCADE" % table)
    o = opts(publication, 2, binary="true" if binary else "false")
    msgs = capture(dsn, sql, slot_name, "pgoutput", o)
    u1, u2, u3, d1 = changes_of(msgs, pld.Update, pld.Delete)
    assert u1.new == {"id": 1, "data": pld.UNCHANGED, "other": 2}
    assert u1.old is None
    assert u2.old == {"id": 1, "data": None, "other": None}
    assert u2.new == {"id": 10, "data": pld.UNCHANGED, "other": 2}
    assert u3.old == {"id": 10, "data": "x" * 5000, "other": 2}
    assert d1.old == {"id": 10, "data": "x" * 5000, "other": 3}
    rels = changes_of(msgs, pld.Relation)
    assert [r.replica_identity for r in rels][:3] == ["d", "f", "n"]
    (t,) = changes_of(msgs, pld.Truncate)
    assert t.tables == [("public", table)]
    assert t.cascade and t.restart_identity


def test_ddl_between_changes_and_reconnect(dsn, sql, slot_name, table,
                                           publication):
    create_slot(sql, slot_name, "pgoutput")
    sql("INSERT INTO %s (data) VALUES ('a')" % table)
    sql("ALTER TABLE %s ADD n numeric, ALTER data TYPE int USING 1" % table)
    sql("INSERT INTO %s (data, n) VALUES (2, 1.5)" % table)
    sql("ALTER TABLE %s DROP n" % table)
    sql("INSERT INTO %s (data) VALUES (3)" % table)
    o = opts(publication, 1)
    msgs = capture(dsn, sql, slot_name, "pgoutput", o)
    rels = changes_of(msgs, pld.Relation)
    assert [[c.name for c in r.columns] for r in rels] == [
        ["id", "data"], ["id", "data", "n"], ["id", "data"]]
    assert [c.type_oid for c in rels[1].columns] == [23, 23, 1700]
    a, b, c = changes_of(msgs, pld.Insert)
    assert a.new == {"id": 1, "data": "a"}
    from decimal import Decimal
    assert b.new == {"id": 2, "data": 2, "n": Decimal("1.5")}
    assert c.new == {"id": 3, "data": 3}
    # a new stream (nothing acked): the server sends the relation again and
    # a fresh decoder, with an empty cache, decodes the rows
    again = capture(dsn, sql, slot_name, "pgoutput", o)
    assert [type(c) for c in changes_of(again)] == \
        [type(c) for c in changes_of(msgs)]


def test_messages_and_origin(dsn, sql, slot_name, table, publication):
    create_slot(sql, slot_name, "pgoutput")
    sql("SELECT pg_logical_emit_message(true, 'pre', 'hello')")
    sql("SELECT pg_logical_emit_message(false, 'nt', '\\x00ff'::bytea)")
    origin = "o_" + table
    sql("SELECT pg_replication_origin_create(%s)", origin)
    try:
        with sql.connection.cursor() as cur:
            cur.execute("SELECT pg_replication_origin_session_setup(%s)",
                        (origin,))
            cur.execute("INSERT INTO %s (data) VALUES ('o')" % table)
            cur.execute("SELECT pg_replication_origin_session_reset()")
        msgs = capture(dsn, sql, slot_name, "pgoutput",
                       opts(publication, 2, messages="true"))
    finally:
        sql("SELECT pg_replication_origin_drop(%s)", origin)
    ms = changes_of(msgs, pld.Message)
    assert [(m.prefix, m.content, m.transactional) for m in ms] == [
        ("pre", b"hello", True), ("nt", b"\x00\xff", False)]
    assert ms[0].xid is not None and ms[1].xid is None
    (o,) = changes_of(msgs, pld.Origin)
    assert o.name == origin


def test_streaming_in_progress_transactions(dsn, sql, slot_name, table,
                                            publication):
    create_slot(sql, slot_name, "pgoutput")
    sql("INSERT INTO %s (data) SELECT repeat('x', 100) FROM "
        "generate_series(1, 2000)" % table)
    with sql.connection.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO %s (data) SELECT 'a' || g FROM "
                    "generate_series(1, 2000) g" % table)
        cur.execute("SAVEPOINT s")
        cur.execute("INSERT INTO %s (data) SELECT 'b' || g FROM "
                    "generate_series(1, 2000) g" % table)
        cur.execute("ROLLBACK TO s")
        cur.execute("COMMIT")
    msgs = capture(dsn + WORK_MEM_64K, sql, slot_name, "pgoutput",
                   opts(publication, 2, streaming="on"))
    chs = changes_of(msgs)
    kinds = {type(c) for c in chs}
    assert {pld.StreamStart, pld.StreamStop, pld.StreamCommit,
            pld.StreamAbort} <= kinds
    starts = [c for c in chs if isinstance(c, pld.StreamStart)]
    assert starts[0].first_segment is True
    assert all(s.first_segment is False for s in starts[1:]
               if s.xid == starts[0].xid)
    # both transactions are streamed; the second one has the savepoint
    first, sc = [c for c in chs if isinstance(c, pld.StreamCommit)]
    assert first.xid != sc.xid
    streamed = [c for c in chs if isinstance(c, pld.Insert)
                and c.xid == sc.xid]
    assert len(streamed) >= 2000
    aborts = [c for c in chs if isinstance(c, pld.StreamAbort)]
    assert aborts[0].xid == sc.xid and aborts[0].subxid != sc.xid
    kept = [c.new["data"] for c in streamed]
    assert "a1" in kept and "a2000" in kept


# -- two-phase: needs max_prepared_transactions > 0 (conftest: tp) --

def test_two_phase(tp):
    dsn, sql, slot, table, pub = tp
    create_slot(sql, slot, "pgoutput")
    with sql.connection.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO %s (data) VALUES ('p1')" % table)
        cur.execute("PREPARE TRANSACTION 'g''1'")
        cur.execute("COMMIT PREPARED 'g''1'")
        cur.execute("BEGIN")
        cur.execute("INSERT INTO %s (data) VALUES ('p2')" % table)
        cur.execute("PREPARE TRANSACTION 'g2'")
        cur.execute("ROLLBACK PREPARED 'g2'")
    msgs = capture(dsn, sql, slot, "pgoutput",
                   opts(pub, 3, two_phase="true"))
    chs = [c for c in changes_of(msgs) if not isinstance(c, pld.Relation)]
    kinds = [type(c).__name__ for c in chs]
    assert kinds == ["BeginPrepare", "Insert", "Prepare", "CommitPrepared",
                     "BeginPrepare", "Insert", "Prepare", "RollbackPrepared"]
    bp, ins, p, cp = chs[:4]
    assert bp.gid == p.gid == cp.gid == "g'1"
    assert bp.xid == ins.xid == p.xid == cp.xid
    assert isinstance(p.prepare_time, datetime.datetime)
    rp = chs[7]
    assert rp.gid == "g2" and rp.rollback_time >= rp.prepare_time


def test_two_phase_streamed(tp):
    dsn, sql, slot, table, pub = tp
    create_slot(sql, slot, "pgoutput")
    with sql.connection.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO %s (data) SELECT 'a' || g FROM "
                    "generate_series(1, 3000) g" % table)
        cur.execute("PREPARE TRANSACTION 'big'")
        cur.execute("COMMIT PREPARED 'big'")
    msgs = capture(dsn + WORK_MEM_64K, sql, slot, "pgoutput",
                   opts(pub, 3, two_phase="true", streaming="on"))
    chs = changes_of(msgs)
    (sp,) = changes_of(msgs, pld.StreamPrepare)
    (cp,) = changes_of(msgs, pld.CommitPrepared)
    assert sp.gid == cp.gid == "big" and sp.xid == cp.xid
    assert len(changes_of(msgs, pld.Insert)) == 3000
    assert any(isinstance(c, pld.StreamStart) for c in chs)


def test_create_publication_helper(dsn, sql, table):
    r = pld.Reader(dsn, slot="unused_slot", plugin="pgoutput")
    try:
        pld.create_publication(r, "pubh_" + table, tables=[table])
        pld.create_publication(sql.connection, "pubh2_" + table,
                               tables=[("public", table)])
        rows = sql("SELECT pubname, tablename FROM pg_publication_tables "
                   "WHERE tablename = %s ORDER BY 1", table)
        assert rows == [("pubh2_" + table, table), ("pubh_" + table, table)]
    finally:
        pld.drop_publication(r, "pubh_" + table)
        pld.drop_publication(sql.connection, "pubh2_" + table)
        r.close()
