/* pqpath.c - every libpq call of the module: connection, commands, COPY BOTH */

#include "pqpath.h"
#include "message.h"
#include "wire.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
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
pq_raise(connectionObject *conn, PGresult *res, PyObject *cls)
{
    const char *code = NULL, *text = NULL;
    PyObject *msg = NULL;

    if (res) {
        code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        text = PQresultErrorMessage(res);
    }
    if ((!text || !*text) && conn && conn->pgconn) {
        text = PQerrorMessage(conn->pgconn);
    }
    if (!text || !*text) { text = "unknown error (no message from libpq)"; }

    if (!cls) { cls = class_for_sqlstate(code); }
    /* No SQLSTATE: libpq's own error on an open connection (a failed send
     * or receive, a broken protocol): the connection is not usable, even
     * when libpq has not marked it bad yet. */
    if (!cls && conn && conn->pgconn
            && (!code || PQstatus(conn->pgconn) == CONNECTION_BAD)) {
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
pq_check_open(connectionObject *conn)
{
    if (!conn->pgconn) {
        PyErr_SetString(pld_InterfaceError, "the connection is closed");
        return -1;
    }
    if (conn->connecting) {
        PyErr_SetString(pld_InterfaceError,
            "the connection is still being opened");
        return -1;
    }
    if (conn->cmd_running) {
        PyErr_SetString(pld_InterfaceError,
            "a command is running on the connection (non-blocking path)");
        return -1;
    }
    return 0;
}

RAISES_NEG int
pq_connect(connectionObject *conn, const char *const *keys,
           const char *const *values)
{
    PGconn *pgconn;

    Py_BEGIN_ALLOW_THREADS
    pgconn = PQconnectdbParams(keys, values, 0);
    Py_END_ALLOW_THREADS

    if (!pgconn) {
        PyErr_NoMemory();
        return -1;
    }
    if (PQstatus(pgconn) != CONNECTION_OK) {
        pq_raise_message(pld_OperationalError, PQerrorMessage(pgconn));
        PQfinish(pgconn);
        return -1;
    }
    if (PQsetnonblocking(pgconn, 1) != 0) {
        pq_raise_message(pld_OperationalError, PQerrorMessage(pgconn));
        PQfinish(pgconn);
        return -1;
    }
    conn->pgconn = pgconn;
    conn->owner_pid = getpid();
    if (conn->stream_opened) { conn->stream_opened(conn->stream); }
    return 0;
}

int
pq_in_child(connectionObject *conn)
{
    return conn->pgconn && conn->owner_pid != getpid();
}

/* Free a connection inherited across fork() without a word on its socket,
 * which the parent still uses: put an unconnected socket in its place
 * (dup2() swaps them at once, so no other thread can get the number in
 * between), then PQfinish() talks into that one and closes it. */
static void
forget_inherited(PGconn *conn)
{
    int fd = PQsocket(conn), dummy;

    if (fd >= 0) {
        if ((dummy = socket(AF_UNIX, SOCK_STREAM, 0)) < 0) {
            return;     /* leak it rather than talk on the parent's socket */
        }
        if (dup2(dummy, fd) < 0) {
            close(dummy);
            return;
        }
        close(dummy);
    }
    PQfinish(conn);
}

/* Close the connection. The lock must not be held. In a child process
 * (after fork()) the connection is freed without sending Terminate. The
 * stream on the connection, if any, is told (stream_closed()). */
void
pq_close(connectionObject *conn)
{
    PGconn *pgconn;

    if (!conn->pgconn) { return; }
    if (pq_in_child(conn)) {
        /* no CONN_LOCK(): another thread of the parent may have held it
         * at fork() time, and no other thread exists here */
        pgconn = conn->pgconn;
        conn->pgconn = NULL;
        if (conn->stream_closed) { conn->stream_closed(conn->stream); }
        conn->connecting = conn->cmd_running = conn->cmd_copy = 0;
        PQclear(conn->cmd_result);
        conn->cmd_result = NULL;
        forget_inherited(pgconn);
        return;
    }
    CONN_LOCK(conn);
    pgconn = conn->pgconn;
    conn->pgconn = NULL;
    if (conn->stream_closed) { conn->stream_closed(conn->stream); }
    CONN_UNLOCK(conn);
    conn->connecting = conn->cmd_running = conn->cmd_copy = 0;
    PQclear(conn->cmd_result);
    conn->cmd_result = NULL;
    Py_BEGIN_ALLOW_THREADS
    PQfinish(pgconn);
    Py_END_ALLOW_THREADS
}

/* Seconds left until deadline (monotonic; negative deadline: none, -1). */
static double
time_left(double deadline)
{
    double left;
    if (deadline < 0) { return -1.0; }
    left = deadline - wire_monotonic();
    return left > 0 ? left : 0.0;
}

/* Wait until the socket is ready, the wakeup pipe is written, a signal
 * arrives or the timeout (seconds; negative: none) expires.
 *
 * The wake-up pipe is the connection's rather than the stream's: every
 * wait on the socket, a command's included, must end when the stream's
 * stop() (or ack()) calls pq_wake_up(), and a command runs on the
 * connection alone. psycopg2 has no such pipe: its waits are the
 * caller's (select() in Python, wait callbacks).
 *
 * The GIL is released while waiting; the caller must not hold the lock.
 * poll(), not select(): the socket may be above FD_SETSIZE. */
RAISES_NEG int
pq_wait(connectionObject *conn, int for_write, double timeout)
{
    struct pollfd fds[2];
    nfds_t n = 1;
    int rv, ms, fd;

    /* A signal that came while we ran C code since the last check would
     * not interrupt the poll(): serve it now. */
    if (PyErr_CheckSignals() < 0) { return -1; }
    if (pq_check_open(conn) < 0) { return -1; }
    if ((fd = PQsocket(conn->pgconn)) < 0) {
        pq_raise_message(pld_ConnectionLost,
            "the connection has no socket (it was lost)");
        return -1;
    }
    fds[0].fd = fd;
    fds[0].events = for_write ? (POLLIN | POLLOUT) : POLLIN;
    fds[0].revents = 0;
    if (conn->wakeup_fds[0] >= 0) {
        fds[1].fd = conn->wakeup_fds[0];
        fds[1].events = POLLIN;
        fds[1].revents = 0;
        n = 2;
    }
#ifndef PLD_NO_PPOLL
    /* ppoll(): the batching delay of the stream loop is under 1 ms */
    {
        struct timespec ts, *tsp = NULL;
        if (timeout >= 0) {
            if (timeout > 86400.0) { timeout = 86400.0; }
            ts.tv_sec = (time_t)timeout;
            ts.tv_nsec = (long)((timeout - (double)ts.tv_sec) * 1e9);
            tsp = &ts;
        }
        sigset_t all, old;
        (void)ms;
        /* A signal that lands after the check above but before ppoll()
         * starts would not interrupt it: the wait would last its whole
         * timeout (Ctrl-C ignored for minutes on a busy machine). Block
         * signals, check once more, and let ppoll() unblock them
         * atomically: one pending then interrupts it at once (EINTR). */
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        if (PyErr_CheckSignals() < 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            return -1;
        }
        conn->waiting++;
        Py_BEGIN_ALLOW_THREADS
        rv = ppoll(fds, n, tsp, &old);
        Py_END_ALLOW_THREADS
        conn->waiting--;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
#else
    if (timeout < 0) { ms = -1; }
    else if (timeout > 86400.0) { ms = 86400000; }
    else { ms = (int)ceil(timeout * 1000.0); }

    conn->waiting++;
    Py_BEGIN_ALLOW_THREADS
    rv = poll(fds, n, ms);
    Py_END_ALLOW_THREADS
    conn->waiting--;
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
        while (read(conn->wakeup_fds[0], buf, sizeof(buf)) > 0) {}
        return PQ_WAIT_WAKEUP;
    }
    return PQ_WAIT_READY;
}

/* End the current (or the next) pq_wait() on the connection early.
 * Async-signal-safe, no GIL or lock needed. */
void
pq_wake_up(connectionObject *conn)
{
    if (conn->wakeup_fds[1] >= 0) {
        ssize_t n = write(conn->wakeup_fds[1], "x", 1);
        (void)n;    /* a full pipe already wakes the loop */
    }
}

/* pq_wait() for a stream: while a status update is only partly written
 * (out_pending), writability wakes us too. */
RAISES_NEG int
pq_stream_wait(readerObject *self, int for_write, double timeout)
{
    LOCK(self);
    if (self->out_pending) { for_write = 1; }
    UNLOCK(self);
    return pq_wait(self->conn, for_write, timeout);
}

/* Batching: while the server streams faster than one wake-up per message
 * or so, the stream loop asks the kernel not to report the socket readable
 * before PQ_BATCH_BYTES have arrived (it also waits at most a couple of
 * milliseconds), so that a wake-up serves hundreds of messages rather than
 * a handful. 64 kB: four of libpq's 16 kB reads, which the loop makes one
 * after the other before it waits again (bench/README.md: half the
 * wake-ups and about 0.6x the CPU of 16 kB and 0.5 ms). Only
 * TCP honours it in poll() (Linux): return 1 if the kernel batches for us,
 * 0 if not (a Unix socket: the caller pauses before its waits instead, see
 * pq_pause()). */
#define PQ_BATCH_BYTES 65536

int
pq_set_batching(connectionObject *conn, int on)
{
    int fd, kernel = 0;
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);

    if (!conn->pgconn || (fd = PQsocket(conn->pgconn)) < 0) {
        return 0;
    }
#ifdef SO_RCVLOWAT
    {
        int v = on ? PQ_BATCH_BYTES : 1;
        /* a socket that refuses it just does not batch */
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v));
    }
#ifdef __linux__
    if (getsockname(fd, (struct sockaddr *)&addr, &len) == 0
            && (addr.ss_family == AF_INET || addr.ss_family == AF_INET6)) {
        kernel = 1;
    }
#endif
#endif
    (void)addr; (void)len;
    return kernel;
}

/* Sleep for `seconds` (a fraction of a millisecond) so that more of a
 * backlog arrives before the next wait: the batching of a socket that
 * ignores SO_RCVLOWAT. The GIL is released; the caller must not hold the
 * lock. A signal cuts it short (the next pq_wait() serves it). */
void
pq_pause(double seconds)
{
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    Py_BEGIN_ALLOW_THREADS
    (void)nanosleep(&ts, NULL);
    Py_END_ALLOW_THREADS
}

/* A status update queued earlier is now all written. Lock held. */
static void
status_sent(readerObject *self)
{
    self->out_pending = 0;
    self->sent_flushed_lsn = self->queued_flushed_lsn;
    if (self->flushed_lsn == self->queued_flushed_lsn) {
        self->feedback_pending = 0;
    }
    self->status_count++;
}

/* A command (send_command()) that stop() or close() asked to end, from
 * another thread or a signal handler: raise. */
static RAISES_NEG int
check_interrupted(connectionObject *conn)
{
    if (conn->in_command && conn->interrupt_command) {
        PyErr_SetString(pld_CommandInterrupted,
            "the command was interrupted by stop() or close() before the "
            "server answered: the connection is closed");
        return -1;
    }
    return 0;
}

/* Write everything libpq has queued, waiting for the socket to take it
 * until deadline (monotonic seconds, negative: none). stream: the stream
 * on the connection, if any (a status update it queued counts as sent once
 * written), or NULL. Return 0 when all is written, 1 on timeout (nothing
 * raised), -1 with an exception set. */
static RAISES_NEG int
flush_all(connectionObject *conn, readerObject *stream, double deadline)
{
    int rv, w;
    double left;

    for (;;) {
        CONN_LOCK(conn);
        rv = PQflush(conn->pgconn);
        if (rv == 0 && stream && stream->out_pending) { status_sent(stream); }
        CONN_UNLOCK(conn);
        if (rv != 1) { break; }
        if (check_interrupted(conn) < 0) { return -1; }
        if ((left = time_left(deadline)) == 0.0) { return 1; }
        if ((w = pq_wait(conn, 1, left)) < 0) { return -1; }
    }
    if (rv < 0) {
        pq_raise(conn, NULL, NULL);
        return -1;
    }
    return 0;
}

RAISES_NEG int
pq_consume_input(readerObject *self)
{
    int ok;

    LOCK(self);
    if (!(ok = PQconsumeInput(self->conn->pgconn))) {
        self->copying = 0;      /* the keepalive thread leaves it alone */
    }
    UNLOCK(self);
    if (!ok) {
        pq_raise(self->conn, NULL, NULL);
        return -1;
    }
    return 0;
}

/* Wait for the next result of a command without blocking the process
 * (signals are served while waiting), until deadline (monotonic seconds,
 * negative: none). stream: as for flush_all(). *res is NULL when there is
 * none. Return 1 on timeout (nothing raised). */
static RAISES_NEG int
get_result(connectionObject *conn, readerObject *stream, PGresult **res,
           double deadline)
{
    int busy, ok;
    double left;

    *res = NULL;
    for (;;) {
        CONN_LOCK(conn);
        if (!(busy = PQisBusy(conn->pgconn))) {
            *res = PQgetResult(conn->pgconn);
        }
        CONN_UNLOCK(conn);
        if (!busy) { return 0; }
        if (check_interrupted(conn) < 0) { return -1; }
        if ((left = time_left(deadline)) == 0.0) { return 1; }
        if ((stream ? pq_stream_wait(stream, 0, left)
                    : pq_wait(conn, 0, left)) < 0) {
            return -1;
        }
        if (stream) {
            if (pq_consume_input(stream) < 0) { return -1; }
            continue;
        }
        CONN_LOCK(conn);
        ok = PQconsumeInput(conn->pgconn);
        CONN_UNLOCK(conn);
        if (!ok) {
            pq_raise(conn, NULL, NULL);
            return -1;
        }
    }
}

static void
raise_no_answer(double timeout)
{
    PyErr_Format(pld_ConnectionLost,
        "no answer from the server within %.3g s: the connection is "
        "closed", timeout);
}

/* Refuse a command while another command or a COPY BOTH stream is in
 * progress on the connection (libpq would refuse it too, as a broken
 * connection). */
static RAISES_NEG int
check_idle(connectionObject *conn)
{
    PGTransactionStatusType st;

    CONN_LOCK(conn);
    st = PQtransactionStatus(conn->pgconn);
    CONN_UNLOCK(conn);
    if (st == PQTRANS_ACTIVE) {
        PyErr_SetString(pld_ProgrammingError,
            "cannot run a command while the stream (or another command) "
            "is running on the connection");
        return -1;
    }
    return 0;
}

/* Send a command and return its last result, with every earlier one
 * discarded; NULL with an exception set on failure. timeout: seconds,
 * negative for none; stop() and close() end the wait too (in_command). */
static PGresult *
send_command(connectionObject *conn, const char *command, double timeout)
{
    PGresult *res = NULL, *next = NULL;
    double deadline = timeout < 0 ? -1.0 : wire_monotonic() + timeout;
    int rv;

    if (pq_check_open(conn) < 0) { return NULL; }
    if (check_idle(conn) < 0) { return NULL; }
    conn->interrupt_command = 0;
    conn->in_command = 1;
    CONN_LOCK(conn);
    rv = PQsendQuery(conn->pgconn, command);
    CONN_UNLOCK(conn);
    if (!rv) {
        conn->in_command = 0;
        pq_raise(conn, NULL, NULL);
        return NULL;
    }
    if ((rv = flush_all(conn, NULL, deadline)) < 0) { goto error; }
    if (rv > 0) { raise_no_answer(timeout); goto error; }
    for (;;) {
        if ((rv = get_result(conn, NULL, &next, deadline)) < 0) { goto error; }
        if (rv > 0) { raise_no_answer(timeout); goto error; }
        if (!next) { break; }
        PQclear(res);
        res = next;
        /* COPY BOTH: no further result comes until the copy ends */
        if (PQresultStatus(res) == PGRES_COPY_BOTH) { break; }
    }
    conn->in_command = 0;
    if (!res) {
        pq_raise(conn, NULL, NULL);
    }
    return res;

error:
    conn->in_command = 0;
    PQclear(res);
    /* Interrupted in the middle of a command: the connection state is
     * unknown, close it rather than leave it half used. */
    pq_close(conn);
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
pq_execute(connectionObject *conn, const char *command, double timeout)
{
    PGresult *res = NULL;
    PyObject *rv = NULL;

    if (!(res = send_command(conn, command, timeout))) { goto exit; }
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
        pq_close(conn);
        PyErr_SetString(pld_ProgrammingError,
            "the command started a COPY: use the streaming methods");
        break;
    default:
        pq_raise(conn, res, NULL);
        break;
    }

exit:
    PQclear(res);
    return rv;
}

/* Send START_REPLICATION and enter COPY BOTH. */
RAISES_NEG int
pq_start_copy(readerObject *self, const char *command, double timeout)
{
    PGresult *res = NULL;
    int rv = -1;

    if (self->copying) {
        PyErr_SetString(pld_ProgrammingError, "the stream is already running");
        return -1;
    }
    if (!(res = send_command(self->conn, command, timeout))) { goto exit; }
    if (PQresultStatus(res) != PGRES_COPY_BOTH) {
        if (PQresultStatus(res) == PGRES_FATAL_ERROR) {
            pq_raise(self->conn, res, NULL);
        }
        else {
            PyErr_Format(pld_OperationalError,
                "the server did not start streaming (result %s)",
                PQresStatus(PQresultStatus(res)));
        }
        goto exit;
    }
    LOCK(self);
    self->copying = 1;
    self->out_pending = 0;
    UNLOCK(self);
    rv = 0;

exit:
    PQclear(res);
    return rv;
}

/* The connection entered COPY BOTH for the stream (the non-blocking
 * path: pq_poll_result() gave True for a command sent with copy=1). */
void
pq_copy_started(readerObject *self)
{
    LOCK(self);
    self->copying = 1;
    self->out_pending = 0;
    self->last_status = wire_monotonic();
    UNLOCK(self);
    self->stop_requested = 0;
}

/* COPY BOTH has ended (copying already cleared): collect the command's
 * results until deadline (monotonic seconds). Return 0, 1 if the server
 * did not finish in time (nothing raised), or -1 with an exception set.
 * The lock is not held: every wait happens outside it. */
static RAISES_NEG int
copy_ended(readerObject *self, double deadline)
{
    PGresult *res = NULL;
    int rv = 0, busy, g, ok;

    for (;;) {
        if (rv < 0) {
            /* an error is set: take only what libpq already has */
            LOCK(self);
            if (!(busy = PQisBusy(self->conn->pgconn))) {
                res = PQgetResult(self->conn->pgconn);
            }
            UNLOCK(self);
            if (busy) { break; }
        }
        else {
            if ((g = get_result(self->conn, self, &res, deadline)) < 0) {
                return -1;
            }
            if (g > 0) { return 1; }
        }
        if (!res) { break; }
        if (PQresultStatus(res) == PGRES_COPY_IN) {
            /* the server sent CopyDone first: libpq waits for ours */
            PQclear(res);
            LOCK(self);
            ok = PQputCopyEnd(self->conn->pgconn, NULL) >= 0;
            UNLOCK(self);
            if (!ok) {
                pq_raise(self->conn, NULL, NULL);
                return -1;
            }
            if ((g = flush_all(self->conn, self, deadline)) != 0) {
                return g;
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
            pq_raise(self->conn, res, NULL);
            rv = -1;
        }
        PQclear(res);
        res = NULL;
        if (PQstatus(self->conn->pgconn) == CONNECTION_BAD) { break; }
    }
    return rv;
}

/* The server ended the stream: read the end of the command, for at most
 * recv_timeout (or PQ_END_TIMEOUT) seconds; a server that does not finish
 * in time has its connection closed. */
static RAISES_NEG int
stream_ended(readerObject *self)
{
    double timeout = self->recv_timeout > 0 ? self->recv_timeout
                                            : PQ_END_TIMEOUT;
    int rv = copy_ended(self, wire_monotonic() + timeout);

    if (rv < 0) { return -1; }
    if (rv > 0) { pq_close(self->conn); }
    return PQ_MSG_END;
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
 * keepalives met on the way. Call without the lock: it is taken for the
 * libpq calls and the positions only, the Python objects are made and the
 * errors raised outside it. */
RAISES_NEG int
pq_read_message(readerObject *self, PyObject **msg)
{
    char *buf = NULL;
    int len, failed;
    lsn_t data_start, wal_end;
    int64_t send_time;
    PyObject *payload;

    for (;;) {
        LOCK(self);
        if (!self->conn->pgconn || !self->copying) {
            UNLOCK(self);
            PyErr_SetString(pld_InterfaceError, "the stream is not running");
            return -1;
        }
        len = PQgetCopyData(self->conn->pgconn, &buf, 1);
        if (len == 0) {
            UNLOCK(self);
            return PQ_MSG_NONE;
        }
        if (len == -1) {
            self->copying = 0;
            UNLOCK(self);
            return stream_ended(self);
        }
        if (len < 0) {
            self->copying = 0;
            UNLOCK(self);
            pq_raise(self->conn, NULL, NULL);
            return -1;
        }

        if (buf[0] == 'w' && len >= WIRE_XLOGDATA_HDR) {
            data_start = wire_get_u64(buf + 1);
            wal_end = wire_get_u64(buf + 9);
            send_time = (int64_t)wire_get_u64(buf + 17);
            if (wal_end > self->server_wal_end) {
                self->server_wal_end = wal_end;
            }
            self->messages++;
            self->bytes += len - WIRE_XLOGDATA_HDR;
            UNLOCK(self);

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
            if (!(*msg = message_new(payload, data_start, wal_end, send_time))) {
                return -1;
            }
            return PQ_MSG_DATA;
        }

        if (buf[0] == 'k' && len >= WIRE_KEEPALIVE_LEN) {
            int reply = buf[17] != 0;
            wal_end = wire_get_u64(buf + 1);
            failed = 0;
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
            if (reply && pq_send_status_nogil(self, 0) < 0) {
                self->copying = 0;
                failed = 1;
            }
            UNLOCK(self);
            PQfreemem(buf);
            if (failed) {
                pq_raise(self->conn, NULL, NULL);
                return -1;
            }
            continue;
        }

        UNLOCK(self);
        if (buf[0] == 'w' || buf[0] == 'k') {
            raise_short(self, buf[0], len);
        }
        else {
            char lsn[LSN_BUFSIZE];
            wire_format_lsn(lsn, sizeof(lsn), self->received_lsn);
            PyErr_Format(pld_DecodingError,
                "malformed message from the server: unknown message type "
                "0x%02x (%d bytes, after %s)", (unsigned char)buf[0], len, lsn);
        }
        PQfreemem(buf);
        return -1;
    }
}

/* Send a standby status update: the acked position as flushed, and
 * nothing beyond it. Usable without the GIL (the keepalive thread);
 * return -1 on failure without setting an exception. Lock held.
 *
 * Non-blocking: what the socket does not take at once stays queued in
 * libpq (out_pending) and counts as sent only once it is all written;
 * until then no other update is queued, the waits also wake up for
 * writability and the next call writes the rest first. */
int
pq_send_status_nogil(readerObject *self, int reply)
{
    char buf[WIRE_STATUS_LEN];
    lsn_t written;
    int rv;

    if (!self->conn->pgconn || !self->copying) { return 0; }
    if (self->out_pending) {
        if ((rv = PQflush(self->conn->pgconn)) < 0) { return -1; }
        if (rv == 1) { return 0; }
        status_sent(self);
    }
    /* Written: everything received, up to the server's last walEnd (as
     * the built-in subscriber reports it). It does not move the slot, but
     * a server shutting down waits for it to reach its end of WAL. */
    written = self->received_lsn > self->flushed_lsn
        ? self->received_lsn : self->flushed_lsn;
    if (self->server_wal_end > written) { written = self->server_wal_end; }
    wire_build_status(buf, written, self->flushed_lsn, self->flushed_lsn,
                      wire_pg_now(), reply);
    if (PQputCopyData(self->conn->pgconn, buf, WIRE_STATUS_LEN) != 1) { return -1; }
    self->queued_flushed_lsn = self->flushed_lsn;
    self->last_status = wire_monotonic();
    if ((rv = PQflush(self->conn->pgconn)) < 0) { return -1; }
    if (rv == 1) {
        self->out_pending = 1;
        return 0;
    }
    status_sent(self);
    return 0;
}

/* Send a status update now (lock not held); raise on failure. */
RAISES_NEG int
pq_send_status(readerObject *self, int reply)
{
    int rv;

    LOCK(self);
    if ((rv = pq_send_status_nogil(self, reply)) < 0) {
        self->copying = 0;
    }
    UNLOCK(self);
    if (rv < 0) {
        pq_raise(self->conn, NULL, NULL);
        return -1;
    }
    return 0;
}

/* Write the rest of a partly written update, then send one if an ack
 * waits or status_interval has passed since the last one (now: the
 * monotonic clock). Lock not held. */
RAISES_NEG int
pq_send_status_if_due(readerObject *self, double now)
{
    int rv = 0;

    LOCK(self);
    if (self->out_pending && self->conn->pgconn) {
        if ((rv = PQflush(self->conn->pgconn)) == 0) { status_sent(self); }
        else if (rv == 1) { rv = 0; }
    }
    if (rv == 0 && !self->out_pending && (self->feedback_pending
            || now - self->last_status >= self->status_interval)) {
        rv = pq_send_status_nogil(self, 0);
    }
    if (rv < 0) { self->copying = 0; }
    UNLOCK(self);
    if (rv < 0) {
        pq_raise(self->conn, NULL, NULL);
        return -1;
    }
    return 0;
}

/* Send a status update with the acked position and write it all out by
 * deadline; a partly written earlier update is finished first (else this
 * one would not be queued). Return 0, 1 on timeout (nothing raised), or
 * -1 with an exception set. Lock not held. */
static RAISES_NEG int
send_status_written(readerObject *self, double deadline)
{
    int rv, pending;

    LOCK(self);
    pending = self->out_pending;
    UNLOCK(self);
    if (pending && (rv = flush_all(self->conn, self, deadline)) != 0) { return rv; }
    if (pq_send_status(self, 0) < 0) { return -1; }
    LOCK(self);
    pending = self->out_pending;
    UNLOCK(self);
    return pending ? flush_all(self->conn, self, deadline) : 0;
}

/* Before closing: send the acked position and write it out within
 * timeout seconds. Errors are not raised (the connection is closing);
 * return -1 only with an exception that must propagate (a signal
 * handler's). Lock not held. */
RAISES_NEG int
pq_final_status(readerObject *self, double timeout)
{
    if (!self->conn->pgconn || pq_in_child(self->conn) || !self->copying
            || PQstatus(self->conn->pgconn) != CONNECTION_OK) {
        return 0;
    }
    if (send_status_written(self, wire_monotonic() + timeout) < 0) {
        if (!PyErr_ExceptionMatches(pld_Error)) { return -1; }
        PyErr_Clear();
    }
    return 0;
}

/* End COPY BOTH from our side: send the acked position and CopyDone,
 * discard what the server still sends, and read the command's end, all
 * within timeout seconds.
 * Return 1 if the server did not finish in time (the caller should
 * close). Lock not held. */
RAISES_NEG int
pq_end_copy(readerObject *self, double timeout)
{
    double deadline = wire_monotonic() + timeout, left;
    char *buf = NULL;
    int len, rv, w;

    if (!self->conn->pgconn || !self->copying) { return 0; }
    if ((rv = send_status_written(self, deadline)) != 0) { return rv; }
    LOCK(self);
    if ((rv = PQputCopyEnd(self->conn->pgconn, NULL)) < 0) { self->copying = 0; }
    UNLOCK(self);
    if (rv < 0) {
        pq_raise(self->conn, NULL, NULL);
        return -1;
    }
    if ((rv = flush_all(self->conn, self, deadline)) != 0) { return rv; }
    for (;;) {
        LOCK(self);
        len = PQgetCopyData(self->conn->pgconn, &buf, 1);
        if (len < 0) { self->copying = 0; }
        UNLOCK(self);
        if (len > 0) {
            PQfreemem(buf);
            continue;
        }
        if (len == -1) { break; }
        if (len < -1) {
            pq_raise(self->conn, NULL, NULL);
            return -1;
        }
        if ((left = time_left(deadline)) == 0.0) { return 1; }
        if ((w = pq_stream_wait(self, 0, left)) < 0) { return -1; }
        if (w == PQ_WAIT_READY && pq_consume_input(self) < 0) {
            return -1;
        }
    }
    return copy_ended(self, deadline);
}


/* -- the non-blocking path --
 *
 * Used by the asyncio front end: the event loop waits on PQsocket() for
 * what each call asks (PQ_POLL_READ / PQ_POLL_WRITE) and calls again.
 * Nothing here waits, so nothing here releases the GIL. */

/* Start connecting (PQconnectStartParams); continue with pq_connect_poll()
 * after waiting for the socket to be writable. */
RAISES_NEG int
pq_connect_start(connectionObject *conn, const char *const *keys,
                 const char *const *values)
{
    PGconn *pgconn;

    if (!(pgconn = PQconnectStartParams(keys, values, 0))) {
        PyErr_NoMemory();
        return -1;
    }
    if (PQstatus(pgconn) == CONNECTION_BAD) {
        pq_raise_message(pld_OperationalError, PQerrorMessage(pgconn));
        PQfinish(pgconn);
        return -1;
    }
    conn->pgconn = pgconn;
    conn->owner_pid = getpid();
    conn->connecting = 1;
    if (conn->stream_opened) { conn->stream_opened(conn->stream); }
    return 0;
}

/* One step of PQconnectPoll(): PQ_POLL_OK once connected, else what to
 * wait for. On failure the connection is closed. The socket may change
 * between two steps (libpq tries the next address): ask for it again. */
RAISES_NEG int
pq_connect_poll(connectionObject *conn)
{
    if (!conn->pgconn || !conn->connecting) {
        PyErr_SetString(pld_InterfaceError, "no connection is being opened");
        return -1;
    }
    switch (PQconnectPoll(conn->pgconn)) {
    case PGRES_POLLING_READING:
        return PQ_POLL_READ;
    case PGRES_POLLING_WRITING:
        return PQ_POLL_WRITE;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(conn->pgconn, 1) != 0) { break; }
        conn->connecting = 0;
        return PQ_POLL_OK;
    default:
        break;
    }
    pq_raise_message(pld_OperationalError, PQerrorMessage(conn->pgconn));
    pq_close(conn);
    return -1;
}

/* PQflush(): 1 if data remains to send (wait until writable), 0 if not. */
RAISES_NEG int
pq_flush(connectionObject *conn)
{
    int rv;

    if (!conn->pgconn) {
        PyErr_SetString(pld_InterfaceError, "the connection is closed");
        return -1;
    }
    CONN_LOCK(conn);    /* the keepalive thread may be sending */
    rv = PQflush(conn->pgconn);
    CONN_UNLOCK(conn);
    if (rv < 0) {
        pq_raise(conn, NULL, NULL);
        return -1;
    }
    return rv;
}

/* pq_flush() for a stream: a status update queued in libpq counts as sent
 * once all written. */
RAISES_NEG int
pq_stream_flush(readerObject *self)
{
    int rv;

    if (!self->conn->pgconn) {
        PyErr_SetString(pld_InterfaceError, "the connection is closed");
        return -1;
    }
    LOCK(self);     /* the keepalive thread may be sending */
    if ((rv = PQflush(self->conn->pgconn)) == 0 && self->out_pending) {
        status_sent(self);
    }
    UNLOCK(self);
    if (rv < 0) {
        pq_raise(self->conn, NULL, NULL);
        return -1;
    }
    return rv;
}

/* Send a command (PQsendQuery); its results come with pq_poll_result().
 * copy: the command must start COPY BOTH (START_REPLICATION). Return 1 if
 * the command is not all sent yet (pq_flush() when writable). */
RAISES_NEG int
pq_send_query(connectionObject *conn, const char *command, int copy)
{
    if (pq_check_open(conn) < 0) { return -1; }
    if (check_idle(conn) < 0) { return -1; }
    if (!PQsendQuery(conn->pgconn, command)) {
        pq_raise(conn, NULL, NULL);
        return -1;
    }
    conn->cmd_running = 1;
    conn->cmd_copy = copy;
    return pq_flush(conn);
}

/* The final result of a command as Python: (names, rows), or True for
 * the start of COPY BOTH (the stream then takes over the connection:
 * pq_copy_started()). */
static PyObject *
command_result(connectionObject *conn, PGresult *res)
{
    ExecStatusType st;

    if (!res) {
        pq_raise(conn, NULL, NULL);
        return NULL;
    }
    st = PQresultStatus(res);
    if (st == PGRES_COPY_BOTH && conn->cmd_copy) {
        Py_RETURN_TRUE;
    }
    if (st == PGRES_COPY_BOTH || st == PGRES_COPY_IN || st == PGRES_COPY_OUT) {
        pq_close(conn);
        PyErr_SetString(pld_ProgrammingError,
            "the command started a COPY: use the streaming methods");
        return NULL;
    }
    if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE
            || st == PGRES_NONFATAL_ERROR) {
        pq_raise(conn, res, NULL);
        return NULL;
    }
    if (conn->cmd_copy) {
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
pq_poll_result(connectionObject *conn, PyObject **out)
{
    PGresult *next, *res;

    *out = NULL;
    if (!conn->pgconn || !conn->cmd_running) {
        PyErr_SetString(pld_InterfaceError, "no command is running");
        return -1;
    }
    if (!PQconsumeInput(conn->pgconn)) {
        pq_raise(conn, NULL, NULL);
        pq_close(conn);
        return -1;
    }
    for (;;) {
        if (PQisBusy(conn->pgconn)) { return 0; }
        if (!(next = PQgetResult(conn->pgconn))) { break; }
        PQclear(conn->cmd_result);
        conn->cmd_result = next;
        /* COPY BOTH: no further result comes until the copy ends */
        if (PQresultStatus(next) == PGRES_COPY_BOTH) { break; }
    }
    conn->cmd_running = 0;
    res = conn->cmd_result;
    conn->cmd_result = NULL;
    *out = command_result(conn, res);
    PQclear(res);
    return *out ? 1 : -1;
}

/* End COPY BOTH from our side without waiting: send the acked position
 * and CopyDone; continue with pq_end_copy_poll(). Return 1 if data
 * remains to send (pq_flush() when writable). */
RAISES_NEG int
pq_end_copy_start(readerObject *self)
{
    int rv;

    if (!self->conn->pgconn || !self->copying || self->ending_copy) { return 0; }
    LOCK(self);
    if (self->out_pending && PQflush(self->conn->pgconn) == 0) {
        status_sent(self);
    }
    /* no waiting here: the last update is queued behind a partly written
     * one, if any, and counts as sent with it */
    self->out_pending = 0;
    if ((rv = pq_send_status_nogil(self, 0)) == 0
            && PQputCopyEnd(self->conn->pgconn, NULL) < 0) {
        rv = -1;
    }
    if (rv < 0) { self->copying = 0; }
    UNLOCK(self);
    if (rv < 0) {
        pq_raise(self->conn, NULL, NULL);
        return -1;
    }
    self->ending_copy = 1;
    return pq_stream_flush(self);
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

    if (!self->conn->pgconn || !self->ending_copy) { return PQ_POLL_OK; }
    if (!PQconsumeInput(self->conn->pgconn)) { goto error; }
    while (self->copying) {
        len = PQgetCopyData(self->conn->pgconn, &buf, 1);
        if (len > 0) {
            PQfreemem(buf);
            continue;
        }
        if (len == 0) { return PQ_POLL_READ; }
        if (len < -1) { goto error; }
        self->copying = 0;          /* -1: the server's CopyDone */
    }
    for (;;) {
        if (PQisBusy(self->conn->pgconn)) { return PQ_POLL_READ; }
        if (!(res = PQgetResult(self->conn->pgconn))) { break; }
        switch (PQresultStatus(res)) {
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
            PQclear(res);
            break;
        default:
            /* keep the first error, raise it once the results are in */
            if (!self->conn->cmd_result) { self->conn->cmd_result = res; }
            else { PQclear(res); }
            break;
        }
        if (PQstatus(self->conn->pgconn) == CONNECTION_BAD) { break; }
    }
    self->ending_copy = 0;
    if ((res = self->conn->cmd_result)) {
        self->conn->cmd_result = NULL;
        pq_raise(self->conn, res, NULL);
        PQclear(res);
        return -1;
    }
    return PQ_POLL_OK;

error:
    self->copying = self->ending_copy = 0;
    pq_raise(self->conn, NULL, NULL);
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
