"""Capture the seed corpus of the fuzz targets from a real server.

    python tests/fuzz/capture_corpus.py          # a throwaway server
    PLD_TEST_DSN="host=..." python tests/fuzz/capture_corpus.py

Runs a workload touching what the decoders handle (every common type,
NULLs, unchanged TOAST values, REPLICA IDENTITY FULL, TRUNCATE, logical
messages, a large transaction) and records what the server sends, through
test_decoding and through pgoutput (text and binary tuples), into
tests/fuzz/corpus/<target>/: one file per transaction, and one for the
whole session. The ``wire`` inputs are the XLogData frames rebuilt from the
same messages (their LSNs and send times as received) with a keepalive.
Commit the result: it is small (a few hundred KB at most).
"""

import hashlib
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import pylogicaldecoding as pld  # noqa: E402
from pylogicaldecoding import testing  # noqa: E402

from targets import CORPUS, join  # noqa: E402

WORKLOAD = """
DROP TABLE IF EXISTS fz_types, fz_plain;
CREATE TYPE fz_mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE fz_types (
    id serial PRIMARY KEY, i2 smallint, i4 int, i8 bigint, f4 real,
    f8 double precision, n numeric, b boolean, t text, vc varchar(20),
    bt bytea, d date, ts timestamp, tz timestamptz, iv interval, u uuid,
    j json, jb jsonb, ai int[], at text[], mood fz_mood, big text);
CREATE TABLE fz_plain (a int, b text);
ALTER TABLE fz_plain REPLICA IDENTITY FULL;
INSERT INTO fz_types (i2, i4, i8, f4, f8, n, b, t, vc, bt, d, ts, tz, iv, u, j,
                      jb, ai, at, mood, big)
VALUES (-1, 2147483647, -9223372036854775808, 1.5, 'Infinity', 123.456e10,
        true, 'it''s "q" \\ é', 'v', '\\x00ff10', '2024-02-29',
        '2024-01-01 12:00:00.5', '1999-12-31 23:59:59+02', '1 day 2 hours',
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, null]}',
        '{"b": 2}', '{1,NULL,3}', '{"x y","",NULL}', 'happy',
        (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 70) g)),
       (NULL, NULL, NULL, 'NaN', '-Infinity', 'NaN', false, '', NULL, '',
        'infinity', '-infinity', 'infinity', '-1 mons', NULL, 'null', '[]',
        '{}', '{}', NULL, NULL);
UPDATE fz_types SET t = 'changed' WHERE id = 1;
BEGIN;
UPDATE fz_types SET i4 = i4 - 1;
DELETE FROM fz_types WHERE id = 2;
INSERT INTO fz_plain SELECT g, 'row ' || g FROM generate_series(1, 20) g;
COMMIT;
UPDATE fz_plain SET b = NULL WHERE a < 3;
DELETE FROM fz_plain WHERE a = 4;
SELECT pg_logical_emit_message(true, 'fz', 'transactional \\x01');
SELECT pg_logical_emit_message(false, 'fz', '\\x00ff'::bytea);
TRUNCATE fz_plain;
"""
CLEANUP = "DROP TABLE IF EXISTS fz_types, fz_plain; DROP TYPE IF EXISTS fz_mood;"


class Recorder(pld.Reader):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.msgs = []

    def event(self, msg):
        self.msgs.append((msg.data_start, msg.wal_end, msg.payload))


def capture(server, plugin, options, slot):
    r = Recorder(server.dsn, slot=slot, plugin=plugin, options=options,
                 binary=True, decode=False)
    with r:
        r.create_slot(snapshot="nothing")
    try:
        server.execute(WORKLOAD)
        end = pld.parse_lsn(server.execute("SELECT pg_current_wal_lsn()::text")[0][0])
        with Recorder(server.dsn, slot=slot, plugin=plugin, options=options,
                      binary=True, decode=False, create_slot=False) as r:
            r.start(until_lsn=end)
            return r.msgs
    finally:
        server.execute(CLEANUP)
        server.execute("SELECT pg_drop_replication_slot('%s')" % slot)


def transactions(msgs, is_begin):
    out, cur = [], []
    for m in msgs:
        if is_begin(m[2]) and cur:
            out.append(cur)
            cur = []
        cur.append(m)
    if cur:
        out.append(cur)
    return out


def write(target, name, frames):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    data = join(frames)
    digest = hashlib.sha1(data).hexdigest()[:10]
    with open(os.path.join(folder, "%s-%s" % (name, digest)), "wb") as f:
        f.write(data)


def wire_frames(msgs):
    frames = [b"w" + struct.pack("!QQq", start, end, 0) + payload
              for start, end, payload in msgs]
    last = max(end for _, end, _ in msgs)
    frames.append(b"k" + struct.pack("!Qq?", last, 0, True))
    return frames


def main():
    dsn = os.environ.get("PLD_TEST_DSN")
    server = testing.ExternalServer(dsn) if dsn else testing.Server()
    try:
        version = int(server.execute("SHOW server_version_num")[0][0])
        server.execute("DROP PUBLICATION IF EXISTS fz_pub; "
                       "CREATE PUBLICATION fz_pub FOR ALL TABLES;")
        proto = pld.decoders.default_options(
            "pgoutput", {"publication_names": "fz_pub"}, version)
        runs = {
            "test_decoding": capture(server, "test_decoding",
                                     {"include-xids": "1"}, "fz_td"),
            "pgoutput": capture(server, "pgoutput", proto, "fz_pgo"),
            "pgoutput-binary": capture(server, "pgoutput",
                                       dict(proto, binary="true"), "fz_pgob"),
        }
        server.execute("DROP PUBLICATION fz_pub")
    finally:
        server.cleanup()

    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    td = runs["test_decoding"]
    write("test_decoding", "session", [p for _, _, p in td])
    for i, tx in enumerate(transactions(td, lambda p: p.startswith(b"BEGIN"))):
        write("test_decoding", "tx%02d" % i, [p for _, _, p in tx])
        write("wire", "td-tx%02d" % i, wire_frames(tx))
    for name in ("pgoutput", "pgoutput-binary"):
        msgs = runs[name]
        write("pgoutput", name, [p for _, _, p in msgs])
        relations, types = [], []
        for i, tx in enumerate(transactions(msgs, lambda p: p[:1] == b"B")):
            # a transaction's rows need the relations sent before it
            relations += [p for _, _, p in tx if p[:1] == b"R"]
            types += [p for _, _, p in tx if p[:1] == b"Y"]
            body = [p for _, _, p in tx if p[:1] not in b"RY"]
            write("pgoutput", "%s-tx%02d" % (name, i), types + relations + body)
            if i < 4:
                write("wire", "%s-tx%02d" % (name, i), wire_frames(tx))
    for target in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, target))
        size = sum(os.path.getsize(os.path.join(CORPUS, target, f)) for f in files)
        print("%s: %d inputs, %d bytes" % (target, len(files), size))


if __name__ == "__main__":
    main()
