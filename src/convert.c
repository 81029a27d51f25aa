/* convert.c - the value converters done in C, and the call-out to the others */

#include "convert.h"
#include "wire.h"

#include <float.h>
#include <math.h>
#include <string.h>
#include <datetime.h>
#include <structmember.h>

/* The function objects of _core, by kind: decoders compare identities. */
static PyObject *conv_objects[CONV_NKINDS];

enum conv_kind
convert_kind(PyObject *conv)
{
    int i;
    for (i = 1; i < CONV_NKINDS; i++) {
        if (conv == conv_objects[i]) { return (enum conv_kind)i; }
    }
    return CONV_CALL;
}

static PyObject *
bad_value(const char *what, const char *s, Py_ssize_t len)
{
    PyObject *text = PyUnicode_DecodeUTF8(s, len > 60 ? 60 : len, "replace");
    if (text) {
        PyErr_Format(PyExc_ValueError, "invalid %s value: %R%s", what, text,
                     len > 60 ? "..." : "");
        Py_DECREF(text);
    }
    return NULL;
}

PyObject *
convert_int(const char *s, Py_ssize_t len)
{
    Py_ssize_t i = 0;
    int neg = 0;
    unsigned long long v = 0;
    char buf[64];

    if (len > 0 && (s[0] == '-' || s[0] == '+')) { neg = s[0] == '-'; i = 1; }
    if (i >= len) { return bad_value("integer", s, len); }
    if (len - i <= 18) {
        for (; i < len; i++) {
            if (s[i] < '0' || s[i] > '9') { return bad_value("integer", s, len); }
            v = v * 10 + (unsigned long long)(s[i] - '0');
        }
        return PyLong_FromLongLong(neg ? -(long long)v : (long long)v);
    }
    /* long ones: let Python do it, on a NUL-terminated copy */
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') { return bad_value("integer", s, len); }
    }
    if (len >= (Py_ssize_t)sizeof(buf)) { return bad_value("integer", s, len); }
    memcpy(buf, s, (size_t)len);
    buf[len] = '\0';
    return PyLong_FromString(buf, NULL, 10);
}

#if defined(__SIZEOF_INT128__)
/* The common float forms ([+-]digits[.digits][e[+-]digits], up to 19
 * significant digits, a power of ten up to 19 each way), read exactly:
 * the decimal is w * 10^e with w < 2^64. w <= 2^53 and |e| <= 22: one
 * double operation. Else w * 10^e, or w * 2^k / 10^-e,
 * is an exact integer (plus a sticky bit for a remainder) in 128 bits,
 * rounded once to 53 bits, ties to even. Returns 0 for anything else,
 * left to PyOS_string_to_double (a correctly rounded strtod, but ten
 * times slower on 17 digits). */
typedef unsigned __int128 u128;

/* double arithmetic in double precision (no x87 extended registers) */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
#define CLINGER_OK 1
#else
#define CLINGER_OK 0
#endif

static int
bits128(u128 v)
{
    uint64_t hi = (uint64_t)(v >> 64), lo = (uint64_t)v;
    if (hi) { return 128 - __builtin_clzll(hi); }
    return lo ? 64 - __builtin_clzll(lo) : 0;
}

static const uint64_t pow10_u64[20] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL,
    10000000ULL, 100000000ULL, 1000000000ULL, 10000000000ULL,
    100000000000ULL, 1000000000000ULL, 10000000000000ULL,
    100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
    100000000000000000ULL, 1000000000000000000ULL,
    10000000000000000000ULL,
};

static int
fast_float(const char *s, Py_ssize_t len, double *out)
{
    Py_ssize_t i = 0;
    uint64_t w = 0, m;
    u128 n, num;
    int neg = 0, nd = 0, e10 = 0, sticky = 0, shift = 0, bexp = 0, nb;
    double d;

    if (i < len && (s[i] == '-' || s[i] == '+')) { neg = s[i++] == '-'; }
    if (i >= len || s[i] < '0' || s[i] > '9') { return 0; }
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        if (nd == 0 && s[i] == '0') { continue; }
        if (++nd > 19) { return 0; }
        w = w * 10 + (uint64_t)(s[i] - '0');
    }
    if (i < len && s[i] == '.') {
        if (++i >= len || s[i] < '0' || s[i] > '9') { return 0; }
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            e10--;
            if (nd == 0 && s[i] == '0') { continue; }
            if (++nd > 19) { return 0; }
            w = w * 10 + (uint64_t)(s[i] - '0');
        }
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        int eneg = 0, ev = 0, ne = 0;
        if (++i < len && (s[i] == '-' || s[i] == '+')) {
            eneg = s[i++] == '-';
        }
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            if (++ne > 4) { return 0; }
            ev = ev * 10 + (s[i] - '0');
        }
        if (!ne) { return 0; }
        e10 += eneg ? -ev : ev;
    }
    if (i != len) { return 0; }
    if (w == 0) {
        *out = neg ? -0.0 : 0.0;
        return 1;
    }
    if (CLINGER_OK && w <= (UINT64_C(1) << 53) && e10 >= -22 && e10 <= 22) {
        /* w and 10^|e10| are exact doubles: one IEEE operation rounds
         * correctly (Clinger's fast path; most values with up to 15
         * digits) */
        static const double p10[23] = {
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
            1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21,
            1e22,
        };
        d = e10 >= 0 ? (double)w * p10[e10] : (double)w / p10[-e10];
        *out = neg ? -d : d;
        return 1;
    }
    if (e10 >= 0) {
        if (e10 > 19) { return 0; }
        n = (u128)w * pow10_u64[e10];       /* < 2^128 */
    }
    else {
        uint64_t p;
        if (e10 < -19) { return 0; }
        p = pow10_u64[-e10];
        bexp = 127 - bits128(w);
        num = (u128)w << bexp;
        n = num / p;                        /* >= 2^62: 54 bits and more */
        sticky = num - n * p != 0;
        bexp = -bexp;
    }
    nb = bits128(n);
    if (nb > 53) {
        u128 rest, half;
        shift = nb - 53;
        m = (uint64_t)(n >> shift);
        rest = n & (((u128)1 << shift) - 1);
        half = (u128)1 << (shift - 1);
        if (rest > half || (rest == half && (sticky || (m & 1)))) { m++; }
    }
    else {
        m = (uint64_t)n;                    /* exact: no division here */
    }
    d = ldexp((double)m, shift + bexp);     /* m <= 2^53: exact */
    *out = neg ? -d : d;
    return 1;
}
#else
#define fast_float(s, len, out) 0
#endif

PyObject *
convert_float(const char *s, Py_ssize_t len)
{
    char buf[80], *end = NULL;
    double d;

    if (fast_float(s, len, &d)) { return PyFloat_FromDouble(d); }
    if (len <= 0 || len >= (Py_ssize_t)sizeof(buf)) {
        return bad_value("float", s, len);
    }
    memcpy(buf, s, (size_t)len);
    buf[len] = '\0';
    /* accepts NaN, Infinity and -Infinity as PostgreSQL prints them */
    d = PyOS_string_to_double(buf, &end, NULL);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return bad_value("float", s, len);
    }
    if (end != buf + len) { return bad_value("float", s, len); }
    return PyFloat_FromDouble(d);
}

static PyObject *
parse_bool(const char *s, Py_ssize_t len)
{
    if ((len == 1 && s[0] == 't') || (len == 4 && !memcmp(s, "true", 4))) {
        Py_RETURN_TRUE;
    }
    if ((len == 1 && s[0] == 'f') || (len == 5 && !memcmp(s, "false", 5))) {
        Py_RETURN_FALSE;
    }
    return bad_value("boolean", s, len);
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9') { return c - '0'; }
    if (c >= 'a' && c <= 'f') { return c - 'a' + 10; }
    if (c >= 'A' && c <= 'F') { return c - 'A' + 10; }
    return -1;
}

/* bytea in its text form: '\x0aff' (hex) or the escape form ('a\\b\001') */
static PyObject *
parse_bytea(const char *s, Py_ssize_t len)
{
    PyObject *rv = NULL;
    char *out;
    Py_ssize_t i, n = 0;

    if (len >= 2 && s[0] == '\\' && s[1] == 'x') {
        if ((len - 2) % 2) { return bad_value("bytea", s, len); }
        if (!(rv = PyBytes_FromStringAndSize(NULL, (len - 2) / 2))) {
            return NULL;
        }
        out = PyBytes_AS_STRING(rv);
        for (i = 2; i < len; i += 2) {
            int h = hexval(s[i]), l = hexval(s[i + 1]);
            if (h < 0 || l < 0) {
                Py_DECREF(rv);
                return bad_value("bytea", s, len);
            }
            out[n++] = (char)(h << 4 | l);
        }
        return rv;
    }
    if (!(rv = PyBytes_FromStringAndSize(NULL, len))) { return NULL; }
    out = PyBytes_AS_STRING(rv);
    for (i = 0; i < len; ) {
        if (s[i] != '\\') { out[n++] = s[i++]; continue; }
        if (i + 1 < len && s[i + 1] == '\\') { out[n++] = '\\'; i += 2; continue; }
        if (i + 3 < len && s[i + 1] >= '0' && s[i + 1] <= '3'
                && s[i + 2] >= '0' && s[i + 2] <= '7'
                && s[i + 3] >= '0' && s[i + 3] <= '7') {
            out[n++] = (char)((s[i + 1] - '0') << 6 | (s[i + 2] - '0') << 3
                              | (s[i + 3] - '0'));
            i += 4;
            continue;
        }
        Py_DECREF(rv);
        return bad_value("bytea", s, len);
    }
    if (_PyBytes_Resize(&rv, n) < 0) { return NULL; }
    return rv;
}

/* -- dates and timestamps in ISO form (DateStyle ISO) -- */

static PyObject *tz_cache = NULL;       /* offset seconds -> timezone */

static int
digits(const char *s, int n)
{
    int i, v = 0;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') { return -1; }
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static PyObject *
get_tz(int secs)
{
    PyObject *key, *tz, *delta;

    if (secs == 0) {
        Py_INCREF(PyDateTime_TimeZone_UTC);
        return PyDateTime_TimeZone_UTC;
    }
    if (!tz_cache && !(tz_cache = PyDict_New())) { return NULL; }
    if (!(key = PyLong_FromLong(secs))) { return NULL; }
    tz = PyDict_GetItemWithError(tz_cache, key);
    if (tz) { Py_DECREF(key); Py_INCREF(tz); return tz; }
    if (PyErr_Occurred() || !(delta = PyDelta_FromDSU(0, secs, 0))) {
        Py_DECREF(key);
        return NULL;
    }
    tz = PyTimeZone_FromOffset(delta);
    Py_DECREF(delta);
    if (tz && PyDict_SetItem(tz_cache, key, tz) < 0) { Py_CLEAR(tz); }
    Py_DECREF(key);
    return tz;
}

/* infinity -> max, -infinity -> min (aware in UTC if `aware`) */
static PyObject *
infinity(const char *s, Py_ssize_t len, PyTypeObject *type, int aware)
{
    PyObject *v, *rv;
    int neg;

    if (len == 8 && !memcmp(s, "infinity", 8)) { neg = 0; }
    else if (len == 9 && !memcmp(s, "-infinity", 9)) { neg = 1; }
    else { return NULL; }
    if (!(v = PyObject_GetAttrString((PyObject *)type, neg ? "min" : "max"))) {
        return NULL;
    }
    if (!aware) { return v; }
    {
        PyObject *kw = Py_BuildValue("{s:O}", "tzinfo",
                                     PyDateTime_TimeZone_UTC);
        PyObject *meth = kw ? PyObject_GetAttrString(v, "replace") : NULL;
        PyObject *args = meth ? PyTuple_New(0) : NULL;
        rv = args ? PyObject_Call(meth, args, kw) : NULL;
        Py_XDECREF(kw);
        Py_XDECREF(meth);
        Py_XDECREF(args);
    }
    Py_DECREF(v);
    return rv;
}

/* 'YYYY-MM-DD[ HH:MM:SS[.ffffff]][+HH[:MM[:SS]]]'; what Python cannot
 * hold (BC, years > 9999, odd forms) is returned as str, as types.py does */
static PyObject *
parse_datetime(const char *s, Py_ssize_t len, enum conv_kind kind)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, us = 0, off = 0, p = 10;
    PyObject *tz = NULL, *rv;

    if (len && (s[0] == 'i' || s[0] == '-')
            && (rv = infinity(s, len, kind == CONV_DATE
                              ? PyDateTimeAPI->DateType
                              : PyDateTimeAPI->DateTimeType,
                              kind == CONV_TIMESTAMPTZ))) {
        return rv;
    }
    if (PyErr_Occurred()) { return NULL; }
    if (len < 10 || s[4] != '-' || s[7] != '-') { goto as_text; }
    if ((y = digits(s, 4)) < 0 || (mo = digits(s + 5, 2)) < 0
            || (d = digits(s + 8, 2)) < 0) {
        goto as_text;
    }
    if (kind == CONV_DATE) {
        if (len != 10) { goto as_text; }
        rv = PyDate_FromDate(y, mo, d);
        goto check;
    }
    if (len < 19 || (s[10] != ' ' && s[10] != 'T')
            || s[13] != ':' || s[16] != ':'
            || (h = digits(s + 11, 2)) < 0 || (mi = digits(s + 14, 2)) < 0
            || (sec = digits(s + 17, 2)) < 0) {
        goto as_text;
    }
    p = 19;
    if (p < len && s[p] == '.') {
        int n = 0;
        p++;
        while (p < len && s[p] >= '0' && s[p] <= '9' && n < 6) {
            us = us * 10 + (s[p++] - '0');
            n++;
        }
        if (n == 0) { goto as_text; }
        for (; n < 6; n++) { us *= 10; }
    }
    if (kind == CONV_TIMESTAMPTZ) {
        int sign, oh, om = 0, os = 0;
        if (p + 3 > len || (s[p] != '+' && s[p] != '-')) { goto as_text; }
        sign = s[p] == '-' ? -1 : 1;
        if ((oh = digits(s + p + 1, 2)) < 0) { goto as_text; }
        p += 3;
        if (p + 3 <= len && s[p] == ':') {
            if ((om = digits(s + p + 1, 2)) < 0) { goto as_text; }
            p += 3;
            if (p + 3 <= len && s[p] == ':') {
                if ((os = digits(s + p + 1, 2)) < 0) { goto as_text; }
                p += 3;
            }
        }
        off = sign * (oh * 3600 + om * 60 + os);
    }
    if (p != len) { goto as_text; }
    if (kind == CONV_TIMESTAMPTZ && !(tz = get_tz(off))) { return NULL; }
    rv = PyDateTimeAPI->DateTime_FromDateAndTime(y, mo, d, h, mi, sec, us,
        tz ? tz : Py_None, PyDateTimeAPI->DateTimeType);
    Py_XDECREF(tz);

check:
    if (rv || !PyErr_ExceptionMatches(PyExc_ValueError)) { return rv; }
    PyErr_Clear();

as_text:
    return PyUnicode_DecodeUTF8(s, len, "strict");
}

static PyObject *
bin_int(const char *s, Py_ssize_t len)
{
    switch (len) {
    case 2: return PyLong_FromLong((int16_t)wire_get_u16(s));
    case 4: return PyLong_FromLong((int32_t)wire_get_u32(s));
    case 8: return PyLong_FromLongLong((int64_t)wire_get_u64(s));
    }
    PyErr_Format(PyExc_ValueError, "a binary integer has 2, 4 or 8 bytes, "
                 "not %zd", len);
    return NULL;
}

/* The decimal of `prec` significant digits nearest to f, read as a double;
 * -1.0 with an exception set on failure. */
static double
float4_digits(float f, int prec)
{
    char *buf;
    double d;

    if (!(buf = PyOS_double_to_string((double)f, 'g', prec, 0, NULL))) {
        return -1.0;
    }
    d = PyOS_string_to_double(buf, NULL, NULL);
    PyMem_Free(buf);
    return d;
}

/* A float4 as the server prints it (float4out, PostgreSQL 12+: the
 * shortest decimal that reads back as the same float4), as a double: so
 * the binary form gives the Python float the text form gives (0.1, not
 * 0.10000000149011612). A round-trip at `prec` digits holds at every
 * greater one, so the shortest is found by bisection over 1..9 digits
 * (9 always round-trips). */
static PyObject *
float4_shortest(float f)
{
    int lo = 1, hi = 9, mid;
    double d, best;

    if (!isfinite(f) || f == 0.0f) { return PyFloat_FromDouble((double)f); }
    if ((best = float4_digits(f, 9)) == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    while (lo < hi) {
        mid = (lo + hi) / 2;
        if ((d = float4_digits(f, mid)) == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        if ((float)d == f) { hi = mid; best = d; }
        else { lo = mid + 1; }
    }
    return PyFloat_FromDouble(best);
}

static PyObject *
bin_float(const char *s, Py_ssize_t len)
{
    if (len == 4) {
        uint32_t u = wire_get_u32(s);
        float f;
        memcpy(&f, &u, 4);
        return float4_shortest(f);
    }
    if (len == 8) {
        uint64_t u = wire_get_u64(s);
        double d;
        memcpy(&d, &u, 8);
        return PyFloat_FromDouble(d);
    }
    PyErr_Format(PyExc_ValueError, "a binary float has 4 or 8 bytes, not %zd",
                 len);
    return NULL;
}

/* UTF-8 text as str: ASCII text (most values) is checked eight bytes at a
 * time and copied; anything else goes to the UTF-8 decoder. */
PyObject *
convert_utf8(const char *s, Py_ssize_t len)
{
    PyObject *rv;
    Py_ssize_t i = 0;
    uint64_t w, any = 0;

    for (; i + 8 <= len; i += 8) {
        memcpy(&w, s + i, 8);
        any |= w;
    }
    for (; i < len; i++) { any |= (unsigned char)s[i]; }
    if ((any & UINT64_C(0x8080808080808080)) || len < 2) {
        /* also '' and one character: shared objects */
        return PyUnicode_DecodeUTF8(s, len, "strict");
    }
    if (!(rv = PyUnicode_New(len, 0x7F))) { return NULL; }
    memcpy(PyUnicode_1BYTE_DATA(rv), s, (size_t)len);
    return rv;
}

/* Decimal(str), straight to its tp_new with a 1-tuple kept for the next
 * call when nobody else took a reference (Decimal's tp_new keeps none,
 * and it has no __init__ to call). */
static PyObject *decimal_args = NULL;

static PyObject *
parse_decimal(const char *s, Py_ssize_t len)
{
    PyTypeObject *type = (PyTypeObject *)conv_objects[CONV_DECIMAL];
    PyObject *arg, *args, *rv;

    if (!(arg = convert_utf8(s, len))) { return NULL; }
    if (type->tp_init != PyBaseObject_Type.tp_init) {
        /* a pure-Python decimal module: the normal call */
        rv = PyObject_CallOneArg((PyObject *)type, arg);
        Py_DECREF(arg);
        return rv;
    }
    if (decimal_args && Py_REFCNT(decimal_args) == 1) {
        args = decimal_args;
        decimal_args = NULL;
        PyTuple_SET_ITEM(args, 0, arg);
    }
    else if (!(args = PyTuple_Pack(1, arg))) {
        Py_DECREF(arg);
        return NULL;
    }
    else {
        Py_DECREF(arg);
    }
    rv = type->tp_new(type, args, NULL);
    /* empty the tuple (it owns arg) and keep it if it is ours alone */
    arg = PyTuple_GET_ITEM(args, 0);
    if (Py_REFCNT(args) == 1 && !decimal_args) {
        PyTuple_SET_ITEM(args, 0, NULL);
        Py_DECREF(arg);
        decimal_args = args;
    }
    else {
        Py_DECREF(args);
    }
    return rv;
}

/* uuid.UUID(str) for the canonical form PostgreSQL prints: the object is
 * made as UUID.__init__ makes it (object.__new__, then the `int` and
 * `is_safe` slots); any other form goes to UUID() itself. The slots are
 * written through their member offsets when uuid.UUID has them as plain
 * __slots__ (found at init), else through object.__setattr__. */
static PyObject *uuid_safe_unknown = NULL;   /* uuid.SafeUUID.unknown */
static PyObject *uuid_int_name = NULL;
static PyObject *uuid_is_safe_name = NULL;
static Py_ssize_t uuid_int_offset = 0;       /* 0: unknown */
static Py_ssize_t uuid_is_safe_offset = 0;

/* hex digit value + 1, 0 for anything else */
static const unsigned char hex_plus1[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6,
    ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
    ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

/* The offset of the object slot `name` of `type` (a member descriptor of
 * __slots__), or 0. */
static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *d = PyDict_GetItemString(type->tp_dict, name);
    PyMemberDef *m;

    if (!d || Py_TYPE(d) != &PyMemberDescr_Type) { return 0; }
    m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX || (m->flags & READONLY) || m->offset <= 0
            || m->offset + (Py_ssize_t)sizeof(PyObject *)
                > type->tp_basicsize) {
        return 0;
    }
    return m->offset;
}

static PyObject *
parse_uuid(PyObject *conv, const char *s, Py_ssize_t len)
{
    PyTypeObject *type = (PyTypeObject *)conv;
    unsigned char b[16];
    PyObject *value = NULL, *u = NULL, *arg;
    const unsigned char *p = (const unsigned char *)s;
    unsigned int bad = 0;
    Py_ssize_t i, n = 0;

    if (len != 36 || !uuid_safe_unknown
            || type->tp_new != PyBaseObject_Type.tp_new
            || p[8] != '-' || p[13] != '-' || p[18] != '-' || p[23] != '-') {
        goto fallback;
    }
    for (i = 0; i < 36; i += 2) {
        unsigned int hi, lo;
        if (i == 8 || i == 13 || i == 18 || i == 23) { i--; continue; }
        hi = hex_plus1[p[i]];
        lo = hex_plus1[p[i + 1]];
        bad |= (hi == 0) | (lo == 0);
        b[n++] = (unsigned char)(((hi - 1) << 4) | ((lo - 1) & 0xF));
    }
    if (bad) { goto fallback; }
    if (!(value = _PyLong_FromByteArray(b, 16, 0, 0))) { return NULL; }
    if (!(u = type->tp_alloc(type, 0))) { goto exit; }
    if (uuid_int_offset && uuid_is_safe_offset) {
        /* fresh object: the slots are NULL */
        *(PyObject **)((char *)u + uuid_int_offset) = value;
        value = NULL;
        Py_INCREF(uuid_safe_unknown);
        *(PyObject **)((char *)u + uuid_is_safe_offset) = uuid_safe_unknown;
    }
    else if (PyObject_GenericSetAttr(u, uuid_int_name, value) < 0
            || PyObject_GenericSetAttr(u, uuid_is_safe_name,
                                       uuid_safe_unknown) < 0) {
        Py_CLEAR(u);
    }
exit:
    Py_XDECREF(value);
    return u;

fallback:
    if (!(arg = PyUnicode_DecodeUTF8(s, len, "strict"))) { return NULL; }
    u = PyObject_CallOneArg(conv, arg);
    Py_DECREF(arg);
    return u;
}

/* json.loads(str) as the default decoder's C scanner: scan_once(s, 0),
 * whose end must be the end of the text; anything else (whitespace
 * around, an error) goes to json.loads itself. */
static PyObject *json_scan_once = NULL;

static PyObject *
parse_json(PyObject *conv, const char *s, Py_ssize_t len)
{
    PyObject *arg, *res = NULL, *rv = NULL, *start = NULL;

    if ((rv = convert_json_fast(s, len))) { return rv; }
    if (!(arg = PyUnicode_DecodeUTF8(s, len, "strict"))) { return NULL; }
    if (json_scan_once && len > 0) {
        if (!(start = PyLong_FromLong(0))) { goto exit; }
        res = PyObject_CallFunctionObjArgs(json_scan_once, arg, start, NULL);
        if (res && PyTuple_Check(res) && PyTuple_GET_SIZE(res) == 2
                && PyLong_Check(PyTuple_GET_ITEM(res, 1))
                && PyLong_AsSsize_t(PyTuple_GET_ITEM(res, 1))
                    == PyUnicode_GET_LENGTH(arg)) {
            rv = PyTuple_GET_ITEM(res, 0);
            Py_INCREF(rv);
            goto exit;
        }
        PyErr_Clear();
    }
    rv = PyObject_CallOneArg(conv, arg);

exit:
    Py_XDECREF(res);
    Py_XDECREF(start);
    Py_DECREF(arg);
    return rv;
}

PyObject *
convert_value(PyObject *conv, enum conv_kind kind, const char *s,
              Py_ssize_t len, int binary)
{
    PyObject *arg, *rv;

    switch (kind) {
    case CONV_INT: return convert_int(s, len);
    case CONV_FLOAT: return convert_float(s, len);
    case CONV_BOOL: return parse_bool(s, len);
    case CONV_TEXT:
    case CONV_TEXT_BIN:
        return convert_utf8(s, len);
    case CONV_BYTEA: return parse_bytea(s, len);
    case CONV_DATE:
    case CONV_TIMESTAMP:
    case CONV_TIMESTAMPTZ:
        return parse_datetime(s, len, kind);
    case CONV_INT_BIN: return bin_int(s, len);
    case CONV_OID_BIN:
        if (len != 4) {
            PyErr_Format(PyExc_ValueError, "a binary oid has 4 bytes, not %zd",
                         len);
            return NULL;
        }
        return PyLong_FromUnsignedLong(wire_get_u32(s));
    case CONV_FLOAT_BIN: return bin_float(s, len);
    case CONV_BOOL_BIN:
        if (len != 1) {
            PyErr_Format(PyExc_ValueError, "a binary bool has 1 byte, not %zd",
                         len);
            return NULL;
        }
        return PyBool_FromLong(s[0] != 0);
    case CONV_BYTES_BIN: return PyBytes_FromStringAndSize(s, len);
    case CONV_DECIMAL:
        if (!binary) { return parse_decimal(s, len); }
        break;          /* Decimal(bytes): let it say what it thinks */
    case CONV_UUID:
        if (!binary) { return parse_uuid(conv, s, len); }
        break;
    case CONV_JSON:
        if (!binary) { return parse_json(conv, s, len); }
        break;
    default: break;
    }
    arg = binary ? PyBytes_FromStringAndSize(s, len)
        : PyUnicode_DecodeUTF8(s, len, "strict");
    if (!arg) { return NULL; }
    rv = PyObject_CallOneArg(conv, arg);
    Py_DECREF(arg);
    return rv;
}


/* -- the same converters as Python functions -- */

static PyObject *
call_kind(PyObject *arg, enum conv_kind kind)
{
    const char *s;
    Py_ssize_t len;

    if (PyUnicode_Check(arg)) {
        if (!(s = PyUnicode_AsUTF8AndSize(arg, &len))) { return NULL; }
    }
    else if (PyBytes_Check(arg)) {
        s = PyBytes_AS_STRING(arg);
        len = PyBytes_GET_SIZE(arg);
    }
    else {
        PyErr_Format(PyExc_TypeError, "expected str or bytes, got %s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    return convert_value(NULL, kind, s, len, 0);
}

#define DEFCONV(name, kind) \
    static PyObject *name(PyObject *self, PyObject *arg) \
    { return call_kind(arg, kind); }

DEFCONV(text_int, CONV_INT)
DEFCONV(text_float, CONV_FLOAT)
DEFCONV(text_bool, CONV_BOOL)
DEFCONV(text_str, CONV_TEXT)
DEFCONV(text_bytea, CONV_BYTEA)
DEFCONV(text_date, CONV_DATE)
DEFCONV(text_timestamp, CONV_TIMESTAMP)
DEFCONV(text_timestamptz, CONV_TIMESTAMPTZ)
DEFCONV(bin_int_f, CONV_INT_BIN)
DEFCONV(bin_oid_f, CONV_OID_BIN)
DEFCONV(bin_float_f, CONV_FLOAT_BIN)
DEFCONV(bin_bool_f, CONV_BOOL_BIN)
DEFCONV(bin_str_f, CONV_TEXT_BIN)
DEFCONV(bin_bytes_f, CONV_BYTES_BIN)

static PyMethodDef conv_methods[] = {
    {"text_int", text_int, METH_O, "A decimal integer -> int."},
    {"text_float", text_float, METH_O,
        "A float (also NaN, Infinity, -Infinity) -> float."},
    {"text_bool", text_bool, METH_O, "'t', 'f', 'true' or 'false' -> bool."},
    {"text_str", text_str, METH_O, "Text -> str."},
    {"text_bytea", text_bytea, METH_O,
        "bytea in hex ('\\\\x00ff') or escape form -> bytes."},
    {"text_date", text_date, METH_O,
        "An ISO date -> date; infinity -> date.max/min; else str."},
    {"text_timestamp", text_timestamp, METH_O,
        "An ISO timestamp -> naive datetime; infinity -> max/min; else str."},
    {"text_timestamptz", text_timestamptz, METH_O,
        "An ISO timestamp with offset -> aware datetime; infinity -> max/min\n"
        "in UTC; else str."},
    {"bin_int", bin_int_f, METH_O,
        "A big-endian signed integer of 2, 4 or 8 bytes -> int."},
    {"bin_oid", bin_oid_f, METH_O, "A big-endian unsigned int4 -> int."},
    {"bin_float", bin_float_f, METH_O,
        "An IEEE float8 -> float; a float4 -> the float of its shortest\n"
        "round-tripping decimal, as the server prints it (0.1, not\n"
        "0.10000000149011612)."},
    {"bin_bool", bin_bool_f, METH_O, "One byte -> bool."},
    {"bin_str", bin_str_f, METH_O, "UTF-8 bytes -> str."},
    {"bin_bytes", bin_bytes_f, METH_O, "Bytes -> bytes."},
    {NULL}
};

static const int conv_method_kinds[] = {
    CONV_INT, CONV_FLOAT, CONV_BOOL, CONV_TEXT, CONV_BYTEA, CONV_DATE,
    CONV_TIMESTAMP, CONV_TIMESTAMPTZ, CONV_INT_BIN,
    CONV_OID_BIN, CONV_FLOAT_BIN, CONV_BOOL_BIN, CONV_TEXT_BIN,
    CONV_BYTES_BIN,
};

RAISES_NEG int
convert_init(PyObject *module)
{
    int i;

    PyDateTime_IMPORT;
    if (!PyDateTimeAPI) { return -1; }
    if (!conv_objects[CONV_DECIMAL]) {
        PyObject *mod = PyImport_ImportModule("decimal");
        if (!mod) { return -1; }
        conv_objects[CONV_DECIMAL] = PyObject_GetAttrString(mod, "Decimal");
        Py_DECREF(mod);
        if (!conv_objects[CONV_DECIMAL]) { return -1; }
    }
    if (!conv_objects[CONV_UUID]) {
        PyObject *mod = PyImport_ImportModule("uuid"), *safe = NULL;
        if (!mod) { return -1; }
        conv_objects[CONV_UUID] = PyObject_GetAttrString(mod, "UUID");
        if (conv_objects[CONV_UUID]) {
            safe = PyObject_GetAttrString(mod, "SafeUUID");
        }
        Py_DECREF(mod);
        if (!safe) { return -1; }
        uuid_safe_unknown = PyObject_GetAttrString(safe, "unknown");
        Py_DECREF(safe);
        if (!uuid_safe_unknown) { return -1; }
        uuid_int_name = PyUnicode_InternFromString("int");
        uuid_is_safe_name = PyUnicode_InternFromString("is_safe");
        if (!uuid_int_name || !uuid_is_safe_name) { return -1; }
        uuid_int_offset = slot_offset(
            (PyTypeObject *)conv_objects[CONV_UUID], "int");
        uuid_is_safe_offset = slot_offset(
            (PyTypeObject *)conv_objects[CONV_UUID], "is_safe");
    }
    if (!conv_objects[CONV_JSON]) {
        PyObject *mod = PyImport_ImportModule("json"), *dec = NULL;
        if (!mod) { return -1; }
        conv_objects[CONV_JSON] = PyObject_GetAttrString(mod, "loads");
        if (conv_objects[CONV_JSON]) {
            dec = PyObject_GetAttrString(mod, "_default_decoder");
        }
        Py_DECREF(mod);
        if (!conv_objects[CONV_JSON]) { return -1; }
        /* no default decoder or no scanner: json.loads is called */
        if (dec) {
            json_scan_once = PyObject_GetAttrString(dec, "scan_once");
            Py_DECREF(dec);
        }
        PyErr_Clear();
    }
    for (i = 0; conv_methods[i].ml_name; i++) {
        PyObject *f = PyCFunction_NewEx(&conv_methods[i], NULL, NULL);
        if (!f) { return -1; }
        Py_XSETREF(conv_objects[conv_method_kinds[i]], f);
        Py_INCREF(f);
        if (PyModule_AddObject(module, conv_methods[i].ml_name, f) < 0) {
            Py_DECREF(f);
            return -1;
        }
    }
    return 0;
}
