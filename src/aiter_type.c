/* aiter_type.c - AsyncIter: the C fast path of AsyncReader's `async for` */

#include "aiter.h"
#include "message.h"
#include "wire.h"

#include <structmember.h>
#include <time.h>

/* The clock of the yield rule, read once per message. CLOCK_MONOTONIC
 * costs 50-200 ns in a virtual machine (as much as the rest of a message's
 * fast path); its coarse variant, the same clock as of the last tick, a
 * few ns. The coarse one is used when its resolution (a tick: 1-4 ms on
 * Linux) is no more than yield_every: the loop then runs every yield_every
 * plus at most a tick. `yielded` comes from time.monotonic(): against a
 * coarse `now` it is at most one tick ahead. */
static double coarse_res = -1.0;    /* the coarse clock's, < 0: none */

static double
aiter_now(aiterObject *self)
{
#ifdef CLOCK_MONOTONIC_COARSE
    if (coarse_res >= 0 && coarse_res <= self->yield_every) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    }
#endif
    return wire_monotonic();
}

/* `async for msg in reader` calls __anext__ once per message and awaits
 * what it returns. When a message is already there (a backlog, a burst)
 * nothing needs the event loop: __anext__ reads it (read_message(), no
 * waiting) and returns this object as an awaitable that is already done,
 * whose result is the message. Everything else (no message yet, the end
 * of the stream, errors, reconnection, stop(), letting the loop run every
 * `yield_every` seconds) goes to the Python path: __anext__ then returns
 * slow(result) -- or slow() when it read nothing -- a coroutine of
 * pylogicaldecoding/aio.py. One iterator per stream, used by one task. */

static PyObject *
aiter_anext(aiterObject *self)
{
    readerObject *r = self->reader;
    PyObject *got, *type, *value, *tb, *rv;

    if (!self->enabled || self->stopped || !r->conn->pgconn || !r->copying
            || r->conn->connecting || r->conn->cmd_running || r->ending_copy
            || r->streaming) {
        return PyObject_CallNoArgs(self->slow);
    }
    if ((got = reader_read_message_nb(r))) {
        if (Py_TYPE(got) == &messageType
                && aiter_now(self) - self->yielded < self->yield_every) {
            Py_XSETREF(self->value, got);
            Py_INCREF(self);
            return (PyObject *)self;
        }
        rv = PyObject_CallOneArg(self->slow, got);
        Py_DECREF(got);
        return rv;
    }
    /* the error goes to the Python path, which handles it as its own */
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb) { PyException_SetTraceback(value, tb); }
    rv = value ? PyObject_CallOneArg(self->slow, value) : NULL;
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return rv;
}

/* The ready awaitable: __await__ is itself, finished at once. */

static PyObject *
aiter_await(aiterObject *self)
{
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *
take_value(aiterObject *self)
{
    PyObject *v = self->value;
    self->value = NULL;
    if (!v) {
        PyErr_SetString(pld_InterfaceError,
            "AsyncIter awaited without a message (await __anext__() once)");
    }
    return v;
}

static PyObject *
aiter_iternext(aiterObject *self)
{
    PyObject *v, *stop;

    if (!(v = take_value(self))) { return NULL; }
    stop = PyObject_CallOneArg(PyExc_StopIteration, v);
    Py_DECREF(v);
    if (stop) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
    return NULL;
}

#if PY_VERSION_HEX >= 0x030A0000
static PySendResult
aiter_send(aiterObject *self, PyObject *arg, PyObject **result)
{
    if (!(*result = take_value(self))) { return PYGEN_ERROR; }
    return PYGEN_RETURN;
}
#endif

static PyObject *
aiter_aiter(aiterObject *self)
{
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *
aiter_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"reader", "slow", "yield_every", NULL};
    PyObject *reader, *slow;
    double every = 0.005;
    aiterObject *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O|d", kwlist,
            &readerType, &reader, &slow, &every)) {
        return NULL;
    }
    if (!PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "slow must be callable");
        return NULL;
    }
    if (!(self = (aiterObject *)type->tp_alloc(type, 0))) { return NULL; }
    Py_INCREF(reader);
    self->reader = (readerObject *)reader;
    Py_INCREF(slow);
    self->slow = slow;
    self->yield_every = every;
    return (PyObject *)self;
}

static int
aiter_traverse(aiterObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->reader);
    Py_VISIT(self->slow);
    Py_VISIT(self->value);
    return 0;
}

static int
aiter_clear(aiterObject *self)
{
    Py_CLEAR(self->reader);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->value);
    return 0;
}

static void
aiter_dealloc(aiterObject *self)
{
    PyObject_GC_UnTrack(self);
    aiter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
yielded_get(aiterObject *self, void *closure)
{
    return PyFloat_FromDouble(self->yielded);
}

static int
yielded_set(aiterObject *self, PyObject *value, void *closure)
{
    double v;
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete yielded");
        return -1;
    }
    if ((v = PyFloat_AsDouble(value)) == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    self->yielded = v;
    return 0;
}

static struct PyGetSetDef aiter_getsets[] = {
    {"yielded", (getter)yielded_get, (setter)yielded_set,
        "Monotonic time the event loop last ran (the Python path sets it)."},
    {NULL}
};

static struct PyMemberDef aiter_members[] = {
    {"enabled", T_INT, offsetof(aiterObject, enabled), 0,
        "Non-zero: __anext__ may deliver a message already read itself."},
    {"stopped", T_INT, offsetof(aiterObject, stopped), 0,
        "Non-zero: stop() was called; every step takes the Python path."},
    {NULL}
};

static PyAsyncMethods aiter_as_async = {
    .am_await = (unaryfunc)aiter_await,
    .am_aiter = (unaryfunc)aiter_aiter,
    .am_anext = (unaryfunc)aiter_anext,
#if PY_VERSION_HEX >= 0x030A0000
    .am_send = (sendfunc)aiter_send,
#endif
};

#define aiter_doc \
"AsyncIter(reader, slow, yield_every=0.005)\n\n" \
"The async iterator of `AsyncReader`'s streams: delivers a message that\n" \
"is already there without a coroutine, else returns `slow(...)`."

PyTypeObject aiterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylogicaldecoding._core.AsyncIter",
    .tp_basicsize = sizeof(aiterObject),
    .tp_dealloc = (destructor)aiter_dealloc,
    .tp_as_async = &aiter_as_async,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = aiter_doc,
    .tp_traverse = (traverseproc)aiter_traverse,
    .tp_clear = (inquiry)aiter_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)aiter_iternext,
    .tp_members = aiter_members,
    .tp_getset = aiter_getsets,
    .tp_new = aiter_tp_new,
};

RAISES_NEG int
aiter_init_type(PyObject *module)
{
#ifdef CLOCK_MONOTONIC_COARSE
    {
        struct timespec res;
        if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0) {
            coarse_res = (double)res.tv_sec + (double)res.tv_nsec / 1e9;
        }
    }
#endif
    if (PyType_Ready(&aiterType) < 0) { return -1; }
    Py_INCREF(&aiterType);
    if (PyModule_AddObject(module, "AsyncIter", (PyObject *)&aiterType) < 0) {
        Py_DECREF(&aiterType);
        return -1;
    }
    return 0;
}
