/* pqpath.c - every libpq call of the module: connection, commands, COPY BOTH */

#include "pqpath.h"
#include "message.h"
#include "wire.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Strip the severity prefix libpq puts in front of server messages and
 * the trailing newlines. */
static PyObject *
clean_message(const char *msg)
{
    static const char *prefixes[] = {
        "ERROR:  ", "FATAL:  ", "PANIC:  ", "WARNING:  ", NULL};
    const char **p;
    size_t len;

    if (!msg) { msg = ""; }
    for (p = prefixes; *p; p++) {
        size_t plen = strlen(*p);
        if (strncmp(msg, *p, plen) == 0) { msg += plen; break; }
    }
    len = strlen(msg);
    while (len && (msg[len - 1] == '\n' || msg[len - 1] == ' ')) { len--; }
    return PyUnicode_DecodeUTF8(msg, (Py_ssize_t)len, "replace");
}

/* The class registered for a SQLSTATE, or for its class (first 2 chars). */
BORROWED static PyObject *
class_for_sqlstate(const char *code)
{
    PyObject *cls = NULL;
    char cclass[3];

    if (!code || !pld_sqlstate_map) { return NULL; }
    if ((cls = PyDict_GetItemString(pld_sqlstate_map, code))) { return cls; }
    if (strlen(code) >= 2) {
        cclass[0] = code[0]; cclass[1] = code[1]; cclass[2] = '\0';
        cls = PyDict_GetItemString(pld_sqlstate_map, cclass);
    }
    return cls;
}

static void
set_error(PyObject *cls, PyObject *msg, const char *code)
{
    PyObject *exc = NULL, *pgcode = NULL;

    if (!(exc = PyObject_CallOneArg(cls, msg))) { goto exit; }
    if (code) {
        if (!(pgcode = PyUnicode_FromString(code))) { goto exit; }
    }
    else {
        pgcode = Py_None;
        Py_INCREF(pgcode);
    }
    if (PyObject_SetAttrString(exc, "pgerror", msg) < 0) { goto exit; }
    if (PyObject_SetAttrString(exc, "pgcode", pgcode) < 0) { goto exit; }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);

exit:
    Py_XDECREF(exc);
    Py_XDECREF(pgcode);
}

/* Raise the error of a failed result, or of the connection if res is NULL.
 *
 * The class is cls if given, else the one registered for the SQLSTATE,
 * else ConnectionLost if the connection is gone or the error is libpq's
 * own (no SQLSTATE), else a generic one.
 * The message is the server's, without severity prefix; it never holds
 * the connection string (libpq does not put passwords in its messages). */
void
pq_raise(readerObject *self, PGresult *res, PyObject *cls)
{
    const char *code = NULL, *text = NULL;
    PyObject *msg = NULL;

    if (res) {
        code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        text = PQresultErrorMessage(res);
    }
    if ((!text || !*text) && self && self->pgconn) {
        text = PQerrorMessage(self->pgconn);
    }
    if (!text || !*text) { text = "unknown error (no message from libpq)"; }

    if (!cls) { cls = class_for_sqlstate(code); }
    /* No SQLSTATE: libpq's own error on an open connection (a failed send
     * or receive, a broken protocol): the connection is not usable, even
     * when libpq has not marked it bad yet. */
    if (!cls && self && self->pgconn
            && (!code || PQstatus(self->pgconn) == CONNECTION_BAD)) {
        cls = pld_ConnectionLost;
    }
    if (!cls) { cls = code ? pld_DatabaseError : pld_OperationalError; }

    if (!(msg = clean_message(text))) { return; }
    set_error(cls, msg, code);
    Py_DECREF(msg);
}

void
pq_raise_message(PyObject *cls, const char *text)
{
    PyObject *msg;
    if (!(msg = clean_message(text))) { return; }
    set_error(cls, msg, NULL);
    Py_DECREF(msg);
}

RAISES_NEG int
pq_check_open(readerObject *self)
{
    if (!self->pgconn) {
        PyErr_SetString(pld_InterfaceError, "the connection is closed");
        return -1;
    }
    if (self->connecting) {
        PyErr_SetString(pld_InterfaceError,
            "the connection is still being opened");
        return -1;
    }
    if (self->cmd_running) {
        PyErr_SetString(pld_InterfaceError,
            "a command is running on the connection (non-blocking path)");
        return -1;
    }
    return 0;
}

RAISES_NEG int
pq_connect(readerObject *self, const char *const *keys,
           const char *const *values)
{
    PGconn *conn;

    Py_BEGIN_ALLOW_THREADS
    conn = PQconnectdbParams(keys, values, 0);
    Py_END_ALLOW_THREADS

    if (!conn) {
        PyErr_NoMemory();
        return -1;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        pq_raise_message(pld_OperationalError, PQerrorMessage(conn));
        PQfinish(conn);
        return -1;
    }
    if (PQsetnonblocking(conn, 1) != 0) {
        pq_raise_message(pld_OperationalError, PQerrorMessage(conn));
        PQfinish(conn);
        return -1;
    }
    self->pgconn = conn;
    return 0;
}

/* Close the connection; the caller holds the lock or no thread runs. */
void
pq_close(readerObject *self)
{
    if (self->pgconn) {
        PGconn *conn = self->pgconn;
        self->pgconn = NULL;
        self->copying = 0;
        self->connecting = self->cmd_running = self->ending_copy = 0;
        PQclear(self->cmd_result);
        self->cmd_result = NULL;
        Py_BEGIN_ALLOW_THREADS
        PQfinish(conn);
        Py_END_ALLOW_THREADS
    }
}

/* Wait until the socket is ready, the wakeup pipe is written, a signal
 * arrives or the timeout (seconds; negative: none) expires.
 *
 * The GIL is released while waiting; the caller must not hold the lock.
 * poll(), not select(): the socket may be above FD_SETSIZE. */
RAISES_NEG int
pq_wait(readerObject *self, int for_write, double timeout)
{
    struct pollfd fds[2];
    nfds_t n = 1;
    int rv, ms;

    if (pq_check_open(self) < 0) { return -1; }
    fds[0].fd = PQsocket(self->pgconn);
    fds[0].events = for_write ? POLLOUT : POLLIN;
    fds[0].revents = 0;
    if (self->wakeup_fds[0] >= 0) {
        fds[1].fd = self->wakeup_fds[0];
        fds[1].events = POLLIN;
        fds[1].revents = 0;
        n = 2;
    }
#ifdef __linux__
    /* ppoll(): the batching delay of the stream loop is under 1 ms */
    {
        struct timespec ts, *tsp = NULL;
        if (timeout >= 0) {
            if (timeout > 86400.0) { timeout = 86400.0; }
            ts.tv_sec = (time_t)timeout;
            ts.tv_nsec = (long)((timeout - (double)ts.tv_sec) * 1e9);
            tsp = &ts;
        }
        (void)ms;
        Py_BEGIN_ALLOW_THREADS
        rv = ppoll(fds, n, tsp, NULL);
        Py_END_ALLOW_THREADS
    }
#else
    if (timeout < 0) { ms = -1; }
    else if (timeout > 86400.0) { ms = 86400000; }
    else { ms = (int)ceil(timeout * 1000.0); }

    Py_BEGIN_ALLOW_THREADS
    rv = poll(fds, n, ms);
    Py_END_ALLOW_THREADS
#endif

    if (rv < 0) {
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        /* Run the Python handlers now: Ctrl-C becomes KeyboardInterrupt,
         * a handler calling stop() is seen by the caller's loop. */
        if (PyErr_CheckSignals() < 0) { return -1; }
        return PQ_WAIT_WAKEUP;
    }
    if (rv == 0) { return PQ_WAIT_TIMEOUT; }
    if (n == 2 && fds[1].revents) {
        char buf[64];
        while (read(self->wakeup_fds[0], buf, sizeof(buf)) > 0) {}
        return PQ_WAIT_WAKEUP;
    }
    return PQ_WAIT_READY;
}

/* Batching: while the server streams faster than one wake-up per message
 * or so, the stream loop asks the kernel not to report the socket readable
 * before PQ_BATCH_BYTES have arrived (it also waits at most a fraction of a
 * millisecond), so that a wake-up and its recv() serve a buffer full of
 * messages rather than a handful. 16 kB: what libpq reads at once. Only
 * TCP honours it in poll() (Linux); elsewhere it changes nothing. */
#define PQ_BATCH_BYTES 16384

void
pq_set_batching(readerObject *self, int on)
{
#ifdef SO_RCVLOWAT
    int v = on ? PQ_BATCH_BYTES : 1;
    if (self->pgconn && PQsocket(self->pgconn) >= 0) {
        /* a socket that refuses it (not TCP) just does not batch */
        (void)setsockopt(PQsocket(self->pgconn), SOL_SOCKET, SO_RCVLOWAT,
                         &v, sizeof(v));
    }
#endif
}

static RAISES_NEG int
flush_all(readerObject *self)
{
    int rv;
    while ((rv = PQflush(self->pgconn)) == 1) {
        if (pq_wait(self, 1, -1) < 0) { return -1; }
    }
    if (rv < 0) {
        pq_raise(self, NULL, NULL);
        return -1;
    }
    return 0;
}

RAISES_NEG int
pq_consume_input(readerObject *self)
{
    if (!PQconsumeInput(self->pgconn)) {
        pq_raise(self, NULL, NULL);
        return -1;
    }
    return 0;
}

/* Wait for the next result of a command without blocking the process
 * (signals are served while waiting). *res is NULL when there is none. */
static RAISES_NEG int
get_result(readerObject *self, PGresult **res)
{
    while (PQisBusy(self->pgconn)) {
        if (pq_wait(self, 0, -1) < 0) { return -1; }
        if (pq_consume_input(self) < 0) { return -1; }
    }
    *res = PQgetResult(self->pgconn);
    return 0;
}

/* Send a command and return its last result, with every earlier one
 * discarded; NULL with an exception set on failure. */
static PGresult *
send_command(readerObject *self, const char *command)
{
    PGresult *res = NULL, *next = NULL;

    if (pq_check_open(self) < 0) { return NULL; }
    if (!PQsendQuery(self->pgconn, command)) {
        pq_raise(self, NULL, NULL);
        return NULL;
    }
    if (flush_all(self) < 0) { goto error; }
    for (;;) {
        if (get_result(self, &next) < 0) { goto error; }
        if (!next) { break; }
        PQclear(res);
        res = next;
        /* COPY BOTH: no further result comes until the copy ends */
        if (PQresultStatus(res) == PGRES_COPY_BOTH) { break; }
    }
    if (!res) {
        pq_raise(self, NULL, NULL);
    }
    return res;

error:
    PQclear(res);
    /* Interrupted in the middle of a command: the connection state is
     * unknown, close it rather than leave it half used. */
    pq_close(self);
    return NULL;
}

static PyObject *
result_to_python(PGresult *res)
{
    PyObject *names = NULL, *rows = NULL, *row = NULL, *rv = NULL;
    int nrows, ncols, i, j;

    nrows = PQntuples(res);
    ncols = PQnfields(res);
    if (!(names = PyTuple_New(ncols))) { goto exit; }
    for (j = 0; j < ncols; j++) {
        PyObject *name = PyUnicode_DecodeUTF8(
            PQfname(res, j), strlen(PQfname(res, j)), "replace");
        if (!name) { goto exit; }
        PyTuple_SET_ITEM(names, j, name);
    }
    if (!(rows = PyList_New(nrows))) { goto exit; }
    for (i = 0; i < nrows; i++) {
        if (!(row = PyTuple_New(ncols))) { goto exit; }
        for (j = 0; j < ncols; j++) {
            PyObject *v;
            if (PQgetisnull(res, i, j)) {
                v = Py_None;
                Py_INCREF(v);
            }
            else if (!(v = PyUnicode_DecodeUTF8(PQgetvalue(res, i, j),
                        PQgetlength(res, i, j), "replace"))) {
                goto exit;
            }
            PyTuple_SET_ITEM(row, j, v);
        }
        PyList_SET_ITEM(rows, i, row);
        row = NULL;
    }
    rv = PyTuple_Pack(2, names, rows);

exit:
    Py_XDECREF(names);
    Py_XDECREF(rows);
    Py_XDECREF(row);
    return rv;
}

/* Run a command (replication command or SQL) with the simple query
 * protocol; return (column names, rows of str or None). */
PyObject *
pq_execute(readerObject *self, const char *command)
{
    PGresult *res = NULL;
    PyObject *rv = NULL;

    if (self->copying) {
        PyErr_SetString(pld_ProgrammingError,
            "cannot run a command while the stream is running");
        return NULL;
    }
    if (!(res = send_command(self, command))) { goto exit; }
    switch (PQresultStatus(res)) {
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
    case PGRES_EMPTY_QUERY:
        rv = result_to_python(res);
        break;
    case PGRES_COPY_BOTH:
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
        PQclear(res);
        res = NULL;
        pq_close(self);
        PyErr_SetString(pld_ProgrammingError,
            "the command started a COPY: use the streaming methods");
        break;
    default:
        pq_raise(self, res, NULL);
        break;
    }

exit:
    PQclear(res);
    return rv;
}

/* Send START_REPLICATION and enter COPY BOTH. */
RAISES_NEG int
pq_start_copy(readerObject *self, const char *command)
{
    PGresult *res = NULL;
    int rv = -1;

    if (self->copying) {
        PyErr_SetString(pld_ProgrammingError, "the stream is already running");
        return -1;
    }
    if (!(res = send_command(self, command))) { goto exit; }
    if (PQresultStatus(res) != PGRES_COPY_BOTH) {
        if (PQresultStatus(res) == PGRES_FATAL_ERROR) {
            pq_raise(self, res, NULL);
        }
        else {
            PyErr_Format(pld_OperationalError,
                "the server did not start streaming (result %s)",
                PQresStatus(PQresultStatus(res)));
        }
        goto exit;
    }
    self->copying = 1;
    rv = 0;

exit:
    PQclear(res);
    return rv;
}

/* The server ended COPY BOTH: collect the command's results. */
static RAISES_NEG int
copy_ended(readerObject *self)
{
    PGresult *res = NULL;
    int rv = 0;

    self->copying = 0;
    for (;;) {
        if (rv < 0) {
            /* an error is set: take only what libpq already has */
            if (PQisBusy(self->pgconn)) { break; }
            res = PQgetResult(self->pgconn);
        }
        else if (get_result(self, &res) < 0) { return -1; }
        if (!res) { break; }
        if (PQresultStatus(res) == PGRES_COPY_IN) {
            /* the server sent CopyDone first: libpq waits for ours */
            PQclear(res);
            if (PQputCopyEnd(self->pgconn, NULL) < 0 || flush_all(self) < 0) {
                if (!PyErr_Occurred()) { pq_raise(self, NULL, NULL); }
                return -1;
            }
            continue;
        }
        if (PQresultStatus(res) == PGRES_COPY_OUT
                || PQresultStatus(res) == PGRES_COPY_BOTH) {
            PQclear(res);
            PyErr_SetString(pld_OperationalError,
                "unexpected COPY state at the end of the stream");
            return -1;
        }
        if (rv == 0 && PQresultStatus(res) != PGRES_COMMAND_OK
                && PQresultStatus(res) != PGRES_TUPLES_OK) {
            pq_raise(self, res, NULL);
            rv = -1;
        }
        PQclear(res);
        if (PQstatus(self->pgconn) == CONNECTION_BAD) { break; }
    }
    return rv;
}

static void
raise_short(readerObject *self, char kind, int len)
{
    char buf[LSN_BUFSIZE];
    wire_format_lsn(buf, sizeof(buf), self->received_lsn);
    PyErr_Format(pld_DecodingError,
        "malformed message from the server: '%c' message of %d bytes "
        "(after %s)", kind, len, buf);
}

/* Read the next XLogData message from what libpq already has; answer the
 * keepalives met on the way. Call with the lock held. */
RAISES_NEG int
pq_read_message(readerObject *self, PyObject **msg)
{
    char *buf = NULL;
    int len;
    lsn_t data_start, wal_end;
    int64_t send_time;
    PyObject *payload;

    for (;;) {
        len = PQgetCopyData(self->pgconn, &buf, 1);
        if (len == 0) { return PQ_MSG_NONE; }
        if (len == -1) {
            return copy_ended(self) < 0 ? -1 : PQ_MSG_END;
        }
        if (len < 0) {
            self->copying = 0;
            pq_raise(self, NULL, NULL);
            return -1;
        }

        switch (buf[0]) {
        case 'w':
            if (len < WIRE_XLOGDATA_HDR) {
                raise_short(self, 'w', len);
                PQfreemem(buf);
                return -1;
            }
            data_start = wire_get_u64(buf + 1);
            wal_end = wire_get_u64(buf + 9);
            send_time = (int64_t)wire_get_u64(buf + 17);
            if (self->binary) {
                payload = PyBytes_FromStringAndSize(
                    buf + WIRE_XLOGDATA_HDR, len - WIRE_XLOGDATA_HDR);
            }
            else {
                payload = PyUnicode_DecodeUTF8(
                    buf + WIRE_XLOGDATA_HDR, len - WIRE_XLOGDATA_HDR, NULL);
                if (!payload
                        && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                    char lsn[LSN_BUFSIZE];
                    wire_format_lsn(lsn, sizeof(lsn), data_start);
                    PyErr_Clear();
                    PyErr_Format(pld_DecodingError,
                        "the payload at %s is not valid UTF-8: "
                        "read a non-UTF-8 stream as bytes (binary=True)", lsn);
                }
            }
            PQfreemem(buf);
            if (!payload) { return -1; }
            if (wal_end > self->server_wal_end) {
                self->server_wal_end = wal_end;
            }
            self->messages++;
            self->bytes += len - WIRE_XLOGDATA_HDR;
            if (!(*msg = message_new(payload, data_start, wal_end, send_time))) {
                return -1;
            }
            return PQ_MSG_DATA;

        case 'k':
            if (len < WIRE_KEEPALIVE_LEN) {
                raise_short(self, 'k', len);
                PQfreemem(buf);
                return -1;
            }
            wal_end = wire_get_u64(buf + 1);
            {
                int reply = buf[17] != 0;
                PQfreemem(buf);
                if (wal_end > self->server_wal_end) {
                    self->server_wal_end = wal_end;
                }
                /* A keepalive's walEnd is where the walsender has decoded
                 * to: every transaction committed before it was sent ahead
                 * of this message, and one still being sent or not yet
                 * committed ends after it. So once every message delivered
                 * so far is acked, confirming walEnd skips nothing unacked,
                 * and a quiet slot does not hold WAL forever. */
                if (self->confirm_keepalives && !self->unacked
                        && wal_end > self->flushed_lsn) {
                    self->flushed_lsn = wal_end;
                    self->feedback_pending = 1;
                }
                if (reply && pq_send_status(self, 0) < 0) { return -1; }
            }
            break;

        default: {
            char lsn[LSN_BUFSIZE];
            wire_format_lsn(lsn, sizeof(lsn), self->received_lsn);
            PyErr_Format(pld_DecodingError,
                "malformed message from the server: unknown message type "
                "0x%02x (%d bytes, after %s)", (unsigned char)buf[0], len, lsn);
            PQfreemem(buf);
            return -1;
        }
        }
    }
}

/* Send a standby status update: the acked position as flushed, and
 * nothing beyond it. Usable without the GIL (the keepalive thread);
 * return -1 on failure without setting an exception. Lock held. */
int
pq_send_status_nogil(readerObject *self, int reply)
{
    char buf[WIRE_STATUS_LEN];
    lsn_t written;

    if (!self->pgconn || !self->copying) { return 0; }
    /* Written: everything received, up to the server's last walEnd (as
     * the built-in subscriber reports it). It does not move the slot, but
     * a server shutting down waits for it to reach its end of WAL. */
    written = self->received_lsn > self->flushed_lsn
        ? self->received_lsn : self->flushed_lsn;
    if (self->server_wal_end > written) { written = self->server_wal_end; }
    wire_build_status(buf, written, self->flushed_lsn, self->flushed_lsn,
                      wire_pg_now(), reply);
    if (PQputCopyData(self->pgconn, buf, WIRE_STATUS_LEN) != 1) { return -1; }
    /* 1 means "queued, not all sent": libpq sends the rest when it next
     * reads or writes; a 34-byte message rarely waits. */
    if (PQflush(self->pgconn) < 0) { return -1; }
    self->sent_flushed_lsn = self->flushed_lsn;
    self->last_status = wire_monotonic();
    self->feedback_pending = 0;
    self->status_count++;
    return 0;
}

RAISES_NEG int
pq_send_status(readerObject *self, int reply)
{
    if (pq_send_status_nogil(self, reply) < 0) {
        pq_raise(self, NULL, NULL);
        return -1;
    }
    return 0;
}

/* Send a status update if an ack waits or status_interval has passed
 * since the last one (now: the monotonic clock). Lock held. */
RAISES_NEG int
pq_send_status_if_due(readerObject *self, double now)
{
    if (self->feedback_pending
            || now - self->last_status >= self->status_interval) {
        return pq_send_status(self, 0);
    }
    return 0;
}

/* End COPY BOTH from our side: send CopyDone, discard what the server
 * still sends, and read the command's end. Return 1 if the server did
 * not finish within timeout seconds (the caller should close). */
RAISES_NEG int
pq_end_copy(readerObject *self, double timeout)
{
    double deadline = wire_monotonic() + timeout;
    char *buf = NULL;
    int len;

    if (!self->pgconn || !self->copying) { return 0; }
    if (PQputCopyEnd(self->pgconn, NULL) < 0) {
        self->copying = 0;
        pq_raise(self, NULL, NULL);
        return -1;
    }
    if (flush_all(self) < 0) { return -1; }
    for (;;) {
        len = PQgetCopyData(self->pgconn, &buf, 1);
        if (len > 0) {
            PQfreemem(buf);
            continue;
        }
        if (len == -1) { break; }
        if (len < -1) {
            self->copying = 0;
            pq_raise(self, NULL, NULL);
            return -1;
        }
        {
            double left = deadline - wire_monotonic();
            int w;
            if (left <= 0) { return 1; }
            if ((w = pq_wait(self, 0, left)) < 0) { return -1; }
            if (w == PQ_WAIT_READY && pq_consume_input(self) < 0) {
                return -1;
            }
        }
    }
    return copy_ended(self);
}


/* -- the non-blocking path --
 *
 * Used by the asyncio front end: the event loop waits on PQsocket() for
 * what each call asks (PQ_POLL_READ / PQ_POLL_WRITE) and calls again.
 * Nothing here waits, so nothing here releases the GIL. */

/* Start connecting (PQconnectStartParams); continue with pq_connect_poll()
 * after waiting for the socket to be writable. */
RAISES_NEG int
pq_connect_start(readerObject *self, const char *const *keys,
                 const char *const *values)
{
    PGconn *conn;

    if (!(conn = PQconnectStartParams(keys, values, 0))) {
        PyErr_NoMemory();
        return -1;
    }
    if (PQstatus(conn) == CONNECTION_BAD) {
        pq_raise_message(pld_OperationalError, PQerrorMessage(conn));
        PQfinish(conn);
        return -1;
    }
    self->pgconn = conn;
    self->connecting = 1;
    return 0;
}

/* One step of PQconnectPoll(): PQ_POLL_OK once connected, else what to
 * wait for. On failure the connection is closed. The socket may change
 * between two steps (libpq tries the next address): ask for it again. */
RAISES_NEG int
pq_connect_poll(readerObject *self)
{
    if (!self->pgconn || !self->connecting) {
        PyErr_SetString(pld_InterfaceError, "no connection is being opened");
        return -1;
    }
    switch (PQconnectPoll(self->pgconn)) {
    case PGRES_POLLING_READING:
        return PQ_POLL_READ;
    case PGRES_POLLING_WRITING:
        return PQ_POLL_WRITE;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(self->pgconn, 1) != 0) { break; }
        self->connecting = 0;
        return PQ_POLL_OK;
    default:
        break;
    }
    pq_raise_message(pld_OperationalError, PQerrorMessage(self->pgconn));
    pq_close(self);
    return -1;
}

/* PQflush(): 1 if data remains to send (wait until writable), 0 if not. */
RAISES_NEG int
pq_flush(readerObject *self)
{
    int rv;

    if (!self->pgconn) {
        PyErr_SetString(pld_InterfaceError, "the connection is closed");
        return -1;
    }
    if ((rv = PQflush(self->pgconn)) < 0) {
        pq_raise(self, NULL, NULL);
        return -1;
    }
    return rv;
}

/* Send a command (PQsendQuery); its results come with pq_poll_result().
 * copy: the command must start COPY BOTH (START_REPLICATION). Return 1 if
 * the command is not all sent yet (pq_flush() when writable). */
RAISES_NEG int
pq_send_query(readerObject *self, const char *command, int copy)
{
    if (pq_check_open(self) < 0) { return -1; }
    if (self->copying) {
        PyErr_SetString(pld_ProgrammingError,
            "cannot run a command while the stream is running");
        return -1;
    }
    if (!PQsendQuery(self->pgconn, command)) {
        pq_raise(self, NULL, NULL);
        return -1;
    }
    self->cmd_running = 1;
    self->cmd_copy = copy;
    return pq_flush(self);
}

/* The final result of a command as Python: (names, rows), or True for
 * the start of COPY BOTH. */
static PyObject *
command_result(readerObject *self, PGresult *res)
{
    ExecStatusType st;

    if (!res) {
        pq_raise(self, NULL, NULL);
        return NULL;
    }
    st = PQresultStatus(res);
    if (st == PGRES_COPY_BOTH && self->cmd_copy) {
        self->copying = 1;
        self->stop_requested = 0;
        self->last_status = wire_monotonic();
        Py_RETURN_TRUE;
    }
    if (st == PGRES_COPY_BOTH || st == PGRES_COPY_IN || st == PGRES_COPY_OUT) {
        pq_close(self);
        PyErr_SetString(pld_ProgrammingError,
            "the command started a COPY: use the streaming methods");
        return NULL;
    }
    if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE
            || st == PGRES_NONFATAL_ERROR) {
        pq_raise(self, res, NULL);
        return NULL;
    }
    if (self->cmd_copy) {
        PyErr_Format(pld_OperationalError,
            "the server did not start streaming (result %s)",
            PQresStatus(st));
        return NULL;
    }
    return result_to_python(res);
}

/* Read what arrived and collect the results of the running command:
 * 0 if more must arrive (wait until readable), 1 with *out set when the
 * command is done. On a broken connection it is closed. */
RAISES_NEG int
pq_poll_result(readerObject *self, PyObject **out)
{
    PGresult *next, *res;

    *out = NULL;
    if (!self->pgconn || !self->cmd_running) {
        PyErr_SetString(pld_InterfaceError, "no command is running");
        return -1;
    }
    if (!PQconsumeInput(self->pgconn)) {
        pq_raise(self, NULL, NULL);
        pq_close(self);
        return -1;
    }
    for (;;) {
        if (PQisBusy(self->pgconn)) { return 0; }
        if (!(next = PQgetResult(self->pgconn))) { break; }
        PQclear(self->cmd_result);
        self->cmd_result = next;
        /* COPY BOTH: no further result comes until the copy ends */
        if (PQresultStatus(next) == PGRES_COPY_BOTH) { break; }
    }
    self->cmd_running = 0;
    res = self->cmd_result;
    self->cmd_result = NULL;
    *out = command_result(self, res);
    PQclear(res);
    return *out ? 1 : -1;
}

/* End COPY BOTH from our side without waiting: send the acked position
 * and CopyDone; continue with pq_end_copy_poll(). Return 1 if data
 * remains to send (pq_flush() when writable). */
RAISES_NEG int
pq_end_copy_start(readerObject *self)
{
    if (!self->pgconn || !self->copying || self->ending_copy) { return 0; }
    if (pq_send_status(self, 0) < 0) { return -1; }
    if (PQputCopyEnd(self->pgconn, NULL) < 0) {
        self->copying = 0;
        pq_raise(self, NULL, NULL);
        return -1;
    }
    self->ending_copy = 1;
    return pq_flush(self);
}

/* Discard what the server still streams and collect the end of the
 * command: PQ_POLL_OK once the stream has ended, PQ_POLL_READ if more
 * must arrive. */
RAISES_NEG int
pq_end_copy_poll(readerObject *self)
{
    char *buf = NULL;
    PGresult *res;
    int len;

    if (!self->pgconn || !self->ending_copy) { return PQ_POLL_OK; }
    if (!PQconsumeInput(self->pgconn)) { goto error; }
    while (self->copying) {
        len = PQgetCopyData(self->pgconn, &buf, 1);
        if (len > 0) {
            PQfreemem(buf);
            continue;
        }
        if (len == 0) { return PQ_POLL_READ; }
        if (len < -1) { goto error; }
        self->copying = 0;          /* -1: the server's CopyDone */
    }
    for (;;) {
        if (PQisBusy(self->pgconn)) { return PQ_POLL_READ; }
        if (!(res = PQgetResult(self->pgconn))) { break; }
        switch (PQresultStatus(res)) {
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
            PQclear(res);
            break;
        default:
            /* keep the first error, raise it once the results are in */
            if (!self->cmd_result) { self->cmd_result = res; }
            else { PQclear(res); }
            break;
        }
        if (PQstatus(self->pgconn) == CONNECTION_BAD) { break; }
    }
    self->ending_copy = 0;
    if ((res = self->cmd_result)) {
        self->cmd_result = NULL;
        pq_raise(self, res, NULL);
        PQclear(res);
        return -1;
    }
    return PQ_POLL_OK;

error:
    self->copying = self->ending_copy = 0;
    pq_raise(self, NULL, NULL);
    return -1;
}

PyObject *
pq_conninfo_parse(const char *dsn)
{
    PQconninfoOption *opts = NULL, *o;
    char *err = NULL;
    PyObject *rv = NULL, *v = NULL;

    if (!(opts = PQconninfoParse(dsn, &err))) {
        if (err) {
            pq_raise_message(pld_ProgrammingError, err);
            PQfreemem(err);
        }
        else {
            PyErr_NoMemory();
        }
        return NULL;
    }
    if (!(rv = PyDict_New())) { goto exit; }
    for (o = opts; o->keyword; o++) {
        if (!o->val) { continue; }
        if (!(v = PyUnicode_DecodeUTF8(o->val, strlen(o->val), "strict"))) {
            Py_CLEAR(rv);
            goto exit;
        }
        if (PyDict_SetItemString(rv, o->keyword, v) < 0) {
            Py_CLEAR(rv);
            goto exit;
        }
        Py_CLEAR(v);
    }

exit:
    Py_XDECREF(v);
    PQconninfoFree(opts);
    return rv;
}

PyObject *
pq_conninfo_keywords(void)
{
    PQconninfoOption *opts, *o;
    PyObject *rv = NULL, *kw = NULL;

    if (!(opts = PQconndefaults())) { return PyErr_NoMemory(); }
    if (!(rv = PyList_New(0))) { goto exit; }
    for (o = opts; o->keyword; o++) {
        if (!(kw = PyUnicode_FromString(o->keyword))
                || PyList_Append(rv, kw) < 0) {
            Py_CLEAR(rv);
            goto exit;
        }
        Py_CLEAR(kw);
    }

exit:
    Py_XDECREF(kw);
    PQconninfoFree(opts);
    return rv;
}
