/* message_type.c - the Message type: one XLogData message of the stream */

#include "message.h"
#include "wire.h"

#include <structmember.h>

/* A few freed messages are kept for reuse: the stream loop frees each
 * message before it builds the next one. */
#define FREELIST_MAX 8
static messageObject *freelist[FREELIST_MAX];
static int numfree = 0;

/* Build a message, stealing the payload reference. */
PyObject *
message_new(PyObject *payload, lsn_t data_start, lsn_t wal_end,
            int64_t send_time)
{
    messageObject *self;

    if (numfree) {
        self = freelist[--numfree];
        (void)PyObject_Init((PyObject *)self, &messageType);
    }
    else if (!(self = PyObject_GC_New(messageObject, &messageType))) {
        Py_DECREF(payload);
        return NULL;
    }
    self->payload = payload;
    self->change = NULL;
    self->data_start = data_start;
    self->wal_end = wal_end;
    self->send_time = send_time;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *
message_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"payload", "data_start", "wal_end", "send_time",
                             NULL};
    PyObject *payload;
    unsigned long long data_start = 0, wal_end = 0;
    long long send_time = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|KKL", kwlist,
            &payload, &data_start, &wal_end, &send_time)) {
        return NULL;
    }
    if (!PyUnicode_Check(payload) && !PyBytes_Check(payload)) {
        PyErr_SetString(PyExc_TypeError, "payload must be str or bytes");
        return NULL;
    }
    Py_INCREF(payload);
    return message_new(payload, data_start, wal_end, send_time);
}

static int
message_traverse(messageObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->payload);
    Py_VISIT(self->change);
    return 0;
}

static int
message_clear(messageObject *self)
{
    Py_CLEAR(self->payload);
    Py_CLEAR(self->change);
    return 0;
}

static void
message_dealloc(messageObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_XDECREF(self->payload);
    Py_XDECREF(self->change);
    if (numfree < FREELIST_MAX) {
        freelist[numfree++] = self;
    }
    else {
        PyObject_GC_Del(self);
    }
}

#define send_time_doc \
"The server's clock when it sent the message, an aware `datetime` in UTC."

static PyObject *
send_time_get(messageObject *self, void *closure)
{
    return wire_pgtime_to_datetime(self->send_time);
}

#define change_doc \
"The decoded change, or `None` when decoding is off or not yet done."

static PyObject *
change_get(messageObject *self, void *closure)
{
    PyObject *rv = self->change ? self->change : Py_None;
    Py_INCREF(rv);
    return rv;
}

static int
change_set(messageObject *self, PyObject *value, void *closure)
{
    Py_XINCREF(value);
    Py_XSETREF(self->change, value);
    return 0;
}

#define data_start_lsn_doc "`data_start` as text, like '16/B374D848'."

static PyObject *
data_start_lsn_get(messageObject *self, void *closure)
{
    char buf[LSN_BUFSIZE];
    wire_format_lsn(buf, sizeof(buf), self->data_start);
    return PyUnicode_FromString(buf);
}

static PyObject *
message_repr(messageObject *self)
{
    char buf[LSN_BUFSIZE];
    wire_format_lsn(buf, sizeof(buf), self->data_start);
    return PyUnicode_FromFormat("<Message data_start=%s payload=%R>",
        buf, self->payload);
}

static struct PyMemberDef message_members[] = {
    {"payload", T_OBJECT, offsetof(messageObject, payload), READONLY,
        "The plugin's output: `str` for text plugins, `bytes` for binary ones."},
    {"data_start", T_ULONGLONG, offsetof(messageObject, data_start), READONLY,
        "The WAL position (LSN, an int) of the change; pass it to `ack()`."},
    {"wal_end", T_ULONGLONG, offsetof(messageObject, wal_end), READONLY,
        "The server's end of WAL when the message was sent (LSN, an int)."},
    {"send_time_us", T_LONGLONG, offsetof(messageObject, send_time), READONLY,
        "`send_time` in microseconds since 2000-01-01 UTC."},
    {NULL}
};

static struct PyGetSetDef message_getsets[] = {
    {"send_time", (getter)send_time_get, NULL, send_time_doc, NULL},
    {"change", (getter)change_get, (setter)change_set, change_doc, NULL},
    {"data_start_lsn", (getter)data_start_lsn_get, NULL, data_start_lsn_doc,
        NULL},
    {NULL}
};

#define message_doc \
"Message(payload, data_start=0, wal_end=0, send_time=0)\n\n" \
"One message of the logical decoding stream, as passed to `Reader.event()`."

PyTypeObject messageType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylogicaldecoding._core.Message",
    .tp_basicsize = sizeof(messageObject),
    .tp_dealloc = (destructor)message_dealloc,
    .tp_repr = (reprfunc)message_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = message_doc,
    .tp_traverse = (traverseproc)message_traverse,
    .tp_clear = (inquiry)message_clear,
    .tp_members = message_members,
    .tp_getset = message_getsets,
    .tp_new = message_tp_new,
};
