"""Benchmark: pgoutput decoding into typed changes.

1. On one captured pgoutput stream, the C decoder (`decoders.make_decoder`)
   against a straightforward pure-Python decoder written here for the
   comparison (goal: at least 10x faster).
2. End to end: draining the same backlog from the server with a no-op
   event(), `Reader(decode=False)` (raw payloads) against
   `Reader(decode=True)` (typed changes in msg.change) (goal: within 1.2x
   the wall time of the raw drain).

The backlog: --rows inserts of an 8-column row (int, text, int,
numeric(12,2), bool, float8, timestamptz, varchar) in 100-row
transactions, then an update of every fourth row in one transaction:
1.25 * rows row changes (default 200,000). The slot is never acked, so
every drain reads the same backlog from the start. Both parts run their
two sides alternately, --repeat times each, and report medians.

Usage: python bench/bench_decode.py [--dsn DSN] [--rows N] [--repeat K]
Without --dsn (or PLD_TEST_DSN) a throwaway server is started.
"""

import argparse
import datetime
import decimal
import json
import os
import statistics
import struct
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import pylogicaldecoding as pld  # noqa: E402
from pylogicaldecoding import decoders, types  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_drain import machine_info  # noqa: E402


# -- a straightforward pure-Python pgoutput decoder, for comparison --------

class PyChange:
    __slots__ = ("kind", "schema", "table", "new", "old", "lsn", "xid")

    def __init__(self, kind, schema=None, table=None, new=None, old=None,
                 lsn=None, xid=None):
        self.kind, self.schema, self.table = kind, schema, table
        self.new, self.old, self.lsn, self.xid = new, old, lsn, xid


PY_TEXT = {
    16: lambda s: s == "t", 20: int, 21: int, 23: int, 26: int,
    700: float, 701: float, 1700: decimal.Decimal, 25: str, 1043: str,
    1042: str, 19: str, 17: lambda s: bytes.fromhex(s[2:]),
    1184: types.parse_timestamptz, 1114: types.parse_timestamp,
    1082: types.parse_date, 2950: uuid.UUID, 114: json.loads,
    3802: json.loads,
}
EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)


class PyPgoutputDecoder:
    """Reads pgoutput messages with struct and slicing, as one would in
    Python; converts text values with the same converters."""

    def __init__(self):
        self.relations = {}
        self.xid = None

    @staticmethod
    def _cstr(buf, pos):
        end = buf.index(b"\0", pos)
        return buf[pos:end].decode(), end + 1

    def _tuple(self, buf, pos, rel):
        names, convs = rel[2], rel[3]
        (n,) = struct.unpack_from("!H", buf, pos)
        pos += 2
        row = {}
        for i in range(n):
            kind = buf[pos:pos + 1]
            pos += 1
            if kind == b"n":
                row[names[i]] = None
            elif kind == b"u":
                row[names[i]] = pld.UNCHANGED
            else:
                (ln,) = struct.unpack_from("!I", buf, pos)
                pos += 4
                row[names[i]] = convs[i](buf[pos:pos + ln].decode())
                pos += ln
        return row, pos

    def __call__(self, msg):
        buf = msg.payload
        tag = buf[0:1]
        if tag == b"B":
            final, ts, xid = struct.unpack_from("!QqI", buf, 1)
            self.xid = xid
            return PyChange("B", lsn=final, xid=xid)
        if tag == b"C":
            _, lsn, end, ts = struct.unpack_from("!BQQq", buf, 1)
            return PyChange("C", lsn=lsn, xid=self.xid)
        if tag == b"R":
            (relid,) = struct.unpack_from("!I", buf, 1)
            schema, pos = self._cstr(buf, 5)
            table, pos = self._cstr(buf, pos)
            pos += 1
            (ncols,) = struct.unpack_from("!H", buf, pos)
            pos += 2
            names, convs = [], []
            for _ in range(ncols):
                pos += 1
                name, pos = self._cstr(buf, pos)
                oid, _mod = struct.unpack_from("!Ii", buf, pos)
                pos += 8
                names.append(name)
                convs.append(PY_TEXT.get(oid, str))
            self.relations[relid] = (schema, table, names, convs)
            return PyChange("R", schema, table)
        if tag in (b"I", b"U", b"D"):
            (relid,) = struct.unpack_from("!I", buf, 1)
            rel = self.relations[relid]
            pos = 5
            new = old = None
            t = buf[pos:pos + 1]
            pos += 1
            if t in (b"K", b"O"):
                old, pos = self._tuple(buf, pos, rel)
                if tag == b"U":
                    pos += 1
                    new, pos = self._tuple(buf, pos, rel)
            else:
                new, pos = self._tuple(buf, pos, rel)
            return PyChange(tag.decode(), rel[0], rel[1], new, old,
                            msg.data_start, self.xid)
        return PyChange(tag.decode())


# -- setup ------------------------------------------------------------------

class Collector(pld.Reader):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.n = 0
        self.messages = []
        self.keep = False

    def event(self, msg):
        self.n += 1
        if self.keep:
            self.messages.append(msg)


def sql(dsn, *statements):
    import psycopg2
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def prepare(dsn, rows):
    sql(dsn,
        "DROP PUBLICATION IF EXISTS bench_pub",
        "DROP TABLE IF EXISTS bench_t",
        "CREATE TABLE bench_t (id serial PRIMARY KEY, name text, qty int,"
        " price numeric(12,2), flag bool, score float8, created timestamptz,"
        " note varchar(40))",
        "CREATE PUBLICATION bench_pub FOR TABLE bench_t",
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
        " WHERE slot_name = 'bench_slot'",
        "SELECT pg_create_logical_replication_slot('bench_slot', 'pgoutput')")
    per_txn = 100
    for start in range(0, rows, per_txn * 10):
        stmts = []
        for t in range(start, min(rows, start + per_txn * 10), per_txn):
            stmts.append(
                "INSERT INTO bench_t (name, qty, price, flag, score, created,"
                " note) SELECT 'name ' || g, g, g * 1.25, g %% 2 = 0, g / 7.0,"
                " now(), 'note' FROM generate_series(%d, %d) g"
                % (t, t + per_txn - 1))
        sql(dsn, *stmts)
    sql(dsn, "UPDATE bench_t SET qty = qty + 1 WHERE id % 4 = 0")
    return pld.parse_lsn(sql(dsn, "SELECT pg_current_wal_lsn()::text")[0][0])


OPTIONS = {"proto_version": "1", "publication_names": "bench_pub"}


def drain(dsn, until, decode, keep=False):
    """Drain the backlog with a no-op event(): the Reader as a user makes
    it, decoding on or off (start() makes the decoder when decode=True)."""
    r = Collector(dsn, slot="bench_slot", plugin="pgoutput", options=OPTIONS,
                  create_slot=False, decode=decode)
    r.keep = keep
    r.connect()
    c0, t0 = time.process_time(), time.perf_counter()
    r.start(until_lsn=until)
    elapsed = time.perf_counter() - t0
    r.cpu = time.process_time() - c0
    r.close()
    return elapsed, r


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def alternate(a, b, repeat):
    """Run a and b alternately `repeat` times each: their times."""
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(a())
        tb.append(b())
    return ta, tb


def machine():
    info = machine_info()
    return "%s, %s cores, Python %s" % (info["cpu"], info["cores"],
                                        info["python"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default=os.environ.get("PLD_TEST_DSN"))
    ap.add_argument("--rows", type=int, default=160000)
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    print("machine:", machine())
    server = None
    dsn = args.dsn
    if not dsn:
        from pylogicaldecoding.testing import Server
        server = Server()
        dsn = server.dsn
    try:
        until = prepare(dsn, args.rows)
        _, r = drain(dsn, until, decode=False, keep=True)
        msgs = r.messages
        del r
        print("captured %d pgoutput messages (%d rows inserted, %d updated)"
              % (len(msgs), args.rows, args.rows // 4))

        def run_c():
            d = decoders.make_decoder("pgoutput")
            for m in msgs:
                d(m)

        def run_py():
            d = PyPgoutputDecoder()
            for m in msgs:
                d(m)

        # same input, same results: every row change, both tuples
        d, p = decoders.make_decoder("pgoutput"), PyPgoutputDecoder()
        kinds = {}
        for m in msgs:
            a, b = d(m), p(m)
            kinds[type(a).__name__] = kinds.get(type(a).__name__, 0) + 1
            if isinstance(a, (pld.Insert, pld.Update, pld.Delete)):
                assert (a.new, a.old) == (b.new, b.old), (a, b.new, b.old)
        print("messages:", ", ".join("%s %d" % kv for kv in sorted(
            kinds.items(), key=lambda kv: -kv[1])))
        tc, tp = alternate(lambda: timed(run_c), lambda: timed(run_py),
                           args.repeat)
        c, py = statistics.median(tc), statistics.median(tp)
        n = len(msgs)
        print("decode only, median of %d: C %.3f s (%.2f us/message), pure "
              "Python %.3f s (%.2f us/message): C is %.1fx faster (goal >= "
              "10x; best runs: %.1fx)"
              % (args.repeat, c, c / n * 1e6, py, py / n * 1e6, py / c,
                 min(tp) / min(tc)))
        del d, p, msgs

        rawr, decr = alternate(lambda: drain(dsn, until, decode=False),
                               lambda: drain(dsn, until, decode=True),
                               args.repeat)
        raw, dec = [x[0] for x in rawr], [x[0] for x in decr]
        ratios = [b / a for a, b in zip(raw, dec)]
        print("end to end drain of %d messages, median of %d: raw %.3f s "
              "(%.2f us/message), decoded %.3f s (%.2f us/message): ratio "
              "%.2f (goal <= 1.2; pairwise ratios %s)"
              % (n, args.repeat, statistics.median(raw),
                 statistics.median(raw) / n * 1e6, statistics.median(dec),
                 statistics.median(dec) / n * 1e6,
                 statistics.median(dec) / statistics.median(raw),
                 " ".join("%.2f" % x for x in ratios)))
        craw = statistics.median(x[1].cpu for x in rawr)
        cdec = statistics.median(x[1].cpu for x in decr)
        print("  our process's CPU time (user+sys), median: raw %.3f s, "
              "decoded %.3f s: ratio %.2f" % (craw, cdec, cdec / craw))
    finally:
        try:
            sql(dsn, "SELECT pg_drop_replication_slot('bench_slot')",
                "DROP PUBLICATION IF EXISTS bench_pub",
                "DROP TABLE IF EXISTS bench_t")
        finally:
            if server is not None:
                server.cleanup()


if __name__ == "__main__":
    main()
