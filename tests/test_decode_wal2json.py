"""wal2json output (format-version 1 and 2) decoded into changes."""

from decimal import Decimal

import pytest

import pylogicaldecoding as pld
from pylogicaldecoding import _core, decoders

from conftest import drop_slot
from readers import Background, Collector, wait_for
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


def test_write_in_chunks_unit():
    """format-version 1 with write-in-chunks: header, changes (the
    second one on with a leading comma), end: one list per message."""
    d = decoders.make_decoder("wal2json")
    assert d(M('{"xid":740,"timestamp":"2026-11-24 23:50:03.776+00",'
               '"change":[')) == [pld.Begin(740, 0x16B374D848, _ts())]
    (i1,) = d(M('{"kind":"insert","schema":"s","table":"t",'
                '"columnnames":["a"],"columntypes":["integer"],'
                '"columnvalues":[1]}'))
    (i2,) = d(M('\t,{"kind":"insert","schema":"s","table":"t",'
                '"columnnames":["a"],"columntypes":["integer"],'
                '"columnvalues":[2]}'))
    assert (i1.new, i2.new, i1.xid, i2.xid) == ({"a": 1}, {"a": 2}, 740, 740)
    (c,) = d(M("\n]\n}"))
    assert c == pld.Commit(740, 0x16B374D848, _ts(), None)
    # a change or an end outside a chunked transaction is an error
    for text in ('{"kind":"insert","schema":"s","table":"t"}', "]}",
                 ',{"kind":"insert"}'):
        with pytest.raises(pld.DecodingError, match="16/B374D848"):
            d(M(text))
    d(M('{"xid":741,"change":['))
    with pytest.raises(pld.DecodingError, match="16/B374D848"):
        d(M(',{"kind":"insert", "sch'))


def _ts():
    return _core.text_timestamptz("2026-11-24 23:50:03.776+00")


def test_unchanged_toast_unit():
    """Columns wal2json leaves out of an update (unchanged TOAST) come
    back as UNCHANGED, in the table's order, when the column list is
    known; a table whose columns changed since is left as printed."""
    cols = {("s", "t"): [("id", False), ("big", True), ("n", False)]}
    d = decoders.Wal2JsonDecoder(columns=cols)
    up = ('{"action":"U","schema":"s","table":"t","columns":['
          '{"name":"id","type":"integer","value":1},'
          '{"name":"n","type":"integer","value":%s}]}')
    new = d(M(up % 5)).new
    assert new == {"id": 1, "big": pld.UNCHANGED, "n": 5}
    assert list(new) == ["id", "big", "n"] and new["big"] is pld.UNCHANGED
    # inserts and deletes are never filled; other tables neither
    ins = d(M('{"action":"I","schema":"s","table":"t","columns":['
              '{"name":"id","type":"integer","value":1}]}'))
    assert ins.new == {"id": 1}
    other = d(M(up.replace('"t"', '"u"') % 5))
    assert other.new == {"id": 1, "n": 5}
    # a column the list does not know: the list is stale, never guessed
    stale = d(M('{"action":"U","schema":"s","table":"t","columns":['
                '{"name":"id","type":"integer","value":1},'
                '{"name":"added","type":"integer","value":2}]}'))
    assert stale.new == {"id": 1, "added": 2}
    assert d(M(up % 6)).new == {"id": 1, "n": 6}
    # v1 too
    d = decoders.Wal2JsonDecoder(columns=cols)
    (_, u, _) = d(M('{"xid":1,"change":[{"kind":"update","schema":"s",'
                    '"table":"t","columnnames":["id","n"],'
                    '"columntypes":["integer","integer"],'
                    '"columnvalues":[1,2]}]}'))
    assert u.new == {"id": 1, "big": pld.UNCHANGED, "n": 2}


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


@pytest.mark.needs("wal2json")
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


@pytest.mark.needs("wal2json")
def test_write_in_chunks_streams(dsn, sql, slot_name, table):
    """write-in-chunks=1 through the Reader: one message per change, the
    same changes as without it, and the stream goes on past them."""
    create_slot(sql, slot_name, "wal2json")
    sql("INSERT INTO %s (data) SELECT repeat('x', 3000) || g FROM "
        "generate_series(1, 3) g" % table)
    sql("UPDATE %s SET data = 'y' WHERE id = 2" % table)
    sql("SELECT pg_logical_emit_message(true, 'p', 'hello')")
    sql("INSERT INTO %s (data) VALUES ('last')" % table)
    got = {}
    for chunks in ("0", "1"):
        opts = decoders.default_options(
            "wal2json", {"format-version": "1", "write-in-chunks": chunks,
                         "include-lsn": "1"}, 150000)
        msgs = capture(dsn, sql, slot_name, "wal2json", opts)
        assert all(isinstance(m.change, list) for m in msgs)
        got[chunks] = msgs
    plain, chunked = got["0"], got["1"]
    assert len(plain) == 4 and len(chunked) == 4 * 2 + 3 + 1 + 1 + 1
    strip = [(type(c).__name__, getattr(c, "new", None),
              getattr(c, "xid", None)) for c in changes_of(plain)]
    assert strip == [(type(c).__name__, getattr(c, "new", None),
                      getattr(c, "xid", None)) for c in changes_of(chunked)]
    ins = changes_of(chunked, pld.Insert)
    assert [i.new["data"] for i in ins] == [
        "x" * 3000 + str(g) for g in (1, 2, 3)] + ["last"]
    commits = changes_of(chunked, pld.Commit)
    assert [c.end_lsn for c in commits] == [
        c.end_lsn for c in changes_of(plain, pld.Commit)]
    assert all(c.end_lsn for c in commits)


@pytest.mark.needs("wal2json")
@pytest.mark.parametrize("version", ["1", "2"])
def test_unchanged_toast_is_unchanged(dsn, sql, slot_name, table, version):
    """An update that leaves a TOASTed column alone: wal2json leaves the
    column out; the Reader's decoder gives UNCHANGED, as test_decoding."""
    sql("ALTER TABLE %s ALTER data SET STORAGE EXTERNAL" % table)
    sql("ALTER TABLE %s ADD other int, ADD tail text, ADD twice int "
        "GENERATED ALWAYS AS (other * 2) STORED" % table)
    sql("INSERT INTO %s (data, other, tail) VALUES (repeat('x', 5000), 1, "
        "'t')" % table)
    create_slot(sql, slot_name, "wal2json")
    sql("UPDATE %s SET other = 2" % table)
    sql("UPDATE %s SET data = 'small', other = 3" % table)
    opts = decoders.default_options("wal2json", {"format-version": version},
                                    150000)
    u1, u2 = changes_of(capture(dsn, sql, slot_name, "wal2json", opts),
                        pld.Update)
    # a stored generated column is printed too (and is no reason to stop)
    assert u1.new == {"id": 1, "data": pld.UNCHANGED, "other": 2,
                      "tail": "t", "twice": 4}
    assert u1.new["data"] is pld.UNCHANGED
    assert list(u1.new) == ["id", "data", "other", "tail", "twice"]
    assert u2.new == {"id": 1, "data": "small", "other": 3, "tail": "t",
                      "twice": 6}
    # the same as test_decoding says
    sql("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')",
        slot_name + "_td")
    try:
        sql("UPDATE %s SET other = 4, data = repeat('z', 5000)" % table)
        sql("UPDATE %s SET other = 5" % table)
        td = changes_of(capture(dsn, sql, slot_name + "_td",
                                "test_decoding"), pld.Update)
        wj = changes_of(capture(dsn, sql, slot_name, "wal2json", opts),
                        pld.Update)[2:]
        assert [u.new for u in td] == [u.new for u in wj]
        assert td[1].new["data"] is pld.UNCHANGED
    finally:
        drop_slot(dsn, slot_name + "_td")


class FakeCatalog:
    """An ``execute`` answering the one-table column query from a dict,
    counting the queries."""

    def __init__(self, tables):
        self.tables = tables
        self.queries = []

    def __call__(self, sql):
        self.queries.append(sql)
        rows = [(s, t, c, "t" if toast else "f")
                for (s, t), cols in self.tables.items()
                if "'%s'" % s in sql and "'%s'" % t in sql
                for c, toast in cols]
        return ["nspname", "relname", "attname", "toastable"], rows


def _up(table, **cols):
    return M('{"action":"U","schema":"s","table":"%s","columns":[%s]}' % (
        table, ",".join('{"name":"%s","type":"integer","value":%d}' % kv
                        for kv in cols.items())))


def test_unchanged_toast_refresh_unit():
    """With a catalog, a table the list lacks, an update naming a column
    the list lacks and, after an empty transaction (DDL), an update
    leaving columns out read the table's list again; a change that fits
    no list (the catalog moved on) is left as printed, read once."""
    cols = {("s", "t"): [("id", False), ("big", True), ("n", False)]}
    cat = FakeCatalog(dict(cols))
    d = decoders.Wal2JsonDecoder(columns=cols, catalog=cat)
    assert d(_up("t", id=1, n=2)).new == {
        "id": 1, "big": pld.UNCHANGED, "n": 2}
    assert cat.queries == []
    # a column added: read again, then filled in the new order
    cat.tables[("s", "t")] = cols[("s", "t")] + [("m", False)]
    assert d(_up("t", id=1, n=2, m=3)).new == {
        "id": 1, "big": pld.UNCHANGED, "n": 2, "m": 3}
    assert len(cat.queries) == 1 and "'t'" in cat.queries[0]
    # a table created since the start
    cat.tables[("s", "u")] = [("id", False), ("body", True)]
    assert d(_up("u", id=7)).new == {"id": 7, "body": pld.UNCHANGED}
    assert len(cat.queries) == 2
    assert d(_up("u", id=8)).new == {"id": 8, "body": pld.UNCHANGED}
    assert len(cat.queries) == 2
    # a TOAST-able column dropped: only an empty transaction says so
    cat.tables[("s", "u")] = [("id", False), ("body", True), ("x", True)]
    d._columns_of[("s", "u")] = cat.tables[("s", "u")]
    d._names_of.pop(("s", "u"))
    cat.tables[("s", "u")] = [("id", False), ("body", True)]
    d(M('{"action":"B","xid":5}'))
    d(M('{"action":"C","xid":5}'))
    assert d(_up("u", id=9)).new == {"id": 9, "body": pld.UNCHANGED}
    assert len(cat.queries) == 3
    # a column the catalog no longer has (dropped after the change was
    # written): left as printed, and not read again for the same columns
    assert d(_up("u", id=9, gone=1)).new == {"id": 9, "gone": 1}
    assert d(_up("u", id=9, gone=2)).new == {"id": 9, "gone": 2}
    assert len(cat.queries) == 4
    # a table that no longer exists
    assert d(_up("v", id=1)).new == {"id": 1}
    assert d(_up("v", id=1)).new == {"id": 1}
    assert len(cat.queries) == 5
    # transactions with changes are no DDL hint
    d(M('{"action":"B","xid":6}'))
    d(_up("u", id=9))
    d(M('{"action":"C","xid":6}'))
    assert d(_up("u", id=9)).new == {"id": 9, "body": pld.UNCHANGED}
    assert len(cat.queries) == 5
    # v1: an empty transaction is a hint too
    d = decoders.Wal2JsonDecoder(columns=dict(cat.tables), catalog=cat)
    cat.tables[("s", "u")] = [("id", False)]
    d(M('{"xid":10,"change":[]}'))
    (_, u, _) = d(M('{"xid":11,"change":[{"kind":"update","schema":"s",'
                    '"table":"u","columnnames":["id"],'
                    '"columntypes":["integer"],"columnvalues":[1]}]}'))
    assert u.new == {"id": 1}
    assert len(cat.queries) == 6


def test_unchanged_toast_refresh_fails_softly(caplog):
    """A catalog that cannot be read is logged once; rows that do not fit
    are then left as printed and the stream goes on."""
    calls = []

    def broken(sql):
        calls.append(sql)
        raise pld.OperationalError("connection refused")
    d = decoders.Wal2JsonDecoder(columns={}, catalog=broken)
    with caplog.at_level("WARNING", logger="pylogicaldecoding"):
        assert d(_up("t", id=1)).new == {"id": 1}
        assert d(_up("w", id=1)).new == {"id": 1}
    assert len(calls) == 1 and d.catalog is None
    assert "cannot read the columns of s.t" in caplog.text


def _wait_change(reader, pred, what):
    def found():
        for c in changes_of(list(reader.msgs)):
            if pred(c):
                return c
        return None
    return wait_for(found, timeout=60, what=what)


def _is_update(table, **where):
    return lambda c: (isinstance(c, pld.Update) and c.table == table
                      and all(c.new.get(k) == v for k, v in where.items()))


@pytest.mark.needs("wal2json")
@pytest.mark.parametrize("version", ["1", "2"])
def test_unchanged_toast_tables_change_mid_stream(dsn, sql, slot_name,
                                                  table, version):
    """The column lists follow DDL run while the Reader streams: a
    TOAST-able column added, a table created, a TOAST-able column
    dropped: left-out TOAST values are UNCHANGED for exactly the table's
    columns of the moment."""
    sql("ALTER TABLE %s ALTER data SET STORAGE EXTERNAL, ADD n int, "
        "ADD extra text" % table)
    sql("INSERT INTO %s (data, n, extra) VALUES (repeat('x', 5000), 0, "
        "'e')" % table)
    create_slot(sql, slot_name, "wal2json")
    opts = decoders.default_options("wal2json", {"format-version": version},
                                    150000)
    r = Collector(dsn, slot=slot_name, plugin="wal2json", options=opts,
                  create_slot=False)
    bg = Background(r)
    created = table + "_new"
    try:
        # the stream runs (its column lists are read) before the DDL
        sql("UPDATE %s SET n = 1" % table)
        first = _wait_change(r, _is_update(table, n=1), "the first update")
        assert first.new == {"id": 1, "data": pld.UNCHANGED, "n": 1,
                             "extra": "e"}
        # a TOAST-able column added, filled, then left alone
        sql("ALTER TABLE %s ADD big text" % table)
        sql("ALTER TABLE %s ALTER big SET STORAGE EXTERNAL" % table)
        sql("UPDATE %s SET big = repeat('b', 5000), n = 2" % table)
        sql("UPDATE %s SET n = 3" % table)
        # (each step is decoded before the next DDL: see the next test)
        u3 = _wait_change(r, _is_update(table, n=3), "the update after ADD")
        assert u3.new == {"id": 1, "data": pld.UNCHANGED, "n": 3,
                          "extra": "e", "big": pld.UNCHANGED}
        assert list(u3.new) == ["id", "data", "n", "extra", "big"]
        # a table created while streaming
        sql("CREATE TABLE %s (id int PRIMARY KEY, body text, k int)"
            % created)
        sql("ALTER TABLE %s ALTER body SET STORAGE EXTERNAL" % created)
        sql("INSERT INTO %s VALUES (1, repeat('y', 5000), 0)" % created)
        sql("UPDATE %s SET k = 1" % created)
        k1 = _wait_change(r, _is_update(created, k=1),
                          "the new table's update")
        assert k1.new == {"id": 1, "body": pld.UNCHANGED, "k": 1}
        # a TOAST-able column dropped: no phantom UNCHANGED for it
        sql("ALTER TABLE %s DROP extra" % table)
        sql("UPDATE %s SET n = 4" % table)
        u4 = _wait_change(r, _is_update(table, n=4), "the update after DROP")
        assert u4.new == {"id": 1, "data": pld.UNCHANGED, "n": 4,
                          "big": pld.UNCHANGED}
    finally:
        r.stop(timeout=30)
        bg.join()
        r.close()
        sql("DROP TABLE IF EXISTS %s" % created)
    assert r.decoder.catalog.closed


@pytest.mark.needs("wal2json")
def test_unchanged_toast_catalog_ahead_of_change(dsn, sql, slot_name, table):
    """The documented limit (docs/decoding.md): the catalog is read when a
    change is decoded, not as it was when the change was written. A
    column dropped in between is absent from the change's new row (not
    UNCHANGED); a TOAST-able column added in between is UNCHANGED in it
    though the row had no such column then."""
    sql("ALTER TABLE %s ALTER data SET STORAGE EXTERNAL, ADD n int, "
        "ADD extra text" % table)
    sql("ALTER TABLE %s ALTER extra SET STORAGE EXTERNAL" % table)
    sql("INSERT INTO %s (data, n, extra) VALUES (repeat('x', 5000), 0, "
        "repeat('e', 5000))" % table)
    create_slot(sql, slot_name, "wal2json")
    sql("UPDATE %s SET n = 1" % table)
    sql("ALTER TABLE %s DROP extra, ADD later text" % table)
    opts = decoders.default_options("wal2json", {"format-version": "2"},
                                    150000)
    (u,) = changes_of(capture(dsn, sql, slot_name, "wal2json", opts),
                      pld.Update)
    assert u.new == {"id": 1, "data": pld.UNCHANGED, "n": 1,
                     "later": pld.UNCHANGED}


@pytest.mark.needs("wal2json")
def test_unchanged_toast_mid_stream_async(dsn, sql, slot_name, table):
    """The AsyncReader's decoder reads changed tables again too (the same
    set-up, rules.stream_setup), and closes its catalog connection."""
    import asyncio
    from pylogicaldecoding.aio import AsyncReader

    sql("ALTER TABLE %s ALTER data SET STORAGE EXTERNAL, ADD n int, "
        "ADD extra text" % table)
    sql("INSERT INTO %s (data, n, extra) VALUES (repeat('x', 5000), 0, "
        "'e')" % table)
    create_slot(sql, slot_name, "wal2json")
    sql("UPDATE %s SET n = 1" % table)
    steps = {
        1: ["ALTER TABLE %s ADD big text" % table,
            "ALTER TABLE %s ALTER big SET STORAGE EXTERNAL" % table,
            "UPDATE %s SET big = repeat('b', 5000), n = 2" % table,
            "UPDATE %s SET n = 3" % table],
        3: ["ALTER TABLE %s DROP extra" % table,
            "UPDATE %s SET n = 4" % table],
    }

    async def main():
        got = {}
        r = AsyncReader(dsn, slot=slot_name, plugin="wal2json",
                        create_slot=False)
        async with r:
            async for msg in r:
                c = msg.change
                if isinstance(c, pld.Update):
                    n = c.new["n"]
                    got[n] = c.new
                    for stmt in steps.get(n, ()):
                        sql(stmt)
                    if n == 4:
                        r.stop()
        return got, r

    loop = asyncio.new_event_loop()
    try:
        got, r = loop.run_until_complete(asyncio.wait_for(main(), 120))
    finally:
        loop.close()
    assert got[3] == {"id": 1, "data": pld.UNCHANGED, "n": 3, "extra": "e",
                      "big": pld.UNCHANGED}
    assert got[4] == {"id": 1, "data": pld.UNCHANGED, "n": 4,
                      "big": pld.UNCHANGED}
    assert r._core.decoder.catalog.closed
