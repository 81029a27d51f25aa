/* decode_test_decoding.c - test_decoding's text lines to changes, in C */

#include "decode.h"
#include "change.h"
#include "message.h"
#include "wire.h"

#include <stdarg.h>
#include <string.h>
#include <structmember.h>

/* Cap on the cached type and column names of one stream (then: no cache) */
#define CACHE_MAX 4096


/* -- helpers shared with decode_pgoutput.c -- */

void
cache_clear(nameCache *c)
{
    cacheEntry *entries = c->entries;
    Py_ssize_t i, n = c->n;

    /* emptied first: releasing an object may run code using the cache */
    c->entries = NULL;
    c->n = c->size = 0;
    for (i = 0; i < n; i++) {
        PyMem_Free(entries[i].key);
        Py_CLEAR(entries[i].obj);
    }
    PyMem_Free(entries);
}

cacheEntry *
cache_find(nameCache *c, const char *key, Py_ssize_t len)
{
    Py_ssize_t i;
    for (i = 0; i < c->n; i++) {
        if (c->entries[i].len == len && !memcmp(c->entries[i].key, key, len)) {
            return &c->entries[i];
        }
    }
    return NULL;
}

/* Add an entry (a new reference to obj is taken); 0 if the cache is full. */
RAISES_NEG int
cache_add(nameCache *c, const char *key, Py_ssize_t len, PyObject *obj,
          enum conv_kind kind)
{
    char *k;

    if (c->n >= CACHE_MAX) { return 0; }
    if (c->n == c->size) {
        Py_ssize_t size = c->size ? c->size * 2 : 16;
        cacheEntry *e = PyMem_Realloc(c->entries, size * sizeof(cacheEntry));
        if (!e) { PyErr_NoMemory(); return -1; }
        c->entries = e;
        c->size = size;
    }
    if (!(k = PyMem_Malloc(len ? len : 1))) { PyErr_NoMemory(); return -1; }
    memcpy(k, key, len);
    c->entries[c->n].key = k;
    c->entries[c->n].len = len;
    Py_INCREF(obj);
    c->entries[c->n].obj = obj;
    c->entries[c->n].kind = kind;
    c->n++;
    return 0;
}

PyObject *
decode_error(const char *plugin, lsn_t lsn, const char *fmt, ...)
{
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    PyObject *what = NULL, *text = NULL, *exc = NULL;
    char buf[LSN_BUFSIZE];
    va_list ap;

    PyErr_Fetch(&type, &value, &tb);
    if (type && PyErr_GivenExceptionMatches(type, pld_DecodingError)) {
        /* already ours */
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    va_start(ap, fmt);
    what = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (!what) { goto exit; }
    wire_format_lsn(buf, sizeof(buf), lsn);
    text = value
        ? PyUnicode_FromFormat("%s output at %s: %U (%S)", plugin, buf, what,
                               value)
        : PyUnicode_FromFormat("%s output at %s: %U", plugin, buf, what);
    if (!text) { goto exit; }
    exc = PyObject_CallOneArg(pld_DecodingError, text);
    if (!exc) { goto exit; }
    if (value) {
        if (tb) { PyException_SetTraceback(value, tb); }
        Py_INCREF(value);
        PyException_SetCause(exc, value);
    }
    PyErr_SetObject(pld_DecodingError, exc);

exit:
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    Py_XDECREF(what);
    Py_XDECREF(text);
    Py_XDECREF(exc);
    return NULL;
}


/* -- the decoder type -- */

typedef struct {
    PyObject_HEAD
    PyObject *resolve;      /* resolve(type name) -> converter */
    PyObject *other;        /* other(msg, decoder) -> change: other lines */
    PyObject *xid;          /* the current transaction's xid, or None */
    nameCache types;        /* type name -> converter */
    nameCache names;        /* column name (as printed) -> str */
} tdDecoderObject;

static PyObject *td_xid_get(PyObject *self, void *closure);

/* A parse in progress */
typedef struct {
    const char *s;
    Py_ssize_t len, pos;
    lsn_t lsn;
} tdParse;

#define TD "test_decoding"

static PyObject *
td_bad(tdParse *p, const char *what)
{
    PyObject *snippet;
    Py_ssize_t n = p->len - p->pos;

    if (n > 40) { n = 40; }
    if (n < 0) { n = 0; }
    snippet = PyUnicode_DecodeUTF8(p->s + p->pos, n, "replace");
    if (!snippet) { return NULL; }
    decode_error(TD, p->lsn, "%s at offset %zd: %R", what, p->pos, snippet);
    Py_DECREF(snippet);
    return NULL;
}

static int
starts(tdParse *p, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(p->len - p->pos) >= n && !memcmp(p->s + p->pos, lit, n);
}

/* Read an identifier as quote_identifier() prints it: bare, or in double
 * quotes with "" for a quote. Sets *start and *n to the text inside, and
 * *doubled if it has doubled quotes to undo. */
static RAISES_NEG int
read_ident(tdParse *p, const char *stops, const char **start, Py_ssize_t *n,
           int *doubled)
{
    Py_ssize_t i = p->pos;

    *doubled = 0;
    if (i < p->len && p->s[i] == '"') {
        i++;
        *start = p->s + i;
        for (;;) {
            if (i >= p->len) { p->pos = i; return -1; }
            if (p->s[i] == '"') {
                if (i + 1 < p->len && p->s[i + 1] == '"') {
                    *doubled = 1;
                    i += 2;
                    continue;
                }
                break;
            }
            i++;
        }
        *n = p->s + i - *start;
        p->pos = i + 1;
        return 0;
    }
    *start = p->s + i;
    while (i < p->len && !strchr(stops, p->s[i])) { i++; }
    *n = i - p->pos;
    if (*n == 0) { return -1; }
    p->pos = i;
    return 0;
}

/* A str from text where `q` doubled is one `q`. */
static PyObject *
undouble(const char *s, Py_ssize_t n, char q)
{
    PyObject *rv;
    char *buf;
    Py_ssize_t i, j = 0;

    if (!(buf = PyMem_Malloc(n ? n : 1))) { return PyErr_NoMemory(); }
    for (i = 0; i < n; i++) {
        buf[j++] = s[i];
        if (s[i] == q && i + 1 < n && s[i + 1] == q) { i++; }
    }
    rv = PyUnicode_DecodeUTF8(buf, j, "strict");
    PyMem_Free(buf);
    return rv;
}

static PyObject *
ident_str(tdDecoderObject *self, const char *s, Py_ssize_t n, int doubled,
          int cache)
{
    cacheEntry *e;
    PyObject *rv;

    if (doubled) { return undouble(s, n, '"'); }
    if (cache && (e = cache_find(&self->names, s, n))) {
        Py_INCREF(e->obj);
        return e->obj;
    }
    if (!(rv = PyUnicode_DecodeUTF8(s, n, "strict"))) { return NULL; }
    if (cache) {
        PyUnicode_InternInPlace(&rv);
        if (cache_add(&self->names, s, n, rv, CONV_CALL) < 0) {
            Py_DECREF(rv);
            return NULL;
        }
    }
    return rv;
}

/* The converter for a type name as printed between the brackets, as a
 * new reference (the cache may change while it runs: a converter may call
 * the decoder again, or re-initialise it), and its kind. */
static PyObject *
type_conv(tdDecoderObject *self, const char *s, Py_ssize_t n,
          enum conv_kind *kind)
{
    cacheEntry *e;
    PyObject *name = NULL, *conv = NULL, *resolve = NULL;

    if ((e = cache_find(&self->types, s, n))) {
        *kind = e->kind;
        Py_INCREF(e->obj);
        return e->obj;
    }
    if (!(name = PyUnicode_DecodeUTF8(s, n, "strict"))) { goto exit; }
    resolve = self->resolve;
    Py_INCREF(resolve);
    if (!(conv = PyObject_CallOneArg(resolve, name))) { goto exit; }
    *kind = convert_kind(conv);
    /* a full cache keeps nothing: the converter serves this value only */
    if (cache_add(&self->types, s, n, conv, *kind) < 0) { Py_CLEAR(conv); }

exit:
    Py_XDECREF(resolve);
    Py_XDECREF(name);
    return conv;
}

/* Parse the columns ' name[type]:value' up to the end (or to ' new-tuple:'
 * if `old`); return a dict, or Py_None for (no-tuple-data). */
static PyObject *
td_tuple(tdDecoderObject *self, tdParse *p, int old)
{
    PyObject *dict = NULL, *rv = NULL, *name = NULL, *value = NULL;
    const char *ns, *ts, *vs;
    Py_ssize_t nn, tn, vn;
    int doubled;

    if (starts(p, " (no-tuple-data)")) {
        p->pos += 16;
        Py_RETURN_NONE;
    }
    if (!(dict = PyDict_New())) { goto exit; }
    while (p->pos < p->len) {
        int quoted = 0;

        if (old && starts(p, " new-tuple:")) { break; }
        if (p->s[p->pos] != ' ') { td_bad(p, "expected a column"); goto exit; }
        p->pos++;
        if (read_ident(p, "[", &ns, &nn, &doubled) < 0
                || p->pos >= p->len || p->s[p->pos] != '[') {
            td_bad(p, "malformed column name");
            goto exit;
        }
        p->pos++;
        /* the type: up to ']:' outside double quotes */
        ts = p->s + p->pos;
        {
            int inq = 0;
            for (;;) {
                if (p->pos + 1 >= p->len) {
                    td_bad(p, "unterminated type name");
                    goto exit;
                }
                if (p->s[p->pos] == '"') { inq = !inq; }
                else if (!inq && p->s[p->pos] == ']'
                         && p->s[p->pos + 1] == ':') {
                    break;
                }
                p->pos++;
            }
        }
        tn = p->s + p->pos - ts;
        p->pos += 2;
        if (!(name = ident_str(self, ns, nn, doubled, 1))) { goto exit; }

        /* the value */
        if (p->pos < p->len && (p->s[p->pos] == '\''
                || (p->s[p->pos] == 'B' && p->pos + 1 < p->len
                    && p->s[p->pos + 1] == '\''))) {
            if (p->s[p->pos] == 'B') { p->pos++; }
            p->pos++;
            vs = p->s + p->pos;
            doubled = 0;
            for (;;) {
                if (p->pos >= p->len) {
                    td_bad(p, "unterminated quoted value");
                    goto exit;
                }
                if (p->s[p->pos] == '\'') {
                    if (p->pos + 1 < p->len && p->s[p->pos + 1] == '\'') {
                        doubled = 1;
                        p->pos += 2;
                        continue;
                    }
                    break;
                }
                p->pos++;
            }
            vn = p->s + p->pos - vs;
            p->pos++;
            quoted = 1;
        }
        else {
            vs = p->s + p->pos;
            while (p->pos < p->len && p->s[p->pos] != ' ') { p->pos++; }
            vn = p->s + p->pos - vs;
            if (vn == 0) { td_bad(p, "missing value"); goto exit; }
        }
        if (p->pos < p->len && p->s[p->pos] != ' ') {
            td_bad(p, "garbage after a value");
            goto exit;
        }

        if (!quoted && vn == 4 && !memcmp(vs, "null", 4)) {
            Py_INCREF(Py_None);
            value = Py_None;
        }
        else if (!quoted && vn == 21 && !memcmp(vs, "unchanged-toast-datum", 21)) {
            Py_INCREF(pld_UNCHANGED);
            value = pld_UNCHANGED;
        }
        else {
            PyObject *conv;
            enum conv_kind ckind;
            if (!(conv = type_conv(self, ts, tn, &ckind))) {
                decode_error(TD, p->lsn, "cannot resolve the type of %R", name);
                goto exit;
            }
            if (doubled) {
                char *buf = PyMem_Malloc(vn ? vn : 1);
                Py_ssize_t i, j = 0;
                if (!buf) {
                    Py_DECREF(conv);
                    PyErr_NoMemory();
                    goto exit;
                }
                for (i = 0; i < vn; i++) {
                    buf[j++] = vs[i];
                    if (vs[i] == '\'') { i++; }
                }
                value = convert_value(conv, ckind, buf, j, 0);
                PyMem_Free(buf);
            }
            else {
                value = convert_value(conv, ckind, vs, vn, 0);
            }
            Py_DECREF(conv);
            if (!value) {
                PyObject *tname = PyUnicode_DecodeUTF8(ts, tn, "replace");
                decode_error(TD, p->lsn, "cannot convert column %R of type %R",
                             name, tname);
                Py_XDECREF(tname);
                goto exit;
            }
        }
        if (PyDict_SetItem(dict, name, value) < 0) { goto exit; }
        Py_CLEAR(name);
        Py_CLEAR(value);
    }
    rv = dict;
    dict = NULL;

exit:
    Py_XDECREF(dict);
    Py_XDECREF(name);
    Py_XDECREF(value);
    return rv;
}

/* 'schema.table' as quote_qualified_identifier() prints it */
static RAISES_NEG int
td_qualified(tdDecoderObject *self, tdParse *p, PyObject **schema,
             PyObject **table)
{
    const char *s;
    Py_ssize_t n;
    int doubled;

    if (read_ident(p, ".:, ", &s, &n, &doubled) < 0
            || p->pos >= p->len || p->s[p->pos] != '.') {
        td_bad(p, "malformed table name");
        return -1;
    }
    if (!(*schema = ident_str(self, s, n, doubled, 1))) { return -1; }
    p->pos++;
    if (read_ident(p, ".:, ", &s, &n, &doubled) < 0) {
        Py_CLEAR(*schema);
        td_bad(p, "malformed table name");
        return -1;
    }
    if (!(*table = ident_str(self, s, n, doubled, 1))) {
        Py_CLEAR(*schema);
        return -1;
    }
    return 0;
}

static PyObject *
td_truncate(tdDecoderObject *self, tdParse *p, PyObject *tables)
{
    PyObject *ch = NULL;
    int cascade = 0, restart = 0;

    if (starts(p, " (no-flags)")) { p->pos += 11; }
    else {
        if (starts(p, " restart_seqs")) { p->pos += 13; restart = 1; }
        if (starts(p, " cascade")) { p->pos += 8; cascade = 1; }
    }
    if (p->pos != p->len) { return td_bad(p, "unexpected TRUNCATE flags"); }
    if (!(ch = change_new(CH_TRUNCATE))) { return NULL; }
    Py_INCREF(tables);
    change_set(ch, TRUNC_TABLES, tables);
    change_set(ch, TRUNC_CASCADE, PyBool_FromLong(cascade));
    change_set(ch, TRUNC_RESTART_IDENTITY, PyBool_FromLong(restart));
    if (change_set(ch, TRUNC_LSN, PyLong_FromUnsignedLongLong(p->lsn)) < 0) {
        Py_DECREF(ch);
        return NULL;
    }
    change_set(ch, TRUNC_XID, td_xid_get((PyObject *)self, NULL));
    return ch;
}

/* A 'table ...' line */
static PyObject *
td_table_line(tdDecoderObject *self, tdParse *p)
{
    PyObject *schema = NULL, *table = NULL, *tables = NULL, *ch = NULL;
    PyObject *newt = NULL, *oldt = NULL, *rv = NULL;
    enum change_kind kind;

    p->pos = 6;     /* "table " */
    if (td_qualified(self, p, &schema, &table) < 0) { goto exit; }
    if (starts(p, ", ")) {
        /* TRUNCATE of several tables */
        PyObject *pair;
        if (!(tables = PyList_New(0))) { goto exit; }
        for (;;) {
            if (!(pair = PyTuple_Pack(2, schema, table))) { goto exit; }
            if (PyList_Append(tables, pair) < 0) { Py_DECREF(pair); goto exit; }
            Py_DECREF(pair);
            Py_CLEAR(schema);
            Py_CLEAR(table);
            if (!starts(p, ", ")) { break; }
            p->pos += 2;
            if (td_qualified(self, p, &schema, &table) < 0) { goto exit; }
        }
        if (!starts(p, ": TRUNCATE:")) {
            td_bad(p, "expected ': TRUNCATE:'");
            goto exit;
        }
        p->pos += 11;
        rv = td_truncate(self, p, tables);
        goto exit;
    }
    if (starts(p, ": INSERT:")) { kind = CH_INSERT; p->pos += 9; }
    else if (starts(p, ": UPDATE:")) { kind = CH_UPDATE; p->pos += 9; }
    else if (starts(p, ": DELETE:")) { kind = CH_DELETE; p->pos += 9; }
    else if (starts(p, ": TRUNCATE:")) {
        PyObject *pair;
        p->pos += 11;
        if (!(pair = PyTuple_Pack(2, schema, table))) { goto exit; }
        if (!(tables = PyList_New(1))) { Py_DECREF(pair); goto exit; }
        PyList_SET_ITEM(tables, 0, pair);
        rv = td_truncate(self, p, tables);
        goto exit;
    }
    else {
        td_bad(p, "unknown action");
        goto exit;
    }

    if (kind == CH_UPDATE && starts(p, " old-key:")) {
        p->pos += 9;
        if (!(oldt = td_tuple(self, p, 1))) { goto exit; }
        if (!starts(p, " new-tuple:")) {
            td_bad(p, "expected ' new-tuple:'");
            goto exit;
        }
        p->pos += 11;
    }
    if (kind == CH_DELETE) {
        if (!(oldt = td_tuple(self, p, 0))) { goto exit; }
    }
    else if (!(newt = td_tuple(self, p, 0))) { goto exit; }
    if (p->pos != p->len) {
        td_bad(p, "unexpected text after the row");
        goto exit;
    }

    if (!(ch = change_new(kind))) { goto exit; }
    change_set(ch, ROW_SCHEMA, schema);
    change_set(ch, ROW_TABLE, table);
    schema = table = NULL;
    if (newt) { change_set(ch, ROW_NEW, newt); newt = NULL; }
    if (oldt) { change_set(ch, ROW_OLD, oldt); oldt = NULL; }
    if (change_set(ch, ROW_LSN, PyLong_FromUnsignedLongLong(p->lsn)) < 0) {
        goto exit;
    }
    change_set(ch, ROW_XID, td_xid_get((PyObject *)self, NULL));
    rv = ch;
    ch = NULL;

exit:
    Py_XDECREF(schema);
    Py_XDECREF(table);
    Py_XDECREF(tables);
    Py_XDECREF(newt);
    Py_XDECREF(oldt);
    Py_XDECREF(ch);
    return rv;
}

static PyObject *
td_call(tdDecoderObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *omsg, *rv, *other;
    messageObject *msg;
    tdParse p;

    if (!PyArg_ParseTuple(args, "O:TestDecodingDecoder", &omsg)) {
        return NULL;
    }
    if (!self->resolve || !self->other) {
        PyErr_SetString(pld_InterfaceError,
            "TestDecodingDecoder.__init__() was not called");
        return NULL;
    }
    if (!PyObject_TypeCheck(omsg, &messageType)) {
        PyErr_Format(PyExc_TypeError, "expected a Message, got %s",
                     Py_TYPE(omsg)->tp_name);
        return NULL;
    }
    msg = (messageObject *)omsg;
    if (PyUnicode_Check(msg->payload)) {
        if (!(p.s = PyUnicode_AsUTF8AndSize(msg->payload, &p.len))) {
            return NULL;
        }
    }
    else if (PyBytes_Check(msg->payload)) {
        p.s = PyBytes_AS_STRING(msg->payload);
        p.len = PyBytes_GET_SIZE(msg->payload);
    }
    else {
        PyErr_SetString(PyExc_TypeError, "the payload must be str or bytes");
        return NULL;
    }
    p.pos = 0;
    p.lsn = msg->data_start;
    /* held for the call: the code it runs (converters, other) may drop
     * the last other reference to the decoder or to `other` */
    Py_INCREF(self);
    if (p.len >= 6 && !memcmp(p.s, "table ", 6)) {
        rv = td_table_line(self, &p);
        if (!rv && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            /* a bytes payload (binary=True) whose names are not UTF-8 */
            decode_error(TD, p.lsn, "invalid UTF-8 in a name");
        }
    }
    else {
        other = self->other;
        Py_INCREF(other);
        rv = PyObject_CallFunctionObjArgs(other, omsg, (PyObject *)self, NULL);
        Py_DECREF(other);
    }
    Py_DECREF(self);
    return rv;
}

/* xid is never NULL: set in tp_new, refused to del */
static PyObject *
td_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    tdDecoderObject *self;

    if (!(self = (tdDecoderObject *)type->tp_alloc(type, 0))) {
        return NULL;
    }
    Py_INCREF(Py_None);
    self->xid = Py_None;
    return (PyObject *)self;
}

static PyObject *
td_xid_get(PyObject *oself, void *closure)
{
    tdDecoderObject *self = (tdDecoderObject *)oself;
    PyObject *rv = self->xid ? self->xid : Py_None;
    Py_INCREF(rv);
    return rv;
}

static int
td_xid_set(tdDecoderObject *self, PyObject *value, void *closure)
{
    if (!value) {
        PyErr_SetString(PyExc_AttributeError,
                        "cannot delete xid (set it to None)");
        return -1;
    }
    Py_INCREF(value);
    Py_XSETREF(self->xid, value);
    return 0;
}

static int
td_init(tdDecoderObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"resolve", "other", NULL};
    PyObject *resolve, *other;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO", kwlist,
                                     &resolve, &other)) {
        return -1;
    }
    Py_INCREF(resolve);
    Py_XSETREF(self->resolve, resolve);
    Py_INCREF(other);
    Py_XSETREF(self->other, other);
    Py_INCREF(Py_None);
    Py_XSETREF(self->xid, Py_None);
    cache_clear(&self->types);
    cache_clear(&self->names);
    return 0;
}

static int
td_traverse(tdDecoderObject *self, visitproc visit, void *arg)
{
    Py_ssize_t i;
    Py_VISIT(self->resolve);
    Py_VISIT(self->other);
    Py_VISIT(self->xid);
    for (i = 0; i < self->types.n; i++) { Py_VISIT(self->types.entries[i].obj); }
    return 0;
}

static int
td_clear(tdDecoderObject *self)
{
    Py_CLEAR(self->resolve);
    Py_CLEAR(self->other);
    Py_CLEAR(self->xid);
    cache_clear(&self->types);
    cache_clear(&self->names);
    return 0;
}

static void
td_dealloc(tdDecoderObject *self)
{
    PyObject_GC_UnTrack(self);
    td_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static struct PyGetSetDef td_getsets[] = {
    {"xid", (getter)td_xid_get, (setter)td_xid_set,
        "The xid of the transaction in progress (set by `other` on BEGIN),\n"
        "copied into the row changes; None if unknown."},
    {NULL}
};

static struct PyMemberDef td_members[] = {
    {"resolve", T_OBJECT, offsetof(tdDecoderObject, resolve), READONLY,
        "resolve(type name) -> converter, called once per type name."},
    {"other", T_OBJECT, offsetof(tdDecoderObject, other), READONLY,
        "other(msg, decoder) -> change, for the lines that are not rows."},
    {NULL}
};

#define td_doc \
"TestDecodingDecoder(resolve, other)\n\n" \
"Decode test_decoding's output: call it with a Message; the 'table ...'\n" \
"lines (INSERT, UPDATE, DELETE, TRUNCATE) are parsed here, the other\n" \
"lines are passed to `other(msg, decoder)`. Malformed input raises\n" \
"DecodingError naming the LSN."

PyTypeObject tdDecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylogicaldecoding._core.TestDecodingDecoder",
    .tp_basicsize = sizeof(tdDecoderObject),
    .tp_dealloc = (destructor)td_dealloc,
    .tp_call = (ternaryfunc)td_call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_doc = td_doc,
    .tp_traverse = (traverseproc)td_traverse,
    .tp_clear = (inquiry)td_clear,
    .tp_members = td_members,
    .tp_getset = td_getsets,
    .tp_init = (initproc)td_init,
    .tp_new = td_new,
};
