"""Value converters: PostgreSQL values, as the plugins send them, to Python.

Every decoder turns a column value into a Python object with the same
converter, whichever the plugin: a converter is a callable taking the
value in PostgreSQL's text form (a str) or, for pgoutput with
``binary=true``, in its binary form (bytes). The converters of the common
types (integers, floats, bool, text, bytea) are functions of the C core
that the decoders recognise and run inline.

=========================== ==============================================
PostgreSQL                  Python
=========================== ==============================================
int2, int4, int8, oid       int
float4, float8              float (also nan, inf, -inf)
numeric                     decimal.Decimal (also NaN, Infinity, -Infinity)
bool                        bool
text, varchar, char, name   str (char(n) keeps its padding, as SQL does)
bytea                       bytes
date                        datetime.date
timestamp                   datetime.datetime (naive)
timestamptz                 datetime.datetime, aware (the server's offset)
time, timetz                datetime.time (timetz aware)
interval                    datetime.timedelta, a month counted as 30 days
                            and a year as 365 days (as psycopg2 does)
uuid                        uuid.UUID
json, jsonb                 the parsed value (json.loads)
inet                        ipaddress.ip_interface (ip_address without /n)
cidr                        ipaddress.ip_network
arrays                      lists (nested for several dimensions; NULL
                            elements are None; lower bounds are dropped)
enums                       str (the label)
domains                     as their base type (see below)
composites                  str (the record's text)
other built-in types        str: the server's text (geometric types, bit
                            strings, ranges, tsvector, pg_lsn, money...);
                            in binary form the same text, written from it
                            (reg* types: the OID, an int)
anything else               str (bytes in binary form)
=========================== ==============================================

docs/decoding.md has the whole table, with each plugin's caveats.

Infinity: 'infinity' and '-infinity' dates and timestamps become the
``max`` and ``min`` of their Python type (``date.max``, ``datetime.max``,
aware in UTC for timestamptz). Values Python cannot represent (dates BC,
years beyond 9999, the time '24:00:00', intervals in a style we do not
parse) are returned as their text (str), never dropped.

Domains: pgoutput names the base type of a domain column in its Type
message, so domains need nothing. test_decoding and wal2json print the
domain's name: the decoder then needs the catalog (`load_catalog()`, run
by the Reader before streaming) to find the base type; a domain created
after the stream started is read as str.

Text forms assume DateStyle ISO and IntervalStyle postgres (or iso_8601),
which the Reader sets for its session, and bytea_output hex or escape.

Register a converter for a type name or OID with `register()` (on the
default `registry` or a copy passed to the decoder)::

    from pylogicaldecoding import types
    types.registry.register("numeric", text=float)
    types.registry.register("myschema.mytype", text=MyType.parse)
"""

import datetime as _dt
import decimal
import ipaddress
import json
import math
import re
import struct
import uuid
from decimal import Decimal

from . import _core

__all__ = [
    "TypeRegistry", "registry", "load_catalog", "parse_array",
    "parse_date", "parse_time", "parse_timetz", "parse_timestamp",
    "parse_timestamptz", "parse_interval", "BUILTIN_TYPES",
]

# -- text converters --------------------------------------------------------

text_int = _core.text_int
text_float = _core.text_float
text_bool = _core.text_bool
text_str = _core.text_str
text_bytea = _core.text_bytea
# date, timestamp, timestamptz: done in C (parse_date, parse_timestamp and
# parse_timestamptz below are their Python equivalents)
text_date = _core.text_date
text_timestamp = _core.text_timestamp
text_timestamptz = _core.text_timestamptz

_UTC = _dt.timezone.utc
_DATE_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)\Z")
_TIME_RE = re.compile(
    r"(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
    r"(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)?\Z")
_TS_RE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
    r"(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)?\Z")
_tz_cache: dict = {}


def _tz(sign, hh, mm, ss):
    key = (sign, hh, mm, ss)
    tz = _tz_cache.get(key)
    if tz is None:
        secs = int(hh) * 3600 + int(mm or 0) * 60 + int(ss or 0)
        if sign == "-":
            secs = -secs
        tz = _UTC if secs == 0 else _dt.timezone(_dt.timedelta(seconds=secs))
        _tz_cache[key] = tz
    return tz


def _usec(frac):
    return int(frac.ljust(6, "0")) if frac else 0


def parse_date(s):
    """'2024-01-31' -> date; infinity -> date.max/min; else str."""
    m = _DATE_RE.match(s)
    if m:
        try:
            return _dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            return s
    if s == "infinity":
        return _dt.date.max
    if s == "-infinity":
        return _dt.date.min
    return s


def parse_time(s):
    """'12:34:56.789' -> time (naive); '24:00:00' stays a str."""
    m = _TIME_RE.match(s)
    if not m or m.group(5):
        return s
    try:
        return _dt.time(int(m.group(1)), int(m.group(2)), int(m.group(3)),
                        _usec(m.group(4)))
    except ValueError:
        return s


def parse_timetz(s):
    """'12:34:56+02' -> aware time."""
    m = _TIME_RE.match(s)
    if not m or not m.group(5):
        return s
    try:
        return _dt.time(int(m.group(1)), int(m.group(2)), int(m.group(3)),
                        _usec(m.group(4)),
                        _tz(m.group(5), m.group(6), m.group(7), m.group(8)))
    except ValueError:
        return s


def parse_timestamp(s):
    """'2024-01-31 12:34:56.5' -> naive datetime; infinity -> max/min."""
    m = _TS_RE.match(s)
    if m and not m.group(8):
        try:
            return _dt.datetime(
                int(m.group(1)), int(m.group(2)), int(m.group(3)),
                int(m.group(4)), int(m.group(5)), int(m.group(6)),
                _usec(m.group(7)))
        except ValueError:
            return s
    if s == "infinity":
        return _dt.datetime.max
    if s == "-infinity":
        return _dt.datetime.min
    return s


def parse_timestamptz(s):
    """'2024-01-31 12:34:56.5+01' -> aware datetime (with that offset);
    infinity -> datetime.max/min in UTC."""
    m = _TS_RE.match(s)
    if m and m.group(8):
        try:
            return _dt.datetime(
                int(m.group(1)), int(m.group(2)), int(m.group(3)),
                int(m.group(4)), int(m.group(5)), int(m.group(6)),
                _usec(m.group(7)),
                _tz(m.group(8), m.group(9), m.group(10), m.group(11)))
        except ValueError:
            return s
    if s == "infinity":
        return _dt.datetime.max.replace(tzinfo=_UTC)
    if s == "-infinity":
        return _dt.datetime.min.replace(tzinfo=_UTC)
    return s


_IV_UNITS = {
    "year": 365 * 86400, "years": 365 * 86400,
    "mon": 30 * 86400, "mons": 30 * 86400,
    "day": 86400, "days": 86400,
}
_IV_TOKEN = re.compile(
    r"\s*(?:([+-]?\d+) (years?|mons?|days?)"
    r"|([+-])?(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?)")
_ISO_IV = re.compile(
    r"P(?:([+-]?\d+)Y)?(?:([+-]?\d+)M)?(?:([+-]?\d+)D)?"
    r"(?:T(?:([+-]?\d+)H)?(?:([+-]?\d+)M)?(?:([+-]?\d+(?:\.\d+)?)S)?)?\Z")


def parse_interval(s):
    """An interval (IntervalStyle postgres or iso_8601) -> timedelta, with
    a month as 30 days and a year as 365 days; other styles stay str."""
    try:
        if s.startswith("P"):
            m = _ISO_IV.match(s)
            if not m:
                return s
            y, mo, d, h, mi, sec = (m.group(i) for i in range(1, 7))
            return _dt.timedelta(
                days=int(y or 0) * 365 + int(mo or 0) * 30 + int(d or 0),
                hours=int(h or 0), minutes=int(mi or 0),
                microseconds=round(Decimal(sec or 0) * 1000000))
        secs = 0
        usecs = 0
        pos = 0
        n = len(s)
        while pos < n:
            m = _IV_TOKEN.match(s, pos)
            if not m:
                return s
            if m.group(1) is not None:
                secs += int(m.group(1)) * _IV_UNITS[m.group(2)]
            else:
                t = (int(m.group(4)) * 3600 + int(m.group(5)) * 60
                     + int(m.group(6))) * 1000000 + _usec(m.group(7))
                if m.group(3) == "-":
                    t = -t
                usecs += t
            pos = m.end()
        return _dt.timedelta(seconds=secs, microseconds=usecs)
    except (ValueError, OverflowError):
        return s


def parse_inet(s):
    """inet -> ip_interface, or ip_address without a prefix length."""
    return ipaddress.ip_interface(s) if "/" in s else ipaddress.ip_address(s)


def parse_cidr(s):
    """cidr -> ip_network."""
    return ipaddress.ip_network(s)


# What the server's array and range parsers take for white space (C
# isspace): not Python's str.isspace(), which also has '\x1c'-'\x1f' and
# the Unicode spaces that array_out prints unquoted.
_PG_SPACE = " \t\n\r\v\f"


def parse_array(s, conv=text_str, delim=","):
    """The text form of an array ('{1,NULL,"a b"}', '{{1,2},{3,4}}',
    '[0:1]={1,2}') -> nested lists, `conv` applied to each non-NULL
    element (a str)."""
    if s[:1] == "[":
        eq = s.find("=")
        if eq < 0:
            raise ValueError("malformed array: %r" % s[:60])
        s = s[eq + 1:]
    if s[:1] != "{":
        raise ValueError("malformed array: %r" % s[:60])
    stack = []
    cur = None
    pos = 0
    n = len(s)
    while pos < n:
        c = s[pos]
        if c == "{":
            new = []
            if cur is not None:
                cur.append(new)
                stack.append(cur)
            cur = new
            pos += 1
        elif c == "}":
            if cur is None:
                raise ValueError("malformed array: %r" % s[:60])
            pos += 1
            if stack:
                cur = stack.pop()
            else:
                if s[pos:].strip(_PG_SPACE):
                    raise ValueError("malformed array: %r" % s[:60])
                return cur
        elif c == delim or c in _PG_SPACE:
            pos += 1
        elif cur is None:
            raise ValueError("malformed array: %r" % s[:60])
        elif c == '"':
            buf = []
            pos += 1
            while True:
                if pos >= n:
                    raise ValueError("malformed array: %r" % s[:60])
                c = s[pos]
                if c == "\\":
                    if pos + 1 >= n:
                        raise ValueError("malformed array: %r" % s[:60])
                    buf.append(s[pos + 1])
                    pos += 2
                elif c == '"':
                    pos += 1
                    break
                else:
                    buf.append(c)
                    pos += 1
            cur.append(conv("".join(buf)))
        else:
            end = pos
            while end < n and s[end] not in '{}"' and s[end] != delim:
                end += 1
            tok = s[pos:end].strip(_PG_SPACE)
            if "\\" in tok:
                tok = re.sub(r"\\(.)", r"\1", tok)
                cur.append(conv(tok))
            else:
                cur.append(None if tok == "NULL" else conv(tok))
            pos = end
    raise ValueError("malformed array (unterminated): %r" % s[:60])


class ArrayConverter:
    """Converts the text (or binary) form of an array, element by element."""

    __slots__ = ("elem", "elem_binary", "delim", "registry")

    def __init__(self, elem, elem_binary=None, delim=",", registry=None):
        self.elem = elem
        self.elem_binary = elem_binary
        self.delim = delim
        self.registry = registry

    def __call__(self, s):
        return parse_array(s, self.elem, self.delim)

    def binary(self, b):
        """array_send format -> nested lists."""
        return parse_array_binary(b, self.elem_binary, self.registry)

    def __repr__(self):
        return "ArrayConverter(%r)" % (self.elem,)


# -- binary converters ------------------------------------------------------

_EPOCH_DATE = _dt.date(2000, 1, 1)
_EPOCH_TS = _dt.datetime(2000, 1, 1)
_EPOCH_TSTZ = _dt.datetime(2000, 1, 1, tzinfo=_UTC)
_I64 = struct.Struct("!q")
_I32 = struct.Struct("!i")
_DT_NOBEGIN = -(2 ** 63)
_DT_NOEND = 2 ** 63 - 1
_D_NOBEGIN = -(2 ** 31)
_D_NOEND = 2 ** 31 - 1


def bin_date(b):
    (d,) = _I32.unpack(b)
    if d == _D_NOEND:
        return _dt.date.max
    if d == _D_NOBEGIN:
        return _dt.date.min
    try:
        return _EPOCH_DATE + _dt.timedelta(days=d)
    except OverflowError:
        return _date_text(d)            # as the text form gives it


def _bin_ts(b, epoch, maxv, minv, zone):
    (us,) = _I64.unpack(b)
    if us == _DT_NOEND:
        return maxv
    if us == _DT_NOBEGIN:
        return minv
    try:
        return epoch + _dt.timedelta(microseconds=us)
    except OverflowError:
        # as the text form gives it (timestamptz: written in UTC)
        return _bin_ts_text(b, zone)


def bin_timestamp(b):
    return _bin_ts(b, _EPOCH_TS, _dt.datetime.max, _dt.datetime.min, "")


def bin_timestamptz(b):
    return _bin_ts(b, _EPOCH_TSTZ, _dt.datetime.max.replace(tzinfo=_UTC),
                   _dt.datetime.min.replace(tzinfo=_UTC), "+00")


def _us_to_time(us, tz=None):
    s, us = divmod(us, 1000000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    if h >= 24:
        return None
    return _dt.time(h, m, s, us, tz)


def bin_time(b):
    (us,) = _I64.unpack(b)
    t = _us_to_time(us)
    return "24:00:00" if t is None else t


def _zone_text(east):
    """A UTC offset in seconds as the server prints it: +05:30, -14:59."""
    h, rest = divmod(abs(east), 3600)
    m, sec = divmod(rest, 60)
    text = "%s%02d" % ("-" if east < 0 else "+", h)
    if m or sec:
        text += ":%02d" % m
    if sec:
        text += ":%02d" % sec
    return text


def bin_timetz(b):
    us, zone = struct.unpack("!qi", b)
    # the zone is seconds west of UTC
    tz = _UTC if zone == 0 else _dt.timezone(_dt.timedelta(seconds=-zone))
    t = _us_to_time(us, tz)
    return "24:00:00" + _zone_text(-zone) if t is None else t


def _months(months):
    """Months as days: a year is 365 days, a month 30 (as in text form)."""
    years = int(months / 12)
    return years * 365 + (months - years * 12) * 30


def _interval_text(months, days, us):
    """An interval as IntervalStyle postgres prints it (for the values a
    timedelta cannot hold: the text form gives them as str too)."""
    years = int(months / 12)
    parts = []
    before = False
    for v, unit in ((years, "year"), (months - years * 12, "mon"),
                    (days, "day")):
        if v:
            parts.append("%s%d %s%s" % ("+" if before and v > 0 else "", v,
                                        unit, "" if v == 1 else "s"))
            before = v < 0
    if not parts or us:
        sign = "-" if us < 0 else ("+" if before else "")
        secs, frac = divmod(abs(us), 1000000)
        t = "%s%02d:%02d:%02d" % (sign, secs // 3600, secs // 60 % 60,
                                  secs % 60)
        if frac:
            t += (".%06d" % frac).rstrip("0")
        parts.append(t)
    return " ".join(parts)


def bin_interval(b):
    us, days, months = struct.unpack("!qii", b)
    try:
        return _dt.timedelta(days=days + _months(months), microseconds=us)
    except OverflowError:
        return _interval_text(months, days, us)


def bin_numeric(b):
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHH", b)
    if sign == 0xC000:
        return Decimal("NaN")
    if sign == 0xD000:
        return Decimal("Infinity")
    if sign == 0xF000:
        return Decimal("-Infinity")
    digits = struct.unpack_from("!%dh" % ndigits, b, 8)
    text = "".join("%04d" % d for d in digits) or "0"
    # digits are base 10000, the first one weighing 10000**weight
    exp = (weight - ndigits + 1) * 4
    v = Decimal("%s%sE%d" % ("-" if sign == 0x4000 else "", text, exp))
    ctx = decimal.Context(prec=len(text) + abs(exp) + dscale + 8)
    return v.quantize(Decimal(1).scaleb(-dscale), context=ctx)


def bin_uuid(b):
    return uuid.UUID(bytes=bytes(b))


def bin_json(b):
    return json.loads(bytes(b).decode("utf-8"))


def bin_jsonb_text(b):
    if b[:1] != b"\x01":
        raise ValueError("unknown jsonb binary version %r" % b[:1])
    return bytes(b[1:]).decode("utf-8")


def bin_jsonb(b):
    if b[:1] != b"\x01":
        raise ValueError("unknown jsonb binary version %r" % b[:1])
    return json.loads(bytes(b[1:]).decode("utf-8"))


def _bin_inet(b, cidr):
    family, bits, _is_cidr, n = struct.unpack_from("!BBBB", b)
    addr = bytes(b[4:4 + n])
    ip = ipaddress.ip_address(addr)
    full = 32 if family == 2 else 128
    if cidr:
        return ipaddress.ip_network((ip, bits))
    if bits == full:
        return ip
    return ipaddress.ip_interface((ip, bits))


def bin_inet(b):
    return _bin_inet(b, False)


def bin_cidr(b):
    return _bin_inet(b, True)


def parse_array_binary(b, elem=None, registry=None):
    """array_send format -> nested lists; elements converted by `elem` (a
    binary converter) or, if None, by the registry's converter of the
    element type named in the data."""
    ndim, _flags, elemtype = struct.unpack_from("!iiI", b)
    pos = 12
    if ndim == 0:
        return []
    dims = []
    for _ in range(ndim):
        size, _lbound = struct.unpack_from("!ii", b, pos)
        dims.append(size)
        pos += 8
    if elem is None:
        elem = (registry or globals()["registry"]).binary_converter(elemtype)

    def read(level):
        nonlocal pos
        out = []
        for _ in range(dims[level]):
            if level + 1 < ndim:
                out.append(read(level + 1))
            else:
                (n,) = _I32.unpack_from(b, pos)
                pos += 4
                if n < 0:
                    out.append(None)
                else:
                    out.append(elem(bytes(b[pos:pos + n])))
                    pos += n
        return out
    return read(0)


def bin_char(b):
    """"char": one byte; '' for the zero byte, an octal escape above 127,
    as charout prints it."""
    c = bytes(b)
    if not c or c == b"\x00":
        return ""
    if c[0] > 127:
        return "\\%03o" % c[0]
    return chr(c[0])


def bin_str_or_bytes(b):
    """Unknown types in binary form: their bytes."""
    return bytes(b)


# -- binary forms of the types kept as their text ---------------------------
# Types with no Python equivalent are str: their text form as the server
# prints it. pgoutput's binary mode sends them in their binary form; these
# converters write the same text from it, so both modes give the same str.

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_F8 = struct.Struct("!d")


def pg_float8_text(x):
    """A float8 as float8out prints it (extra_float_digits 1, PostgreSQL
    12+): the shortest round-trip digits, in exponent form below 1e-4 and
    from 1e15 ('1e+15', '1.5e-05'), '-0', 'NaN', 'Infinity'."""
    if x != x:
        return "NaN"
    if x in (math.inf, -math.inf):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    sign, digits, exp = Decimal(repr(x)).normalize().as_tuple()
    ds = "".join(map(str, digits))
    point = len(ds) + exp          # digits before the decimal point
    adjusted = point - 1
    neg = "-" if sign else ""
    if adjusted < -4 or adjusted >= 15:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return "%s%se%s%02d" % (neg, mant, "-" if adjusted < 0 else "+",
                                abs(adjusted))
    if point <= 0:
        return neg + "0." + "0" * -point + ds
    if point >= len(ds):
        return neg + ds + "0" * (point - len(ds))
    return neg + ds[:point] + "." + ds[point:]


def _points(b, pos, n):
    out = []
    for _ in range(n):
        x, y = struct.unpack_from("!dd", b, pos)
        out.append("(%s,%s)" % (pg_float8_text(x), pg_float8_text(y)))
        pos += 16
    return out


def bin_point(b):
    return _points(b, 0, 1)[0]


def bin_lseg(b):
    return "[%s]" % ",".join(_points(b, 0, 2))


def bin_box(b):
    return ",".join(_points(b, 0, 2))


def bin_path(b):
    closed, n = struct.unpack_from("!Bi", b)
    pts = ",".join(_points(b, 5, n))
    return "(%s)" % pts if closed else "[%s]" % pts


def bin_polygon(b):
    (n,) = _I32.unpack_from(b)
    return "(%s)" % ",".join(_points(b, 4, n))


def bin_line(b):
    return "{%s}" % ",".join(pg_float8_text(v)
                             for v in struct.unpack("!ddd", b))


def bin_circle(b):
    x, y, r = struct.unpack("!ddd", b)
    return "<(%s,%s),%s>" % (pg_float8_text(x), pg_float8_text(y),
                             pg_float8_text(r))


def bin_tid(b):
    block, offset = struct.unpack("!IH", b)
    return "(%d,%d)" % (block, offset)


def bin_uint_text(b):
    """xid, cid (4 bytes), xid8 (8 bytes): the decimal number."""
    return str((_U32 if len(b) == 4 else _U64).unpack(b)[0])


def bin_vector(b):
    """int2vector, oidvector: the elements separated by spaces."""
    return " ".join(str(v) for v in parse_array_binary(
        b, lambda e: int.from_bytes(e, "big", signed=len(e) == 2)))


def bin_macaddr(b):
    return ":".join("%02x" % c for c in bytes(b))


def bin_bit(b):
    (nbits,) = _I32.unpack_from(b)
    bits = "".join(format(c, "08b") for c in bytes(b[4:]))
    return bits[:nbits]


def bin_money(b):
    """money as cash_out prints it in the C locale ('-$1,234.56'): the
    server's lc_monetary decides the text form; the binary form is cents."""
    (cents,) = _I64.unpack(b)
    neg = cents < 0
    units, frac = divmod(abs(cents), 100)
    return "%s$%s.%02d" % ("-" if neg else "", format(units, ","), frac)


def bin_snapshot(b):
    """txid_snapshot, pg_snapshot: 'xmin:xmax:xip,...'."""
    (n,) = _I32.unpack_from(b)
    xmin, xmax = struct.unpack_from("!QQ", b, 4)
    xips = struct.unpack_from("!%dQ" % n, b, 20)
    return "%d:%d:%s" % (xmin, xmax, ",".join(map(str, xips)))


def bin_pg_lsn(b):
    (v,) = _U64.unpack(b)
    return "%X/%X" % (v >> 32, v & 0xFFFFFFFF)


def bin_versioned_text(b):
    """jsonpath: a version byte, then its text."""
    if b[:1] != b"\x01":
        raise ValueError("unknown binary version %r" % bytes(b[:1]))
    return bytes(b[1:]).decode("utf-8")


def bin_tsvector(b):
    """tsvector: "'lexeme':1A,2 ..." as tsvectorout prints it."""
    (n,) = _I32.unpack_from(b)
    pos = 4
    out = []
    for _ in range(n):
        end = b.index(b"\x00", pos)
        lex = bytes(b[pos:end]).decode("utf-8")
        pos = end + 1
        (npos,) = _U16.unpack_from(b, pos)
        pos += 2
        text = "'%s'" % lex.replace("'", "''").replace("\\", "\\\\")
        ps = []
        for _ in range(npos):
            (wp,) = _U16.unpack_from(b, pos)
            pos += 2
            ps.append("%d%s" % (wp & 0x3FFF, "DCBA"[wp >> 14].replace(
                "D", "")))
        out.append(text + (":" + ",".join(ps) if ps else ""))
    return " ".join(out)


# tsquery operators: (text, priority) by code; NOT binds tightest
_TSQ_OPS = {1: ("!", 4), 2: (" & ", 2), 3: (" | ", 1), 4: (None, 3)}


def bin_tsquery(b):
    """tsquery: its infix text as tsqueryout prints it ("'a' & ( 'b' |
    !'c' ) <-> 'd'"), from the items in prefix order."""
    (n,) = _I32.unpack_from(b)
    pos = 4
    items = []
    for _ in range(n):
        kind = b[pos]
        if kind == 1:
            weight, prefix = b[pos + 1], b[pos + 2]
            end = b.index(b"\x00", pos + 3)
            text = "'%s'" % bytes(b[pos + 3:end]).decode("utf-8").replace(
                "'", "''").replace("\\", "\\\\")
            if weight or prefix:
                text += ":" + ("*" if prefix else "") + "".join(
                    w for bit, w in ((8, "A"), (4, "B"), (2, "C"), (1, "D"))
                    if weight & bit)
            items.append((0, text))
            pos = end + 1
        elif kind == 2:
            op = b[pos + 1]
            if op not in _TSQ_OPS:
                raise ValueError("unknown tsquery operator %d" % op)
            pos += 2
            dist = None
            if op == 4:
                (dist,) = struct.unpack_from("!h", b, pos)
                pos += 2
            items.append((op, dist))
        else:
            raise ValueError("unknown tsquery item type %d" % kind)
    if not items:
        return ""

    def infix(i, parent, right_phrase):
        # an operator is followed by its right operand, then its left one
        op, arg = items[i]
        if op == 0:
            return arg, i + 1
        text, prio = _TSQ_OPS[op]
        if op == 1:
            inner, j = infix(i + 1, prio, False)
            out = "!" + inner
            return ("( %s )" % out if prio < parent else out), j
        paren = prio < parent or (op == 4 and right_phrase)
        right, j = infix(i + 1, prio, op == 4)
        left, j = infix(j, prio, False)
        if op == 4:
            text = " <-> " if arg == 1 else " <%d> " % arg
        out = left + text + right
        return ("( %s )" % out if paren else out), j
    return infix(0, -1, False)[0]


def _j2date(jd):
    """A Julian day number -> (year, month, day) (PostgreSQL's j2date)."""
    julian = jd + 32044
    quad = julian // 146097
    extra = (julian - quad * 146097) * 4 + 3
    julian += 60 + quad * 3 + extra // 146097
    quad = julian // 1461
    julian -= quad * 1461
    y = julian * 4 // 1461
    julian = ((julian + 305) % 365 if y != 0 else (julian + 306) % 366) + 123
    y += quad * 4
    quad = julian * 2141 // 65536
    return (y - 4800, (quad + 10) % 12 + 1, julian - 7834 * quad // 256)


def _date_text(days):
    y, m, d = _j2date(days + 2451545)
    if y <= 0:
        return "%04d-%02d-%02d BC" % (1 - y, m, d)
    return "%04d-%02d-%02d" % (y, m, d)


def _bin_date_text(b):
    (d,) = _I32.unpack(b)
    if d == _D_NOEND:
        return "infinity"
    if d == _D_NOBEGIN:
        return "-infinity"
    return _date_text(d)


def _bin_ts_text(b, zone=""):
    (us,) = _I64.unpack(b)
    if us == _DT_NOEND:
        return "infinity"
    if us == _DT_NOBEGIN:
        return "-infinity"
    days, us = divmod(us, 86400000000)
    secs, us = divmod(us, 1000000)
    date = _date_text(days)
    bc = date.endswith(" BC")
    text = "%s %02d:%02d:%02d" % (date[:-3] if bc else date, secs // 3600,
                                  secs // 60 % 60, secs % 60)
    if us:
        text += (".%06d" % us).rstrip("0")
    return text + zone + (" BC" if bc else "")


def _bin_numeric_text(b):
    return format(bin_numeric(b), "f")


def _range_bound(text):
    if text == "" or any(c in text for c in '"\\()[],' + _PG_SPACE):
        return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')
    return text


def _bin_range_text(b, elem):
    flags = b[0]
    if flags & 0x01:
        return "empty"
    pos = 1
    bounds = []
    for inf in (0x08, 0x10):
        if flags & inf:
            bounds.append("")
            continue
        (n,) = _I32.unpack_from(b, pos)
        bounds.append(_range_bound(elem(bytes(b[pos + 4:pos + 4 + n]))))
        pos += 4 + n
    return "%s%s,%s%s" % ("[" if flags & 0x02 else "(", bounds[0],
                          bounds[1], "]" if flags & 0x04 else ")")


class RangeText:
    """The binary form of a range (or multirange) of `elem` -> its text."""

    __slots__ = ("elem", "multi")

    def __init__(self, elem, multi=False):
        self.elem, self.multi = elem, multi

    def __call__(self, b):
        if not self.multi:
            return _bin_range_text(b, self.elem)
        (n,) = _I32.unpack_from(b)
        pos = 4
        out = []
        for _ in range(n):
            (size,) = _I32.unpack_from(b, pos)
            out.append(_bin_range_text(b[pos + 4:pos + 4 + size], self.elem))
            pos += 4 + size
        return "{%s}" % ",".join(out)


def _int_text(b):
    return str(int.from_bytes(b, "big", signed=True))


def bin_oid_int(b):
    """reg* types: the binary form is the OID (an int); the text form is
    the object's name, which needs the catalog."""
    return _U32.unpack(b)[0]


_tstz_text = (lambda b: _bin_ts_text(b, "+00"))

#: Built-in types kept as str: (oid, typname, SQL name, array oid,
#: converter of the binary form)
BUILTIN_TEXT_TYPES = [
    (22, "int2vector", "int2vector", 1006, bin_vector),
    (24, "regproc", "regproc", 1008, bin_oid_int),
    (27, "tid", "tid", 1010, bin_tid),
    (28, "xid", "xid", 1011, bin_uint_text),
    (29, "cid", "cid", 1012, bin_uint_text),
    (30, "oidvector", "oidvector", 1013, bin_vector),
    (142, "xml", "xml", 143, _core.bin_str),
    (600, "point", "point", 1017, bin_point),
    (601, "lseg", "lseg", 1018, bin_lseg),
    (602, "path", "path", 1019, bin_path),
    (603, "box", "box", 1020, bin_box),
    (604, "polygon", "polygon", 1027, bin_polygon),
    (628, "line", "line", 629, bin_line),
    (718, "circle", "circle", 719, bin_circle),
    (774, "macaddr8", "macaddr8", 775, bin_macaddr),
    (790, "money", "money", 791, bin_money),
    (829, "macaddr", "macaddr", 1040, bin_macaddr),
    (1033, "aclitem", "aclitem", 1034, _core.bin_str),
    (1560, "bit", "bit", 1561, bin_bit),
    (1562, "varbit", "bit varying", 1563, bin_bit),
    (1790, "refcursor", "refcursor", 2201, _core.bin_str),
    (2202, "regprocedure", "regprocedure", 2207, bin_oid_int),
    (2203, "regoper", "regoper", 2208, bin_oid_int),
    (2204, "regoperator", "regoperator", 2209, bin_oid_int),
    (2205, "regclass", "regclass", 2210, bin_oid_int),
    (2206, "regtype", "regtype", 2211, bin_oid_int),
    (2970, "txid_snapshot", "txid_snapshot", 2949, bin_snapshot),
    (3220, "pg_lsn", "pg_lsn", 3221, bin_pg_lsn),
    (3614, "tsvector", "tsvector", 3643, bin_tsvector),
    (3615, "tsquery", "tsquery", 3645, bin_tsquery),
    (3734, "regconfig", "regconfig", 3735, bin_oid_int),
    (3769, "regdictionary", "regdictionary", 3770, bin_oid_int),
    (3904, "int4range", "int4range", 3905, RangeText(_int_text)),
    (3906, "numrange", "numrange", 3907, RangeText(_bin_numeric_text)),
    (3908, "tsrange", "tsrange", 3909, RangeText(_bin_ts_text)),
    (3910, "tstzrange", "tstzrange", 3911, RangeText(_tstz_text)),
    (3912, "daterange", "daterange", 3913, RangeText(_bin_date_text)),
    (3926, "int8range", "int8range", 3927, RangeText(_int_text)),
    (4072, "jsonpath", "jsonpath", 4073, bin_versioned_text),
    (4089, "regnamespace", "regnamespace", 4090, bin_oid_int),
    (4096, "regrole", "regrole", 4097, bin_oid_int),
    (4191, "regcollation", "regcollation", 4192, bin_oid_int),
    (4451, "int4multirange", "int4multirange", 6150,
     RangeText(_int_text, True)),
    (4532, "nummultirange", "nummultirange", 6151,
     RangeText(_bin_numeric_text, True)),
    (4533, "tsmultirange", "tsmultirange", 6152,
     RangeText(_bin_ts_text, True)),
    (4534, "tstzmultirange", "tstzmultirange", 6153,
     RangeText(_tstz_text, True)),
    (4535, "datemultirange", "datemultirange", 6155,
     RangeText(_bin_date_text, True)),
    (4536, "int8multirange", "int8multirange", 6157,
     RangeText(_int_text, True)),
    (5038, "pg_snapshot", "pg_snapshot", 5039, bin_snapshot),
    (5069, "xid8", "xid8", 271, bin_uint_text),
]


# -- composite types in binary form -----------------------------------------

class _NoText(Exception):
    """A binary value whose text form we cannot write."""


def _pg_float4_text(b):
    x = _core.bin_float(b)       # the shortest round-trip digits
    if x != x or x in (math.inf, -math.inf) or x == 0:
        return pg_float8_text(x)
    sign, digits, exp = Decimal(repr(x)).normalize().as_tuple()
    adjusted = len(digits) + exp - 1
    if adjusted < -4 or adjusted >= 6:
        ds = "".join(map(str, digits))
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return "%s%se%s%02d" % ("-" if sign else "", mant,
                                "-" if adjusted < 0 else "+", abs(adjusted))
    return pg_float8_text(x)


def _utf8(b):
    return bytes(b).decode("utf-8")


def _time_text(us):
    secs, frac = divmod(us, 1000000)
    t = "%02d:%02d:%02d" % (secs // 3600, secs // 60 % 60, secs % 60)
    return t + (".%06d" % frac).rstrip("0") if frac else t


def _bin_timetz_text(b):
    us, zone = struct.unpack("!qi", b)
    return _time_text(us) + _zone_text(-zone)


#: OID -> bytes -> the server's text form, for the types that have a
#: Python value of their own (the str types' binary converters already
#: give their text)
_TEXT_OF_BINARY = {
    16: lambda b: "t" if b[0] else "f",
    17: lambda b: "\\x" + bytes(b).hex(),
    18: bin_char, 19: _utf8, 25: _utf8, 1042: _utf8, 1043: _utf8,
    20: _int_text, 21: _int_text, 23: _int_text,
    26: bin_uint_text, 700: _pg_float4_text,
    701: lambda b: pg_float8_text(_F8.unpack(b)[0]),
    1700: _bin_numeric_text, 1082: _bin_date_text, 1114: _bin_ts_text,
    1184: _tstz_text, 1083: lambda b: _time_text(_I64.unpack(b)[0]),
    1266: _bin_timetz_text,
    1186: lambda b: _interval_text(*reversed(struct.unpack("!qii", b))),
    2950: lambda b: str(uuid.UUID(bytes=bytes(b))),
    114: _utf8, 3802: bin_jsonb_text,
}


def _quote_field(text, specials, quote='\\"'):
    """`text` in double quotes if empty or holding one of `specials`,
    with backslashes doubled and double quotes written as `quote`
    (array_out: backslash-quote; record_out: two double quotes)."""
    if text == "" or any(c in specials for c in text):
        return '"%s"' % text.replace("\\", "\\\\").replace('"', quote)
    return text


class CompositeText:
    """The binary form of a composite value (record_send) -> its text
    form, as record_out prints it; the bytes when a field is of a type
    whose text we cannot write from its binary form."""

    __slots__ = ("registry",)

    def __init__(self, registry):
        self.registry = registry

    def __call__(self, b):
        try:
            return self.text(b)
        except _NoText:
            return bytes(b)

    def text(self, b):
        (n,) = _I32.unpack_from(b)
        pos = 4
        fields = []
        for _ in range(n):
            oid, size = struct.unpack_from("!Ii", b, pos)
            pos += 8
            if size < 0:
                fields.append("")
                continue
            text = self.registry._text_of_binary(oid, b[pos:pos + size])
            pos += size
            fields.append(_quote_field(text, '"\\(),' + _PG_SPACE, '""'))
        return "(%s)" % ",".join(fields)


# -- the built-in types -----------------------------------------------------

#: (oid, typname, SQL name, array oid, text converter, binary converter)
BUILTIN_TYPES = [
    (16, "bool", "boolean", 1000, text_bool, _core.bin_bool),
    (17, "bytea", "bytea", 1001, text_bytea, _core.bin_bytes),
    (18, "char", '"char"', 1002, text_str, bin_char),
    (19, "name", "name", 1003, text_str, _core.bin_str),
    (20, "int8", "bigint", 1016, text_int, _core.bin_int),
    (21, "int2", "smallint", 1005, text_int, _core.bin_int),
    (23, "int4", "integer", 1007, text_int, _core.bin_int),
    (25, "text", "text", 1009, text_str, _core.bin_str),
    (26, "oid", "oid", 1028, text_int, _core.bin_oid),
    (114, "json", "json", 199, json.loads, bin_json),
    (650, "cidr", "cidr", 651, parse_cidr, bin_cidr),
    (700, "float4", "real", 1021, text_float, _core.bin_float),
    (701, "float8", "double precision", 1022, text_float, _core.bin_float),
    (869, "inet", "inet", 1041, parse_inet, bin_inet),
    (1042, "bpchar", "character", 1014, text_str, _core.bin_str),
    (1043, "varchar", "character varying", 1015, text_str, _core.bin_str),
    (1082, "date", "date", 1182, _core.text_date, bin_date),
    (1083, "time", "time without time zone", 1183, parse_time, bin_time),
    (1114, "timestamp", "timestamp without time zone", 1115,
     _core.text_timestamp, bin_timestamp),
    (1184, "timestamptz", "timestamp with time zone", 1185,
     _core.text_timestamptz, bin_timestamptz),
    (1186, "interval", "interval", 1187, parse_interval, bin_interval),
    (1266, "timetz", "time with time zone", 1270, parse_timetz, bin_timetz),
    (1700, "numeric", "numeric", 1231, Decimal, bin_numeric),
    (2950, "uuid", "uuid", 2951, uuid.UUID, bin_uuid),
    (3802, "jsonb", "jsonb", 3807, json.loads, bin_jsonb),
]


_TYPMOD_RE = re.compile(r"\(\s*\d+\s*(?:,\s*\d+\s*)?\)")


def _norm_name(name):
    """A type name as the plugins print it -> the key of the name table:
    typmods dropped ('numeric(10,2)' -> 'numeric'), 'pg_catalog.' dropped,
    quotes kept as printed."""
    name = name.strip()
    if "(" in name:
        name = _TYPMOD_RE.sub("", name).replace("  ", " ").strip()
    if name.startswith("pg_catalog."):
        name = name[len("pg_catalog."):]
    return name


class _CatalogType:
    __slots__ = ("oid", "name", "kind", "base", "elem")

    def __init__(self, oid, name, kind, base, elem):
        self.oid, self.name, self.kind = oid, name, kind
        self.base, self.elem = base, elem


class TypeRegistry:
    """Converters by type OID and by type name.

    Names are those the plugins print: SQL names ('integer', 'timestamp
    with time zone'), pg_type names ('int4', 'timestamptz'), user types as
    format_type() prints them ('mytype', 'myschema.mytype', '"MyType"').
    Typmods are ignored; 'x[]' and '_x' are arrays of 'x'.
    """

    def __init__(self):
        self._text = {}         # oid or name -> text converter
        self._binary = {}       # oid or name -> binary converter
        self._names = {}        # name -> oid (built-in)
        self._arrays = {}       # array oid -> element oid
        self._catalog = {}      # oid or name -> _CatalogType (user types)

    def copy(self):
        """A new registry with the same converters (to change on its own)."""
        new = TypeRegistry()
        new._text = dict(self._text)
        new._binary = dict(self._binary)
        new._names = dict(self._names)
        new._arrays = dict(self._arrays)
        new._catalog = dict(self._catalog)
        return new

    def register(self, key, text=None, binary=None):
        """Use `text` (str -> value) and/or `binary` (bytes -> value) for
        the type `key`: an OID (int) or a name (str). Register before the
        stream starts: decoders resolve each column's converter once."""
        if not isinstance(key, (int, str)) or isinstance(key, bool):
            raise TypeError("key must be a type OID (int) or name (str)")
        if isinstance(key, str):
            key = _norm_name(key)
            # a built-in type's names all mean its OID
            key = self._names.get(key, key)
        if text is not None:
            self._text[key] = text
        if binary is not None:
            self._binary[key] = binary

    def _add_builtin(self, oid, typname, sqlname, array_oid, text, binary):
        self._text[oid] = text
        self._binary[oid] = binary
        self._names[typname] = self._names[sqlname] = oid
        self._arrays[array_oid] = oid
        self._names[sqlname + "[]"] = array_oid
        self._names["_" + typname] = array_oid

    def add_catalog(self, rows):
        """Learn user-defined types: rows of (oid, name as format_type
        prints it, typtype, base type oid, element oid). Used for domains
        (to their base), enums (binary form) and arrays of user types."""
        for oid, name, kind, base, elem in rows:
            t = _CatalogType(int(oid), name, kind, int(base or 0),
                             int(elem or 0))
            self._catalog[t.oid] = t
            self._catalog[_norm_name(name)] = t

    # -- lookups --

    def text_converter(self, oid=None, name=None):
        """The text converter for a type given by OID and/or name."""
        return self._resolve(oid, name, False, 0)

    def binary_converter(self, oid=None, name=None):
        """The binary converter for a type given by OID and/or name."""
        return self._resolve(oid, name, True, 0)

    def resolve(self, oid, name, binary):
        """Decoders' entry point: the converter for a column."""
        return self._resolve(oid, name, bool(binary), 0)

    def resolve_name(self, name):
        """Decoders' entry point for a printed type name (text form)."""
        return self._resolve(None, name, False, 0)

    def _resolve(self, oid, name, binary, depth):
        table = self._binary if binary else self._text
        default = bin_str_or_bytes if binary else text_str
        if depth > 10:
            return default
        if name is not None:
            name = _norm_name(name)
        # explicit registrations first: by OID, then by name
        if oid is not None and oid in table:
            return table[oid]
        if name is not None and name in table:
            return table[name]
        if oid is not None and oid in self._arrays:
            return self._array(self._arrays[oid], None, binary, depth)
        if name is not None:
            if name in self._names:
                return self._resolve(self._names[name], None, binary,
                                     depth + 1)
            if name.endswith("[]"):
                return self._array(None, name[:-2], binary, depth)
        cat = None
        if oid is not None:
            cat = self._catalog.get(oid)
        if cat is None and name is not None:
            cat = self._catalog.get(name)
        if cat is not None:
            if cat.kind == "d" and cat.base:
                return self._resolve(cat.base, None, binary, depth + 1)
            if cat.elem and cat.name.endswith("[]"):
                return self._array(cat.elem, None, binary, depth)
            if cat.kind == "e":
                # an enum's value is its label, in both forms
                return _core.bin_str if binary else text_str
            if cat.kind == "c":
                # a composite is its text; from the binary form too
                return CompositeText(self) if binary else text_str
        if name is not None and name.startswith("_"):
            # pgoutput's Type message names arrays by typname: '_mytype'
            return self._array(None, name[1:], binary, depth)
        return default

    def _text_of_binary(self, oid, b, depth=0):
        """The server's text form of a value given in binary form, for a
        composite's fields; raises _NoText for types we cannot write."""
        f = _TEXT_OF_BINARY.get(oid) or _BINARY_IS_TEXT.get(oid)
        if f is not None:
            return f(b)
        if depth > 10:
            raise _NoText(oid)
        elem = self._arrays.get(oid)
        cat = self._catalog.get(oid)
        if elem is None and cat is not None and cat.elem \
                and cat.name.endswith("[]"):
            elem = cat.elem
        if elem is not None:
            delim = ";" if elem == 603 else ","
            return self._array_text(elem, b, delim, depth + 1)
        if cat is not None:
            if cat.kind == "d" and cat.base:
                return self._text_of_binary(cat.base, b, depth + 1)
            if cat.kind == "e":
                return _utf8(b)
            if cat.kind == "c":
                return CompositeText(self).text(b)
        raise _NoText(oid)

    def _array_text(self, elem, b, delim, depth):
        ndim, _flags, _elemtype = struct.unpack_from("!iiI", b)
        if ndim == 0:
            return "{}"
        pos = 12
        dims, lbounds = [], []
        for _ in range(ndim):
            size, lb = struct.unpack_from("!ii", b, pos)
            dims.append(size)
            lbounds.append(lb)
            pos += 8
        specials = '{}"\\' + delim + _PG_SPACE

        def read(level):
            nonlocal pos
            out = []
            for _ in range(dims[level]):
                if level + 1 < ndim:
                    out.append(read(level + 1))
                    continue
                (n,) = _I32.unpack_from(b, pos)
                pos += 4
                if n < 0:
                    out.append("NULL")
                    continue
                t = self._text_of_binary(elem, b[pos:pos + n], depth)
                pos += n
                out.append('"NULL"' if t.upper() == "NULL"
                           else _quote_field(t, specials))
            return "{%s}" % delim.join(out)
        text = read(0)
        if any(lb != 1 for lb in lbounds):
            text = "".join("[%d:%d]" % (lb, lb + d - 1)
                           for lb, d in zip(lbounds, dims)) + "=" + text
        return text

    def _array(self, elem_oid, elem_name, binary, depth):
        text = self._resolve(elem_oid, elem_name, False, depth + 1)
        conv = ArrayConverter(
            text, self._resolve(elem_oid, elem_name, True, depth + 1),
            ";" if elem_oid == 603 or elem_name == "box" else ",", self)
        return conv.binary if binary else conv


#: The str types whose binary converter gives their text (not reg*)
_BINARY_IS_TEXT = {oid: conv for oid, _, _, _, conv in BUILTIN_TEXT_TYPES
                   if conv is not bin_oid_int}


def _default_registry():
    reg = TypeRegistry()
    for row in BUILTIN_TYPES:
        reg._add_builtin(*row)
    for oid, typname, sqlname, array_oid, binary in BUILTIN_TEXT_TYPES:
        reg._add_builtin(oid, typname, sqlname, array_oid, text_str, binary)
    return reg


#: The registry the decoders use unless given another one.
registry = _default_registry()

CATALOG_QUERY = (
    "SELECT t.oid, format_type(t.oid, NULL), t.typtype, t.typbasetype,"
    " t.typelem FROM pg_catalog.pg_type t"
    " WHERE t.oid >= 16384"
    " AND (t.typtype IN ('d', 'e', 'c') OR t.typelem <> 0)")


def load_catalog(execute, reg=None):
    """Read the domains, enums, composites and arrays of user types from the server
    with ``execute(sql) -> (names, rows)`` (the Reader's ``execute``, on
    its connection before streaming) into the registry. Returns the
    number of types learnt."""
    reg = registry if reg is None else reg
    _, rows = execute(CATALOG_QUERY)
    reg.add_catalog(rows)
    return len(rows)
