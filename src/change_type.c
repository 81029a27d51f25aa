/* change_type.c - the change types, made from one table of names and fields */

#include "change.h"

#include <structmember.h>

PyTypeObject *change_types[CH_NKINDS];
PyObject *pld_UNCHANGED = NULL;

static PyTypeObject *change_base = NULL;

/* The order follows enum change_kind; the fields follow change.h. */
static const struct {
    const char *name;
    const char *fields;         /* space separated */
    const char *doc;
} defs[CH_NKINDS] = {
    {"Begin", "xid lsn commit_time final_lsn",
        "A transaction starts. `xid` is None if the plugin does not send it;\n"
        "`lsn` is the message's position; `final_lsn` the commit record's\n"
        "(pgoutput); `commit_time` an aware datetime where the plugin sends it."},
    {"Commit", "xid lsn commit_time end_lsn flags",
        "A transaction commits. `lsn` is the commit record's position,\n"
        "`end_lsn` the end of the transaction (what to ack), where known."},
    {"Insert", "schema table new old lsn xid relid",
        "A row inserted: `new` maps column names to Python values."},
    {"Update", "schema table new old lsn xid relid",
        "A row updated: `new` is the new row; `old` the old key (the whole\n"
        "old row with REPLICA IDENTITY FULL) or None if not sent. Unchanged\n"
        "TOAST values are `UNCHANGED`."},
    {"Delete", "schema table new old lsn xid relid",
        "A row deleted: `old` is its key (the whole row with REPLICA\n"
        "IDENTITY FULL), or None with REPLICA IDENTITY NOTHING; `new` None."},
    {"Truncate", "tables cascade restart_identity lsn xid relids",
        "Tables truncated: `tables` is a list of (schema, table) pairs."},
    {"Message", "prefix content transactional lsn xid",
        "A logical decoding message (pg_logical_emit_message): `content` is\n"
        "bytes (None where the plugin does not send it)."},
    {"Relation", "relid schema table replica_identity columns lsn xid",
        "pgoutput: the description of a table, sent before its first change\n"
        "and after DDL. `columns` is a list of `Column`; `replica_identity`\n"
        "one of 'd' (default), 'n' (nothing), 'f' (full), 'i' (index)."},
    {"Type", "oid schema name xid",
        "pgoutput: the name of a non built-in type used by a later Relation\n"
        "(for a domain: the oid of the domain, the name of its base type)."},
    {"Origin", "name lsn",
        "pgoutput: the transaction comes from another origin (replication)."},
    {"StreamStart", "xid first_segment",
        "A block of an in-progress (streamed) transaction begins."},
    {"StreamStop", "",
        "The current block of a streamed transaction ends."},
    {"StreamCommit", "xid lsn commit_time end_lsn flags",
        "A streamed transaction commits."},
    {"StreamAbort", "xid subxid abort_lsn abort_time",
        "A streamed (sub)transaction aborts: forget its changes."},
    {"BeginPrepare", "xid gid lsn end_lsn prepare_time flags",
        "Two-phase: a transaction to be prepared starts."},
    {"Prepare", "xid gid lsn end_lsn prepare_time flags",
        "Two-phase: PREPARE TRANSACTION gid."},
    {"CommitPrepared", "xid gid lsn end_lsn commit_time flags",
        "Two-phase: COMMIT PREPARED gid."},
    {"RollbackPrepared",
        "xid gid lsn end_lsn prepare_time rollback_time flags",
        "Two-phase: ROLLBACK PREPARED gid."},
    {"StreamPrepare", "xid gid lsn end_lsn prepare_time flags",
        "Two-phase and streaming: a streamed transaction is prepared."},
    {"Column", "name type_oid type_modifier key",
        "A column of a `Relation`: `key` is True for replica identity columns."},
    {"SnapshotRow", "schema table new backfill",
        "A row read by a snapshot (Reader(snapshot=True)) or a backfill\n"
        "(Reader.backfill()): `new` holds the same typed values as a streamed\n"
        "Insert; `backfill` is True for backfill rows."},
    {"SnapshotStart", "schema table backfill",
        "The rows of a table's snapshot or backfill start."},
    {"SnapshotEnd", "schema table rows backfill",
        "The rows of a table's snapshot or backfill are over: `rows` is how\n"
        "many SnapshotRow were delivered between the markers."},
};

static Py_ssize_t
nfields(PyObject *self)
{
    return (Py_TYPE(self)->tp_basicsize - (Py_ssize_t)offsetof(changeObject, f))
        / (Py_ssize_t)sizeof(PyObject *);
}

PyObject *
change_new(enum change_kind kind)
{
    PyTypeObject *type = change_types[kind];
    changeObject *self;
    Py_ssize_t i, n;

    if (!(self = (changeObject *)type->tp_alloc(type, 0))) { return NULL; }
    n = nfields((PyObject *)self);
    for (i = 0; i < n; i++) {
        Py_INCREF(Py_None);
        self->f[i] = Py_None;
    }
    return (PyObject *)self;
}

static PyObject *
change_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *self = NULL, *fields = NULL, *rv = NULL;
    Py_ssize_t i, n, nargs = PyTuple_GET_SIZE(args);

    if (!(self = type->tp_alloc(type, 0))) { goto exit; }
    n = nfields(self);
    for (i = 0; i < n; i++) {
        Py_INCREF(Py_None);
        ((changeObject *)self)->f[i] = Py_None;
    }
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments",
                     type->tp_name, n);
        goto exit;
    }
    for (i = 0; i < nargs; i++) {
        PyObject *v = PyTuple_GET_ITEM(args, i);
        Py_INCREF(v);
        Py_SETREF(((changeObject *)self)->f[i], v);
    }
    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        if (!(fields = PyObject_GetAttrString((PyObject *)type, "_fields"))) {
            goto exit;
        }
        while (PyDict_Next(kwargs, &pos, &key, &value)) {
            Py_ssize_t j = PySequence_Index(fields, key);
            if (j < 0) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError,
                    "%s() got an unexpected keyword argument %R",
                    type->tp_name, key);
                goto exit;
            }
            if (j < nargs) {
                PyErr_Format(PyExc_TypeError,
                    "%s() got multiple values for argument %R",
                    type->tp_name, key);
                goto exit;
            }
            Py_INCREF(value);
            Py_SETREF(((changeObject *)self)->f[j], value);
        }
    }
    rv = self;
    self = NULL;

exit:
    Py_XDECREF(self);
    Py_XDECREF(fields);
    return rv;
}

static int
change_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_ssize_t i, n = nfields(self);
    for (i = 0; i < n; i++) { Py_VISIT(((changeObject *)self)->f[i]); }
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int
change_clear(PyObject *self)
{
    Py_ssize_t i, n = nfields(self);
    for (i = 0; i < n; i++) { Py_CLEAR(((changeObject *)self)->f[i]); }
    return 0;
}

static void
change_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    change_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyObject *
change_repr(PyObject *self)
{
    PyObject *fields = NULL, *parts = NULL, *sep = NULL, *joined = NULL;
    PyObject *rv = NULL;
    Py_ssize_t i, n = nfields(self);
    int r;

    if ((r = Py_ReprEnter(self)) != 0) {
        return r > 0 ? PyUnicode_FromFormat("%s(...)",
            _PyType_Name(Py_TYPE(self))) : NULL;
    }
    if (!(fields = PyObject_GetAttrString((PyObject *)Py_TYPE(self),
                                          "_fields"))) {
        goto exit;
    }
    if (!(parts = PyList_New(0))) { goto exit; }
    for (i = 0; i < n; i++) {
        PyObject *p = PyUnicode_FromFormat("%U=%R",
            PyTuple_GET_ITEM(fields, i), ((changeObject *)self)->f[i]);
        if (!p) { goto exit; }
        r = PyList_Append(parts, p);
        Py_DECREF(p);
        if (r < 0) { goto exit; }
    }
    if (!(sep = PyUnicode_FromString(", "))) { goto exit; }
    if (!(joined = PyUnicode_Join(sep, parts))) { goto exit; }
    rv = PyUnicode_FromFormat("%s(%U)", _PyType_Name(Py_TYPE(self)), joined);

exit:
    Py_ReprLeave(self);
    Py_XDECREF(fields);
    Py_XDECREF(parts);
    Py_XDECREF(sep);
    Py_XDECREF(joined);
    return rv;
}

static PyObject *
change_richcompare(PyObject *a, PyObject *b, int op)
{
    Py_ssize_t i, n;

    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(a) != Py_TYPE(b)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    n = nfields(a);
    for (i = 0; i < n; i++) {
        int r = PyObject_RichCompareBool(((changeObject *)a)->f[i],
                                         ((changeObject *)b)->f[i], Py_EQ);
        if (r < 0) { return NULL; }
        if (!r) { return PyBool_FromLong(op == Py_NE); }
    }
    return PyBool_FromLong(op == Py_EQ);
}

#define reduce_doc "Pickle support: the type and the fields in order."

static PyObject *
change_reduce(PyObject *self, PyObject *dummy)
{
    PyObject *args;
    Py_ssize_t i, n = nfields(self);

    if (!(args = PyTuple_New(n))) { return NULL; }
    for (i = 0; i < n; i++) {
        Py_INCREF(((changeObject *)self)->f[i]);
        PyTuple_SET_ITEM(args, i, ((changeObject *)self)->f[i]);
    }
    return Py_BuildValue("(ON)", (PyObject *)Py_TYPE(self), args);
}

#define asdict_doc "_asdict() -> dict\n\nThe fields as a dict, in order."

static PyObject *
change_asdict(PyObject *self, PyObject *dummy)
{
    PyObject *fields = NULL, *rv = NULL, *d = NULL;
    Py_ssize_t i, n = nfields(self);

    if (!(fields = PyObject_GetAttrString((PyObject *)Py_TYPE(self),
                                          "_fields"))) {
        goto exit;
    }
    if (!(d = PyDict_New())) { goto exit; }
    for (i = 0; i < n; i++) {
        if (PyDict_SetItem(d, PyTuple_GET_ITEM(fields, i),
                           ((changeObject *)self)->f[i]) < 0) {
            goto exit;
        }
    }
    rv = d;
    d = NULL;

exit:
    Py_XDECREF(fields);
    Py_XDECREF(d);
    return rv;
}

static PyMethodDef change_methods[] = {
    {"__reduce__", change_reduce, METH_NOARGS, reduce_doc},
    {"_asdict", change_asdict, METH_NOARGS, asdict_doc},
    {NULL}
};


/* -- UNCHANGED: the unchanged TOAST sentinel -- */

static PyObject *
unchanged_repr(PyObject *self)
{
    return PyUnicode_FromString("UNCHANGED");
}

static PyObject *
unchanged_reduce(PyObject *self, PyObject *dummy)
{
    return PyUnicode_FromString("UNCHANGED");
}

static PyMethodDef unchanged_methods[] = {
    {"__reduce__", unchanged_reduce, METH_NOARGS, reduce_doc},
    {NULL}
};

static PyTypeObject unchangedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylogicaldecoding._core.UnchangedType",
    .tp_basicsize = sizeof(PyObject),
    .tp_repr = unchanged_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The type of UNCHANGED: a TOAST value the server did not send\n"
              "because the update did not change it.",
    .tp_methods = unchanged_methods,
};


/* -- init -- */

static PyTypeObject *
make_type(int kind, PyObject *module, PyObject *bases)
{
    PyMemberDef *members = NULL;
    PyObject *fields = NULL, *names = NULL, *type = NULL;
    char *qualname = NULL;
    PyType_Slot slots[] = {
        {Py_tp_new, change_tp_new},
        {Py_tp_dealloc, change_dealloc},
        {Py_tp_traverse, change_traverse},
        {Py_tp_clear, change_clear},
        {Py_tp_repr, change_repr},
        {Py_tp_richcompare, change_richcompare},
        {Py_tp_methods, change_methods},
        {Py_tp_doc, (void *)defs[kind].doc},
        {Py_tp_members, NULL},
        {0, NULL},
    };
    PyType_Spec spec;
    Py_ssize_t i, n;

    if (!(fields = PyUnicode_FromString(defs[kind].fields))) { goto exit; }
    if (!(names = PyUnicode_Split(fields, NULL, -1))) { goto exit; }
    n = PyList_GET_SIZE(names);
    /* the member table lives as long as the type: for ever */
    if (!(members = PyMem_Calloc(n + 1, sizeof(PyMemberDef)))) {
        PyErr_NoMemory();
        goto exit;
    }
    for (i = 0; i < n; i++) {
        members[i].name = PyUnicode_AsUTF8(PyList_GET_ITEM(names, i));
        if (!members[i].name) { goto exit; }
        members[i].type = T_OBJECT;
        members[i].offset = offsetof(changeObject, f) + i * sizeof(PyObject *);
        members[i].flags = 0;
    }
    slots[8].pfunc = members;
    qualname = PyMem_Malloc(strlen(defs[kind].name) + 32);
    if (!qualname) { PyErr_NoMemory(); goto exit; }
    strcpy(qualname, "pylogicaldecoding.");
    strcat(qualname, defs[kind].name);
    spec.name = qualname;
    spec.basicsize = (int)(offsetof(changeObject, f) + n * sizeof(PyObject *));
    spec.itemsize = 0;
    spec.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
    spec.slots = slots;
    if (!(type = PyType_FromSpecWithBases(&spec, bases))) { goto exit; }
    {
        PyObject *t = PyList_AsTuple(names);
        int r;
        if (!t) { Py_CLEAR(type); goto exit; }
        r = PyObject_SetAttrString(type, "_fields", t);
        if (r == 0) { r = PyObject_SetAttrString(type, "__match_args__", t); }
        Py_DECREF(t);
        if (r < 0) { Py_CLEAR(type); goto exit; }
    }
    /* the type copied the member table, not the names it points to:
     * keep them, as long as the type lives (for ever) */
    Py_INCREF(names);

exit:
#if PY_VERSION_HEX >= 0x030B0000
    /* Python >= 3.11 copies the name into the type; before, tp_name points
     * into it and it must live as long as the type (for ever) */
    PyMem_Free(qualname);
#else
    if (!type) { PyMem_Free(qualname); }
#endif
    PyMem_Free(members);
    Py_XDECREF(fields);
    Py_XDECREF(names);
    return (PyTypeObject *)type;
}

RAISES_NEG int
change_init(PyObject *module)
{
    PyObject *bases = NULL, *colbases = NULL;
    PyType_Slot base_slots[] = {
        {Py_tp_doc, "Base class of every decoded change."},
        {0, NULL},
    };
    PyType_Spec base_spec = {
        "pylogicaldecoding.Change", sizeof(PyObject), 0,
        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, base_slots,
    };
    int i, rv = -1;

    if (!change_base) {
        if (!(change_base = (PyTypeObject *)PyType_FromSpec(&base_spec))) {
            goto exit;
        }
        if (!(bases = PyTuple_Pack(1, (PyObject *)change_base))) { goto exit; }
        if (!(colbases = PyTuple_Pack(1, (PyObject *)&PyBaseObject_Type))) {
            goto exit;
        }
        for (i = 0; i < CH_NKINDS; i++) {
            change_types[i] = make_type(
                i, module, i == CH_COLUMN ? colbases : bases);
            if (!change_types[i]) { goto exit; }
        }
        if (PyType_Ready(&unchangedType) < 0) { goto exit; }
        if (!(pld_UNCHANGED = PyObject_New(PyObject, &unchangedType))) {
            goto exit;
        }
    }
    Py_INCREF(change_base);
    if (PyModule_AddObject(module, "Change", (PyObject *)change_base) < 0) {
        Py_DECREF(change_base);
        goto exit;
    }
    for (i = 0; i < CH_NKINDS; i++) {
        Py_INCREF(change_types[i]);
        /* _core.Message is the stream's message type: not this one */
        if (PyModule_AddObject(module,
                i == CH_MESSAGE ? "LogicalMessage" : defs[i].name,
                (PyObject *)change_types[i]) < 0) {
            Py_DECREF(change_types[i]);
            goto exit;
        }
    }
    Py_INCREF(pld_UNCHANGED);
    if (PyModule_AddObject(module, "UNCHANGED", pld_UNCHANGED) < 0) {
        Py_DECREF(pld_UNCHANGED);
        goto exit;
    }
    rv = 0;

exit:
    Py_XDECREF(bases);
    Py_XDECREF(colbases);
    return rv;
}
