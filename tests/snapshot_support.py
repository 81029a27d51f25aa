"""Helpers of the snapshot and backfill tests: a schema of tables covering
the converters, a writer changing them, and a downstream copy built by
applying the changes in order."""

import json
import random
import reprlib
import threading
import time
import uuid

import psycopg2
import psycopg2.extras

import pylogicaldecoding as pld

psycopg2.extras.register_uuid()

QUOTED_TABLE = 'Quoted "Table"'


def make_schema(sql, schema, rows=2000, publication=None):
    """Create the tables of the proofs in ``schema``; return their
    (schema, table) names and the key columns of each."""
    q = '"%s"' % schema
    sql("CREATE SCHEMA %s" % q)
    sql("""CREATE TABLE %s.types (
        id int PRIMARY KEY, i2 smallint, i8 bigint, f8 float8, n numeric,
        b bool, t text, v varchar(20), c char(4), by bytea, d date,
        ts timestamp, tz timestamptz, tm time, iv interval, u uuid, j json,
        jb jsonb, ia int[], ta text[], big text)""" % q)
    sql("""INSERT INTO %s.types SELECT g, (g %% 300)::smallint, g::bigint * 1000000007,
        g / 7.0, g * 1.25, g %% 2 = 0, 'tab\there ' || g || E'\\n\\\\x',
        'v' || g, 'c', decode(md5(g::text), 'hex'), '2020-01-01'::date + g,
        '2020-01-01 10:00'::timestamp + g * interval '1 min',
        '2020-01-01 10:00+02'::timestamptz + g * interval '1 s',
        '12:00'::time + g * interval '1 s', g * interval '1 hour 3 s',
        md5(g::text)::uuid, json_build_object('g', g, 's', 'x"y'),
        jsonb_build_object('g', g), ARRAY[g, NULL, g + 1], ARRAY['a,b', NULL],
        CASE WHEN g %% 50 = 0 THEN (SELECT string_agg(md5(g::text || k::text), '')
             FROM generate_series(1, 300) k) END
        FROM generate_series(1, %d) g""" % (q, rows))
    sql("INSERT INTO %s.types (id) VALUES (%d)" % (q, rows + 1))    # NULLs
    sql("""CREATE TABLE %s.parted (id int, k text, val int,
        PRIMARY KEY (id, k)) PARTITION BY RANGE (id)""" % q)
    sql("CREATE TABLE %s.parted_a PARTITION OF %s.parted FOR VALUES FROM "
        "(MINVALUE) TO (%d)" % (q, q, rows // 2))
    sql("CREATE TABLE %s.parted_b PARTITION OF %s.parted FOR VALUES FROM "
        "(%d) TO (MAXVALUE)" % (q, q, rows // 2))
    sql("INSERT INTO %s.parted SELECT g, 'k' || (g %% 3), g FROM "
        "generate_series(1, %d) g" % (q, rows))
    sql('CREATE TABLE %s."%s" (name text, n int, val text, PRIMARY KEY '
        '(name, n))' % (q, QUOTED_TABLE.replace('"', '""')))
    sql('INSERT INTO %s."%s" SELECT \'name \' || g, g %% 5, md5(g::text) FROM '
        'generate_series(1, %d) g' % (q, QUOTED_TABLE.replace('"', '""'), rows))
    sql("CREATE TABLE %s.empty (id int PRIMARY KEY, x text)" % q)
    tables = {
        (schema, "types"): ["id"],
        (schema, "parted_a"): ["id", "k"],
        (schema, "parted_b"): ["id", "k"],
        (schema, QUOTED_TABLE): ["name", "n"],
        (schema, "empty"): ["id"],
    }
    if publication:
        sql("CREATE PUBLICATION %s FOR TABLE %s.types, %s.parted, %s.\"%s\", "
            "%s.empty" % (publication, q, q, q,
                          QUOTED_TABLE.replace('"', '""'), q))
    return tables


def qname(schema, table):
    return '"%s"."%s"' % (schema.replace('"', '""'), table.replace('"', '""'))


class Writer:
    """Inserts, updates (TOASTed rows too, leaving the TOAST value alone)
    and deletes rows of the tables, in its own thread, until stopped."""

    def __init__(self, dsn, schema, rows, seed=0):
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        self.schema = schema
        self.rnd = random.Random(seed)
        self.next_id = rows + 10
        self.rows = rows
        self.count = 0
        self.error = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def step(self):
        q = '"%s"' % self.schema
        r = self.rnd
        cur = self.conn.cursor()
        op = r.randrange(9)
        i = r.randrange(1, self.next_id)
        if op == 0:
            self.next_id += 1
            cur.execute("INSERT INTO %s.types (id, t, n, big) VALUES (%%s, "
                        "%%s, %%s, %%s)" % q, (self.next_id, "new\t%d" % i,
                                              i / 3, "z" * r.choice([0, 5000])))
        elif op == 1:
            cur.execute("UPDATE %s.types SET t = %%s, i8 = i8 + 1 WHERE id = "
                        "%%s" % q, ("upd %d" % r.random(), i))
        elif op == 2:   # a TOASTed row, TOAST column untouched
            cur.execute("UPDATE %s.types SET f8 = %%s WHERE id = %%s"
                        % q, (r.random(), (i // 50) * 50 or 50))
        elif op == 3:
            cur.execute("DELETE FROM %s.types WHERE id = %%s" % q, (i,))
        elif op == 4:
            cur.execute("UPDATE %s.parted SET val = val + 1 WHERE id = %%s"
                        % q, (i,))
        elif op == 5:   # moves the row to the other partition
            self.next_id += 1
            cur.execute("UPDATE %s.parted SET id = %%s WHERE id = %%s AND "
                        "k = 'k0'" % q, (r.choice([-1, 1]) * self.next_id, i))
        elif op == 6:
            cur.execute("INSERT INTO %s.parted VALUES (%%s, 'n', 1) ON "
                        "CONFLICT DO NOTHING" % q, (i,))
        elif op == 7:
            cur.execute('UPDATE %s."%s" SET val = %%s WHERE name = %%s'
                        % (q, QUOTED_TABLE.replace('"', '""')),
                        ("v%f" % r.random(), "name %d" % i))
        else:
            cur.execute('DELETE FROM %s."%s" WHERE name = %%s'
                        % (q, QUOTED_TABLE.replace('"', '""')),
                        ("name %d" % i,))
        self.count += 1

    def _run(self):
        try:
            while not self._stop.is_set():
                self.step()
        except BaseException as e:
            self.error = e

    def stop(self):
        self._stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        self.conn.close()
        if self.error:
            raise self.error


class Downstream:
    """Tables as dicts key -> row, built by applying the changes."""

    def __init__(self, keys, strict=True):
        self.keys = keys            # (schema, table) -> key columns
        self.tables = {t: {} for t in keys}
        self.strict = strict        # UNCHANGED needs a known row

    def key(self, t, row):
        return tuple(row[c] for c in self.keys[t])

    def apply(self, ch):
        """Apply one change; True if it was a row change of our tables."""
        if isinstance(ch, (pld.SnapshotRow, pld.Insert, pld.Update,
                           pld.Delete)):
            t = (ch.schema, ch.table)
            if t not in self.tables:
                return False
            rows = self.tables[t]
            if isinstance(ch, pld.Delete):
                rows.pop(self.key(t, ch.old), None)
                return True
            old = None
            if isinstance(ch, pld.Update) and ch.old is not None:
                old = rows.pop(self.key(t, ch.old), None)
            new = dict(ch.new)
            prev = rows.get(self.key(t, new)) or old
            for k, v in new.items():
                if v is pld.UNCHANGED:
                    if prev is None:
                        assert not self.strict, "UNCHANGED for an unknown row"
                        continue
                    new[k] = prev[k]
            rows[self.key(t, new)] = new
            return True
        return False


def normalise(v):
    if isinstance(v, memoryview):
        return bytes(v)
    return v


def table_state(dsn, keys):
    """SELECT * of every table as key -> row dicts (psycopg2's values)."""
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        state = {}
        for (schema, table), key in keys.items():
            cur.execute("SELECT * FROM ONLY %s" % qname(schema, table))
            names = [d[0] for d in cur.description]
            rows = {}
            for r in cur.fetchall():
                row = {n: normalise(v) for n, v in zip(names, r)}
                rows[tuple(row[c] for c in key)] = row
            state[(schema, table)] = rows
        return state
    finally:
        conn.close()


def assert_same(downstream, state):
    for t, rows in state.items():
        got = downstream.tables[t]
        missing = set(rows) - set(got)
        extra = set(got) - set(rows)
        assert not missing and not extra, (
            "%s: %d rows missing (%s), %d extra (%s)" % (
                t, len(missing), sorted(missing)[:5], len(extra),
                sorted(extra)[:5]))
        for k, row in rows.items():
            if got[k] != row:
                diff = {c: (reprlib.repr(got[k].get(c)), reprlib.repr(v))
                        for c, v in row.items() if got[k].get(c) != v}
                raise AssertionError("%s %s: downstream != table: %s"
                                     % (t, k, diff))


def end_marker(sql, tag):
    """Emit a transactional logical message the reader stops at."""
    sql("SELECT pg_logical_emit_message(true, 'pld_test_end', %s)", tag)


def is_end(ch, tag):
    return (isinstance(ch, pld.LogicalMessage) and ch.prefix == "pld_test_end"
            and bytes(ch.content or b"") == tag.encode())


def wait_for(cond, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.01)


def unique_schema():
    return "snap %s" % uuid.uuid4().hex[:8]


__all__ = ["make_schema", "Writer", "Downstream", "table_state",
           "assert_same", "end_marker", "is_end", "json"]
