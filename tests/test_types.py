"""Value converters and the type registry."""

import datetime as dt
import decimal
import ipaddress
import math
import struct
import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pylogicaldecoding as pld
from pylogicaldecoding import _core, types

UTC = dt.timezone.utc


@pytest.mark.parametrize("conv,text,want", [
    (_core.text_int, "-9223372036854775808", -9223372036854775808),
    (_core.text_int, "123456789012345678901234567890",
     123456789012345678901234567890),
    (_core.text_int, "+7", 7),
    (_core.text_float, "NaN", float("nan")),
    (_core.text_float, "-Infinity", float("-inf")),
    (_core.text_float, "1.5e-300", 1.5e-300),
    (_core.text_bool, "t", True), (_core.text_bool, "false", False),
    (_core.text_str, "é'x", "é'x"),
    (_core.text_bytea, "\\x00ff", b"\x00\xff"),
    (_core.text_bytea, "a\\\\b\\001", b"a\\b\x01"),
    (_core.bin_int, b"\xff\xfe", -2),
    (_core.bin_int, struct.pack("!q", -5), -5),
    (_core.bin_oid, b"\xff\xff\xff\xff", 4294967295),
    (_core.bin_float, struct.pack("!f", 1.5), 1.5),
    (_core.bin_bool, b"\x01", True),
])
def test_c_converters(conv, text, want):
    got = conv(text)
    if isinstance(want, float) and want != want:
        assert got != got
    else:
        assert got == want and type(got) is type(want)


def _same_float(a, b):
    return (a == b and math.copysign(1, a) == math.copysign(1, b)) or \
        (a != a and b != b)


@pytest.mark.parametrize("text", [
    "0", "-0", "0.000", "-0.0", "1", "+1.5", "-1.5", "3.75",
    "0.42857142857142855", "2856.4285714285716", "9007199254740993",
    "9007199254740993.0", "1234567890123456789", "12345678901234567890",
    "18446744073709551615", "1e19", "1e20", "1e-19", "1e-20",
    "1.2345e-05", "1e+100", "1.7976931348623157e+308", "5e-324",
    "2.2250738585072014e-308", "0.30000000000000004",
    "9.999999999999999999e19", "1.", ".5", "1e", "1e+", "1e99999", "--1",
    "NaN", "Infinity", "-Infinity", "inf", "1_0", "0x10",
])
def test_text_float_as_float(text):
    """text_float reads common forms itself: same value (or error) as
    float(), which reads them all with a correctly rounded strtod."""
    try:
        want = float(text.replace("_", "!"))
    except ValueError:
        with pytest.raises(ValueError):
            _core.text_float(text)
    else:
        assert _same_float(_core.text_float(text), want)


@given(st.floats(allow_nan=False, allow_infinity=False),
       st.sampled_from(["%r", "%.17g", "%.15g", "%.16e", "%.3f", "%.25f"]))
def test_text_float_round_trips(x, fmt):
    text = repr(x) if fmt == "%r" else fmt % x
    if len(text) >= 80:         # longer than any float PostgreSQL prints
        return
    assert _same_float(_core.text_float(text), float(text))


@given(st.integers(0, 10 ** 20), st.integers(-40, 40), st.booleans())
def test_text_float_decimals_and_halfway_cases(w, e, point):
    """Random digit strings, and exact midpoints between two doubles
    (the cases where a rounding error shows)."""
    s = str(w)
    text = (s[:len(s) // 2] or "0") + "." + (s[len(s) // 2:] or "0") \
        if point else "%se%d" % (s, e)
    assert _same_float(_core.text_float(text), float(text))
    x = float(text)
    if x and x == x and abs(x) < 1e300:
        y = math.nextafter(x, math.inf)
        with decimal.localcontext() as ctx:
            ctx.prec = 60
            mid = (Decimal(x) + Decimal(y)) / 2
        for t in ("%.20e" % mid, str(mid)[:22]):
            assert _same_float(_core.text_float(t), float(t))


@given(st.floats(width=32))
def test_binary_float4_is_the_shortest_round_trip(f):
    """A binary float4 gives the float of its shortest round-tripping
    decimal, as the server's float4out prints it: the same Python float as
    the text form (876.5635, not 876.5634765625)."""
    raw = struct.pack("!f", f)
    got = _core.bin_float(raw)
    assert type(got) is float
    if f != f:
        assert got != got
        return
    assert struct.pack("!f", got) == raw            # reads back as f
    if f == 0 or math.isinf(f):
        assert got == f and math.copysign(1, got) == math.copysign(1, f)
        return
    digits = len(("%.9e" % got).split("e")[0].rstrip("0").replace(
        ".", "").lstrip("-"))
    assert got == float("%.*g" % (digits, got))     # `digits` digits
    if digits > 1:                                  # and no fewer do
        shorter = float("%.*g" % (digits - 1, f))
        assert struct.pack("!f", shorter) != raw


@pytest.mark.parametrize("value,want", [
    (876.563452345, 876.5635), (0.1, 0.1), (1e10, 1e10),
    (3.4028234663852886e38, 3.4028235e38), (1.401298464324817e-45, 1e-45),
])
def test_binary_float4_examples(value, want):
    got = _core.bin_float(struct.pack("!f", value))
    assert got == want and repr(got) == repr(want)


@pytest.mark.parametrize("conv,text", [
    (_core.text_int, ""), (_core.text_int, "1.5"), (_core.text_int, "-"),
    (_core.text_int, "1" * 100), (_core.text_float, "abc"),
    (_core.text_float, ""), (_core.text_bool, "yes"),
    (_core.text_bytea, "\\x0"), (_core.text_bytea, "\\xzz"),
    (_core.text_bytea, "\\9"), (_core.bin_int, b"\0\0\0"),
    (_core.bin_float, b"\0"), (_core.bin_bool, b""),
])
def test_c_converters_reject(conv, text):
    with pytest.raises(ValueError):
        conv(text)


def test_dates_and_times():
    assert types.parse_date("2024-02-29") == dt.date(2024, 2, 29)
    assert types.parse_date("infinity") == dt.date.max
    assert types.parse_date("-infinity") == dt.date.min
    assert types.parse_date("0044-03-15 BC") == "0044-03-15 BC"
    assert types.parse_timestamp("2024-01-02 03:04:05.5") == \
        dt.datetime(2024, 1, 2, 3, 4, 5, 500000)
    t = types.parse_timestamptz("2024-01-02 03:04:05.123456+05:30")
    assert t == dt.datetime(2024, 1, 1, 21, 34, 5, 123456, tzinfo=UTC)
    assert t.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert types.parse_timestamptz("2024-01-02 03:04:05-08").utcoffset() == \
        dt.timedelta(hours=-8)
    assert types.parse_timestamptz("infinity") == dt.datetime.max.replace(
        tzinfo=UTC)
    assert types.parse_time("24:00:00") == "24:00:00"
    assert types.parse_timetz("12:00:00+01").utcoffset() == \
        dt.timedelta(hours=1)


@pytest.mark.parametrize("text,want", [
    ("1 year 2 mons -3 days +04:05:06.5",
     dt.timedelta(days=365 + 60 - 3, hours=4, minutes=5, seconds=6.5)),
    ("-00:00:01", dt.timedelta(seconds=-1)),
    ("00:00:00", dt.timedelta(0)),
    ("-1 years -2 mons", dt.timedelta(days=-365 - 60)),
    ("P1Y2M3DT4H5M6.5S",
     dt.timedelta(days=365 + 60 + 3, hours=4, minutes=5, seconds=6.5)),
    ("@ 1 hour", "@ 1 hour"),
])
def test_interval(text, want):
    assert types.parse_interval(text) == want


def test_binary_interval_matches_text():
    b = struct.pack("!qii", 14706500000, -3, 14)
    assert types.bin_interval(b) == types.parse_interval(
        "1 year 2 mons -3 days +04:05:06.5")


@pytest.mark.parametrize("text,want", [
    ("{}", []), ("{1,NULL,3}", [1, None, 3]),
    ("{{1,2},{3,4}}", [[1, 2], [3, 4]]),
    ("[0:1]={5,6}", [5, 6]),
    ("{{{1}},{{2}}}", [[[1]], [[2]]]),
])
def test_int_arrays(text, want):
    assert types.parse_array(text, _core.text_int) == want


def test_text_arrays():
    assert types.parse_array('{"a b","x\\"y",NULL,"NULL","",\\\\}') == \
        ["a b", 'x"y', None, "NULL", "", "\\"]
    with pytest.raises(ValueError):
        types.parse_array("{1,2")
    with pytest.raises(ValueError):
        types.parse_array("1,2")


@pytest.mark.parametrize("value,binary", [
    (Decimal("12345678901234567890.0123456789"),
     struct.pack("!hhHH", 8, 4, 0, 10) + struct.pack(
         "!8h", 1234, 5678, 9012, 3456, 7890, 123, 4567, 8900)),
    (Decimal("-0.000001"), struct.pack("!hhHHh", 1, -2, 0x4000, 6, 100)),
    (Decimal("100000000000000000000"), struct.pack("!hhHHh", 1, 5, 0, 0, 1)),
    (Decimal("0"), struct.pack("!hhHH", 0, 0, 0, 0)),
    (Decimal("0.00"), struct.pack("!hhHH", 0, 0, 0, 2)),
])
def test_binary_numeric(value, binary):
    got = types.bin_numeric(binary)
    assert got == value and str(got) == str(value)


def test_binary_misc():
    assert types.bin_numeric(struct.pack("!hhHH", 0, 0, 0xC000, 0)).is_nan()
    assert types.bin_date(struct.pack("!i", 0)) == dt.date(2000, 1, 1)
    assert types.bin_date(struct.pack("!i", 2 ** 31 - 1)) == dt.date.max
    assert types.bin_timestamptz(struct.pack("!q", 1)) == \
        dt.datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    assert types.bin_uuid(b"\x01" * 16) == uuid.UUID(bytes=b"\x01" * 16)
    assert types.bin_jsonb(b'\x01{"a": 1}') == {"a": 1}
    assert types.bin_inet(bytes([2, 24, 0, 4, 10, 0, 0, 1])) == \
        ipaddress.ip_interface("10.0.0.1/24")
    assert types.bin_inet(bytes([2, 32, 0, 4, 10, 0, 0, 1])) == \
        ipaddress.ip_address("10.0.0.1")
    arr = struct.pack("!iiI", 2, 1, 23) + struct.pack("!iiii", 2, 1, 1, 1) \
        + struct.pack("!ii", 4, 1) + struct.pack("!i", -1)
    assert types.parse_array_binary(arr, _core.bin_int) == [[1], [None]]
    assert types.parse_array_binary(struct.pack("!iiI", 0, 0, 23)) == []


def test_registry_lookups():
    reg = types.registry
    assert reg.resolve_name("integer") is _core.text_int
    assert reg.resolve_name("int4") is _core.text_int
    assert reg.resolve_name("pg_catalog.int4") is _core.text_int
    assert reg.resolve_name("numeric(10,2)") is Decimal
    assert reg.resolve_name("character varying(5)") is _core.text_str
    assert reg.resolve_name("timestamp(3) with time zone") is \
        _core.text_timestamptz
    assert reg.resolve_name("integer[]")("{1,2}") == [1, 2]
    assert reg.resolve(1007, None, False)("{1,2}") == [1, 2]
    assert reg.resolve(23, None, True) is _core.bin_int
    assert reg.resolve_name("no_such_type") is _core.text_str
    assert reg.resolve(99999, None, True) is types.bin_str_or_bytes


def test_registry_catalog_and_override():
    reg = types.registry.copy()
    reg.add_catalog([(70000, "myint", "d", 23, 0),
                     (70001, "myint[]", "b", 0, 70000),
                     (70002, "mood", "e", 0, 0)])
    assert reg.resolve_name("myint") is _core.text_int
    assert reg.resolve_name("myint[]")("{1}") == [1]
    assert reg.resolve(70002, None, True) is _core.bin_str
    reg.register("int4", text=str)
    assert reg.resolve_name("integer") is str       # int4 is integer
    assert types.registry.resolve_name("integer") is _core.text_int
    with pytest.raises(TypeError):
        reg.register(1.5, text=str)


def test_change_classes():
    i = pld.Insert("s", "t", {"a": 1})
    assert i == pld.Insert(schema="s", table="t", new={"a": 1})
    assert i != pld.Delete("s", "t", {"a": 1})
    assert isinstance(i, pld.Change)
    assert i._asdict()["new"] == {"a": 1}
    assert "Insert(schema='s'" in repr(i)
    import pickle
    assert pickle.loads(pickle.dumps(i)) == i
    assert pickle.loads(pickle.dumps(pld.UNCHANGED)) is pld.UNCHANGED
    with pytest.raises(TypeError):
        pld.Insert(nope=1)
    with pytest.raises(TypeError):
        pld.Begin(1, 2, 3, 4, 5)
    i.xid = 5
    assert i.xid == 5
    # positional patterns (match ... case Insert(schema, table, new))
    assert pld.Insert.__match_args__ == pld.Insert._fields
    assert pld.Message is pld.LogicalMessage
    assert pld.StreamMessage is _core.Message


@pytest.mark.parametrize("text", [
    "2024-02-29", "infinity", "-infinity", "0044-03-15 BC", "10000-01-01",
    "2024-02-30", "2024-01-02 03:04:05", "2024-01-02 03:04:05.5",
    "2024-01-02 03:04:05.123456", "2024-01-02 03:04:05+00",
    "2024-01-02 03:04:05.5-08", "2024-01-02 03:04:05+05:30",
    "1900-01-01 00:00:00+00:09:21", "2024-01-02 24:00:00",
    "2024-01-02 03:04:05 BC", "2024-01-02T03:04:05", "", "x",
])
@pytest.mark.parametrize("c,py", [
    (_core.text_date, types.parse_date),
    (_core.text_timestamp, types.parse_timestamp),
    (_core.text_timestamptz, types.parse_timestamptz),
])
def test_c_datetimes_match_python(c, py, text):
    a, b = c(text), py(text)
    assert a == b and type(a) is type(b)
    if isinstance(a, dt.datetime):
        assert a.utcoffset() == b.utcoffset()


def test_array_white_space_is_the_servers():
    """array_out leaves elements with '\\x1f' or Unicode spaces unquoted:
    they are not white space to the server, and not to parse_array."""
    assert types.parse_array("{\x1f, a ,\u2003,\"\u00a0\"}") == [
        "\x1f", "a", "\u2003", "\u00a0"]
    assert types.parse_array("{ {1} , {2} }", int) == [[1], [2]]
