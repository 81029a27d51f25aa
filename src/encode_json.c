/* encode_json.c - the compact JSON text of a flat row, in C */

#include "convert.h"

#include <string.h>

/* What the JSON records of a row need most often: a dict of column -> value
 * where every key is a str and every value None, a bool, an int or a str
 * (the exact types). Its text is what the json module writes with
 * ensure_ascii=False and separators (",", ":") -- the encoder of
 * pylogicaldecoding.formats -- encoded in UTF-8: keys and strings escape
 * '"', '\\', \b \f \n \r \t as such and other characters below U+0020 as
 * \u00xx (lowercase hex, as json does); everything else is kept as is, so
 * the escaping can work on the UTF-8 bytes (no byte of a multi-byte
 * sequence is below 0x80). Anything else (another type, a subclass, a lone
 * surrogate) is left to the json module: the function says so by returning
 * None, and the caller converts the row itself. */

typedef struct {
    char *buf;          /* local, or from PyMem_Malloc once it outgrew it */
    Py_ssize_t len;
    Py_ssize_t cap;
    char local[512];
} jbuf;

static RAISES_NEG int
jb_reserve(jbuf *b, Py_ssize_t more)
{
    Py_ssize_t cap;
    char *nb;

    if (more > PY_SSIZE_T_MAX / 2 - b->len) {
        PyErr_NoMemory();
        return -1;
    }
    if (b->len + more <= b->cap) { return 0; }
    cap = b->cap;
    while (cap < b->len + more) { cap *= 2; }
    if (b->buf == b->local) {
        if ((nb = PyMem_Malloc(cap))) { memcpy(nb, b->buf, b->len); }
    }
    else {
        nb = PyMem_Realloc(b->buf, cap);
    }
    if (!nb) {
        PyErr_NoMemory();
        return -1;
    }
    b->buf = nb;
    b->cap = cap;
    return 0;
}

static RAISES_NEG int
jb_put(jbuf *b, const char *s, Py_ssize_t len)
{
    if (jb_reserve(b, len) < 0) { return -1; }
    memcpy(b->buf + b->len, s, len);
    b->len += len;
    return 0;
}

/* The escape of each byte below 0x80: 0 none, 'u' for \u00xx, else the
 * letter after the backslash. */
static const char escape_of[128] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    ['"'] = '"', ['\\'] = '\\',
};

/* A str as a JSON string. 1: written; 0: not taken (a lone surrogate:
 * no UTF-8), nothing set; -1: error set. */
static RAISES_NEG int
jb_string(jbuf *b, PyObject *s)
{
    const char *p, *end, *run;
    Py_ssize_t len;
    static const char hex[] = "0123456789abcdef";

    if (!(p = PyUnicode_AsUTF8AndSize(s, &len))) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    /* at most 6 bytes per input byte, plus the quotes */
    if (len > (PY_SSIZE_T_MAX - 2) / 6 || jb_reserve(b, len * 6 + 2) < 0) {
        if (!PyErr_Occurred()) { PyErr_NoMemory(); }
        return -1;
    }
    b->buf[b->len++] = '"';
    end = p + len;
    run = p;
    for (; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        char e;

        if (c >= 0x80 || !(e = escape_of[c])) { continue; }
        memcpy(b->buf + b->len, run, p - run);
        b->len += p - run;
        b->buf[b->len++] = '\\';
        if (e == 'u') {
            memcpy(b->buf + b->len, "u00", 3);
            b->len += 3;
            b->buf[b->len++] = hex[c >> 4];
            b->buf[b->len++] = hex[c & 0xf];
        }
        else {
            b->buf[b->len++] = e;
        }
        run = p + 1;
    }
    memcpy(b->buf + b->len, run, end - run);
    b->len += end - run;
    b->buf[b->len++] = '"';
    return 1;
}

/* An int as json writes it (int.__repr__). -1: error set (an int past
 * the limit of int to str conversion raises as json would). */
static RAISES_NEG int
jb_int(jbuf *b, PyObject *v)
{
    long long x;
    int overflow;
    char tmp[32];
    PyObject *text = NULL;
    const char *s;
    Py_ssize_t len;
    int rv = -1;

    x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred()) { goto exit; }
    if (!overflow) {
        len = PyOS_snprintf(tmp, sizeof(tmp), "%lld", x);
        rv = jb_put(b, tmp, len);
        goto exit;
    }
    if (!(text = PyObject_Str(v))) { goto exit; }
    if (!(s = PyUnicode_AsUTF8AndSize(text, &len))) { goto exit; }
    rv = jb_put(b, s, len);

exit:
    Py_XDECREF(text);
    return rv;
}

#define json_row_doc \
"json_row(row) -> bytes or None\n\n" \
"The compact JSON text, in UTF-8, of a dict whose keys are str and whose\n" \
"values are None, bool, int or str (exact types), as\n" \
"``json.dumps(row, ensure_ascii=False, separators=(',', ':')).encode()``\n" \
"writes it; None when the row holds anything else (the caller then uses\n" \
"the json module)."

HIDDEN PyObject *
encode_json_row(PyObject *self, PyObject *row)
{
    jbuf b;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    int first = 1, r;
    PyObject *rv = NULL;

    b.buf = b.local;
    b.len = 0;
    b.cap = sizeof(b.local);
    if (!PyDict_CheckExact(row)) {
        rv = Py_None;
        Py_INCREF(rv);
        goto exit;
    }
    if (jb_put(&b, "{", 1) < 0) { goto exit; }
    while (PyDict_Next(row, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) { goto not_taken; }
        if (!first && jb_put(&b, ",", 1) < 0) { goto exit; }
        first = 0;
        if ((r = jb_string(&b, key)) < 0) { goto exit; }
        if (r == 0) { goto not_taken; }
        if (jb_put(&b, ":", 1) < 0) { goto exit; }
        if (value == Py_None) {
            r = jb_put(&b, "null", 4);
        }
        else if (value == Py_True) {
            r = jb_put(&b, "true", 4);
        }
        else if (value == Py_False) {
            r = jb_put(&b, "false", 5);
        }
        else if (PyLong_CheckExact(value)) {
            r = jb_int(&b, value);
        }
        else if (PyUnicode_CheckExact(value)) {
            if ((r = jb_string(&b, value)) == 0) { goto not_taken; }
        }
        else {
            goto not_taken;
        }
        if (r < 0) { goto exit; }
    }
    if (jb_put(&b, "}", 1) < 0) { goto exit; }
    rv = PyBytes_FromStringAndSize(b.buf, b.len);
    goto exit;

not_taken:
    rv = Py_None;
    Py_INCREF(rv);

exit:
    if (b.buf != b.local) { PyMem_Free(b.buf); }
    return rv;
}

HIDDEN const char encode_json_row_doc[] = json_row_doc;
