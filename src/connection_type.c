/* connection_type.c - the Connection type: a libpq connection and its lock */

#include "connection.h"

#include <fcntl.h>
#include <stddef.h>
#include <unistd.h>

/* A Connection is made by ReaderBase (reader_type.c), which opens, uses
 * and closes it through pqpath.c under its lock; from Python it is
 * `reader.connection`, read-only. It frees a PGconn still open when it
 * goes, without a word on the socket in a forked child (the parent owns
 * that socket). */

static PyObject *
connection_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    connectionObject *self;

    if (!(self = (connectionObject *)type->tp_alloc(type, 0))) {
        return NULL;
    }
    self->wakeup_fds[0] = self->wakeup_fds[1] = -1;
    if (pthread_mutex_init(&self->lock, NULL) != 0) {
        Py_DECREF(self);
        PyErr_SetString(PyExc_OSError, "cannot create the connection lock");
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

static struct PyGetSetDef connection_getsets[] = {
    {"closed", (getter)closed_get, NULL,
        "True unless the connection is open (and done connecting)."},
    {"status", (getter)status_get, NULL,
        "'closed', 'connecting', 'command' (one runs without blocking), "
        "'bad' (lost) or 'ready'."},
    {"owner_pid", (getter)owner_pid_get, NULL,
        "The PID of the process that opened the connection, or None."},
    {NULL}
};

#define connection_doc \
"A libpq connection and its lock: `ReaderBase.connection`. The reader\n" \
"opens, uses and closes it; this object only reports its state."

PyTypeObject connectionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylogicaldecoding._core.Connection",
    .tp_basicsize = sizeof(connectionObject),
    .tp_dealloc = (destructor)connection_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = connection_doc,
    .tp_weaklistoffset = offsetof(connectionObject, weakreflist),
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
