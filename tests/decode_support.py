"""Helpers of the decoding tests: capture a stream, compare values."""

import datetime
import decimal
import ipaddress
import math
import uuid

import psycopg2.extras

import pylogicaldecoding as pld
from pylogicaldecoding import decoders

psycopg2.extras.register_uuid()
psycopg2.extras.register_ipaddress()

# One column per type: (name, SQL type, literal). Values Python has an
# exact equivalent for; the special ones are checked in EXPECTED.
TYPE_COLUMNS = [
    ("i2", "smallint", "-32768"),
    ("i4", "integer", "2147483647"),
    ("i8", "bigint", "-9223372036854775808"),
    ("o", "oid", "4294967295"),
    ("f4", "real", "1.5"),
    ("f8", "double precision", "-1.25e300"),
    ("f8n", "double precision", "'NaN'"),
    ("f8i", "double precision", "'-Infinity'"),
    ("n", "numeric(30,10)", "12345678901234567890.0123456789"),
    ("n2", "numeric", "-0.000001"),
    ("n3", "numeric", "1e20"),
    ("nn", "numeric", "'NaN'"),
    ("ni", "numeric", "'Infinity'"),
    ("b", "boolean", "true"),
    ("b2", "boolean", "false"),
    ("t", "text", "E'it''s\\n\"q\" \\\\ ]: x[integer]:1 é'"),
    ("vc", "varchar(10)", "'ab'"),
    ("c", "char(3)", "'x'"),
    ("nm", "name", "'nm'"),
    ("ch", '"char"', "'c'"),
    ("by", "bytea", "'\\x00ff27'::bytea"),
    ("d", "date", "'2024-02-29'"),
    ("dinf", "date", "'infinity'"),
    ("tm", "time", "'12:34:56.789'"),
    ("ttz", "timetz", "'12:34:56+05:30'"),
    ("ts", "timestamp", "'2024-01-02 03:04:05.678'"),
    ("tsinf", "timestamp", "'infinity'"),
    ("tstz", "timestamptz", "'2024-01-02 03:04:05.678+02'"),
    ("tstzinf", "timestamptz", "'-infinity'"),
    ("iv", "interval", "'1 year 2 mons -3 days 04:05:06.5'"),
    ("iv2", "interval", "'-00:00:01'"),
    ("u", "uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"),
    ("j", "json", "'{\"a\": [1, 2.5, null], \"b\": \"x\"}'"),
    ("jb", "jsonb", "'{\"a\": [1, 2.5, null], \"b\": {\"c\": true}}'"),
    ("ip", "inet", "'192.168.0.1/24'"),
    ("ip6", "inet", "'::1'"),
    ("net", "cidr", "'10.0.0.0/8'"),
    ("ai", "integer[]", "'{{1,NULL},{3,4}}'"),
    ("at", "text[]", "'{\"a b\",\"x\\\"y\",NULL,\"NULL\",\"\"}'"),
    ("an", "numeric[]", "'{1.5,NaN}'"),
    ("ab", "bool[]", "'{t,f}'"),
    ("ats", "timestamptz[]", "'{\"2024-01-02 03:04:05+00\"}'"),
    ("en", "pld_mood", "'ok'"),
    ("dom", "pld_posint", "5"),
    ("nul", "text", "NULL"),
]

# Values checked by hand rather than against psycopg2
EXPECTED = {
    "dinf": datetime.date.max,
    "tsinf": datetime.datetime.max,
    "tstzinf": datetime.datetime.min.replace(tzinfo=datetime.timezone.utc),
    "ip6": ipaddress.ip_address("::1"),
    "ni": decimal.Decimal("Infinity"),
}


def setup_types(sql):
    """The enum and domain of TYPE_COLUMNS (idempotent)."""
    sql("DO $$ BEGIN CREATE TYPE pld_mood AS ENUM ('sad', 'ok');"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    sql("DO $$ BEGIN CREATE DOMAIN pld_posint AS integer CHECK (VALUE > 0);"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$")


def create_type_table(sql, name):
    setup_types(sql)
    cols = ", ".join("%s %s" % (c, t) for c, t, _ in TYPE_COLUMNS)
    sql("CREATE TABLE %s (id serial PRIMARY KEY, %s)" % (name, cols))


def insert_type_row(sql, name):
    cols = ", ".join(c for c, _, _ in TYPE_COLUMNS)
    vals = ", ".join(v for _, _, v in TYPE_COLUMNS)
    sql("INSERT INTO %s (%s) VALUES (%s)" % (name, cols, vals))


def expected_row(sql, name):
    """The row as psycopg2 reads it, adapted to our documented choices."""
    cur_names = ["id"] + [c for c, _, _ in TYPE_COLUMNS]
    row = sql("SELECT %s FROM %s ORDER BY id LIMIT 1"
              % (", ".join(cur_names), name))[0]
    out = dict(zip(cur_names, row))
    for k, v in list(out.items()):
        if isinstance(v, memoryview):
            out[k] = bytes(v)
        if k == "dom":
            out[k] = int(v)
    out.update(EXPECTED)
    return out


def same(a, b):
    """Equality that treats NaN as equal to NaN, also inside lists."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) \
            and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, decimal.Decimal) and isinstance(b, decimal.Decimal) \
            and a.is_nan() and b.is_nan():
        return True
    return type(a) is type(b) and a == b


def same_json(a, b):
    """Equal, with the same types all the way down (1 is not 1.0 or True)
    and the same key order: what json.loads gives, compared exactly (NaN
    equal to NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same_json, a, b))
    if isinstance(a, float) and a != a:
        return b != b
    return a == b


def assert_same_row(got, want):
    assert set(got) == set(want), set(got) ^ set(want)
    bad = {k: (got[k], want[k]) for k in want if not same(got[k], want[k])}
    assert not bad, bad


class Collector(pld.Reader):
    """A Reader that keeps every message."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messages = []

    def event(self, msg):
        self.messages.append(msg)


def current_lsn(sql):
    return pld.parse_lsn(sql("SELECT pg_current_wal_lsn()::text")[0][0])


def create_slot(sql, slot, plugin, two_phase=False):
    sql("SELECT pg_create_logical_replication_slot(%s, %s, false, %s)",
        slot, plugin, two_phase)


def capture(dsn, sql, slot, plugin, options=None, decode=True, until=None,
            registry=None, reader_kwargs=None):
    """Stream `slot` from where it is up to `until` (default: now);
    return the messages, decoded with a fresh decoder unless not `decode`.
    The slot must exist. `reader_kwargs` go to the Reader (binary,
    conninfo keywords such as options)."""
    if until is None:
        until = current_lsn(sql)
    r = Collector(dsn, slot=slot, plugin=plugin, options=options,
                  create_slot=False, decode=decode, type_registry=registry,
                  **(reader_kwargs or {}))
    try:
        r.start(until_lsn=until)
    finally:
        r.close()
    return r.messages


def changes_of(messages, *kinds):
    out = []
    for m in messages:
        chs = m.change if isinstance(m.change, list) else [m.change]
        out.extend(c for c in chs if not kinds or isinstance(c, kinds))
    return out


def uuid_val():
    return uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
