/* reader_type.c - the Reader base type: the replication stream on a Connection, its hot loop */

#include "reader.h"
#include "message.h"
#include "change.h"
#include "pqpath.h"
#include "wire.h"

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <structmember.h>

/* The keepalive thread's waits run on the monotonic clock, except on
 * macOS, which has no pthread_condattr_setclock(): there a clock change
 * can only lengthen or shorten one wait (pld.h). */
#ifdef PLD_NO_CONDATTR_SETCLOCK
#define KA_CLOCK CLOCK_REALTIME
#else
#define KA_CLOCK CLOCK_MONOTONIC
#endif

/* How long stop() lets the server finish the stream before closing */
#define END_COPY_TIMEOUT 5.0

static PyObject *event_name = NULL;     /* "event", interned */


/* -- helpers -- */

static RAISES_NEG int
lsn_from_object(PyObject *obj, lsn_t *out)
{
    if (PyLong_Check(obj)) {
        unsigned long long v = PyLong_AsUnsignedLongLong(obj);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) { return -1; }
        *out = (lsn_t)v;
        return 0;
    }
    if (PyUnicode_Check(obj)) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(obj, &len);
        if (!s) { return -1; }
        return wire_parse_lsn(s, len, out);
    }
    PyErr_Format(PyExc_TypeError,
        "an LSN must be an int or a str like '16/B374D848', got %s",
        Py_TYPE(obj)->tp_name);
    return -1;
}

/* Count a decoded commit and keep it (for stats()); GIL held. */
static void
note_commit(readerObject *self, PyObject *change)
{
    PyTypeObject *t;

    if (PyList_CheckExact(change)) {     /* wal2json format-version 1 */
        Py_ssize_t n = PyList_GET_SIZE(change);
        if (n == 0) { return; }
        change = PyList_GET_ITEM(change, n - 1);
    }
    t = Py_TYPE(change);
    if (t != change_types[CH_COMMIT] && t != change_types[CH_STREAM_COMMIT]
            && t != change_types[CH_COMMIT_PREPARED]) {
        return;
    }
    self->transactions++;
    Py_INCREF(change);
    Py_XSETREF(self->last_commit, change);
}

/* Set msg.change from the decoder, if any; lock not held. The decoder is
 * held for the call: the code it runs may replace reader.decoder. */
static RAISES_NEG int
decode(readerObject *self, messageObject *msg)
{
    PyObject *change, *decoder = self->decoder;

    if (!decoder || decoder == Py_None) { return 0; }
    Py_INCREF(decoder);
    change = PyObject_CallOneArg(decoder, (PyObject *)msg);
    Py_DECREF(decoder);
    if (!change) { return -1; }
    Py_XSETREF(msg->change, change);
    note_commit(self, change);
    return 0;
}

/* Record a message as delivered; lock held. */
static void
delivered(readerObject *self, messageObject *msg)
{
    self->received_lsn = msg->data_start;
    self->unacked = 1;
    if (msg->data_start > self->delivered_max) {
        self->delivered_max = msg->data_start;
    }
}


/* -- the keepalive thread --
 *
 * While Python code runs (a slow event(), another thread holding the GIL)
 * the loop cannot answer the server; this thread sends the status updates
 * instead, with the acked position only, so that wal_sender_timeout does
 * not drop the connection. It takes no GIL and uses libpq only under the
 * lock. */

static void *
ka_main(void *arg)
{
    readerObject *self = (readerObject *)arg;
    struct timespec ts;
    double interval;

    LOCK_NOGIL(self);
    while (!self->ka_quit) {
        interval = self->keepalive_interval;
        clock_gettime(KA_CLOCK, &ts);
        ts.tv_sec += (time_t)interval;
        ts.tv_nsec += (long)((interval - (double)(long)interval) * 1e9);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec += 1;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&self->cond, &self->conn->lock, &ts);
        if (self->ka_quit) { break; }
        if (self->copying
                && wire_monotonic() - self->last_status >= interval) {
            /* a failure shows up in the loop's next read */
            (void)pq_send_status_nogil(self, 0);
        }
    }
    UNLOCK(self);
    return NULL;
}

static RAISES_NEG int
ka_start(readerObject *self)
{
    sigset_t all, old;
    int err;

    if (self->ka_running || self->keepalive_interval <= 0) { return 0; }
    self->ka_quit = 0;
    /* The thread must never take a signal: Ctrl-C has to interrupt the
     * main thread's poll(). It inherits this mask. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&self->ka_thread, NULL, ka_main, self);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->ka_running = 1;
    return 0;
}

static void
ka_stop(readerObject *self)
{
    if (!self->ka_running) { return; }
    LOCK(self);
    self->ka_quit = 1;
    pthread_cond_signal(&self->cond);
    UNLOCK(self);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(self->ka_thread, NULL);
    Py_END_ALLOW_THREADS
    self->ka_running = 0;
}


/* -- the stream loop -- */

/* Batching (see pq_set_batching()): after BATCH_AFTER wake-ups in a row
 * that brought messages, each less than BATCH_GAP seconds after the one
 * before, the server is streaming a backlog: each wait then lasts until a
 * buffer full of data has arrived or BATCH_DELAY seconds have passed, so
 * that a wake-up serves hundreds of messages rather than a handful (the
 * loop reads what the socket holds before it waits again). A wait
 * that brings fewer than BATCH_MIN messages ends it. A live stream, a few
 * transactions at a time, does not batch and waits no longer than before:
 * a transaction's messages arrive in fewer than BATCH_AFTER wake-ups.
 *
 * Quick wake-ups alone do not tell a backlog: a live stream catching up
 * after its consumer stalled has them too, and batching would then delay
 * the live changes that follow. So the loop batches only while the server
 * is known to be ahead: backlog_end, the server's WAL position when the
 * stream started (set by the front ends, see rules.backlog_end()), lies
 * more than BATCH_AHEAD bytes of WAL beyond everything delivered. (The
 * stream itself does not say: a logical XLogData's walEnd is its own
 * dataStart, and keepalives come only when the server has caught up.)
 *
 * A Unix socket ignores SO_RCVLOWAT: while batching, the loop pauses for
 * BATCH_PAUSE before each wait instead (never with the lock held), so
 * that the backlog accumulates in the socket meanwhile. Since only a
 * backlog batches, the delay a batched wait adds (at most BATCH_DELAY or
 * BATCH_PAUSE) falls on changes that were already late, never on live
 * ones. 0.2 ms lets about a hundred messages gather (the server's socket
 * buffer holds a few hundred small ones: its limit counts each message's
 * kernel buffer, not its bytes). Longer pauses save little, since there
 * the kernel's cost per message, not per wake-up, is most of the CPU, and
 * they stall the server once its buffer fills: 1 ms and 3 ms spent 1-11%
 * less CPU and made the drain about 1.5x and 3x longer; 0.3 ms already
 * made pgoutput drains 2-10% longer than pg_recvlogical's in quiet runs,
 * where 0.2 ms kept them at 0.98-1.00x for about 5% more CPU
 * (bench/bench_unix_floor.py; bench/README.md, "Where the Unix socket's
 * CPU goes").
 *
 * One rule for both loops: the C stream loop calls batch_before_wait()
 * before each wait, AsyncReader through _batch_before_wait(). */
#define BATCH_GAP 0.0002
#define BATCH_AFTER 16
#define BATCH_DELAY 0.002
#ifndef BATCH_PAUSE
#define BATCH_PAUSE 0.0002
#endif
#define BATCH_MIN 8
#define BATCH_AHEAD 65536

/* Batching off, its state reset (a stream starts or ends). */
static void
batch_reset(readerObject *self)
{
    if (self->batching) { (void)pq_set_batching(self->conn, 0); }
    self->batching = self->batch_quick = self->batch_pauses = 0;
    self->batch_seen = self->messages;
    self->batch_last = 0.0;
}

/* Called before each wait for the socket while streaming, at `now`:
 * applies the rule; returns the longest the wait may last (seconds, < 0:
 * no bound) and sets *pause to how long to pause before it (0: none). */
static double
batch_before_wait(readerObject *self, double now, double *pause)
{
    double gap = now - self->batch_last;
    int64_t got = self->messages - self->batch_seen;

    self->batch_last = now;
    self->batch_seen = self->messages;
    self->waits++;
    *pause = 0.0;
    if (self->backlog_end < BATCH_AHEAD
            || self->delivered_max > self->backlog_end - BATCH_AHEAD) {
        /* not known to be ahead: live, or the backlog's last bytes */
        if (self->batching) { (void)pq_set_batching(self->conn, 0); }
        self->batching = self->batch_quick = self->batch_pauses = 0;
        return -1.0;
    }
    if (self->batching) {
        if (got < BATCH_MIN) {
            self->batching = self->batch_quick = self->batch_pauses = 0;
            (void)pq_set_batching(self->conn, 0);
            return -1.0;
        }
    }
    else if (got > 0 && gap < BATCH_GAP) {
        if (++self->batch_quick < BATCH_AFTER) { return -1.0; }
        self->batching = 1;
        self->batch_pauses = !pq_set_batching(self->conn, 1);
    }
    else {
        self->batch_quick = 0;
        return -1.0;
    }
    self->batch_waits++;
    if (self->batch_pauses) {
        self->pauses++;
        *pause = BATCH_PAUSE;
    }
    return BATCH_DELAY;
}

/* Liveness, one copy for both front ends (the loop below; AsyncReader
 * through _liveness_before()/_liveness_after()): a server that says
 * nothing for half of recv_timeout is asked for a reply; silence for all
 * of it means the network or the server is gone (a dead peer may never
 * reset the TCP connection). */

static void
liveness_reset(readerObject *self)
{
    self->live_quiet_since = 0.0;
    self->live_pinged = 0;
    self->live_seen = self->messages;
}

/* Before a wait at `now`: lower *wait to when something is due; ask for
 * a reply, or raise ConnectionLost. */
static RAISES_NEG int
liveness_before_wait(readerObject *self, double now, double *wait)
{
    double idle, left;

    if (self->messages > self->live_seen) {
        /* received since the last wait (batching: read after a timeout) */
        self->live_quiet_since = 0.0;
        self->live_pinged = 0;
    }
    if (self->recv_timeout <= 0) { return 0; }
    if (self->live_quiet_since == 0.0) { self->live_quiet_since = now; }
    idle = now - self->live_quiet_since;
    if (idle >= self->recv_timeout) {
        PyErr_Format(pld_ConnectionLost,
            "no message from the server for %d s: the connection "
            "is presumed dead", (int)idle);
        return -1;
    }
    if (!self->live_pinged && idle >= self->recv_timeout / 2) {
        if (pq_send_status(self, 1) < 0) { return -1; }
        self->live_pinged = 1;
    }
    left = (self->live_pinged ? self->recv_timeout : self->recv_timeout / 2)
        - idle;
    if (*wait < 0 || *wait > left) { *wait = left; }
    return 0;
}

/* After a wait; ready: the socket became readable. */
static void
liveness_after_wait(readerObject *self, int ready)
{
    self->live_seen = self->messages;
    if (ready) {
        self->live_quiet_since = 0.0;
        self->live_pinged = 0;
    }
}

/* Deliver messages to event() until stop() is asked for (return 0), the
 * server ends the stream (1) or an error (-1, exception set).
 *
 * self.event is looked up once, when the stream starts: the bound method
 * is then called through vectorcall, without a lookup per message. */
static RAISES_NEG int
stream_loop(readerObject *self)
{
    PyObject *msg = NULL, *res, *event;
    PyObject *args[2];
    double now, wait, cap, pause;
    int rv, w, read_ahead = 0;

    if (!(event = PyObject_GetAttr((PyObject *)self, event_name))) {
        return -1;
    }
    batch_reset(self);
    liveness_reset(self);
    /* The lock is taken inside each step, for its C part only: see the
     * rule in reader.h. received_lsn and server_wal_end are written by
     * this thread only, which reads them without it. */
    for (;;) {
        if (self->stop_requested) { rv = 0; break; }

        rv = pq_read_message(self, &msg);
        if (rv < 0) { break; }
        if (rv == PQ_MSG_END) { rv = 1; break; }

        if (rv == PQ_MSG_DATA) {
            messageObject *m = (messageObject *)msg;
            read_ahead = 0;
            if (self->until_lsn && m->data_start > self->until_lsn) {
                Py_DECREF(msg);
                rv = 0;
                break;
            }
            LOCK(self);
            delivered(self, m);
            UNLOCK(self);
            if (decode(self, m) < 0) { res = NULL; }
            else {
                /* args[0] is scratch room for a bound method's self */
                args[1] = msg;
                res = PyObject_Vectorcall(event, args + 1,
                    1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            }
            Py_DECREF(msg);
            if (!res) { rv = -1; break; }
            Py_DECREF(res);
            if (self->until_lsn && self->received_lsn >= self->until_lsn) {
                rv = 0;
                break;
            }
            continue;
        }

        /* Nothing left in the buffer: send what is due, then wait. */
        if (self->until_lsn && self->server_wal_end >= self->until_lsn
                && self->received_lsn < self->until_lsn) {
            /* the server has nothing for us up to until_lsn */
            rv = 0;
            break;
        }
        now = wire_monotonic();
        if (pq_send_status_if_due(self, now) < 0) { rv = -1; break; }
        if (self->batching && !read_ahead) {
            /* A backlog: libpq reads at most its buffer (16 kB) at a
             * time and more is likely waiting in the socket: read it
             * before paying for a wait (a recv() that finds nothing
             * costs less than a wake-up). */
            read_ahead = 1;
            if (pq_consume_input(self) < 0) { rv = -1; break; }
            continue;
        }
        read_ahead = 0;
        cap = batch_before_wait(self, now, &pause);
        LOCK(self);
        wait = self->last_status + self->status_interval - now;
        UNLOCK(self);
        if (wait < 0) { wait = 0; }
        if (cap >= 0 && wait > cap) { wait = cap; }
        if (liveness_before_wait(self, now, &wait) < 0) { rv = -1; break; }
        if (pause > 0 && wait > 0) { pq_pause(pause); }
        LOCK(self);
        self->polling = 1;
        UNLOCK(self);
        w = pq_stream_wait(self, 0, wait);
        LOCK(self);
        self->polling = 0;
        UNLOCK(self);
        liveness_after_wait(self, w == PQ_WAIT_READY);
        if (w < 0) { rv = -1; break; }
        /* batching: on timeout, take what arrived, however little */
        if ((w == PQ_WAIT_READY || (cap >= 0 && w == PQ_WAIT_TIMEOUT))
                && pq_consume_input(self) < 0) {
            rv = -1;
            break;
        }
    }
    batch_reset(self);
    Py_DECREF(event);
    return rv;
}

/* End the stream after an error: confirm the acked position, close the
 * connection (the slot is released), keep the original exception. */
static void
abort_stream(readerObject *self)
{
    PyObject *type, *value, *tb;

    PyErr_Fetch(&type, &value, &tb);
    if (pq_final_status(self, END_COPY_TIMEOUT) < 0) {
        /* a signal handler raised while writing: the original error wins */
        PyErr_Clear();
    }
    pq_close(self->conn);
    PyErr_Restore(type, value, tb);
}

#define stream_doc \
"_stream(until_lsn=0)\n\n" \
"Run the stream loop: call `event()` for every message until `stop()`.\n\n" \
"Called by `Reader.start()` after `start_copy()`. Returns normally after\n" \
"`stop()` with the stream ended and the connection open; on any error the\n" \
"acked position is sent, the connection closed and the error raised."

static PyObject *
reader_stream(readerObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"until_lsn", NULL};
    PyObject *ountil = Py_None;
    int rv;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O", kwlist, &ountil)) {
        return NULL;
    }
    if (pq_check_open(self->conn) < 0) { return NULL; }
    if (!self->copying) {
        PyErr_SetString(pld_ProgrammingError,
            "the stream is not started: call start_copy() first");
        return NULL;
    }
    if (self->streaming) {
        PyErr_SetString(pld_ProgrammingError, "the stream loop is already running");
        return NULL;
    }
    self->until_lsn = 0;
    if (ountil != Py_None && lsn_from_object(ountil, &self->until_lsn) < 0) {
        return NULL;
    }

    self->streaming = 1;
    if (ka_start(self) < 0) {
        self->streaming = 0;
        return NULL;
    }
    rv = stream_loop(self);
    ka_stop(self);

    if (rv == 0) {
        /* stop(): confirm the acks, then end the copy politely */
        int e = pq_end_copy(self, END_COPY_TIMEOUT);
        if (e < 0) { rv = -1; }
        else if (e > 0) { pq_close(self->conn); }
    }
    else if (rv == 1) {
        PyErr_SetString(pld_ConnectionLost,
            "the server ended the replication stream (is it shutting down?)");
        rv = -1;
    }
    self->streaming = 0;
    self->stop_requested = 0;
    if (rv < 0) {
        abort_stream(self);
        return NULL;
    }
    Py_RETURN_NONE;
}


/* -- methods -- */

#define execute_doc \
"execute(command, timeout=None) -> (names, rows)\n\n" \
"`Connection.execute()` on `connection`, refused while streaming (kept\n" \
"for the callers of the reader's own method)."

static PyObject *
reader_execute(readerObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"command", "timeout", NULL};
    const char *command;
    PyObject *otimeout = Py_None;
    double timeout;
    PyObject *rv;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|O", kwlist,
            &command, &otimeout)) {
        return NULL;
    }
    if (conn_timeout_from_object(otimeout, &timeout) < 0) { return NULL; }
    if (pq_check_open(self->conn) < 0) { return NULL; }
    if (self->copying) {
        PyErr_SetString(pld_ProgrammingError,
            "cannot run a command while the stream is running");
        return NULL;
    }
    self->conn->stream_command = 1;     /* stop() ends its wait */
    rv = pq_execute(self->conn, command, timeout);
    self->conn->stream_command = 0;
    return rv;
}

#define start_copy_doc \
"start_copy(command, timeout=None)\n\n" \
"Send a START_REPLICATION command and enter the COPY BOTH stream.\n" \
"Then use `_stream()` (the loop calling `event()`) or the non-blocking\n" \
"primitives `read_message()`, `send_feedback()` and `fileno()`.\n" \
"`timeout` as for `execute()`."

static PyObject *
reader_start_copy(readerObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"command", "timeout", NULL};
    const char *command;
    PyObject *otimeout = Py_None;
    double timeout;
    int rv;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|O", kwlist,
            &command, &otimeout)) {
        return NULL;
    }
    if (conn_timeout_from_object(otimeout, &timeout) < 0) { return NULL; }
    if (pq_check_open(self->conn) < 0) { return NULL; }
    self->stop_requested = 0;
    self->conn->stream_command = 1;     /* stop() ends its wait */
    rv = pq_start_copy(self, command, timeout);
    self->conn->stream_command = 0;
    if (rv < 0) { return NULL; }
    LOCK(self);
    self->last_status = wire_monotonic();
    UNLOCK(self);
    Py_RETURN_NONE;
}

#define read_message_doc \
"read_message() -> Message, None or False\n\n" \
"Non-blocking: return the next message if the server has sent one, else\n" \
"None (then wait until `fileno()` is readable); False once `until_lsn` is\n" \
"reached (a message past it is not delivered). Keepalives are answered\n" \
"and due status updates sent on the way. A returned message counts as\n" \
"delivered: `ack()` without argument covers it."

static PyObject *
reader_read_message(readerObject *self, PyObject *dummy)
{
    PyObject *msg = NULL;
    int rv, attempt;

    if (pq_check_open(self->conn) < 0) { return NULL; }
    if (!self->copying) {
        PyErr_SetString(pld_ProgrammingError, "the stream is not started");
        return NULL;
    }
    /* until_lsn and received_lsn are written by the Python side only
     * (with the GIL): read without the lock */
    if (self->until_lsn && self->received_lsn >= self->until_lsn) {
        Py_RETURN_FALSE;        /* delivered up to until_lsn */
    }
    for (attempt = 0; attempt < 2; attempt++) {
        rv = pq_read_message(self, &msg);
        if (rv != PQ_MSG_NONE || attempt) { break; }
        if (pq_consume_input(self) < 0) { rv = -1; break; }
    }
    if (rv == PQ_MSG_DATA && self->until_lsn
            && ((messageObject *)msg)->data_start > self->until_lsn) {
        /* past the end: not delivered, the stream is over */
        Py_DECREF(msg);
        Py_RETURN_FALSE;
    }
    if (rv == PQ_MSG_DATA) {
        LOCK(self);
        delivered(self, (messageObject *)msg);
        UNLOCK(self);
    }
    else if (rv == PQ_MSG_NONE) {
        if (self->until_lsn && self->server_wal_end >= self->until_lsn
                && self->received_lsn < self->until_lsn) {
            /* the server has nothing for us up to until_lsn */
            Py_RETURN_FALSE;
        }
        if (pq_send_status_if_due(self, wire_monotonic()) < 0) { rv = -1; }
    }

    if (rv == PQ_MSG_DATA && decode(self, (messageObject *)msg) < 0) {
        Py_DECREF(msg);
        return NULL;
    }
    if (rv < 0) { return NULL; }
    if (rv == PQ_MSG_END) {
        PyErr_SetString(pld_ConnectionLost,
            "the server ended the replication stream (is it shutting down?)");
        return NULL;
    }
    if (rv == PQ_MSG_NONE) { Py_RETURN_NONE; }
    return msg;
}

/* read_message() for the C fast path of the asyncio front end (aiter) */
PyObject *
reader_read_message_nb(readerObject *self)
{
    return reader_read_message(self, NULL);
}

#define send_feedback_doc \
"send_feedback(reply=False)\n\n" \
"Send a standby status update now: the acked position as flushed.\n" \
"`reply=True` asks the server to answer with a keepalive."

static PyObject *
reader_send_feedback(readerObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"reply", NULL};
    int reply = 0, rv;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|p", kwlist, &reply)) {
        return NULL;
    }
    if (pq_check_open(self->conn) < 0) { return NULL; }
    if (!self->copying) {
        PyErr_SetString(pld_ProgrammingError, "the stream is not started");
        return NULL;
    }
    if ((rv = pq_send_status(self, reply)) < 0) { return NULL; }
    Py_RETURN_NONE;
}

#define end_copy_doc \
"end_copy(timeout=5.0) -> bool\n\n" \
"End the stream from our side (CopyDone) after sending the acked position;\n" \
"wait up to `timeout` seconds for the server to finish, discarding what\n" \
"it still sends. Return False (and close the connection) on timeout."

static PyObject *
reader_end_copy(readerObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"timeout", NULL};
    double timeout = END_COPY_TIMEOUT;
    int rv;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|d", kwlist, &timeout)) {
        return NULL;
    }
    if (self->streaming) {
        PyErr_SetString(pld_ProgrammingError,
            "the stream loop is running: call stop()");
        return NULL;
    }
    if (!self->conn->pgconn || !self->copying) { Py_RETURN_TRUE; }
    if (pq_in_child(self->conn)) {
        PyErr_SetString(pld_InterfaceError, "the connection belongs to "
            "the parent process (opened before fork())");
        return NULL;
    }
    if ((rv = pq_end_copy(self, timeout)) < 0) { return NULL; }
    if (rv > 0) {
        pq_close(self->conn);
        Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

#define ack_doc \
"ack(lsn=None)\n\n" \
"Confirm to the server everything up to `lsn` (an int or 'X/Y' str), by\n" \
"default up to the last message delivered. Never moves backwards; an LSN\n" \
"beyond what was delivered is refused, and so is an ack outside the\n" \
"stream. Sent before the loop next waits, at the latest when the stream\n" \
"ends or the connection closes."

static PyObject *
reader_ack(readerObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"lsn", NULL};
    PyObject *olsn = Py_None;
    lsn_t lsn;
    int wake = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O", kwlist, &olsn)) {
        return NULL;
    }
    if (!self->copying) {
        PyErr_SetString(pld_InterfaceError, "ack() outside the stream: "
            "call it from event() or while start() runs, so that it can "
            "reach the server");
        return NULL;
    }
    LOCK(self);
    lsn = self->received_lsn;
    UNLOCK(self);
    if (olsn != Py_None && lsn_from_object(olsn, &lsn) < 0) { return NULL; }

    LOCK(self);
    if (lsn > self->delivered_max) {
        char a[LSN_BUFSIZE], b[LSN_BUFSIZE];
        wire_format_lsn(a, sizeof(a), lsn);
        wire_format_lsn(b, sizeof(b), self->delivered_max);
        UNLOCK(self);
        PyErr_Format(pld_ProgrammingError,
            "cannot ack %s: beyond the last message delivered (%s)", a, b);
        return NULL;
    }
    if (lsn >= self->received_lsn) {
        self->unacked = 0;      /* every delivered message is acked */
    }
    if (lsn > self->flushed_lsn) {
        self->flushed_lsn = lsn;
        self->feedback_pending = 1;
        self->acks++;
        wake = self->polling;
    }
    UNLOCK(self);
    if (wake) { pq_wake_up(self->conn); }
    Py_RETURN_NONE;
}

#define stop_doc \
"stop()\n\n" \
"Ask the stream loop to end: `_stream()` returns after the current\n" \
"`event()`. A command waiting for its answer (`execute()`,\n" \
"`start_copy()`) ends at once with CommandInterrupted, the connection\n" \
"closed. Safe from `event()`, another thread or a signal handler."

static PyObject *
reader_stop(readerObject *self, PyObject *dummy)
{
    self->stop_requested = 1;
    if (self->conn->in_command && self->conn->stream_command) {
        self->conn->interrupt_command = 1;
    }
    pq_wake_up(self->conn);
    Py_RETURN_NONE;
}

#define close_doc \
"close()\n\n" \
"Close the connection (a temporary slot disappears with it). Not while\n" \
"the stream loop runs: stop it first. While a command waits for its\n" \
"answer (in another thread, or under this signal handler), ask it to\n" \
"end: it raises CommandInterrupted and closes the connection at once."

static PyObject *
reader_close(readerObject *self, PyObject *dummy)
{
    int rv;

    if (self->conn->in_command) {
        /* the waiting command owns the connection until it returns */
        self->conn->interrupt_command = 1;
        pq_wake_up(self->conn);
        Py_RETURN_NONE;
    }

    if (self->streaming) {
        PyErr_SetString(pld_ProgrammingError,
            "the stream loop is running: call stop() first");
        return NULL;
    }
    ka_stop(self);      /* the non-blocking path runs it outside _stream() */
    rv = pq_final_status(self, END_COPY_TIMEOUT);
    pq_close(self->conn);
    if (rv < 0) { return NULL; }
    Py_RETURN_NONE;
}

#define fileno_doc \
"fileno() -> int\n\nThe connection's socket, to wait on for readability."

static PyObject *
reader_fileno(readerObject *self, PyObject *dummy)
{
    int fd;

    /* not pq_check_open(): the socket is wanted while connecting too */
    if (!self->conn->pgconn) {
        PyErr_SetString(pld_InterfaceError, "the connection is closed");
        return NULL;
    }
    if ((fd = PQsocket(self->conn->pgconn)) < 0) {
        PyErr_SetString(pld_ConnectionLost,
            "the connection has no socket (it was lost)");
        return NULL;
    }
    return PyLong_FromLong((long)fd);
}


/* -- the non-blocking path (asyncio) --
 *
 * The caller's event loop waits on `fileno()` for what each call asks for;
 * no call here waits. See pylogicaldecoding/aio.py. */

#define start_copy_send_doc \
"_start_copy_send(command) -> bool\n\n" \
"`start_copy()` without waiting: send START_REPLICATION; then call\n" \
"`_start_copy_poll()` as `fileno()` becomes readable. True: the command\n" \
"is not all sent yet, call `connection.flush()` when writable."

static PyObject *
reader_start_copy_send(readerObject *self, PyObject *args)
{
    const char *command;
    int rv;

    if (!PyArg_ParseTuple(args, "s", &command)) { return NULL; }
    if (pq_check_open(self->conn) < 0) { return NULL; }
    if (self->copying) {
        PyErr_SetString(pld_ProgrammingError, "the stream is already running");
        return NULL;
    }
    if ((rv = pq_send_query(self->conn, command, 1)) < 0) { return NULL; }
    return PyBool_FromLong(rv);
}

#define start_copy_poll_doc \
"_start_copy_poll() -> None or True\n\n" \
"Read what arrived for the command sent by `_start_copy_send()`: None if\n" \
"more must arrive (wait until `fileno()` is readable), True once the COPY\n" \
"BOTH stream has started."

static PyObject *
reader_start_copy_poll(readerObject *self, PyObject *dummy)
{
    PyObject *out = NULL;
    int rv;

    if (self->conn->cmd_running && !self->conn->cmd_copy) {
        PyErr_SetString(pld_ProgrammingError, "the command running is not "
            "START_REPLICATION: use connection.poll_result()");
        return NULL;
    }
    if ((rv = pq_poll_result(self->conn, &out)) < 0) { return NULL; }
    if (rv == 0) { Py_RETURN_NONE; }
    if (out == Py_True) { pq_copy_started(self); }
    return out;
}

#define flush_doc \
"_flush() -> bool\n\n" \
"`connection.flush()` for the stream: a status update queued in libpq\n" \
"counts as sent once all written. True if data remains to send."

static PyObject *
reader_flush(readerObject *self, PyObject *dummy)
{
    int rv;
    if ((rv = pq_stream_flush(self)) < 0) { return NULL; }
    return PyBool_FromLong(rv);
}

#define end_copy_start_doc \
"_end_copy_start() -> bool\n\n" \
"Send the acked position and CopyDone without waiting; then call\n" \
"`_end_copy_poll()` as `fileno()` becomes readable. True: call `_flush()`\n" \
"when writable."

static PyObject *
reader_end_copy_start(readerObject *self, PyObject *dummy)
{
    int rv;
    ka_stop(self);
    if ((rv = pq_end_copy_start(self)) < 0) { return NULL; }
    return PyBool_FromLong(rv);
}

#define end_copy_poll_doc \
"_end_copy_poll() -> bool\n\n" \
"Discard what the server still streams and read the end of the command:\n" \
"True once the stream has ended, False to wait until readable."

static PyObject *
reader_end_copy_poll(readerObject *self, PyObject *dummy)
{
    int rv;
    if ((rv = pq_end_copy_poll(self)) < 0) { return NULL; }
    return PyBool_FromLong(rv == PQ_POLL_OK);
}

#define liveness_doc \
"_liveness_before() -> float; _liveness_after(ready); _liveness_reset()\n\n" \
"The liveness rule of the stream loop, for a front end that waits itself\n" \
"(asyncio): before waiting, `_liveness_before()` asks a server silent for\n" \
"half of recv_timeout for a reply, raises ConnectionLost after all of it,\n" \
"and returns the longest the wait may last (-1: no bound); after it,\n" \
"`_liveness_after(ready)`. `_liveness_reset()` when a stream starts."

static PyObject *
reader_liveness_before(readerObject *self, PyObject *dummy)
{
    double wait = -1.0;
    if (pq_check_open(self->conn) < 0) { return NULL; }
    if (liveness_before_wait(self, wire_monotonic(), &wait) < 0) {
        return NULL;
    }
    return PyFloat_FromDouble(wait);
}

static PyObject *
reader_liveness_after(readerObject *self, PyObject *args)
{
    int ready;
    if (!PyArg_ParseTuple(args, "p", &ready)) { return NULL; }
    liveness_after_wait(self, ready);
    Py_RETURN_NONE;
}

static PyObject *
reader_liveness_reset(readerObject *self, PyObject *dummy)
{
    liveness_reset(self);
    Py_RETURN_NONE;
}

#define keepalive_doc \
"_keepalive(on)\n\n" \
"Start (or stop) the keepalive thread outside `_stream()`: it sends a\n" \
"status update every `keepalive_interval` seconds while the caller does\n" \
"something else (an asyncio consumer awaiting something slow)."

static PyObject *
reader_keepalive(readerObject *self, PyObject *args)
{
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) { return NULL; }
    if (!on) {
        ka_stop(self);
        Py_RETURN_NONE;
    }
    if (!self->copying) {
        PyErr_SetString(pld_ProgrammingError, "the stream is not started");
        return NULL;
    }
    if (ka_start(self) < 0) { return NULL; }
    Py_RETURN_NONE;
}

#define set_batching_doc \
"_set_batching(on)\n\n" \
"Ask the kernel not to report the socket readable before a buffer full of\n" \
"data has arrived (SO_RCVLOWAT, see pq_set_batching()); the caller bounds\n" \
"its waits meanwhile. Off (before any other wait) also resets the state of\n" \
"the batching rule (see `_batch_before_wait()`)."

static PyObject *
reader_set_batching(readerObject *self, PyObject *args)
{
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) { return NULL; }
    if (!self->conn->pgconn) {
        PyErr_SetString(pld_InterfaceError, "the connection is closed");
        return NULL;
    }
    if (on) { (void)pq_set_batching(self->conn, 1); }
    else {
        self->batching = 1;     /* batch_reset() sets the socket back */
        batch_reset(self);
    }
    Py_RETURN_NONE;
}

#define batch_before_wait_doc \
"_batch_before_wait() -> (cap, pause)\n\n" \
"The batching rule of the C stream loop, for a loop written elsewhere\n" \
"(AsyncReader): call it before each wait for the socket while streaming.\n" \
"`cap`: the longest the wait may last (seconds), or None; `pause`: seconds\n" \
"to sleep before waiting (a Unix socket while batching), else 0.0. While\n" \
"`cap` is not None a wait that times out must still read what arrived.\n" \
"`_set_batching(False)` resets the rule when the stream ends."

static PyObject *
reader_batch_before_wait(readerObject *self, PyObject *dummy)
{
    double cap, pause;
    if (!self->conn->pgconn) {
        PyErr_SetString(pld_InterfaceError, "the connection is closed");
        return NULL;
    }
    cap = batch_before_wait(self, wire_monotonic(), &pause);
    if (cap < 0) { return Py_BuildValue("(Od)", Py_None, pause); }
    return Py_BuildValue("(dd)", cap, pause);
}


/* -- attributes -- */

static PyObject *
connection_get(readerObject *self, void *closure)
{
    Py_INCREF(self->conn);
    return (PyObject *)self->conn;
}

static PyObject *
closed_get(readerObject *self, void *closure)
{
    return PyBool_FromLong(self->conn->pgconn == NULL);
}

static PyObject *
copying_get(readerObject *self, void *closure)
{
    return PyBool_FromLong(self->copying);
}

static PyObject *
streaming_get(readerObject *self, void *closure)
{
    return PyBool_FromLong(self->streaming);
}

static PyObject *
server_version_get(readerObject *self, void *closure)
{
    if (pq_check_open(self->conn) < 0) { return NULL; }
    return PyLong_FromLong(PQserverVersion(self->conn->pgconn));
}

static PyObject *
backend_pid_get(readerObject *self, void *closure)
{
    if (pq_check_open(self->conn) < 0) { return NULL; }
    return PyLong_FromLong(PQbackendPID(self->conn->pgconn));
}

#define LSN_GETTER(field) \
static PyObject * \
field ## _get(readerObject *self, void *closure) \
{ \
    lsn_t v; \
    LOCK(self); \
    v = self->field; \
    UNLOCK(self); \
    return PyLong_FromUnsignedLongLong(v); \
}

static PyObject *
status_count_get(readerObject *self, void *closure)
{
    int64_t v;
    LOCK(self);
    v = self->status_count;
    UNLOCK(self);
    return PyLong_FromLongLong((long long)v);
}

LSN_GETTER(flushed_lsn)
LSN_GETTER(until_lsn)
LSN_GETTER(received_lsn)
LSN_GETTER(server_wal_end)
LSN_GETTER(sent_flushed_lsn)

static int
until_lsn_set(readerObject *self, PyObject *value, void *closure)
{
    lsn_t v = 0;
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete until_lsn");
        return -1;
    }
    if (value != Py_None && lsn_from_object(value, &v) < 0) { return -1; }
    if (self->streaming) {
        PyErr_SetString(pld_ProgrammingError,
            "cannot change until_lsn while the stream loop runs");
        return -1;
    }
    LOCK(self);
    self->until_lsn = v;
    UNLOCK(self);
    return 0;
}

LSN_GETTER(backlog_end)

static int
backlog_end_set(readerObject *self, PyObject *value, void *closure)
{
    lsn_t v = 0;
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete backlog_end");
        return -1;
    }
    if (value != Py_None && lsn_from_object(value, &v) < 0) { return -1; }
    if (self->streaming) {
        PyErr_SetString(pld_ProgrammingError,
            "cannot change backlog_end while the stream loop runs");
        return -1;
    }
    LOCK(self);
    self->backlog_end = v;
    UNLOCK(self);
    return 0;
}

static PyObject *
confirm_keepalives_get(readerObject *self, void *closure)
{
    return PyBool_FromLong(self->confirm_keepalives);
}

static int
confirm_keepalives_set(readerObject *self, PyObject *value, void *closure)
{
    int v;
    if (!value) {
        PyErr_SetString(PyExc_AttributeError,
                        "cannot delete confirm_keepalives");
        return -1;
    }
    if ((v = PyObject_IsTrue(value)) < 0) { return -1; }
    LOCK(self);
    self->confirm_keepalives = v;
    UNLOCK(self);
    return 0;
}

static PyObject *
binary_get(readerObject *self, void *closure)
{
    return PyBool_FromLong(self->binary);
}

static int
binary_set(readerObject *self, PyObject *value, void *closure)
{
    int v;
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete binary");
        return -1;
    }
    if ((v = PyObject_IsTrue(value)) < 0) { return -1; }
    self->binary = v;
    return 0;
}

static int
interval_set(readerObject *self, PyObject *value, double *field,
             int allow_zero)
{
    double v;
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete this attribute");
        return -1;
    }
    v = PyFloat_AsDouble(value);
    if (v == -1.0 && PyErr_Occurred()) { return -1; }
    if (!(v > 0.0 || (allow_zero && v == 0.0)) || v > 86400.0) {
        PyErr_Format(PyExc_ValueError,
            "interval must be %s 0 and at most 86400 seconds, got %R",
            allow_zero ? "at least" : "more than", value);
        return -1;
    }
    LOCK(self);
    *field = v;
    UNLOCK(self);
    return 0;
}

static PyObject *
status_interval_get(readerObject *self, void *closure)
{
    return PyFloat_FromDouble(self->status_interval);
}

static int
status_interval_set(readerObject *self, PyObject *value, void *closure)
{
    return interval_set(self, value, &self->status_interval, 0);
}

static PyObject *
recv_timeout_get(readerObject *self, void *closure)
{
    return PyFloat_FromDouble(self->recv_timeout);
}

static int
recv_timeout_set(readerObject *self, PyObject *value, void *closure)
{
    return interval_set(self, value, &self->recv_timeout, 1);
}

static PyObject *
keepalive_interval_get(readerObject *self, void *closure)
{
    return PyFloat_FromDouble(self->keepalive_interval);
}

static int
keepalive_interval_set(readerObject *self, PyObject *value, void *closure)
{
    if (self->streaming) {
        PyErr_SetString(pld_ProgrammingError,
            "cannot change keepalive_interval while streaming");
        return -1;
    }
    return interval_set(self, value, &self->keepalive_interval, 1);
}


/* -- object life -- */

/* The connection's hooks (see connection.h): a new connection starts a
 * new stream's positions; a closed one has no stream. */
static void
stream_opened(void *stream)
{
    readerObject *self = (readerObject *)stream;

    self->received_lsn = self->delivered_max = 0;
    self->unacked = 0;
    self->server_wal_end = 0;
}

/* Lock held (or a forked child): plain C only. */
static void
stream_closed(void *stream)
{
    readerObject *self = (readerObject *)stream;

    self->copying = 0;
    self->out_pending = 0;
    self->ending_copy = 0;
}

/* The connection (which has the lock) and the keepalive thread's
 * condition; raise on failure. */
static RAISES_NEG int
sync_init(readerObject *self)
{
    pthread_condattr_t attr;
    int err;

    if (!(self->conn = (connectionObject *)PyObject_CallNoArgs(
            (PyObject *)&connectionType))) {
        return -1;
    }
    self->conn->stream = self;
    self->conn->stream_opened = stream_opened;
    self->conn->stream_closed = stream_closed;
    if ((err = pthread_condattr_init(&attr))) { goto fail; }
#ifndef PLD_NO_CONDATTR_SETCLOCK
    if ((err = pthread_condattr_setclock(&attr, KA_CLOCK))) {
        pthread_condattr_destroy(&attr);
        goto fail;
    }
#endif
    err = pthread_cond_init(&self->cond, &attr);
    pthread_condattr_destroy(&attr);
    if (err) { goto fail; }
    self->sync_ok = 1;
    return 0;

fail:
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

static PyObject *
reader_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    readerObject *self;

    if (!(self = (readerObject *)type->tp_alloc(type, 0))) { return NULL; }
    self->status_interval = 10.0;
    self->keepalive_interval = 5.0;
    self->confirm_keepalives = 1;
    if (sync_init(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
reader_traverse(readerObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->decoder);
    Py_VISIT(self->last_commit);
    return 0;
}

static int
reader_clear(readerObject *self)
{
    Py_CLEAR(self->decoder);
    Py_CLEAR(self->last_commit);
    return 0;
}

static void
reader_dealloc(readerObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist) { PyObject_ClearWeakRefs((PyObject *)self); }
    if (self->conn && pq_in_child(self->conn)) {
        /* forked: the keepalive thread is the parent's, not ours */
        self->ka_running = 0;
    }
    ka_stop(self);
    Py_CLEAR(self->decoder);
    Py_CLEAR(self->last_commit);
    if (self->conn) {
        pq_close(self->conn);     /* in a child: without a word to the server */
        PQclear(self->conn->cmd_result);
        self->conn->cmd_result = NULL;
    }
    if (self->sync_ok) { pthread_cond_destroy(&self->cond); }
    if (self->conn) {
        /* reader.connection may outlive us */
        self->conn->stream_opened = self->conn->stream_closed = NULL;
        self->conn->stream = NULL;
    }
    Py_CLEAR(self->conn);
    Py_TYPE(self)->tp_free((PyObject *)self);
}


static struct PyMethodDef reader_methods[] = {
    {"execute", (PyCFunction)(void (*)(void))reader_execute,
        METH_VARARGS | METH_KEYWORDS, execute_doc},
    {"start_copy", (PyCFunction)(void (*)(void))reader_start_copy,
        METH_VARARGS | METH_KEYWORDS, start_copy_doc},
    {"_stream", (PyCFunction)(void (*)(void))reader_stream,
        METH_VARARGS | METH_KEYWORDS, stream_doc},
    {"read_message", (PyCFunction)reader_read_message, METH_NOARGS,
        read_message_doc},
    {"send_feedback", (PyCFunction)(void (*)(void))reader_send_feedback,
        METH_VARARGS | METH_KEYWORDS, send_feedback_doc},
    {"end_copy", (PyCFunction)(void (*)(void))reader_end_copy,
        METH_VARARGS | METH_KEYWORDS, end_copy_doc},
    {"ack", (PyCFunction)(void (*)(void))reader_ack,
        METH_VARARGS | METH_KEYWORDS, ack_doc},
    {"stop", (PyCFunction)reader_stop, METH_NOARGS, stop_doc},
    {"close", (PyCFunction)reader_close, METH_NOARGS, close_doc},
    {"fileno", (PyCFunction)reader_fileno, METH_NOARGS, fileno_doc},
    {"_start_copy_send", (PyCFunction)reader_start_copy_send, METH_VARARGS,
        start_copy_send_doc},
    {"_start_copy_poll", (PyCFunction)reader_start_copy_poll, METH_NOARGS,
        start_copy_poll_doc},
    {"_flush", (PyCFunction)reader_flush, METH_NOARGS, flush_doc},
    {"_end_copy_start", (PyCFunction)reader_end_copy_start, METH_NOARGS,
        end_copy_start_doc},
    {"_end_copy_poll", (PyCFunction)reader_end_copy_poll, METH_NOARGS,
        end_copy_poll_doc},
    {"_keepalive", (PyCFunction)reader_keepalive, METH_VARARGS,
        keepalive_doc},
    {"_liveness_before", (PyCFunction)reader_liveness_before, METH_NOARGS,
        liveness_doc},
    {"_liveness_after", (PyCFunction)reader_liveness_after, METH_VARARGS,
        liveness_doc},
    {"_liveness_reset", (PyCFunction)reader_liveness_reset, METH_NOARGS,
        liveness_doc},
    {"_set_batching", (PyCFunction)reader_set_batching, METH_VARARGS,
        set_batching_doc},
    {"_batch_before_wait", (PyCFunction)reader_batch_before_wait,
        METH_NOARGS, batch_before_wait_doc},
    {NULL}
};

static struct PyGetSetDef reader_getsets[] = {
    {"closed", (getter)closed_get, NULL, "True if the connection is closed."},
    {"connection", (getter)connection_get, NULL,
        "The `Connection` (PGconn, lock, owner pid, command state) the "
        "stream runs on."},
    {"copying", (getter)copying_get, NULL,
        "True while the connection is in the COPY BOTH stream."},
    {"streaming", (getter)streaming_get, NULL,
        "True while the stream loop (`_stream()`) runs."},
    {"server_version", (getter)server_version_get, NULL,
        "The server version as an int (150004 for 15.4)."},
    {"backend_pid", (getter)backend_pid_get, NULL,
        "The PID of the server process (the walsender) of the connection."},
    {"flushed_lsn", (getter)flushed_lsn_get, NULL,
        "The acked position (an int LSN): what the server may forget."},
    {"received_lsn", (getter)received_lsn_get, NULL,
        "data_start of the last message delivered (an int LSN)."},
    {"server_wal_end", (getter)server_wal_end_get, NULL,
        "The latest end of WAL the server reported (an int LSN)."},
    {"sent_flushed_lsn", (getter)sent_flushed_lsn_get, NULL,
        "The flush position in the last status update sent (an int LSN)."},
    {"until_lsn", (getter)until_lsn_get, (setter)until_lsn_set,
        "For `read_message()`: the position where the stream ends (an int "
        "LSN; 0 or None: never). `_stream()` sets its own."},
    {"status_count", (getter)status_count_get, NULL,
        "Number of status updates sent (all written to the socket)."},
    {"confirm_keepalives", (getter)confirm_keepalives_get,
        (setter)confirm_keepalives_set,
        "When every message delivered so far is acked, confirm the position "
        "of the server's keepalives too, so that a quiet slot releases WAL. "
        "Never skips an unacked transaction."},
    {"binary", (getter)binary_get, (setter)binary_set,
        "True: payloads are bytes; False: str decoded from UTF-8."},
    {"status_interval", (getter)status_interval_get,
        (setter)status_interval_set,
        "Seconds between status updates to the server."},
    {"recv_timeout", (getter)recv_timeout_get, (setter)recv_timeout_set,
        "Seconds of silence from the server after which the connection is "
        "presumed dead (ConnectionLost); at half of it a reply is asked "
        "for. 0 turns it off."},
    {"backlog_end", (getter)backlog_end_get, (setter)backlog_end_set,
        "The server's WAL position when the stream started (int LSN; 0: "
        "unknown), set by Reader and AsyncReader before each stream: "
        "while the messages delivered are well behind it the server is "
        "streaming a backlog, and the loop batches its wake-ups (see "
        "bench/README.md); past it the stream is live and every wait "
        "wakes up on any data."},
    {"keepalive_interval", (getter)keepalive_interval_get,
        (setter)keepalive_interval_set,
        "While Python code runs, a C thread sends status updates at this "
        "period (seconds) so that the server does not drop the connection; "
        "0 turns it off."},
    {NULL}
};

static struct PyMemberDef reader_members[] = {
    {"decoder", T_OBJECT, offsetof(readerObject, decoder), 0,
        "None, or a callable `decoder(msg)` whose result is stored in "
        "`msg.change` before `event(msg)` is called."},
    {"message_count", T_LONGLONG, offsetof(readerObject, messages),
        READONLY, "Number of XLogData messages received."},
    {"bytes_received", T_LONGLONG, offsetof(readerObject, bytes),
        READONLY, "Payload bytes of the XLogData messages received."},
    {"transaction_count", T_LONGLONG, offsetof(readerObject, transactions),
        READONLY, "Commits decoded (Commit, StreamCommit, CommitPrepared; "
        "0 without a decoder)."},
    {"ack_count", T_LONGLONG, offsetof(readerObject, acks),
        READONLY, "ack() calls that moved the acked position."},
    {"wait_count", T_LONGLONG, offsetof(readerObject, waits),
        READONLY, "Waits for the socket while streaming (each one a "
        "wake-up: a backlog batches them, see bench/README.md)."},
    {"batch_wait_count", T_LONGLONG, offsetof(readerObject, batch_waits),
        READONLY, "Of wait_count, the waits made while batching a "
        "backlog."},
    {"batch_pause_count", T_LONGLONG, offsetof(readerObject, pauses),
        READONLY, "Of batch_wait_count, those preceded by a pause (a "
        "socket that ignores SO_RCVLOWAT: a Unix socket)."},
    {"last_commit", T_OBJECT, offsetof(readerObject, last_commit),
        READONLY, "The last commit change decoded, or None."},
    {NULL}
};

#define reader_doc \
"The C base of `pylogicaldecoding.Reader`: a replication connection, its\n" \
"COPY BOTH stream and the loop calling `event()`. Use the Python class."

PyTypeObject readerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylogicaldecoding._core.ReaderBase",
    .tp_basicsize = sizeof(readerObject),
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = reader_doc,
    .tp_traverse = (traverseproc)reader_traverse,
    .tp_clear = (inquiry)reader_clear,
    .tp_weaklistoffset = offsetof(readerObject, weakreflist),
    .tp_methods = reader_methods,
    .tp_members = reader_members,
    .tp_getset = reader_getsets,
    .tp_new = reader_tp_new,
};

RAISES_NEG int
reader_init_type(void)
{
    if (!(event_name = PyUnicode_InternFromString("event"))) { return -1; }
    return PyType_Ready(&readerType);
}
