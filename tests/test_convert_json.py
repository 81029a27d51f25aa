"""The C JSON parser (src/convert_json.c) against json.loads, by hypothesis.

json and jsonb columns are read in C (json.loads's grammar and values, short
keys from a cache; anything it does not handle goes to json.loads itself).
Here arbitrary JSON documents, printed in json.dumps's several styles, then
mutated character by character, go through a pgoutput decoder's text column
with no server: each must give exactly json.loads's value (same types down
to the leaves, same key order) or, where json.loads refuses the text, a
DecodingError naming the column. test_snapshot.py has the hand-picked texts.
"""

import json
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pylogicaldecoding as pld
from pylogicaldecoding import _core, decoders

from decode_support import same_json

SETTINGS = settings(max_examples=2000, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
JSON_OID, JSONB_OID = 114, 3802
# what the server can send: valid UTF-8, so no lone surrogate
UTF8 = st.characters(codec="utf-8")


def _decoder():
    d = decoders.make_decoder("pgoutput")
    rel = b"R" + struct.pack("!I", 1) + b"public\0t\0d" + struct.pack("!H", 2)
    for name, oid in ((b"j", JSON_OID), (b"b", JSONB_OID)):
        rel += b"\0" + name + b"\0" + struct.pack("!Ii", oid, -1)
    d(_core.Message(rel, 0))
    return d


DECODER = _decoder()


def decode(text):
    """(json value, jsonb value) of one row whose two columns hold text."""
    raw = text.encode("utf-8", "surrogatepass")
    row = b"I" + struct.pack("!I", 1) + b"N" + struct.pack("!H", 2)
    row += (b"t" + struct.pack("!I", len(raw)) + raw) * 2
    new = DECODER(_core.Message(row, 0)).new
    return new["j"], new["b"]


def check(text):
    try:
        want = json.loads(text)
    except ValueError:
        try:
            got = decode(text)
        except pld.DecodingError as e:
            assert "column j" in str(e), e
            return
        raise AssertionError("json.loads refuses %r, the decoder gave %r"
                             % (text, got))
    got_j, got_b = decode(text)
    assert same_json(got_j, want), (text, got_j, want)
    assert same_json(got_b, want), (text, got_b, want)


leaves = (st.none() | st.booleans()
          | st.integers(min_value=-10 ** 30, max_value=10 ** 30)
          | st.floats(allow_nan=True, allow_infinity=True)
          | st.text(UTF8, max_size=12))
documents = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(UTF8, max_size=8), inner, max_size=5), max_leaves=25)
styles = st.sampled_from([
    {}, {"separators": (",", ":")}, {"ensure_ascii": False},
    {"indent": 2}, {"indent": "\t", "ensure_ascii": False}])


@SETTINGS
@given(documents, styles)
def test_documents_as_json_loads_reads_them(doc, style):
    check(json.dumps(doc, **style))


@SETTINGS
@given(documents, styles, st.data())
def test_mutated_documents_as_json_loads_reads_them(doc, style, data):
    """Texts near valid JSON: a character deleted, replaced or inserted,
    a few times over (mostly invalid; some valid in other ways)."""
    text = json.dumps(doc, **style)
    alphabet = st.sampled_from(list('{}[]",:.-+eE0123456789 \\u\n\ttrfalsenul'
                                    '\u00e9\U0001f600\x00\x1f'))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        how = data.draw(st.sampled_from(["del", "put", "ins"]))
        c = data.draw(alphabet)
        if how == "del":
            text = text[:at] + text[at + 1:]
        elif how == "put":
            text = text[:at] + c + text[at + 1:]
        else:
            text = text[:at] + c + text[at:]
    check(text)


@SETTINGS
@given(st.text(UTF8, max_size=30))
def test_any_text_as_json_loads_reads_it(text):
    check(text)
