"""Property tests of the decoders, and a fuzz run on random and truncated
input: a decoder returns a change or raises DecodingError, nothing else."""

import re
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pylogicaldecoding as pld
from pylogicaldecoding import _core, decoders

LSN = 0x16B374D848
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# text without NUL (PostgreSQL text cannot hold one)
TEXT = st.text(st.characters(blacklist_categories=("Cs",),
                             blacklist_characters="\0"), max_size=30)
NAME = st.text(st.characters(blacklist_categories=("Cs",),
                             blacklist_characters="\0"), min_size=1,
               max_size=12)


def M(payload):
    return _core.Message(payload, LSN)


# -- test_decoding --

def quote_ident(name):
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def td_value(draw):
    kind = draw(st.sampled_from(["text", "int", "bool", "null", "toast",
                                 "float", "array"]))
    if kind == "text":
        v = draw(TEXT)
        return "text", "'" + v.replace("'", "''") + "'", v
    if kind == "int":
        v = draw(st.integers(-2 ** 63, 2 ** 63 - 1))
        return "bigint", str(v), v
    if kind == "bool":
        v = draw(st.booleans())
        return "boolean", "true" if v else "false", v
    if kind == "null":
        return draw(st.sampled_from(["text", "integer"])), "null", None
    if kind == "toast":
        return "text", "unchanged-toast-datum", pld.UNCHANGED
    if kind == "float":
        v = draw(st.floats(allow_nan=False, allow_infinity=True))
        text = repr(v).replace("inf", "Infinity")
        return "double precision", text, v
    v = draw(st.lists(st.one_of(st.none(), st.integers(-1000, 1000)),
                      max_size=5))
    text = "{" + ",".join("NULL" if x is None else str(x) for x in v) + "}"
    return "integer[]", "'" + text + "'", v


@st.composite
def td_rows(draw):
    names = draw(st.lists(NAME, min_size=1, max_size=6, unique=True))
    cols = []
    row = {}
    for n in names:
        tname, text, value = td_value(draw)
        cols.append("%s[%s]:%s" % (quote_ident(n), tname, text))
        row[n] = value
    return " ".join(cols), row


@SETTINGS
@given(NAME, NAME, td_rows(), st.one_of(st.none(), td_rows()),
       st.sampled_from(["INSERT", "UPDATE", "DELETE"]))
def test_test_decoding_rows(schema, table, new, old, action):
    d = decoders.make_decoder("test_decoding")
    head = "table %s.%s: %s:" % (quote_ident(schema), quote_ident(table),
                                 action)
    if action == "INSERT":
        line, want_new, want_old = head + " " + new[0], new[1], None
    elif action == "DELETE":
        line, want_new, want_old = head + " " + new[0], None, new[1]
    elif old is not None:
        line = "%s old-key: %s new-tuple: %s" % (head, old[0], new[0])
        want_new, want_old = new[1], old[1]
    else:
        line, want_new, want_old = head + " " + new[0], new[1], None
    ch = d(M(line))
    assert (ch.schema, ch.table) == (schema, table)
    assert ch.new == want_new and ch.old == want_old
    # the same line as bytes (binary=True) decodes the same
    assert d(M(line.encode())) == ch


# -- pgoutput --

PGO_TYPES = {
    23: (lambda v: str(v).encode(), lambda v: struct.pack("!i", v),
         st.integers(-2 ** 31, 2 ** 31 - 1)),
    25: (lambda v: v.encode(), lambda v: v.encode(), TEXT),
    16: (lambda v: b"t" if v else b"f", lambda v: bytes([v]), st.booleans()),
    701: (lambda v: repr(v).encode(), lambda v: struct.pack("!d", v),
          st.floats(allow_nan=False, allow_infinity=False)),
    17: (lambda v: b"\\x" + v.hex().encode(), lambda v: v,
         st.binary(max_size=20)),
}


def cstr(s):
    return s.encode() + b"\0"


@st.composite
def pgo_relation(draw):
    names = draw(st.lists(NAME, min_size=1, max_size=6, unique=True))
    oids = [draw(st.sampled_from(sorted(PGO_TYPES))) for _ in names]
    keys = [draw(st.booleans()) for _ in names]
    relid = draw(st.integers(1, 2 ** 32 - 1))
    schema, table = draw(NAME), draw(NAME)
    msg = b"R" + struct.pack("!I", relid) + cstr(schema) + cstr(table) \
        + b"d" + struct.pack("!H", len(names))
    for n, o, k in zip(names, oids, keys):
        msg += bytes([k]) + cstr(n) + struct.pack("!Ii", o, -1)
    return relid, schema, table, names, oids, msg


@st.composite
def pgo_tuple(draw, names, oids):
    out = struct.pack("!H", len(names))
    row = {}
    for n, o in zip(names, oids):
        text, binary, values = PGO_TYPES[o]
        kind = draw(st.sampled_from("ntbu"))
        if kind == "n":
            out += b"n"
            row[n] = None
        elif kind == "u":
            out += b"u"
            row[n] = pld.UNCHANGED
        else:
            v = draw(values)
            data = text(v) if kind == "t" else binary(v)
            out += kind.encode() + struct.pack("!I", len(data)) + data
            row[n] = v
    return out, row


@SETTINGS
@given(st.data())
def test_pgoutput_rows(data):
    relid, schema, table, names, oids, rel = data.draw(pgo_relation())
    d = decoders.make_decoder("pgoutput")
    r = d(M(rel))
    assert [c.name for c in r.columns] == names
    action = data.draw(st.sampled_from("IUD"))
    new, new_row = data.draw(pgo_tuple(names, oids))
    old, old_row = data.draw(pgo_tuple(names, oids))
    body = struct.pack("!I", relid)
    if action == "I":
        ch = d(M(b"I" + body + b"N" + new))
        want = (new_row, None)
    elif action == "U":
        ch = d(M(b"U" + body + b"O" + old + b"N" + new))
        want = (new_row, old_row)
    else:
        ch = d(M(b"D" + body + b"K" + old))
        want = (None, old_row)
    assert (ch.schema, ch.table, ch.relid) == (schema, table, relid)
    assert (ch.new, ch.old) == want


# -- fuzz: random and truncated input --

def decode_or_error(decoder, payload):
    try:
        decoder(M(payload))
    except pld.DecodingError as e:
        assert "16/B374D848" in str(e)


VALID_PGO = [
    b"B" + struct.pack("!QqI", 0x100, 0, 7),
    b"C" + struct.pack("!BQQq", 0, 0x100, 0x108, 0),
    b"M" + struct.pack("!BQ", 1, 0x90) + b"pre\0" + struct.pack("!I", 3)
    + b"abc",
    b"T" + struct.pack("!IBI", 1, 3, 42),
    b"Y" + struct.pack("!I", 16500) + b"public\0mood\0",
    b"O" + struct.pack("!Q", 5) + b"origin\0",
    b"S" + struct.pack("!IB", 9, 1),
    b"c" + struct.pack("!IBQQq", 9, 0, 1, 2, 3),
    b"A" + struct.pack("!II", 9, 10),
    b"A" + struct.pack("!IIQq", 9, 10, 11, 12),
    b"b" + struct.pack("!QQqI", 1, 2, 3, 4) + b"gid\0",
    b"P" + struct.pack("!BQQqI", 0, 1, 2, 3, 4) + b"gid\0",
    b"K" + struct.pack("!BQQqI", 0, 1, 2, 3, 4) + b"gid\0",
    b"r" + struct.pack("!BQQqqI", 0, 1, 2, 3, 4, 5) + b"gid\0",
    b"p" + struct.pack("!BQQqI", 0, 1, 2, 3, 4) + b"gid\0",
]
REL42 = (b"R" + struct.pack("!I", 42) + b"public\0t\0d" + struct.pack("!H", 2)
         + b"\x01id\0" + struct.pack("!Ii", 23, -1)
         + b"\x00data\0" + struct.pack("!Ii", 25, -1))
ROWS42 = [
    b"I" + struct.pack("!I", 42) + b"N" + struct.pack("!H", 2)
    + b"t\0\0\0\x0212" + b"t\0\0\0\x03abc",
    b"U" + struct.pack("!I", 42) + b"K" + struct.pack("!H", 2) + b"b"
    + struct.pack("!I", 4) + struct.pack("!i", 5) + b"n" + b"N"
    + struct.pack("!H", 2) + b"t\0\0\0\x015u",
    b"D" + struct.pack("!I", 42) + b"O" + struct.pack("!H", 1) + b"n",
]


def test_pgoutput_valid_messages_and_every_truncation():
    d = decoders.make_decoder("pgoutput")
    for msg in VALID_PGO + ROWS42 + [REL42]:
        d.reset()       # StreamStart changes how the next messages read
        d(M(REL42))
        d(M(msg))       # valid: no error
        for n in range(len(msg)):
            if msg[0:1] == b"A" and n == 9:
                continue        # protocol < 4 form of Stream Abort: valid
            try:
                d(M(msg[:n]))
            except pld.DecodingError:
                continue
            raise AssertionError("truncated %r decoded" % msg[:n])
        # the decoder still works after the errors
        d(M(REL42))


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=80))
def test_pgoutput_random_bytes(payload):
    d = decoders.make_decoder("pgoutput")
    d(M(REL42))
    decode_or_error(d, payload)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(VALID_PGO + ROWS42 + [REL42]), st.data())
def test_pgoutput_mutated(msg, data):
    d = decoders.make_decoder("pgoutput")
    d(M(REL42))
    msg = bytearray(msg)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(msg) - 1))
        msg[i] = data.draw(st.integers(0, 255))
    decode_or_error(d, bytes(msg))


TD_LINES = [
    "table public.t: INSERT: id[integer]:1 d[text]:'it''s' "
    "a[integer[]]:'{1,NULL}' n[numeric]:1.5 b[boolean]:true "
    "x[text]:unchanged-toast-datum y[text]:null",
    "table \"s s\".\"t\"\"x\": UPDATE: old-key: id[integer]:1 "
    "new-tuple: id[integer]:2",
    "table a.b, c.d: TRUNCATE: restart_seqs cascade",
    "BEGIN 5", "COMMIT 5 (at 2024-01-01 00:00:00+00)",
    "message: transactional: 1 prefix: p, sz: 1 content:x",
]


def test_test_decoding_every_truncation():
    d = decoders.make_decoder("test_decoding")
    for line in TD_LINES:
        d(M(line))
        for n in range(len(line)):
            decode_or_error(d, line[:n])


@settings(max_examples=2000, deadline=None)
@given(st.one_of(
    st.text(max_size=80),
    st.text(max_size=60).map(lambda s: "table " + s),
    st.text(max_size=60).map(lambda s: "table a.b: INSERT: " + s),
    st.text(max_size=60).map(lambda s: "table a.b: UPDATE: old-key: " + s),
    st.binary(max_size=60).map(lambda b: b"table a.b: INSERT: x[text]:" + b),
))
def test_test_decoding_random(payload):
    if isinstance(payload, str) and "\0" in payload:
        payload = payload.replace("\0", "")
    decode_or_error(decoders.make_decoder("test_decoding"), payload)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.text(max_size=80), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(
        st.sampled_from(["action", "schema", "table", "columns", "name",
                         "type", "value", "identity", "change", "kind",
                         "xid", "lsn", "columnnames", "columnvalues"]),
        c, max_size=4), max_leaves=12).map(__import__("json").dumps)))
def test_wal2json_random(payload):
    decode_or_error(decoders.make_decoder("wal2json"), payload)
