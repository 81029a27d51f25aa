/* module.c - the pylogicaldecoding._core module: init, exceptions, functions */

#include "pld.h"
#include "convert.h"
#include "decode.h"
#include "message.h"
#include "pqpath.h"
#include "aiter.h"
#include "connection.h"
#include "reader.h"
#include "snapshot.h"
#include "wire.h"

PyObject *pld_Error = NULL;
PyObject *pld_InterfaceError = NULL;
PyObject *pld_DatabaseError = NULL;
PyObject *pld_OperationalError = NULL;
PyObject *pld_ProgrammingError = NULL;
PyObject *pld_DataError = NULL;
PyObject *pld_InternalError = NULL;
PyObject *pld_NotSupportedError = NULL;
PyObject *pld_ConnectionLost = NULL;
PyObject *pld_CommandInterrupted = NULL;
PyObject *pld_DecodingError = NULL;
PyObject *pld_sqlstate_map = NULL;


#define conninfo_parse_doc \
"conninfo_parse(dsn) -> dict\n\n" \
"Parse a libpq conninfo string or URI with `PQconninfoParse()`; return\n" \
"the keywords it sets. Raise ProgrammingError if it is malformed."

static PyObject *
conninfo_parse(PyObject *self, PyObject *args)
{
    const char *dsn;

    if (!PyArg_ParseTuple(args, "s", &dsn)) { return NULL; }
    return pq_conninfo_parse(dsn);
}

#define conninfo_keywords_doc \
"conninfo_keywords() -> list\n\nThe connection keywords this libpq knows."

static PyObject *
conninfo_keywords(PyObject *self, PyObject *dummy)
{
    return pq_conninfo_keywords();
}

#define parse_lsn_doc \
"parse_lsn(text) -> int\n\nParse an LSN such as '16/B374D848'."

static PyObject *
parse_lsn(PyObject *self, PyObject *arg)
{
    const char *s;
    Py_ssize_t len;
    lsn_t lsn;

    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "expected str, got %s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    if (!(s = PyUnicode_AsUTF8AndSize(arg, &len))) { return NULL; }
    if (wire_parse_lsn(s, len, &lsn) < 0) { return NULL; }
    return PyLong_FromUnsignedLongLong(lsn);
}

#define format_lsn_doc \
"format_lsn(lsn) -> str\n\nFormat an int LSN as PostgreSQL does: '16/B374D848'."

static PyObject *
format_lsn(PyObject *self, PyObject *arg)
{
    unsigned long long v;
    char buf[32];

    if (!PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "expected int, got %s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    v = PyLong_AsUnsignedLongLong(arg);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_SetString(PyExc_ValueError,
                "an LSN is an unsigned 64-bit integer");
        }
        return NULL;
    }
    wire_format_lsn(buf, sizeof(buf), (lsn_t)v);
    return PyUnicode_FromString(buf);
}

#define set_sqlstate_map_doc \
"_set_sqlstate_map(mapping)\n\n" \
"Register the exception class raised for each SQLSTATE (5 characters) or\n" \
"SQLSTATE class (2 characters), or a function of the message returning the\n" \
"exception to raise. Called once by pylogicaldecoding.errors."

static PyObject *
set_sqlstate_map(PyObject *self, PyObject *arg)
{
    if (!PyDict_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "expected a dict");
        return NULL;
    }
    Py_INCREF(arg);
    Py_XSETREF(pld_sqlstate_map, arg);
    Py_RETURN_NONE;
}

#define libpq_version_doc \
"libpq_version() -> int\n\nThe version of the libpq in use (150004 for 15.4)."

static PyObject *
libpq_version(PyObject *self, PyObject *dummy)
{
    return PyLong_FromLong(PQlibVersion());
}

static PyMethodDef module_methods[] = {
    {"conninfo_parse", conninfo_parse, METH_VARARGS, conninfo_parse_doc},
    {"conninfo_keywords", conninfo_keywords, METH_NOARGS,
        conninfo_keywords_doc},
    {"parse_lsn", parse_lsn, METH_O, parse_lsn_doc},
    {"format_lsn", format_lsn, METH_O, format_lsn_doc},
    {"json_row", encode_json_row, METH_O, encode_json_row_doc},
    {"_set_sqlstate_map", set_sqlstate_map, METH_O, set_sqlstate_map_doc},
    {"libpq_version", libpq_version, METH_NOARGS, libpq_version_doc},
    {NULL}
};


/* The exception hierarchy, DB-API shaped as in psycopg2, plus ours. */
static struct {
    const char *name;
    PyObject **exc;
    PyObject **base;
    const char *doc;
} exc_table[] = {
    {"Error", &pld_Error, NULL,
        "Base class of every error raised by pylogicaldecoding."},
    {"InterfaceError", &pld_InterfaceError, &pld_Error,
        "Misuse of the library itself (e.g. a closed connection)."},
    {"DatabaseError", &pld_DatabaseError, &pld_Error,
        "An error reported by the server; see pgcode and pgerror."},
    {"OperationalError", &pld_OperationalError, &pld_DatabaseError,
        "The server or the connection could not do what was asked."},
    {"ProgrammingError", &pld_ProgrammingError, &pld_DatabaseError,
        "Bad arguments or a command the server refused as invalid."},
    {"DataError", &pld_DataError, &pld_DatabaseError,
        "Data that cannot be read or converted."},
    {"InternalError", &pld_InternalError, &pld_DatabaseError,
        "The server reported an internal error."},
    {"NotSupportedError", &pld_NotSupportedError, &pld_DatabaseError,
        "The server cannot do this (version, configuration)."},
    {"ConnectionLost", &pld_ConnectionLost, &pld_OperationalError,
        "The connection dropped or the server ended the stream."},
    {"CommandInterrupted", &pld_CommandInterrupted, &pld_OperationalError,
        "stop() or close() ended a command waiting for its answer; the "
        "connection is closed."},
    {"DecodingError", &pld_DecodingError, &pld_DataError,
        "A message from the server could not be parsed."},
    {NULL}
};

static RAISES_NEG int
add_exceptions(PyObject *module)
{
    int i;
    char name[64];

    for (i = 0; exc_table[i].name; i++) {
        PyObject *dict = NULL;
        PyOS_snprintf(name, sizeof(name), "pylogicaldecoding.%s",
                      exc_table[i].name);
        if (!(dict = PyDict_New())) { return -1; }
        /* instances carry the server's SQLSTATE and message, or None */
        if (PyDict_SetItemString(dict, "pgcode", Py_None) < 0
                || PyDict_SetItemString(dict, "pgerror", Py_None) < 0) {
            Py_DECREF(dict);
            return -1;
        }
        *exc_table[i].exc = PyErr_NewExceptionWithDoc(name, exc_table[i].doc,
            exc_table[i].base ? *exc_table[i].base : PyExc_Exception, dict);
        Py_DECREF(dict);
        if (!*exc_table[i].exc) { return -1; }
        Py_INCREF(*exc_table[i].exc);
        if (PyModule_AddObject(module, exc_table[i].name,
                               *exc_table[i].exc) < 0) {
            Py_DECREF(*exc_table[i].exc);
            return -1;
        }
    }
    return 0;
}

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    "pylogicaldecoding._core",
    "The C core of pylogicaldecoding: the replication stream on libpq.",
    -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    PyObject *m = NULL;

    if (wire_init() < 0) { return NULL; }
    if (!(m = PyModule_Create(&core_module))) { return NULL; }
    if (add_exceptions(m) < 0) { goto error; }

    if (reader_init_type() < 0) { goto error; }
    if (PyType_Ready(&messageType) < 0) { goto error; }
    Py_INCREF(&readerType);
    if (PyModule_AddObject(m, "ReaderBase", (PyObject *)&readerType) < 0) {
        Py_DECREF(&readerType);
        goto error;
    }
    Py_INCREF(&messageType);
    if (PyModule_AddObject(m, "Message", (PyObject *)&messageType) < 0) {
        Py_DECREF(&messageType);
        goto error;
    }
    if (decode_init(m) < 0) { goto error; }
    if (copyconn_init_type(m) < 0) { goto error; }
    if (aiter_init_type(m) < 0) { goto error; }
    if (connection_init_type(m) < 0) { goto error; }
    if (PyModule_AddStringConstant(m, "__version__", PLD_VERSION) < 0) {
        goto error;
    }
#ifdef PLD_LIBPQ_BUILT_WITH
    if (PyModule_AddStringConstant(m, "built_with", PLD_LIBPQ_BUILT_WITH) < 0) {
        goto error;
    }
#endif
    return m;

error:
    Py_XDECREF(m);
    return NULL;
}
