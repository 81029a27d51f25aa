/* snapshot.h - CopyConnection: a plain connection reading COPY rows */

#ifndef PLD_SNAPSHOT_H
#define PLD_SNAPSHOT_H 1

#include "pld.h"
#include "convert.h"

extern HIDDEN PyTypeObject copyconnType;

/* A plain (non-replication) connection used by snapshots and backfills:
 * simple commands, and COPY ... TO STDOUT whose rows are parsed (text or
 * binary format) and converted by the C converters into SnapshotRow
 * changes. One thread uses it at a time (`busy` refuses a second one). It
 * has no keepalive thread, hence no lock: the GIL is released only around
 * poll() and connecting, with `busy` set. */
typedef struct {
    PyObject_HEAD
    PGconn *pgconn;
    int busy;               /* a call is running with the GIL released */
    int copying;            /* inside COPY OUT */
    int binary;             /* the copy is in binary format */
    int header_done;        /* binary: the file header was read */
    Py_ssize_t ncols;
    PyObject *names;        /* tuple of str: the columns, in COPY order */
    PyObject *convs;        /* tuple of converters, same order */
    enum conv_kind *kinds;  /* their kinds */
    PyObject *schema;       /* str */
    PyObject *table;        /* str */
    PyObject *backfill;     /* bool */
    char *scratch;          /* text format: unescaped field */
    size_t scratch_size;
    long long rows;         /* rows read by this connection */
    long long bytes;        /* COPY bytes read by this connection */
} copyconnObject;

HIDDEN RAISES_NEG int copyconn_init_type(PyObject *module);

#endif /* PLD_SNAPSHOT_H */
