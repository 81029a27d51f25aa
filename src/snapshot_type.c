/* snapshot_type.c - CopyConnection: COPY TO STDOUT rows as SnapshotRow */

#include "snapshot.h"
#include "change.h"
#include "message.h"
#include "pqpath.h"
#include "wire.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <structmember.h>

/* poll() period: signals are checked at least this often (ms) */
#define WAIT_SLICE_MS 1000

static const char binary_signature[11] = "PGCOPY\n\377\r\n\0";


/* -- libpq -- */

/* The error of a failed result, or of the connection (res NULL). */
static void
raise_pq(copyconnObject *self, PGresult *res)
{
    if (res) {
        pq_raise(NULL, res, NULL);
        return;
    }
    pq_raise_message(
        (self->pgconn && PQstatus(self->pgconn) == CONNECTION_OK)
            ? pld_OperationalError : pld_ConnectionLost,
        self->pgconn ? PQerrorMessage(self->pgconn) : "no connection");
}

static RAISES_NEG int
check_usable(copyconnObject *self)
{
    if (!self->pgconn) {
        PyErr_SetString(pld_InterfaceError, "the connection is closed");
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(pld_InterfaceError,
            "the connection is in use by another thread");
        return -1;
    }
    return 0;
}

/* Wait until the socket is readable (GIL released, in slices so that a
 * signal becomes an exception), then read what arrived. */
static RAISES_NEG int
wait_input(copyconnObject *self)
{
    struct pollfd fd;
    int rv;

    fd.fd = PQsocket(self->pgconn);
    if (fd.fd < 0) {
        raise_pq(self, NULL);
        return -1;
    }
    fd.events = POLLIN;
    for (;;) {
        fd.revents = 0;
        self->busy = 1;
        Py_BEGIN_ALLOW_THREADS
        rv = poll(&fd, 1, WAIT_SLICE_MS);
        Py_END_ALLOW_THREADS
        self->busy = 0;
        if (rv < 0 && errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) { return -1; }
        if (rv > 0) { break; }
    }
    if (!PQconsumeInput(self->pgconn)) {
        raise_pq(self, NULL);
        return -1;
    }
    return 0;
}

/* The next result of the running command (NULL: none left). */
static RAISES_NEG int
next_result(copyconnObject *self, PGresult **res)
{
    while (PQisBusy(self->pgconn)) {
        if (wait_input(self) < 0) { return -1; }
    }
    *res = PQgetResult(self->pgconn);
    return 0;
}

/* Send a command; return its last result (or the first error) once the
 * command is over, or the COPY OUT result that starts a copy. */
static PGresult *
run_command(copyconnObject *self, const char *sql)
{
    PGresult *res = NULL, *next = NULL, *err = NULL;

    if (!PQsendQuery(self->pgconn, sql)) {
        raise_pq(self, NULL);
        return NULL;
    }
    for (;;) {
        if (next_result(self, &next) < 0) { goto error; }
        if (!next) { break; }
        if (PQresultStatus(next) == PGRES_COPY_OUT) {
            PQclear(res);
            PQclear(err);
            return next;
        }
        if (!err && (PQresultStatus(next) == PGRES_FATAL_ERROR
                     || PQresultStatus(next) == PGRES_BAD_RESPONSE)) {
            err = next;
            continue;
        }
        PQclear(res);
        res = next;
    }
    if (err) {
        raise_pq(self, err);
        goto error;
    }
    if (!res) { raise_pq(self, NULL); }
    return res;

error:
    PQclear(res);
    PQclear(err);
    /* interrupted mid-command: the connection state is unknown */
    if (PyErr_Occurred() && PQtransactionStatus(self->pgconn)
            == PQTRANS_ACTIVE) {
        PGconn *conn = self->pgconn;
        self->pgconn = NULL;
        self->copying = 0;
        PQfinish(conn);
    }
    return NULL;
}


/* -- parsing -- */

/* The value of column i from its bytes, or None (s NULL); a new ref. */
static PyObject *
column_value(copyconnObject *self, Py_ssize_t i, const char *s,
             Py_ssize_t len)
{
    PyObject *v, *type, *value, *tb, *text;

    if (!s) {
        Py_INCREF(Py_None);
        return Py_None;
    }
    v = convert_value(PyTuple_GET_ITEM(self->convs, i), self->kinds[i],
                      s, len, self->binary);
    if (v) { return v; }
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    text = value ? PyObject_Str(value) : NULL;
    PyErr_Format(pld_DecodingError,
        "cannot convert column %R of %U.%U: %S", PyTuple_GET_ITEM(self->names, i),
        self->schema, self->table, text ? text : Py_None);
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return NULL;
}

/* Text format: undo COPY's backslash escapes into the scratch buffer. */
static RAISES_NEG int
unescape(copyconnObject *self, const char *s, Py_ssize_t len,
         Py_ssize_t *outlen)
{
    Py_ssize_t i = 0, o = 0;
    char *d;

    if ((size_t)len + 1 > self->scratch_size) {
        char *n = PyMem_Realloc(self->scratch, (size_t)len + 1);
        if (!n) { PyErr_NoMemory(); return -1; }
        self->scratch = n;
        self->scratch_size = (size_t)len + 1;
    }
    d = self->scratch;
    while (i < len) {
        char c = s[i++];
        if (c != '\\' || i >= len) { d[o++] = c; continue; }
        c = s[i++];
        switch (c) {
        case 'b': d[o++] = '\b'; break;
        case 'f': d[o++] = '\f'; break;
        case 'n': d[o++] = '\n'; break;
        case 'r': d[o++] = '\r'; break;
        case 't': d[o++] = '\t'; break;
        case 'v': d[o++] = '\v'; break;
        case 'x': {
            int v = 0, k;
            for (k = 0; k < 2 && i < len; k++, i++) {
                char h = s[i];
                int x = (h >= '0' && h <= '9') ? h - '0'
                    : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                    : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
                if (x < 0) { break; }
                v = v * 16 + x;
            }
            if (k == 0) { d[o++] = 'x'; }
            else { d[o++] = (char)v; }
            break;
        }
        default:
            if (c >= '0' && c <= '7') {
                int v = c - '0', k;
                for (k = 1; k < 3 && i < len && s[i] >= '0' && s[i] <= '7';
                        k++, i++) {
                    v = v * 8 + (s[i] - '0');
                }
                d[o++] = (char)v;
            }
            else {
                d[o++] = c;
            }
        }
    }
    *outlen = o;
    return 0;
}

/* Text format: one row (a CopyData message) into a new dict. */
static PyObject *
parse_text_row(copyconnObject *self, const char *buf, Py_ssize_t len)
{
    PyObject *row = NULL, *v;
    const char *p = buf, *end = buf + len, *q;
    Py_ssize_t i, flen;

    if (len > 0 && end[-1] == '\n') { end--; }
    if (!(row = _PyDict_NewPresized(self->ncols))) { return NULL; }
    for (i = 0; i < self->ncols; i++) {
        q = memchr(p, '\t', (size_t)(end - p));
        if (!q) { q = end; }
        if ((q == end) != (i == self->ncols - 1)) {
            PyErr_Format(pld_DecodingError,
                "COPY row of %U.%U has %s columns than the %zd expected",
                self->schema, self->table,
                q == end ? "fewer" : "more", self->ncols);
            goto error;
        }
        flen = q - p;
        if (flen == 2 && p[0] == '\\' && p[1] == 'N') {
            v = column_value(self, i, NULL, 0);
        }
        else if (memchr(p, '\\', (size_t)flen)) {
            Py_ssize_t ulen;
            if (unescape(self, p, flen, &ulen) < 0) { goto error; }
            v = column_value(self, i, self->scratch, ulen);
        }
        else {
            v = column_value(self, i, p, flen);
        }
        if (!v) { goto error; }
        if (PyDict_SetItem(row, PyTuple_GET_ITEM(self->names, i), v) < 0) {
            Py_DECREF(v);
            goto error;
        }
        Py_DECREF(v);
        p = q + 1;
    }
    return row;

error:
    Py_DECREF(row);
    return NULL;
}

static PyObject *
short_binary(copyconnObject *self)
{
    PyErr_Format(pld_DecodingError,
        "truncated binary COPY data for %U.%U", self->schema, self->table);
    return NULL;
}

/* Binary format: one tuple at *pos into a new dict; Py_None (borrowed,
 * not increfed) at the trailer. */
static PyObject *
parse_binary_row(copyconnObject *self, const char *buf, Py_ssize_t len,
                 Py_ssize_t *pos)
{
    PyObject *row = NULL, *v;
    Py_ssize_t p = *pos, i;
    int16_t n;

    if (len - p < 2) { return short_binary(self); }
    n = (int16_t)wire_get_u16(buf + p);
    p += 2;
    if (n == -1) {
        *pos = p;
        return Py_None;
    }
    if (n != self->ncols) {
        PyErr_Format(pld_DecodingError,
            "binary COPY row of %U.%U has %d columns, not %zd",
            self->schema, self->table, (int)n, self->ncols);
        return NULL;
    }
    if (!(row = _PyDict_NewPresized(self->ncols))) { return NULL; }
    for (i = 0; i < self->ncols; i++) {
        int32_t flen;
        if (len - p < 4) { short_binary(self); goto error; }
        flen = (int32_t)wire_get_u32(buf + p);
        p += 4;
        if (flen < -1 || (flen > 0 && len - p < flen)) {
            short_binary(self);
            goto error;
        }
        v = column_value(self, i, flen < 0 ? NULL : buf + p,
                         flen < 0 ? 0 : flen);
        if (flen > 0) { p += flen; }
        if (!v) { goto error; }
        if (PyDict_SetItem(row, PyTuple_GET_ITEM(self->names, i), v) < 0) {
            Py_DECREF(v);
            goto error;
        }
        Py_DECREF(v);
    }
    *pos = p;
    return row;

error:
    Py_DECREF(row);
    return NULL;
}

/* Append the change for `row` (stolen) to `out`, wrapped in a Message
 * when payload is not NULL. */
static RAISES_NEG int
append_row(copyconnObject *self, PyObject *out, PyObject *row,
           PyObject *payload, lsn_t data_start)
{
    PyObject *ch = NULL, *item;
    int rv = -1;

    if (!(ch = change_new(CH_SNAPSHOT_ROW))) { Py_DECREF(row); goto exit; }
    Py_INCREF(self->schema);
    Py_INCREF(self->table);
    Py_INCREF(self->backfill);
    (void)change_set(ch, SROW_SCHEMA, self->schema);
    (void)change_set(ch, SROW_TABLE, self->table);
    (void)change_set(ch, SROW_NEW, row);
    (void)change_set(ch, SROW_BACKFILL, self->backfill);
    if (payload) {
        Py_INCREF(payload);
        if (!(item = message_new(payload, data_start, data_start, 0))) {
            goto exit;
        }
        ((messageObject *)item)->change = ch;
        ch = NULL;
    }
    else {
        item = ch;
        ch = NULL;
    }
    rv = PyList_Append(out, item);
    Py_DECREF(item);
    if (rv == 0) { self->rows++; }

exit:
    Py_XDECREF(ch);
    return rv;
}

/* Parse one CopyData message into rows appended to out. Returns the
 * number of rows, -1 on error. */
static int
parse_message(copyconnObject *self, const char *buf, Py_ssize_t len,
              PyObject *out, PyObject *payload, lsn_t data_start)
{
    PyObject *row;
    Py_ssize_t pos = 0;
    int n = 0;

    if (!self->binary) {
        if (!(row = parse_text_row(self, buf, len))) { return -1; }
        if (append_row(self, out, row, payload, data_start) < 0) { return -1; }
        return 1;
    }
    if (!self->header_done) {
        uint32_t ext;
        if (len < 19 || memcmp(buf, binary_signature, 11) != 0) {
            PyErr_Format(pld_DecodingError,
                "bad binary COPY header for %U.%U", self->schema, self->table);
            return -1;
        }
        ext = wire_get_u32(buf + 15);
        if ((Py_ssize_t)ext > len - 19) { short_binary(self); return -1; }
        pos = 19 + (Py_ssize_t)ext;
        self->header_done = 1;
    }
    while (pos < len) {
        if (!(row = parse_binary_row(self, buf, len, &pos))) { return -1; }
        if (row == Py_None) { break; }
        if (append_row(self, out, row, payload, data_start) < 0) { return -1; }
        n++;
    }
    return n;
}

static void
end_copy_state(copyconnObject *self)
{
    self->copying = 0;
    Py_CLEAR(self->names);
    Py_CLEAR(self->convs);
    PyMem_Free(self->kinds);
    self->kinds = NULL;
    self->ncols = 0;
}


/* -- methods -- */

static int
copyconn_init(copyconnObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"keys", "values", NULL};
    PyObject *okeys, *ovalues, *k = NULL, *v = NULL;
    const char **keys = NULL, **values = NULL;
    Py_ssize_t i, n;
    PGconn *conn;
    int rv = -1;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO", kwlist,
                                     &okeys, &ovalues)) {
        return -1;
    }
    if (self->pgconn) {
        PyErr_SetString(pld_InterfaceError, "already connected");
        return -1;
    }
    if (!(k = PySequence_Fast(okeys, "keys must be a sequence"))) { goto exit; }
    if (!(v = PySequence_Fast(ovalues, "values must be a sequence"))) {
        goto exit;
    }
    n = PySequence_Fast_GET_SIZE(k);
    if (PySequence_Fast_GET_SIZE(v) != n) {
        PyErr_SetString(PyExc_ValueError, "keys and values differ in length");
        goto exit;
    }
    keys = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    values = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (!keys || !values) { PyErr_NoMemory(); goto exit; }
    for (i = 0; i < n; i++) {
        if (!(keys[i] = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(k, i)))
                || !(values[i] = PyUnicode_AsUTF8(
                        PySequence_Fast_GET_ITEM(v, i)))) {
            goto exit;
        }
    }
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    conn = PQconnectdbParams(keys, values, 0);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (!conn) { PyErr_NoMemory(); goto exit; }
    if (PQstatus(conn) != CONNECTION_OK) {
        pq_raise_message(pld_OperationalError, PQerrorMessage(conn));
        PQfinish(conn);
        goto exit;
    }
    self->pgconn = conn;
    rv = 0;

exit:
    PyMem_Free(keys);
    PyMem_Free(values);
    Py_XDECREF(k);
    Py_XDECREF(v);
    return rv;
}

#define execute_doc \
"execute(sql) -> (names, rows)\n\n" \
"Run SQL (simple query protocol); return the column names and the rows\n" \
"of its last result as tuples of str or None."

static PyObject *
copyconn_execute(copyconnObject *self, PyObject *arg)
{
    PGresult *res = NULL;
    PyObject *names = NULL, *rows = NULL, *rv = NULL;
    const char *sql;
    int i, j, nf, nt;

    if (!(sql = PyUnicode_AsUTF8(arg))) { return NULL; }
    if (check_usable(self) < 0) { return NULL; }
    if (self->copying) {
        PyErr_SetString(pld_InterfaceError, "a COPY is running: read it first");
        return NULL;
    }
    if (!(res = run_command(self, sql))) { return NULL; }
    if (PQresultStatus(res) == PGRES_COPY_OUT) {
        PyErr_SetString(pld_ProgrammingError, "use copy_start() for COPY");
        PQclear(res);
        /* the copy must be drained: simplest is to drop the connection */
        PQfinish(self->pgconn);
        self->pgconn = NULL;
        return NULL;
    }
    nf = PQnfields(res);
    nt = PQntuples(res);
    if (!(names = PyList_New(nf))) { goto exit; }
    for (j = 0; j < nf; j++) {
        PyObject *s = PyUnicode_FromString(PQfname(res, j));
        if (!s) { goto exit; }
        PyList_SET_ITEM(names, j, s);
    }
    if (!(rows = PyList_New(nt))) { goto exit; }
    for (i = 0; i < nt; i++) {
        PyObject *t = PyTuple_New(nf);
        if (!t) { goto exit; }
        PyList_SET_ITEM(rows, i, t);
        for (j = 0; j < nf; j++) {
            PyObject *s;
            if (PQgetisnull(res, i, j)) {
                Py_INCREF(Py_None);
                s = Py_None;
            }
            else if (!(s = PyUnicode_DecodeUTF8(PQgetvalue(res, i, j),
                    PQgetlength(res, i, j), "strict"))) {
                goto exit;
            }
            PyTuple_SET_ITEM(t, j, s);
        }
    }
    rv = Py_BuildValue("(OO)", names, rows);

exit:
    PQclear(res);
    Py_XDECREF(names);
    Py_XDECREF(rows);
    return rv;
}

#define copy_start_doc \
"copy_start(sql, names, converters, binary, schema, table, backfill=False)\n\n" \
"Run `sql`, a COPY ... TO STDOUT in text or binary format (`binary`)\n" \
"whose columns are `names`, converted by `converters` (one per column,\n" \
"as the type registry gives them for that format). Then read() the rows."

static PyObject *
copyconn_copy_start(copyconnObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"sql", "names", "converters", "binary", "schema",
                             "table", "backfill", NULL};
    const char *sql;
    PyObject *onames, *oconvs, *schema, *table, *names = NULL, *convs = NULL;
    PGresult *res = NULL;
    int binary, backfill = 0;
    Py_ssize_t i, n;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sOOpUU|p", kwlist,
            &sql, &onames, &oconvs, &binary, &schema, &table, &backfill)) {
        return NULL;
    }
    if (check_usable(self) < 0) { return NULL; }
    if (self->copying) {
        PyErr_SetString(pld_InterfaceError, "a COPY is already running");
        return NULL;
    }
    if (!(names = PySequence_Tuple(onames))) { goto error; }
    if (!(convs = PySequence_Tuple(oconvs))) { goto error; }
    n = PyTuple_GET_SIZE(names);
    if (n != PyTuple_GET_SIZE(convs) || n == 0) {
        PyErr_SetString(PyExc_ValueError,
            "names and converters must be non-empty and of the same length");
        goto error;
    }
    for (i = 0; i < n; i++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(names, i))
                || !PyCallable_Check(PyTuple_GET_ITEM(convs, i))) {
            PyErr_SetString(PyExc_TypeError,
                "names must be str and converters callables");
            goto error;
        }
    }
    end_copy_state(self);
    if (!(self->kinds = PyMem_Calloc((size_t)n, sizeof(enum conv_kind)))) {
        PyErr_NoMemory();
        goto error;
    }
    for (i = 0; i < n; i++) {
        self->kinds[i] = convert_kind(PyTuple_GET_ITEM(convs, i));
    }
    self->ncols = n;
    self->names = names;
    self->convs = convs;
    names = convs = NULL;
    Py_INCREF(schema);
    Py_XSETREF(self->schema, schema);
    Py_INCREF(table);
    Py_XSETREF(self->table, table);
    Py_XSETREF(self->backfill, PyBool_FromLong(backfill));
    self->binary = binary;
    self->header_done = 0;

    if (!(res = run_command(self, sql))) { goto error; }
    if (PQresultStatus(res) != PGRES_COPY_OUT) {
        PyErr_SetString(pld_ProgrammingError,
            "copy_start() needs a COPY ... TO STDOUT command");
        goto error;
    }
    if (PQbinaryTuples(res) != binary) {
        PyErr_SetString(pld_ProgrammingError,
            "the COPY format differs from the `binary` argument");
        PQclear(res);
        PQfinish(self->pgconn);
        self->pgconn = NULL;
        end_copy_state(self);
        return NULL;
    }
    PQclear(res);
    self->copying = 1;
    Py_RETURN_NONE;

error:
    PQclear(res);
    Py_XDECREF(names);
    Py_XDECREF(convs);
    end_copy_state(self);
    return NULL;
}

#define read_doc \
"read(max_rows=1000, data_start=None, payload=None, wait=True) -> list\n\n" \
"The next rows of the running COPY as SnapshotRow changes (at most\n" \
"`max_rows`; waits only when none is buffered). With `data_start` (an\n" \
"LSN) each row comes as a stream Message with that position, `payload`\n" \
"(str or bytes) and `change` set. An empty list: the copy is over.\n" \
"With wait=False it never waits: an empty list while `copying` is still\n" \
"true means no row has arrived yet (wait for fileno() to be readable)."

static PyObject *
copyconn_read(copyconnObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"max_rows", "data_start", "payload", "wait",
                             NULL};
    Py_ssize_t max_rows = 1000;
    PyObject *ods = Py_None, *payload = Py_None, *out = NULL;
    PGresult *res = NULL, *err = NULL;
    lsn_t data_start = 0;
    char *buf = NULL;
    int r, wait = 1, consumed = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|nOOp", kwlist,
                                     &max_rows, &ods, &payload, &wait)) {
        return NULL;
    }
    if (ods != Py_None) {
        data_start = (lsn_t)PyLong_AsUnsignedLongLong(ods);
        if (PyErr_Occurred()) { return NULL; }
        if (payload == Py_None) {
            PyErr_SetString(PyExc_TypeError,
                "payload (str or bytes) is needed with data_start");
            return NULL;
        }
    }
    if (check_usable(self) < 0) { return NULL; }
    if (!(out = PyList_New(0))) { return NULL; }
    if (!self->copying) { return out; }
    while (PyList_GET_SIZE(out) < max_rows) {
        r = PQgetCopyData(self->pgconn, &buf, 1);
        if (r > 0) {
            int n;
            self->bytes += r;
            n = parse_message(self, buf, r, out,
                              ods != Py_None ? payload : NULL, data_start);
            PQfreemem(buf);
            buf = NULL;
            if (n < 0) { goto error; }
            continue;
        }
        if (r == 0) {
            if (PyList_GET_SIZE(out) > 0) { break; }
            if (!wait) {
                /* once: read what the socket holds, without waiting */
                if (consumed++) { break; }
                if (!PQconsumeInput(self->pgconn)) {
                    raise_pq(self, NULL);
                    goto error;
                }
                continue;
            }
            if (wait_input(self) < 0) { goto error; }
            continue;
        }
        /* -1: the copy is over; -2: an error */
        for (;;) {
            PGresult *next;
            if (next_result(self, &next) < 0) { goto error; }
            if (!next) { break; }
            if (!err && PQresultStatus(next) != PGRES_COMMAND_OK) {
                err = next;
            }
            else {
                PQclear(res);
                res = next;
            }
        }
        end_copy_state(self);
        if (err || r == -2) {
            raise_pq(self, err);
            goto error;
        }
        break;
    }
    PQclear(res);
    return out;

error:
    if (buf) { PQfreemem(buf); }
    PQclear(res);
    PQclear(err);
    Py_DECREF(out);
    if (self->copying) {
        /* a half-read copy cannot be resumed: close the connection */
        end_copy_state(self);
        if (self->pgconn) {
            PQfinish(self->pgconn);
            self->pgconn = NULL;
        }
    }
    return NULL;
}

#define close_doc "close()\n\nClose the connection (a running COPY is abandoned)."

static PyObject *
copyconn_close(copyconnObject *self, PyObject *dummy)
{
    if (self->busy) {
        PyErr_SetString(pld_InterfaceError,
            "the connection is in use by another thread");
        return NULL;
    }
    end_copy_state(self);
    if (self->pgconn) {
        PGconn *conn = self->pgconn;
        self->pgconn = NULL;
        Py_BEGIN_ALLOW_THREADS
        PQfinish(conn);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

#define fileno_doc "fileno() -> int\n\nThe connection's socket (for poll())."

static PyObject *
copyconn_fileno(copyconnObject *self, PyObject *dummy)
{
    int fd;

    if (!self->pgconn) {
        PyErr_SetString(pld_InterfaceError, "the connection is closed");
        return NULL;
    }
    if ((fd = PQsocket(self->pgconn)) < 0) {
        raise_pq(self, NULL);
        return NULL;
    }
    return PyLong_FromLong(fd);
}

static PyObject *
closed_get(copyconnObject *self, void *closure)
{
    return PyBool_FromLong(self->pgconn == NULL);
}

static PyObject *
copying_get(copyconnObject *self, void *closure)
{
    return PyBool_FromLong(self->copying);
}

static PyObject *
backend_pid_get(copyconnObject *self, void *closure)
{
    if (!self->pgconn) { Py_RETURN_NONE; }
    return PyLong_FromLong(PQbackendPID(self->pgconn));
}


/* -- type -- */

static int
copyconn_traverse(copyconnObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->names);
    Py_VISIT(self->convs);
    Py_VISIT(self->schema);
    Py_VISIT(self->table);
    Py_VISIT(self->backfill);
    return 0;
}

static int
copyconn_clear(copyconnObject *self)
{
    Py_CLEAR(self->names);
    Py_CLEAR(self->convs);
    Py_CLEAR(self->schema);
    Py_CLEAR(self->table);
    Py_CLEAR(self->backfill);
    return 0;
}

static void
copyconn_dealloc(copyconnObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->pgconn) {
        PQfinish(self->pgconn);
        self->pgconn = NULL;
    }
    copyconn_clear(self);
    PyMem_Free(self->kinds);
    PyMem_Free(self->scratch);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef copyconn_methods[] = {
    {"execute", (PyCFunction)copyconn_execute, METH_O, execute_doc},
    {"copy_start", (PyCFunction)(void (*)(void))copyconn_copy_start,
        METH_VARARGS | METH_KEYWORDS, copy_start_doc},
    {"read", (PyCFunction)(void (*)(void))copyconn_read, METH_VARARGS | METH_KEYWORDS,
        read_doc},
    {"close", (PyCFunction)copyconn_close, METH_NOARGS, close_doc},
    {"fileno", (PyCFunction)copyconn_fileno, METH_NOARGS, fileno_doc},
    {NULL}
};

static struct PyMemberDef copyconn_members[] = {
    {"rows", T_LONGLONG, offsetof(copyconnObject, rows), READONLY,
        "Rows read by COPY on this connection."},
    {"bytes", T_LONGLONG, offsetof(copyconnObject, bytes), READONLY,
        "COPY data bytes read on this connection."},
    {NULL}
};

static struct PyGetSetDef copyconn_getsets[] = {
    {"closed", (getter)closed_get, NULL, "True once closed.", NULL},
    {"copying", (getter)copying_get, NULL, "A COPY is being read.", NULL},
    {"backend_pid", (getter)backend_pid_get, NULL,
        "The server process id, or None once closed.", NULL},
    {NULL}
};

#define copyconn_doc \
"CopyConnection(keys, values)\n\n" \
"A plain (non-replication) libpq connection, given as keyword/value\n" \
"lists, for snapshot and backfill reads: execute() and COPY TO STDOUT\n" \
"rows decoded in C. One thread at a time. See pylogicaldecoding.snapshot."

PyTypeObject copyconnType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylogicaldecoding._core.CopyConnection",
    .tp_basicsize = sizeof(copyconnObject),
    .tp_dealloc = (destructor)copyconn_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = copyconn_doc,
    .tp_traverse = (traverseproc)copyconn_traverse,
    .tp_clear = (inquiry)copyconn_clear,
    .tp_methods = copyconn_methods,
    .tp_members = copyconn_members,
    .tp_getset = copyconn_getsets,
    .tp_init = (initproc)copyconn_init,
    .tp_new = PyType_GenericNew,
};

RAISES_NEG int
copyconn_init_type(PyObject *module)
{
    if (PyType_Ready(&copyconnType) < 0) { return -1; }
    Py_INCREF(&copyconnType);
    if (PyModule_AddObject(module, "CopyConnection",
                           (PyObject *)&copyconnType) < 0) {
        Py_DECREF(&copyconnType);
        return -1;
    }
    return 0;
}
