/* connection_type.c - the Connection type: a libpq connection and its lock */

#include "connection.h"
#include "pqpath.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <unistd.h>

/* A Connection is made by ReaderBase (reader_type.c), which holds it for
 * its whole life (`reader.connection`, read-only) and runs its stream on
 * it; it can also be made alone. Its methods are the connection-level
 * primitives of pqpath.c: connect (blocking or not), commands (blocking or
 * not), the socket, close. It frees a PGconn still open when it goes,
 * without a word on the socket in a forked child (the parent owns that
 * socket). */


/* -- helpers -- */

/* A command's timeout argument: None (wait as long as it takes, signals
 * served) or seconds >= 0; -1 for None. */
RAISES_NEG int
conn_timeout_from_object(PyObject *obj, double *out)
{
    if (obj == Py_None) {
        *out = -1.0;
        return 0;
    }
    *out = PyFloat_AsDouble(obj);
    if (*out == -1.0 && PyErr_Occurred()) { return -1; }
    if (!(*out >= 0.0)) {
        PyErr_Format(PyExc_ValueError,
            "timeout must be None or at least 0 seconds, got %R", obj);
        return -1;
    }
    return 0;
}

/* Not from a forked child: the connection is the parent's. */
static RAISES_NEG int
check_owner(connectionObject *self)
{
    if (pq_in_child(self)) {
        PyErr_SetString(pld_InterfaceError, "the connection belongs to "
            "the parent process (opened before fork())");
        return -1;
    }
    return 0;
}


/* -- methods -- */

#define connect_doc \
"connect(keywords, values)\n\n" \
"Open the connection with `PQconnectdbParams()` (the GIL released while\n" \
"it blocks); the two sequences of str are the conninfo already merged by\n" \
"the Python layer. OperationalError if it fails."

static PyObject *
connect_params(connectionObject *self, PyObject *args, int start)
{
    PyObject *okeys, *ovalues, *keys = NULL, *values = NULL, *rv = NULL;
    const char **ckeys = NULL, **cvalues = NULL;
    Py_ssize_t n, i;

    if (!PyArg_ParseTuple(args, "OO", &okeys, &ovalues)) { return NULL; }
    if (self->pgconn) {
        PyErr_SetString(pld_ProgrammingError, "the connection is already open");
        return NULL;
    }
    if (!(keys = PySequence_Fast(okeys, "keywords must be a sequence"))) {
        goto exit;
    }
    if (!(values = PySequence_Fast(ovalues, "values must be a sequence"))) {
        goto exit;
    }
    n = PySequence_Fast_GET_SIZE(keys);
    if (n != PySequence_Fast_GET_SIZE(values)) {
        PyErr_SetString(PyExc_ValueError, "keywords and values differ in length");
        goto exit;
    }
    ckeys = PyMem_Calloc(n + 1, sizeof(char *));
    cvalues = PyMem_Calloc(n + 1, sizeof(char *));
    if (!ckeys || !cvalues) {
        PyErr_NoMemory();
        goto exit;
    }
    for (i = 0; i < n; i++) {
        if (!(ckeys[i] = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(keys, i)))
            || !(cvalues[i] = PyUnicode_AsUTF8(
                    PySequence_Fast_GET_ITEM(values, i)))) {
            goto exit;
        }
    }
    if ((start ? pq_connect_start(self, ckeys, cvalues)
            : pq_connect(self, ckeys, cvalues)) < 0) {
        goto exit;
    }
    rv = Py_None;
    Py_INCREF(rv);

exit:
    PyMem_Free(ckeys);
    PyMem_Free(cvalues);
    Py_XDECREF(keys);
    Py_XDECREF(values);
    return rv;
}

static PyObject *
connection_connect(connectionObject *self, PyObject *args)
{
    return connect_params(self, args, 0);
}

#define connect_start_doc \
"connect_start(keywords, values)\n\n" \
"Start opening the connection without blocking (`PQconnectStartParams()`);\n" \
"then wait until `fileno()` is writable and call `connect_poll()` until\n" \
"it returns 0. `connect_timeout` is the caller's to enforce."

static PyObject *
connection_connect_start(connectionObject *self, PyObject *args)
{
    return connect_params(self, args, 1);
}

#define connect_poll_doc \
"connect_poll() -> int\n\n" \
"One step of `PQconnectPoll()`: 0 when connected, 1 to wait until\n" \
"`fileno()` is readable, 2 until it is writable (the socket may change\n" \
"between steps). On failure, close and raise OperationalError."

static PyObject *
connection_connect_poll(connectionObject *self, PyObject *dummy)
{
    int rv;
    if (check_owner(self) < 0) { return NULL; }
    if ((rv = pq_connect_poll(self)) < 0) { return NULL; }
    return PyLong_FromLong(rv);
}

#define execute_doc \
"execute(command, timeout=None) -> (names, rows)\n\n" \
"Run a replication command or SQL statement with the simple query\n" \
"protocol, waiting with the GIL released (signals served, `stop()` of the\n" \
"stream wakes the wait); rows are tuples of str (None for NULL). Not while\n" \
"a stream or another command runs (ProgrammingError). `timeout`: seconds\n" \
"to wait for the whole answer (None: as long as it takes); past it the\n" \
"connection is closed and ConnectionLost raised."

static PyObject *
connection_execute(connectionObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"command", "timeout", NULL};
    const char *command;
    PyObject *otimeout = Py_None;
    double timeout;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|O", kwlist,
            &command, &otimeout)) {
        return NULL;
    }
    if (conn_timeout_from_object(otimeout, &timeout) < 0) { return NULL; }
    if (pq_check_open(self) < 0 || check_owner(self) < 0) { return NULL; }
    return pq_execute(self, command, timeout);
}

#define send_query_doc \
"send_query(command) -> bool\n\n" \
"Send a command without waiting for it; collect its result with\n" \
"`poll_result()`. Return True if it is not all sent yet: call `flush()`\n" \
"when `fileno()` is writable."

static PyObject *
connection_send_query(connectionObject *self, PyObject *args)
{
    const char *command;
    int rv;

    if (!PyArg_ParseTuple(args, "s", &command)) { return NULL; }
    if (pq_check_open(self) < 0 || check_owner(self) < 0) { return NULL; }
    if ((rv = pq_send_query(self, command, 0)) < 0) { return NULL; }
    return PyBool_FromLong(rv);
}

#define flush_doc \
"flush() -> bool\n\n" \
"Send what libpq holds (`PQflush()`); True if data remains to send (wait\n" \
"until `fileno()` is writable and call again)."

static PyObject *
connection_flush(connectionObject *self, PyObject *dummy)
{
    int rv;
    if (check_owner(self) < 0) { return NULL; }
    if ((rv = pq_flush(self)) < 0) { return NULL; }
    return PyBool_FromLong(rv);
}

#define poll_result_doc \
"poll_result() -> None or (names, rows)\n\n" \
"Read what arrived for the command sent by `send_query()`: None if more\n" \
"must arrive (wait until `fileno()` is readable), else its result as\n" \
"`execute()` returns it. A server error is raised from\n" \
"pylogicaldecoding.errors; on a broken connection it is closed."

static PyObject *
connection_poll_result(connectionObject *self, PyObject *dummy)
{
    PyObject *out = NULL;
    int rv;

    if (check_owner(self) < 0) { return NULL; }
    if (self->cmd_running && self->cmd_copy) {
        PyErr_SetString(pld_ProgrammingError, "the command running starts "
            "the stream: use the reader's _start_copy_poll()");
        return NULL;
    }
    if ((rv = pq_poll_result(self, &out)) < 0) { return NULL; }
    if (rv == 0) { Py_RETURN_NONE; }
    return out;
}

#define fileno_doc \
"fileno() -> int\n\n" \
"The connection's socket, to wait on (also while connecting: it may\n" \
"change between two `connect_poll()` steps)."

static PyObject *
connection_fileno(connectionObject *self, PyObject *dummy)
{
    int fd;

    /* not pq_check_open(): the socket is wanted while connecting too */
    if (!self->pgconn) {
        PyErr_SetString(pld_InterfaceError, "the connection is closed");
        return NULL;
    }
    if ((fd = PQsocket(self->pgconn)) < 0) {
        PyErr_SetString(pld_ConnectionLost,
            "the connection has no socket (it was lost)");
        return NULL;
    }
    return PyLong_FromLong((long)fd);
}

#define close_doc \
"close()\n\n" \
"Close the connection; nothing if it is closed. A stream on it ends\n" \
"without a last status update: close the reader instead, which sends\n" \
"the acked position first. Not while another thread waits on the socket\n" \
"(a command, the stream loop), nor from a signal handler interrupting a\n" \
"command: ProgrammingError (`ReaderBase.close()` interrupts a command\n" \
"instead). In a process forked after it was opened, the connection is\n" \
"freed without a word to the server (the parent's)."

static PyObject *
connection_close(connectionObject *self, PyObject *dummy)
{
    /* in_command: a signal handler run by the command's own wait (the
     * wait is over, the command is not): closing would free the PGconn
     * the command goes back to */
    if ((self->waiting || self->in_command) && !pq_in_child(self)) {
        PyErr_SetString(pld_ProgrammingError, "a command or the stream "
            "loop is waiting on the connection (in another thread, or under "
            "this signal handler): stop it before closing");
        return NULL;
    }
    pq_close(self);
    Py_RETURN_NONE;
}

static struct PyMethodDef connection_methods[] = {
    {"connect", (PyCFunction)connection_connect, METH_VARARGS, connect_doc},
    {"connect_start", (PyCFunction)connection_connect_start, METH_VARARGS,
        connect_start_doc},
    {"connect_poll", (PyCFunction)connection_connect_poll, METH_NOARGS,
        connect_poll_doc},
    {"execute", (PyCFunction)(void (*)(void))connection_execute,
        METH_VARARGS | METH_KEYWORDS, execute_doc},
    {"send_query", (PyCFunction)connection_send_query, METH_VARARGS,
        send_query_doc},
    {"flush", (PyCFunction)connection_flush, METH_NOARGS, flush_doc},
    {"poll_result", (PyCFunction)connection_poll_result, METH_NOARGS,
        poll_result_doc},
    {"fileno", (PyCFunction)connection_fileno, METH_NOARGS, fileno_doc},
    {"close", (PyCFunction)connection_close, METH_NOARGS, close_doc},
    {NULL}
};


/* -- object life -- */

static PyObject *
connection_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    connectionObject *self;
    int err;

    if (!(self = (connectionObject *)type->tp_alloc(type, 0))) {
        return NULL;
    }
    self->wakeup_fds[0] = self->wakeup_fds[1] = -1;
    if ((err = pthread_mutex_init(&self->lock, NULL)) != 0) {
        Py_DECREF(self);
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    self->lock_ok = 1;
    if (pipe(self->wakeup_fds) < 0) {
        self->wakeup_fds[0] = self->wakeup_fds[1] = -1;
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(self);
        return NULL;
    }
    fcntl(self->wakeup_fds[0], F_SETFL, O_NONBLOCK);
    fcntl(self->wakeup_fds[1], F_SETFL, O_NONBLOCK);
    fcntl(self->wakeup_fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(self->wakeup_fds[1], F_SETFD, FD_CLOEXEC);
    return (PyObject *)self;
}

static void
connection_dealloc(connectionObject *self)
{
    if (self->weakreflist) { PyObject_ClearWeakRefs((PyObject *)self); }
    PQclear(self->cmd_result);
    self->cmd_result = NULL;
    if (self->pgconn) {
        if (self->owner_pid == getpid()) { PQfinish(self->pgconn); }
        /* else: inherited across fork(), leaked rather than closed */
        self->pgconn = NULL;
    }
    if (self->wakeup_fds[0] >= 0) { close(self->wakeup_fds[0]); }
    if (self->wakeup_fds[1] >= 0) { close(self->wakeup_fds[1]); }
    if (self->lock_ok) { pthread_mutex_destroy(&self->lock); }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
closed_get(connectionObject *self, void *closure)
{
    return PyBool_FromLong(self->pgconn == NULL || self->connecting);
}

static PyObject *
status_get(connectionObject *self, void *closure)
{
    const char *s;
    if (!self->pgconn) { s = "closed"; }
    else if (self->connecting) { s = "connecting"; }
    else if (self->cmd_running) { s = "command"; }
    else if (PQstatus(self->pgconn) == CONNECTION_BAD) { s = "bad"; }
    else { s = "ready"; }
    return PyUnicode_FromString(s);
}

static PyObject *
owner_pid_get(connectionObject *self, void *closure)
{
    if (!self->pgconn) { Py_RETURN_NONE; }
    return PyLong_FromLong((long)self->owner_pid);
}

static PyObject *
server_version_get(connectionObject *self, void *closure)
{
    if (pq_check_open(self) < 0) { return NULL; }
    return PyLong_FromLong(PQserverVersion(self->pgconn));
}

static PyObject *
backend_pid_get(connectionObject *self, void *closure)
{
    if (pq_check_open(self) < 0) { return NULL; }
    return PyLong_FromLong(PQbackendPID(self->pgconn));
}

static struct PyGetSetDef connection_getsets[] = {
    {"closed", (getter)closed_get, NULL,
        "True unless the connection is open (and done connecting)."},
    {"status", (getter)status_get, NULL,
        "'closed', 'connecting', 'command' (one runs without blocking), "
        "'bad' (lost) or 'ready'."},
    {"owner_pid", (getter)owner_pid_get, NULL,
        "The PID of the process that opened the connection, or None."},
    {"server_version", (getter)server_version_get, NULL,
        "The server version as an int (150004 for 15.4)."},
    {"backend_pid", (getter)backend_pid_get, NULL,
        "The PID of the server process of the connection."},
    {NULL}
};

#define connection_doc \
"Connection()\n\n" \
"A libpq connection and its lock (psycopg2's connection object):\n" \
"`ReaderBase.connection`, on which the reader runs its stream, or one of\n" \
"its own. Connect and run commands blocking (`connect()`, `execute()`) or\n" \
"not (`connect_start()`/`connect_poll()`, `send_query()`/`poll_result()`/\n" \
"`flush()`, waiting on `fileno()` in between)."

PyTypeObject connectionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylogicaldecoding._core.Connection",
    .tp_basicsize = sizeof(connectionObject),
    .tp_dealloc = (destructor)connection_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = connection_doc,
    .tp_weaklistoffset = offsetof(connectionObject, weakreflist),
    .tp_methods = connection_methods,
    .tp_getset = connection_getsets,
    .tp_new = connection_tp_new,
};

RAISES_NEG int
connection_init_type(PyObject *module)
{
    if (PyType_Ready(&connectionType) < 0) { return -1; }
    Py_INCREF(&connectionType);
    if (PyModule_AddObject(module, "Connection",
                           (PyObject *)&connectionType) < 0) {
        Py_DECREF(&connectionType);
        return -1;
    }
    return 0;
}
