/* decode_pgoutput.c - pgoutput's binary messages to changes, in C */

#include "decode.h"
#include "change.h"
#include "message.h"
#include "wire.h"

#include <string.h>
#include <structmember.h>

#define PGO "pgoutput"

/* What a Relation message said, for the rows that follow. Owned by the
 * decoder's cache and by whoever is decoding a row of it (refs): a
 * converter run meanwhile may reset the decoder. */
typedef struct {
    Py_ssize_t refs;
    uint32_t relid;
    PyObject *relid_obj;            /* relid as int, shared by the rows */
    PyObject *schema, *table;
    PyObject *row;                  /* {name: None}: copied for each row */
    Py_ssize_t ncols;
    PyObject **names;
    PyObject **conv[2];             /* [0] text, [1] binary converters */
    enum conv_kind *kind[2];
} relEntry;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *resolve;      /* resolve(oid, type name or None, binary) */
    relEntry **rels;        /* the relation cache, sorted by relid; only C
                             * sees it (`relations` is a copy) */
    Py_ssize_t nrels, relsize;
    PyObject *types;        /* oid -> (schema, name) from Type messages */
    PyObject *xid;          /* xid of the transaction in progress */
    int in_stream;          /* between StreamStart and StreamStop */
    relEntry *last;         /* the last relation used (in rels) */
} pgoDecoderObject;

/* A message being read */
typedef struct {
    const char *s;
    Py_ssize_t len, pos;
    lsn_t lsn;
} pgoRead;


/* -- bounds-checked reads -- */

static PyObject *
short_msg(pgoRead *r, const char *what)
{
    return decode_error(PGO, r->lsn, "message '%c' truncated reading %s "
        "(%zd bytes, at offset %zd)", r->len ? r->s[0] : '?', what, r->len,
        r->pos);
}

static RAISES_NEG int
get_u8(pgoRead *r, const char *what, unsigned int *out)
{
    if (r->len - r->pos < 1) { short_msg(r, what); return -1; }
    *out = (unsigned char)r->s[r->pos++];
    return 0;
}

static RAISES_NEG int
get_u16(pgoRead *r, const char *what, unsigned int *out)
{
    if (r->len - r->pos < 2) { short_msg(r, what); return -1; }
    *out = wire_get_u16(r->s + r->pos);
    r->pos += 2;
    return 0;
}

static RAISES_NEG int
get_u32(pgoRead *r, const char *what, uint32_t *out)
{
    if (r->len - r->pos < 4) { short_msg(r, what); return -1; }
    *out = wire_get_u32(r->s + r->pos);
    r->pos += 4;
    return 0;
}

static RAISES_NEG int
get_u64(pgoRead *r, const char *what, uint64_t *out)
{
    if (r->len - r->pos < 8) { short_msg(r, what); return -1; }
    *out = wire_get_u64(r->s + r->pos);
    r->pos += 8;
    return 0;
}

/* A NUL-terminated string, as str */
static PyObject *
get_str(pgoRead *r, const char *what)
{
    const char *end;
    PyObject *rv;

    end = memchr(r->s + r->pos, '\0', (size_t)(r->len - r->pos));
    if (!end) { return short_msg(r, what); }
    rv = PyUnicode_DecodeUTF8(r->s + r->pos, end - (r->s + r->pos), "strict");
    if (!rv) { return decode_error(PGO, r->lsn, "invalid %s", what); }
    r->pos = end - r->s + 1;
    return rv;
}

static PyObject *
u32_obj(pgoRead *r, const char *what)
{
    uint32_t v;
    if (get_u32(r, what, &v) < 0) { return NULL; }
    return PyLong_FromUnsignedLong(v);
}

static PyObject *
lsn_obj(pgoRead *r, const char *what)
{
    uint64_t v;
    if (get_u64(r, what, &v) < 0) { return NULL; }
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *
time_obj(pgoRead *r, const char *what)
{
    uint64_t v;
    PyObject *rv;

    if (get_u64(r, what, &v) < 0) { return NULL; }
    if (!(rv = wire_pgtime_to_datetime((int64_t)v))) {
        return decode_error(PGO, r->lsn, "invalid %s", what);
    }
    return rv;
}

static PyObject *
u8_obj(pgoRead *r, const char *what)
{
    unsigned int v;
    if (get_u8(r, what, &v) < 0) { return NULL; }
    return PyLong_FromLong(v);
}

static PyObject *
end_check(pgoRead *r, PyObject *ch)
{
    if (ch && r->pos != r->len) {
        Py_DECREF(ch);
        return decode_error(PGO, r->lsn, "message '%c' has %zd bytes of "
            "garbage at its end", r->s[0], r->len - r->pos);
    }
    return ch;
}


/* -- the relation cache -- */

static void
rel_free(relEntry *e)
{
    Py_ssize_t i;
    int b;

    if (!e) { return; }
    Py_XDECREF(e->relid_obj);
    Py_XDECREF(e->row);
    Py_XDECREF(e->schema);
    Py_XDECREF(e->table);
    for (i = 0; i < e->ncols; i++) {
        if (e->names) { Py_XDECREF(e->names[i]); }
        for (b = 0; b < 2; b++) {
            if (e->conv[b]) { Py_XDECREF(e->conv[b][i]); }
        }
    }
    PyMem_Free(e->names);
    for (b = 0; b < 2; b++) {
        PyMem_Free(e->conv[b]);
        PyMem_Free(e->kind[b]);
    }
    PyMem_Free(e);
}

/* Drop a reference to an entry (NULL is fine). */
static void
rel_release(relEntry *e)
{
    if (e && --e->refs == 0) { rel_free(e); }
}

/* Where relid is, or would be inserted, in the sorted cache. */
static Py_ssize_t
rel_index(pgoDecoderObject *self, uint32_t relid)
{
    Py_ssize_t lo = 0, hi = self->nrels, mid;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        if (self->rels[mid]->relid < relid) { lo = mid + 1; }
        else { hi = mid; }
    }
    return lo;
}

/* Put e in the cache (taking over its reference), replacing the entry of
 * the same relid. */
static RAISES_NEG int
rel_store(pgoDecoderObject *self, relEntry *e)
{
    Py_ssize_t i = rel_index(self, e->relid);
    relEntry *old;

    self->last = NULL;
    if (i < self->nrels && self->rels[i]->relid == e->relid) {
        old = self->rels[i];
        self->rels[i] = e;
        rel_release(old);
        return 0;
    }
    if (self->nrels == self->relsize) {
        Py_ssize_t size = self->relsize ? self->relsize * 2 : 16;
        relEntry **rels = PyMem_Realloc(self->rels, size * sizeof(relEntry *));
        if (!rels) {
            PyErr_NoMemory();
            return -1;
        }
        self->rels = rels;
        self->relsize = size;
    }
    memmove(self->rels + i + 1, self->rels + i,
            (self->nrels - i) * sizeof(relEntry *));
    self->rels[i] = e;
    self->nrels++;
    return 0;
}

/* Empty the cache. The entries are released after the cache is emptied:
 * freeing one may run Python code. */
static void
rel_clear_all(pgoDecoderObject *self)
{
    relEntry **rels = self->rels;
    Py_ssize_t i, n = self->nrels;

    self->last = NULL;
    self->rels = NULL;
    self->nrels = self->relsize = 0;
    for (i = 0; i < n; i++) { rel_release(rels[i]); }
    PyMem_Free(rels);
}

/* The entry of relid, with a new reference (rel_release() it). */
static relEntry *
rel_find(pgoDecoderObject *self, pgoRead *r, uint32_t relid)
{
    Py_ssize_t i;

    if (!(self->last && self->last->relid == relid)) {
        i = rel_index(self, relid);
        if (i >= self->nrels || self->rels[i]->relid != relid) {
            decode_error(PGO, r->lsn, "a change of relation %u, which no "
                "Relation message described", (unsigned int)relid);
            return NULL;
        }
        self->last = self->rels[i];
    }
    self->last->refs++;
    return self->last;
}

/* The type name for resolve(): from a Type message, or None */
static PyObject *
type_name(pgoDecoderObject *self, uint32_t oid)
{
    PyObject *key, *t;

    if (!(key = PyLong_FromUnsignedLong(oid))) { return NULL; }
    t = PyDict_GetItemWithError(self->types, key);
    Py_DECREF(key);
    if (!t) {
        if (PyErr_Occurred()) { return NULL; }
        Py_RETURN_NONE;
    }
    Py_INCREF(t);
    return t;
}


/* -- tuple data -- */

static PyObject *
tuple_data(pgoDecoderObject *self, pgoRead *r, relEntry *e)
{
    PyObject *dict = NULL, *value = NULL, *rv = NULL;
    unsigned int ncols, kind;
    Py_ssize_t i;
    uint32_t n;

    if (get_u16(r, "the column count", &ncols) < 0) { goto exit; }
    if ((Py_ssize_t)ncols > e->ncols) {
        decode_error(PGO, r->lsn, "a row of %u columns for relation %U.%U "
            "of %zd columns", ncols, e->schema, e->table, e->ncols);
        goto exit;
    }
    dict = (Py_ssize_t)ncols == e->ncols ? PyDict_Copy(e->row)
        : _PyDict_NewPresized(ncols);
    if (!dict) { goto exit; }
    for (i = 0; i < (Py_ssize_t)ncols; i++) {
        if (get_u8(r, "a column kind", &kind) < 0) { goto exit; }
        switch (kind) {
        case 'n':
            Py_INCREF(Py_None);
            value = Py_None;
            break;
        case 'u':
            Py_INCREF(pld_UNCHANGED);
            value = pld_UNCHANGED;
            break;
        case 't':
        case 'b': {
            int b = kind == 'b';
            if (get_u32(r, "a value length", &n) < 0) { goto exit; }
            if ((Py_ssize_t)n > r->len - r->pos) {
                short_msg(r, "a value");
                goto exit;
            }
            value = convert_value(e->conv[b][i], e->kind[b][i],
                                  r->s + r->pos, (Py_ssize_t)n, b);
            if (!value) {
                decode_error(PGO, r->lsn, "cannot convert column %U of %U.%U",
                             e->names[i], e->schema, e->table);
                goto exit;
            }
            r->pos += n;
            break;
        }
        default:
            decode_error(PGO, r->lsn, "unknown column kind 0x%02x", kind);
            goto exit;
        }
        if (PyDict_SetItem(dict, e->names[i], value) < 0) { goto exit; }
        Py_CLEAR(value);
    }
    rv = dict;
    dict = NULL;

exit:
    Py_XDECREF(dict);
    Py_XDECREF(value);
    return rv;
}


/* -- messages -- */

/* The xid that prefixes a message inside a stream block */
static RAISES_NEG int
stream_xid(pgoDecoderObject *self, pgoRead *r, PyObject **xid)
{
    if (self->in_stream) {
        if (!(*xid = u32_obj(r, "the xid"))) { return -1; }
    }
    else {
        Py_INCREF(self->xid);
        *xid = self->xid;
    }
    return 0;
}

static PyObject *
msg_row(pgoDecoderObject *self, pgoRead *r, enum change_kind kind)
{
    PyObject *ch = NULL, *xid = NULL, *rv = NULL;
    relEntry *e = NULL;
    uint32_t relid;
    unsigned int tag;

    if (stream_xid(self, r, &xid) < 0) { goto exit; }
    if (get_u32(r, "the relation id", &relid) < 0) { goto exit; }
    if (!(e = rel_find(self, r, relid))) { goto exit; }
    if (!(ch = change_new(kind))) { goto exit; }
    Py_INCREF(e->schema);
    change_set(ch, ROW_SCHEMA, e->schema);
    Py_INCREF(e->table);
    change_set(ch, ROW_TABLE, e->table);
    change_set(ch, ROW_XID, xid);
    xid = NULL;
    Py_INCREF(e->relid_obj);
    change_set(ch, ROW_RELID, e->relid_obj);
    if (change_set(ch, ROW_LSN, PyLong_FromUnsignedLongLong(r->lsn)) < 0) {
        goto exit;
    }
    if (get_u8(r, "the tuple tag", &tag) < 0) { goto exit; }
    if (kind != CH_INSERT && (tag == 'K' || tag == 'O')) {
        if (change_set(ch, ROW_OLD, tuple_data(self, r, e)) < 0) { goto exit; }
        if (kind == CH_UPDATE
                && get_u8(r, "the tuple tag", &tag) < 0) { goto exit; }
    }
    if (kind != CH_DELETE) {
        if (tag != 'N') {
            decode_error(PGO, r->lsn, "expected a new tuple ('N'), got 0x%02x",
                         tag);
            goto exit;
        }
        if (change_set(ch, ROW_NEW, tuple_data(self, r, e)) < 0) { goto exit; }
    }
    else if (tag != 'K' && tag != 'O') {
        decode_error(PGO, r->lsn, "expected an old tuple ('K' or 'O'), "
                     "got 0x%02x", tag);
        goto exit;
    }
    rv = ch;
    ch = NULL;

exit:
    rel_release(e);
    Py_XDECREF(ch);
    Py_XDECREF(xid);
    return rv;
}

static PyObject *
msg_relation(pgoDecoderObject *self, pgoRead *r)
{
    PyObject *ch = NULL, *xid = NULL, *columns = NULL, *rv = NULL;
    PyObject *tname = NULL, *resolve = NULL;
    relEntry *e = NULL;
    uint32_t relid, oid, typmod;
    unsigned int ident, ncols, flags;
    Py_ssize_t i;
    int b;

    if (stream_xid(self, r, &xid) < 0) { goto exit; }
    if (get_u32(r, "the relation id", &relid) < 0) { goto exit; }
    if (!(e = PyMem_Calloc(1, sizeof(relEntry)))) {
        PyErr_NoMemory();
        goto exit;
    }
    e->refs = 1;
    e->relid = relid;
    /* held: the resolver may replace or reset anything of ours */
    resolve = self->resolve;
    Py_INCREF(resolve);
    if (!(e->relid_obj = PyLong_FromUnsignedLong(relid))) { goto exit; }
    if (!(e->schema = get_str(r, "the schema name"))) { goto exit; }
    if (PyUnicode_GET_LENGTH(e->schema) == 0) {
        /* pg_catalog is sent as an empty string */
        Py_SETREF(e->schema, PyUnicode_FromString("pg_catalog"));
        if (!e->schema) { goto exit; }
    }
    PyUnicode_InternInPlace(&e->schema);
    if (!(e->table = get_str(r, "the table name"))) { goto exit; }
    PyUnicode_InternInPlace(&e->table);
    if (get_u8(r, "the replica identity", &ident) < 0) { goto exit; }
    if (get_u16(r, "the column count", &ncols) < 0) { goto exit; }
    e->names = PyMem_Calloc(ncols + 1, sizeof(PyObject *));
    for (b = 0; b < 2; b++) {
        e->conv[b] = PyMem_Calloc(ncols + 1, sizeof(PyObject *));
        e->kind[b] = PyMem_Calloc(ncols + 1, sizeof(enum conv_kind));
        if (!e->conv[b] || !e->kind[b]) { PyErr_NoMemory(); goto exit; }
    }
    if (!e->names) { PyErr_NoMemory(); goto exit; }
    e->ncols = ncols;
    if (!(columns = PyList_New(ncols))) { goto exit; }
    for (i = 0; i < (Py_ssize_t)ncols; i++) {
        PyObject *col;
        if (get_u8(r, "the column flags", &flags) < 0) { goto exit; }
        if (!(e->names[i] = get_str(r, "a column name"))) { goto exit; }
        PyUnicode_InternInPlace(&e->names[i]);
        if (get_u32(r, "a column type", &oid) < 0
                || get_u32(r, "a column type modifier", &typmod) < 0) {
            goto exit;
        }
        if (!(tname = type_name(self, oid))) { goto exit; }
        for (b = 0; b < 2; b++) {
            e->conv[b][i] = PyObject_CallFunction(resolve, "kOi",
                (unsigned long)oid, tname, b);
            if (!e->conv[b][i]) { goto exit; }
            e->kind[b][i] = convert_kind(e->conv[b][i]);
        }
        Py_CLEAR(tname);
        if (!(col = change_new(CH_COLUMN))) { goto exit; }
        PyList_SET_ITEM(columns, i, col);
        Py_INCREF(e->names[i]);
        change_set(col, COL_NAME, e->names[i]);
        if (change_set(col, COL_TYPE_OID, PyLong_FromUnsignedLong(oid)) < 0
                || change_set(col, COL_TYPE_MODIFIER,
                              PyLong_FromLong((int32_t)typmod)) < 0
                || change_set(col, COL_KEY, PyBool_FromLong(flags & 1)) < 0) {
            goto exit;
        }
    }
    if (!(e->row = _PyDict_NewPresized(ncols))) { goto exit; }
    for (i = 0; i < (Py_ssize_t)ncols; i++) {
        if (PyDict_SetItem(e->row, e->names[i], Py_None) < 0) { goto exit; }
    }
    if (!(ch = change_new(CH_RELATION))) { goto exit; }
    if (change_set(ch, REL_RELID, PyLong_FromUnsignedLong(relid)) < 0) {
        goto exit;
    }
    Py_INCREF(e->schema);
    change_set(ch, REL_SCHEMA, e->schema);
    Py_INCREF(e->table);
    change_set(ch, REL_TABLE, e->table);
    if (!strchr("dnfi", (int)ident) || !ident) {
        decode_error(PGO, r->lsn, "unknown replica identity 0x%02x", ident);
        goto exit;
    }
    if (change_set(ch, REL_REPLICA_IDENTITY, PyUnicode_FromOrdinal(ident)) < 0) {
        goto exit;
    }
    change_set(ch, REL_COLUMNS, columns);
    columns = NULL;
    if (change_set(ch, REL_LSN, PyLong_FromUnsignedLongLong(r->lsn)) < 0) {
        goto exit;
    }
    change_set(ch, REL_XID, xid);
    xid = NULL;
    if (!(ch = end_check(r, ch))) { goto exit; }

    /* replace the cached entry (after DDL, or again after a reconnect) */
    if (rel_store(self, e) < 0) { goto exit; }
    e = NULL;
    rv = ch;
    ch = NULL;

exit:
    rel_release(e);
    Py_XDECREF(resolve);
    Py_XDECREF(tname);
    Py_XDECREF(ch);
    Py_XDECREF(xid);
    Py_XDECREF(columns);
    return rv;
}

static PyObject *
msg_type(pgoDecoderObject *self, pgoRead *r)
{
    PyObject *ch = NULL, *xid = NULL, *oid = NULL, *schema = NULL;
    PyObject *name = NULL, *qual = NULL, *rv = NULL;

    if (stream_xid(self, r, &xid) < 0) { goto exit; }
    if (!(oid = u32_obj(r, "the type oid"))) { goto exit; }
    if (!(schema = get_str(r, "the schema name"))) { goto exit; }
    if (!(name = get_str(r, "the type name"))) { goto exit; }
    if (PyUnicode_GET_LENGTH(schema) == 0) {
        Py_SETREF(schema, PyUnicode_FromString("pg_catalog"));
        if (!schema) { goto exit; }
    }
    if (!(qual = PyTuple_Pack(2, schema, name))) { goto exit; }
    if (PyDict_SetItem(self->types, oid, qual) < 0) { goto exit; }
    if (!(ch = change_new(CH_TYPE))) { goto exit; }
    change_set(ch, TYPE_OID, oid);
    change_set(ch, TYPE_SCHEMA, schema);
    change_set(ch, TYPE_NAME, name);
    change_set(ch, TYPE_XID, xid);
    oid = schema = name = xid = NULL;
    rv = end_check(r, ch);
    ch = NULL;

exit:
    Py_XDECREF(ch);
    Py_XDECREF(xid);
    Py_XDECREF(oid);
    Py_XDECREF(schema);
    Py_XDECREF(name);
    Py_XDECREF(qual);
    return rv;
}

static PyObject *
msg_truncate(pgoDecoderObject *self, pgoRead *r)
{
    PyObject *ch = NULL, *xid = NULL, *tables = NULL, *relids = NULL;
    PyObject *rv = NULL;
    uint32_t n, i, relid;
    unsigned int opts;

    if (stream_xid(self, r, &xid) < 0) { goto exit; }
    if (get_u32(r, "the relation count", &n) < 0
            || get_u8(r, "the options", &opts) < 0) {
        goto exit;
    }
    if ((Py_ssize_t)n > (r->len - r->pos) / 4) {
        short_msg(r, "the relation ids");
        goto exit;
    }
    if (!(tables = PyList_New(0)) || !(relids = PyList_New(0))) { goto exit; }
    for (i = 0; i < n; i++) {
        relEntry *e;
        PyObject *t;
        int err;
        if (get_u32(r, "a relation id", &relid) < 0) { goto exit; }
        if (!(e = rel_find(self, r, relid))) { goto exit; }
        t = PyTuple_Pack(2, e->schema, e->table);
        rel_release(e);
        if (!t) { goto exit; }
        err = PyList_Append(tables, t);
        Py_DECREF(t);
        if (err < 0) { goto exit; }
        if (!(t = PyLong_FromUnsignedLong(relid))) { goto exit; }
        err = PyList_Append(relids, t);
        Py_DECREF(t);
        if (err < 0) { goto exit; }
    }
    if (!(ch = change_new(CH_TRUNCATE))) { goto exit; }
    change_set(ch, TRUNC_TABLES, tables);
    change_set(ch, TRUNC_RELIDS, relids);
    change_set(ch, TRUNC_XID, xid);
    tables = relids = xid = NULL;
    change_set(ch, TRUNC_CASCADE, PyBool_FromLong(opts & 1));
    change_set(ch, TRUNC_RESTART_IDENTITY, PyBool_FromLong(opts & 2));
    if (change_set(ch, TRUNC_LSN, PyLong_FromUnsignedLongLong(r->lsn)) < 0) {
        goto exit;
    }
    rv = end_check(r, ch);
    ch = NULL;

exit:
    Py_XDECREF(ch);
    Py_XDECREF(xid);
    Py_XDECREF(tables);
    Py_XDECREF(relids);
    return rv;
}

static PyObject *
msg_message(pgoDecoderObject *self, pgoRead *r)
{
    PyObject *ch = NULL, *xid = NULL, *rv = NULL;
    unsigned int flags;
    uint32_t n;

    if (stream_xid(self, r, &xid) < 0) { goto exit; }
    if (get_u8(r, "the flags", &flags) < 0) { goto exit; }
    if (!(ch = change_new(CH_MESSAGE))) { goto exit; }
    if (!(flags & 1)) {
        /* not transactional: no transaction it belongs to */
        Py_INCREF(Py_None);
        Py_SETREF(xid, Py_None);
    }
    change_set(ch, MSG_XID, xid);
    xid = NULL;
    change_set(ch, MSG_TRANSACTIONAL, PyBool_FromLong(flags & 1));
    if (change_set(ch, MSG_LSN, lsn_obj(r, "the message LSN")) < 0
            || change_set(ch, MSG_PREFIX, get_str(r, "the prefix")) < 0
            || get_u32(r, "the content length", &n) < 0) {
        goto exit;
    }
    if ((Py_ssize_t)n != r->len - r->pos) {
        short_msg(r, "the content");
        goto exit;
    }
    if (change_set(ch, MSG_CONTENT,
                   PyBytes_FromStringAndSize(r->s + r->pos, n)) < 0) {
        goto exit;
    }
    r->pos += n;
    rv = ch;
    ch = NULL;

exit:
    Py_XDECREF(ch);
    Py_XDECREF(xid);
    return rv;
}

/* Messages made of fixed fields only: a description per kind.
 * Codes: x xid (Int32) as xid, X xid (Int32) into another field, L LSN,
 * T time, F Int8, B Int8 as bool, G gid string, S string, ~ the rest
 * is optional. */
static PyObject *
msg_fixed(pgoDecoderObject *self, pgoRead *r, enum change_kind kind,
          const char *codes, const int *fields)
{
    PyObject *ch, *v;
    const char *c;
    int i = 0;

    if (!(ch = change_new(kind))) { return NULL; }
    for (c = codes; *c; c++) {
        if (*c == '~') {
            /* the fields after it come all together or not at all */
            if (r->pos == r->len) { break; }
            continue;
        }
        switch (*c) {
        case 'x': case 'X': v = u32_obj(r, "an xid"); break;
        case 'L': v = lsn_obj(r, "an LSN"); break;
        case 'T': v = time_obj(r, "a timestamp"); break;
        case 'F': v = u8_obj(r, "the flags"); break;
        case 'B': {
            unsigned int b;
            v = get_u8(r, "a flag", &b) < 0 ? NULL : PyBool_FromLong(b);
            break;
        }
        default: v = get_str(r, "a string"); break;
        }
        if (change_set(ch, fields[i], v) < 0) {
            Py_DECREF(ch);
            return NULL;
        }
        i++;
    }
    return end_check(r, ch);
}

static PyObject *
decode_one(pgoDecoderObject *self, pgoRead *r)
{
    PyObject *ch = NULL;
    char tag;

    if (r->len < 1) {
        return decode_error(PGO, r->lsn, "empty message");
    }
    tag = r->s[0];
    r->pos = 1;
    switch (tag) {
    case 'I': return msg_row(self, r, CH_INSERT);
    case 'U': return msg_row(self, r, CH_UPDATE);
    case 'D': return msg_row(self, r, CH_DELETE);
    case 'B': {
        static const int f[] = {BEGIN_FINAL_LSN, BEGIN_COMMIT_TIME, BEGIN_XID};
        if (!(ch = msg_fixed(self, r, CH_BEGIN, "LTx", f))) { return NULL; }
        if (change_set(ch, BEGIN_LSN, PyLong_FromUnsignedLongLong(r->lsn)) < 0) {
            Py_DECREF(ch);
            return NULL;
        }
        Py_INCREF(((changeObject *)ch)->f[BEGIN_XID]);
        Py_SETREF(self->xid, ((changeObject *)ch)->f[BEGIN_XID]);
        return ch;
    }
    case 'C': {
        static const int f[] = {COMMIT_FLAGS, COMMIT_LSN, COMMIT_END_LSN,
                                COMMIT_COMMIT_TIME};
        if (!(ch = msg_fixed(self, r, CH_COMMIT, "FLLT", f))) { return NULL; }
        Py_INCREF(self->xid);
        change_set(ch, COMMIT_XID, self->xid);
        Py_INCREF(Py_None);
        Py_SETREF(self->xid, Py_None);
        return ch;
    }
    case 'R': return msg_relation(self, r);
    case 'Y': return msg_type(self, r);
    case 'T': return msg_truncate(self, r);
    case 'M': return msg_message(self, r);
    case 'O': {
        static const int f[] = {ORIGIN_LSN, ORIGIN_NAME};
        return msg_fixed(self, r, CH_ORIGIN, "LS", f);
    }
    case 'S': {
        static const int f[] = {SSTART_XID, SSTART_FIRST_SEGMENT};
        if (!(ch = msg_fixed(self, r, CH_STREAM_START, "xB", f))) {
            return NULL;
        }
        self->in_stream = 1;
        return ch;
    }
    case 'E':
        self->in_stream = 0;
        return end_check(r, change_new(CH_STREAM_STOP));
    case 'c': {
        static const int f[] = {SCOMMIT_XID, SCOMMIT_FLAGS, SCOMMIT_LSN,
                                SCOMMIT_END_LSN, SCOMMIT_COMMIT_TIME};
        return msg_fixed(self, r, CH_STREAM_COMMIT, "xFLLT", f);
    }
    case 'A': {
        static const int f[] = {SABORT_XID, SABORT_SUBXID, SABORT_ABORT_LSN,
                                SABORT_ABORT_TIME};
        return msg_fixed(self, r, CH_STREAM_ABORT, "xX~LT", f);
    }
    case 'b': {
        static const int f[] = {PREP_LSN, PREP_END_LSN, PREP_PREPARE_TIME,
                                PREP_XID, PREP_GID};
        if (!(ch = msg_fixed(self, r, CH_BEGIN_PREPARE, "LLTxG", f))) {
            return NULL;
        }
        Py_INCREF(((changeObject *)ch)->f[PREP_XID]);
        Py_SETREF(self->xid, ((changeObject *)ch)->f[PREP_XID]);
        return ch;
    }
    case 'P':
    case 'p': {
        static const int f[] = {PREP_FLAGS, PREP_LSN, PREP_END_LSN,
                                PREP_PREPARE_TIME, PREP_XID, PREP_GID};
        if (tag == 'P') {
            Py_INCREF(Py_None);
            Py_SETREF(self->xid, Py_None);
        }
        return msg_fixed(self, r, tag == 'P' ? CH_PREPARE : CH_STREAM_PREPARE,
                         "FLLTxG", f);
    }
    case 'K': {
        static const int f[] = {CPREP_FLAGS, CPREP_LSN, CPREP_END_LSN,
                                CPREP_COMMIT_TIME, CPREP_XID, CPREP_GID};
        return msg_fixed(self, r, CH_COMMIT_PREPARED, "FLLTxG", f);
    }
    case 'r': {
        static const int f[] = {RPREP_FLAGS, RPREP_LSN, RPREP_END_LSN,
                                RPREP_PREPARE_TIME, RPREP_ROLLBACK_TIME,
                                RPREP_XID, RPREP_GID};
        return msg_fixed(self, r, CH_ROLLBACK_PREPARED, "FLLTTxG", f);
    }
    }
    return decode_error(PGO, r->lsn, "unknown message type 0x%02x",
                        (unsigned char)tag);
}

/* Called through vectorcall: no argument tuple per message */
static PyObject *
pgo_vectorcall(PyObject *oself, PyObject *const *args, size_t nargsf,
               PyObject *kwnames)
{
    pgoDecoderObject *self = (pgoDecoderObject *)oself;
    PyObject *omsg, *rv;
    messageObject *msg;
    pgoRead r;

    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError,
                        "PgoutputDecoder() takes exactly one argument (a Message)");
        return NULL;
    }
    omsg = args[0];
    if (!PyObject_TypeCheck(omsg, &messageType)) {
        PyErr_Format(PyExc_TypeError, "expected a Message, got %s",
                     Py_TYPE(omsg)->tp_name);
        return NULL;
    }
    msg = (messageObject *)omsg;
    if (!PyBytes_Check(msg->payload)) {
        PyErr_SetString(PyExc_TypeError, "pgoutput payloads are bytes: read "
                        "the stream with binary=True");
        return NULL;
    }
    if (!self->resolve) {
        PyErr_SetString(pld_InterfaceError,
            "PgoutputDecoder.__init__() was not called");
        return NULL;
    }
    /* held for the call: the converters and the resolver it runs may
     * drop the last other reference to the decoder or its message */
    Py_INCREF(self);
    Py_INCREF(omsg);
    r.s = PyBytes_AS_STRING(msg->payload);
    r.len = PyBytes_GET_SIZE(msg->payload);
    r.pos = 0;
    r.lsn = msg->data_start;
    rv = decode_one(self, &r);
    Py_DECREF(omsg);
    Py_DECREF(self);
    return rv;
}

#define reset_doc \
"reset()\n\nForget the relations, types and transaction state (the server\n" \
"sends them again on a new stream)."

static PyObject *
pgo_reset(pgoDecoderObject *self, PyObject *dummy)
{
    rel_clear_all(self);
    if (self->types) { PyDict_Clear(self->types); }
    Py_INCREF(Py_None);
    Py_XSETREF(self->xid, Py_None);
    self->in_stream = 0;
    Py_RETURN_NONE;
}

/* Everything but the resolver is ready from here: a decoder whose
 * __init__ did not run raises a clear error instead of crashing. */
static PyObject *
pgo_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    pgoDecoderObject *self;

    if (!(self = (pgoDecoderObject *)type->tp_alloc(type, 0))) {
        return NULL;
    }
    self->vectorcall = pgo_vectorcall;
    Py_INCREF(Py_None);
    self->xid = Py_None;
    if (!(self->types = PyDict_New())) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
pgo_init(pgoDecoderObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"resolve", NULL};
    PyObject *resolve, *types;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O", kwlist, &resolve)) {
        return -1;
    }
    if (!(types = PyDict_New())) { return -1; }
    Py_XSETREF(self->types, types);
    Py_INCREF(resolve);
    Py_XSETREF(self->resolve, resolve);
    rel_clear_all(self);
    Py_INCREF(Py_None);
    Py_XSETREF(self->xid, Py_None);
    self->in_stream = 0;
    return 0;
}

static int
pgo_traverse(pgoDecoderObject *self, visitproc visit, void *arg)
{
    Py_ssize_t i, j;
    int b;

    Py_VISIT(self->resolve);
    Py_VISIT(self->types);
    Py_VISIT(self->xid);
    for (i = 0; i < self->nrels; i++) {
        relEntry *e = self->rels[i];
        for (j = 0; j < e->ncols; j++) {
            for (b = 0; b < 2; b++) { Py_VISIT(e->conv[b][j]); }
        }
    }
    return 0;
}

static int
pgo_clear(pgoDecoderObject *self)
{
    rel_clear_all(self);
    Py_CLEAR(self->resolve);
    Py_CLEAR(self->types);
    Py_CLEAR(self->xid);
    return 0;
}

static void
pgo_dealloc(pgoDecoderObject *self)
{
    PyObject_GC_UnTrack(self);
    pgo_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define relations_doc \
"A copy of the relation cache: relid -> (schema, table, column names).\n" \
"Changing it changes nothing: the cache itself belongs to the decoder."

static PyObject *
pgo_relations_get(pgoDecoderObject *self, void *closure)
{
    PyObject *rv = NULL, *names = NULL, *val = NULL;
    relEntry *e = NULL;
    Py_ssize_t i, j;

    if (!(rv = PyDict_New())) { return NULL; }
    /* an allocation may run the GC, and a finalizer reset the decoder:
     * hold the entry, look the cache up again each time */
    for (i = 0; i < self->nrels; i++) {
        e = self->rels[i];
        e->refs++;
        if (!(names = PyTuple_New(e->ncols))) { goto error; }
        for (j = 0; j < e->ncols; j++) {
            Py_INCREF(e->names[j]);
            PyTuple_SET_ITEM(names, j, e->names[j]);
        }
        if (!(val = PyTuple_Pack(3, e->schema, e->table, names))) {
            goto error;
        }
        Py_CLEAR(names);
        if (PyDict_SetItem(rv, e->relid_obj, val) < 0) { goto error; }
        Py_CLEAR(val);
        rel_release(e);
        e = NULL;
    }
    return rv;

error:
    rel_release(e);
    Py_XDECREF(names);
    Py_XDECREF(val);
    Py_DECREF(rv);
    return NULL;
}

static PyMethodDef pgo_methods[] = {
    {"reset", (PyCFunction)pgo_reset, METH_NOARGS, reset_doc},
    {NULL}
};

static struct PyGetSetDef pgo_getsets[] = {
    {"relations", (getter)pgo_relations_get, NULL, relations_doc},
    {NULL}
};

static struct PyMemberDef pgo_members[] = {
    {"xid", T_OBJECT, offsetof(pgoDecoderObject, xid), READONLY,
        "The xid of the transaction in progress, or None."},
    {"in_stream", T_INT, offsetof(pgoDecoderObject, in_stream), READONLY,
        "True between StreamStart and StreamStop."},
    {"types", T_OBJECT, offsetof(pgoDecoderObject, types), READONLY,
        "oid -> (schema, name), from the Type messages."},
    {NULL}
};

#define pgo_doc \
"PgoutputDecoder(resolve)\n\n" \
"Decode pgoutput messages (protocol versions 1 to 4): call it with a\n" \
"Message whose payload is bytes. It keeps the relation cache; on a\n" \
"Relation message each column's converters are found once with\n" \
"`resolve(type_oid, (schema, name) or None, binary)`. Malformed input\n" \
"raises DecodingError naming the LSN."

PyTypeObject pgoDecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylogicaldecoding._core.PgoutputDecoder",
    .tp_basicsize = sizeof(pgoDecoderObject),
    .tp_dealloc = (destructor)pgo_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(pgoDecoderObject, vectorcall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
        | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = pgo_doc,
    .tp_traverse = (traverseproc)pgo_traverse,
    .tp_clear = (inquiry)pgo_clear,
    .tp_methods = pgo_methods,
    .tp_members = pgo_members,
    .tp_getset = pgo_getsets,
    .tp_init = (initproc)pgo_init,
    .tp_new = pgo_new,
};


/* -- registration of everything decoding adds to _core -- */

RAISES_NEG int
decode_init(PyObject *module)
{
    if (change_init(module) < 0) { return -1; }
    if (convert_init(module) < 0) { return -1; }
    if (PyType_Ready(&tdDecoderType) < 0) { return -1; }
    if (PyType_Ready(&pgoDecoderType) < 0) { return -1; }
    Py_INCREF(&tdDecoderType);
    if (PyModule_AddObject(module, "TestDecodingDecoder",
                           (PyObject *)&tdDecoderType) < 0) {
        Py_DECREF(&tdDecoderType);
        return -1;
    }
    Py_INCREF(&pgoDecoderType);
    if (PyModule_AddObject(module, "PgoutputDecoder",
                           (PyObject *)&pgoDecoderType) < 0) {
        Py_DECREF(&pgoDecoderType);
        return -1;
    }
    return 0;
}
