/* convert_json.c - json.loads in C for the JSON the server prints */

#include "convert.h"

#include <string.h>

/* What this parser takes is the grammar of json.loads (Python's default
 * decoder, strict): objects, arrays, strings with the escapes \" \\ \/ \b
 * \f \n \r \t \uXXXX (surrogate pairs joined), numbers as json reads them
 * (int without fraction or exponent, else float(text)), true, false,
 * null, whitespace ' \t\n\r' around tokens. It gives up (NULL, no
 * exception), leaving the text to json.loads itself, on anything else:
 * NaN and Infinity, lone surrogates, nesting deeper than JSON_MAX_DEPTH,
 * invalid UTF-8, any syntax error (json.loads raises its own message).
 * jsonb's output never needs the fallback.
 *
 * Object keys repeat from row to row: short ASCII keys come from a small
 * cache, so a dict insertion finds their hash already computed. */

#define JSON_MAX_DEPTH 200
#define KEY_CACHE_SIZE 512          /* a power of two */
#define KEY_CACHE_MAXLEN 40

typedef struct {
    const char *s;          /* the next byte */
    const char *end;
    int depth;
} jparser;

static PyObject *key_cache[KEY_CACHE_SIZE];

/* scratch for strings with escapes (their decoded form is shorter) */
static char *scratch = NULL;
static size_t scratch_size = 0;

static const signed char hex_digit[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6,
    ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
    ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

static PyObject *jvalue(jparser *p);

static inline void
skip_ws(jparser *p)
{
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\n'
                             || *p->s == '\r' || *p->s == '\t')) {
        p->s++;
    }
}

static inline int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Four hex digits at s (there must be 4 bytes), or -1. */
static int
hex4(const char *s)
{
    int v = 0, i;
    for (i = 0; i < 4; i++) {
        int d = hex_digit[(unsigned char)s[i]];
        if (!d) { return -1; }
        v = v * 16 + d - 1;
    }
    return v;
}

static PyObject *
cached_key(const char *s, Py_ssize_t len)
{
    uint32_t h = 2166136261u;
    Py_ssize_t i;
    PyObject *k;

    for (i = 0; i < len; i++) {
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    }
    k = key_cache[h & (KEY_CACHE_SIZE - 1)];
    if (k && PyUnicode_GET_LENGTH(k) == len
            && memcmp(PyUnicode_1BYTE_DATA(k), s, (size_t)len) == 0) {
        Py_INCREF(k);
        return k;
    }
    if (!(k = PyUnicode_New(len, 0x7F))) { return NULL; }
    memcpy(PyUnicode_1BYTE_DATA(k), s, (size_t)len);
    if (PyObject_Hash(k) == -1) { Py_DECREF(k); return NULL; }
    Py_INCREF(k);
    Py_XSETREF(key_cache[h & (KEY_CACHE_SIZE - 1)], k);
    return k;
}

/* A string; p->s is just past the opening quote. */
static PyObject *
jstring(jparser *p, int is_key)
{
    const char *start = p->s, *q = p->s;
    int escapes = 0, high = 0;
    char *d;

    for (;;) {
        unsigned char c;
        if (q >= p->end) { return NULL; }
        c = (unsigned char)*q;
        if (c == '"') { break; }
        if (c < 0x20) { return NULL; }     /* strict: a control character */
        high |= c & 0x80;
        if (c == '\\') {
            escapes = 1;
            if (++q >= p->end) { return NULL; }
        }
        q++;
    }
    p->s = q + 1;
    if (!escapes) {
        if (is_key && !high && q - start <= KEY_CACHE_MAXLEN) {
            return cached_key(start, q - start);
        }
        return convert_utf8(start, q - start);
    }
    if ((size_t)(q - start) > scratch_size) {
        char *n = PyMem_Realloc(scratch, (size_t)(q - start));
        if (!n) { return NULL; }
        scratch = n;
        scratch_size = (size_t)(q - start);
    }
    d = scratch;
    while (start < q) {
        char c = *start++;
        long cp;
        if (c != '\\') { *d++ = c; continue; }
        c = *start++;
        switch (c) {
        case '"': case '\\': case '/': *d++ = c; continue;
        case 'b': *d++ = '\b'; continue;
        case 'f': *d++ = '\f'; continue;
        case 'n': *d++ = '\n'; continue;
        case 'r': *d++ = '\r'; continue;
        case 't': *d++ = '\t'; continue;
        case 'u': break;
        default: return NULL;
        }
        if (q - start < 4 || (cp = hex4(start)) < 0) { return NULL; }
        start += 4;
        if (cp >= 0xDC00 && cp <= 0xDFFF) { return NULL; }  /* lone low */
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            long lo;
            if (q - start < 6 || start[0] != '\\' || start[1] != 'u'
                    || (lo = hex4(start + 2)) < 0xDC00 || lo > 0xDFFF) {
                return NULL;        /* a lone high surrogate */
            }
            start += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        /* UTF-8: no longer than the escape it replaces */
        if (cp < 0x80) {
            *d++ = (char)cp;
        }
        else if (cp < 0x800) {
            *d++ = (char)(0xC0 | (cp >> 6));
            *d++ = (char)(0x80 | (cp & 0x3F));
        }
        else if (cp < 0x10000) {
            *d++ = (char)(0xE0 | (cp >> 12));
            *d++ = (char)(0x80 | ((cp >> 6) & 0x3F));
            *d++ = (char)(0x80 | (cp & 0x3F));
        }
        else {
            *d++ = (char)(0xF0 | (cp >> 18));
            *d++ = (char)(0x80 | ((cp >> 12) & 0x3F));
            *d++ = (char)(0x80 | ((cp >> 6) & 0x3F));
            *d++ = (char)(0x80 | (cp & 0x3F));
        }
    }
    return PyUnicode_DecodeUTF8(scratch, d - scratch, "strict");
}

/* A number, as json's scanner matches it:
 * -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)? */
static PyObject *
jnumber(jparser *p)
{
    const char *s = p->s, *i = s, *end = p->end;
    int is_float = 0;

    if (i < end && *i == '-') { i++; }
    if (i >= end) { return NULL; }
    if (*i >= '1' && *i <= '9') {
        for (i++; i < end && is_digit(*i); i++) { }
    }
    else if (*i == '0') {
        i++;
    }
    else {
        return NULL;
    }
    if (i + 1 < end && *i == '.' && is_digit(i[1])) {
        is_float = 1;
        for (i += 2; i < end && is_digit(*i); i++) { }
    }
    if (i < end && (*i == 'e' || *i == 'E')) {
        const char *e = i + 1;
        if (e < end && (*e == '-' || *e == '+')) { e++; }
        if (e < end && is_digit(*e)) {
            is_float = 1;
            for (; e < end && is_digit(*e); e++) { }
            i = e;
        }
    }
    p->s = i;
    return is_float ? convert_float(s, i - s) : convert_int(s, i - s);
}

static PyObject *
jobject(jparser *p)
{
    PyObject *d, *k = NULL, *v = NULL;

    if (!(d = PyDict_New())) { return NULL; }
    skip_ws(p);
    if (p->s < p->end && *p->s == '}') {
        p->s++;
        return d;
    }
    for (;;) {
        if (p->s >= p->end || *p->s != '"') { goto error; }
        p->s++;
        if (!(k = jstring(p, 1))) { goto error; }
        skip_ws(p);
        if (p->s >= p->end || *p->s != ':') { goto error; }
        p->s++;
        skip_ws(p);
        if (!(v = jvalue(p))) { goto error; }
        if (PyDict_SetItem(d, k, v) < 0) { goto error; }
        Py_CLEAR(k);
        Py_CLEAR(v);
        skip_ws(p);
        if (p->s >= p->end) { goto error; }
        if (*p->s == '}') {
            p->s++;
            return d;
        }
        if (*p->s != ',') { goto error; }
        p->s++;
        skip_ws(p);
    }

error:
    Py_XDECREF(k);
    Py_XDECREF(v);
    Py_DECREF(d);
    return NULL;
}

static PyObject *
jarray(jparser *p)
{
    PyObject *l, *v;

    if (!(l = PyList_New(0))) { return NULL; }
    skip_ws(p);
    if (p->s < p->end && *p->s == ']') {
        p->s++;
        return l;
    }
    for (;;) {
        if (!(v = jvalue(p))) { goto error; }
        if (PyList_Append(l, v) < 0) { Py_DECREF(v); goto error; }
        Py_DECREF(v);
        skip_ws(p);
        if (p->s >= p->end) { goto error; }
        if (*p->s == ']') {
            p->s++;
            return l;
        }
        if (*p->s != ',') { goto error; }
        p->s++;
        skip_ws(p);
    }

error:
    Py_DECREF(l);
    return NULL;
}

static int
word(jparser *p, const char *w, size_t n)
{
    if ((size_t)(p->end - p->s) < n || memcmp(p->s, w, n) != 0) { return 0; }
    p->s += n;
    return 1;
}

static PyObject *
jvalue(jparser *p)
{
    PyObject *v;

    if (p->s >= p->end) { return NULL; }
    switch (*p->s) {
    case '"':
        p->s++;
        return jstring(p, 0);
    case '{':
    case '[':
        if (++p->depth > JSON_MAX_DEPTH) { return NULL; }
        v = *p->s++ == '{' ? jobject(p) : jarray(p);
        p->depth--;
        return v;
    case 't':
        if (!word(p, "true", 4)) { return NULL; }
        Py_RETURN_TRUE;
    case 'f':
        if (!word(p, "false", 5)) { return NULL; }
        Py_RETURN_FALSE;
    case 'n':
        if (!word(p, "null", 4)) { return NULL; }
        Py_RETURN_NONE;
    default:
        return jnumber(p);
    }
}

PyObject *
convert_json_fast(const char *s, Py_ssize_t len)
{
    jparser p;
    PyObject *v;

    p.s = s;
    p.end = s + len;
    p.depth = 0;
    skip_ws(&p);
    v = jvalue(&p);
    if (v) {
        skip_ws(&p);
        if (p.s != p.end) { Py_CLEAR(v); }
    }
    if (!v) { PyErr_Clear(); }
    return v;
}
