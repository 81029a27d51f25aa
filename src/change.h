/* change.h - the change types: decoded events with named fields */

#ifndef PLD_CHANGE_H
#define PLD_CHANGE_H 1

#include "pld.h"

/* Every change type shares this layout: a fixed array of fields, all set
 * (None when unknown), whose count depends on the type. */
typedef struct {
    PyObject_HEAD
    PyObject *f[1];
} changeObject;

/* The types, in the order of the table in change_type.c */
enum change_kind {
    CH_BEGIN, CH_COMMIT, CH_INSERT, CH_UPDATE, CH_DELETE, CH_TRUNCATE,
    CH_MESSAGE, CH_RELATION, CH_TYPE, CH_ORIGIN, CH_STREAM_START,
    CH_STREAM_STOP, CH_STREAM_COMMIT, CH_STREAM_ABORT, CH_BEGIN_PREPARE,
    CH_PREPARE, CH_COMMIT_PREPARED, CH_ROLLBACK_PREPARED, CH_STREAM_PREPARE,
    CH_COLUMN, CH_SNAPSHOT_ROW, CH_SNAPSHOT_START, CH_SNAPSHOT_END,
    CH_NKINDS
};

/* Field positions; they follow the field lists of change_type.c. */
enum { BEGIN_XID, BEGIN_LSN, BEGIN_COMMIT_TIME, BEGIN_FINAL_LSN };
enum { COMMIT_XID, COMMIT_LSN, COMMIT_COMMIT_TIME, COMMIT_END_LSN,
       COMMIT_FLAGS };
/* Insert, Update, Delete */
enum { ROW_SCHEMA, ROW_TABLE, ROW_NEW, ROW_OLD, ROW_LSN, ROW_XID, ROW_RELID };
enum { TRUNC_TABLES, TRUNC_CASCADE, TRUNC_RESTART_IDENTITY, TRUNC_LSN,
       TRUNC_XID, TRUNC_RELIDS };
enum { MSG_PREFIX, MSG_CONTENT, MSG_TRANSACTIONAL, MSG_LSN, MSG_XID };
enum { REL_RELID, REL_SCHEMA, REL_TABLE, REL_REPLICA_IDENTITY, REL_COLUMNS,
       REL_LSN, REL_XID };
enum { TYPE_OID, TYPE_SCHEMA, TYPE_NAME, TYPE_XID };
enum { ORIGIN_NAME, ORIGIN_LSN };
enum { SSTART_XID, SSTART_FIRST_SEGMENT };
enum { SCOMMIT_XID, SCOMMIT_LSN, SCOMMIT_COMMIT_TIME, SCOMMIT_END_LSN,
       SCOMMIT_FLAGS };
enum { SABORT_XID, SABORT_SUBXID, SABORT_ABORT_LSN, SABORT_ABORT_TIME };
/* BeginPrepare, Prepare, StreamPrepare */
enum { PREP_XID, PREP_GID, PREP_LSN, PREP_END_LSN, PREP_PREPARE_TIME,
       PREP_FLAGS };
enum { CPREP_XID, CPREP_GID, CPREP_LSN, CPREP_END_LSN, CPREP_COMMIT_TIME,
       CPREP_FLAGS };
enum { RPREP_XID, RPREP_GID, RPREP_LSN, RPREP_END_LSN, RPREP_PREPARE_TIME,
       RPREP_ROLLBACK_TIME, RPREP_FLAGS };
enum { COL_NAME, COL_TYPE_OID, COL_TYPE_MODIFIER, COL_KEY };
/* snapshots and backfills (snapshot_type.c, snapshot.py) */
enum { SROW_SCHEMA, SROW_TABLE, SROW_NEW, SROW_BACKFILL };

extern HIDDEN PyTypeObject *change_types[CH_NKINDS];
extern HIDDEN PyObject *pld_UNCHANGED;   /* the unchanged TOAST sentinel */

HIDDEN RAISES_NEG int change_init(PyObject *module);
/* A new change of that kind, every field None. */
HIDDEN PyObject *change_new(enum change_kind kind) RAISES;

/* Set field i, stealing v; v NULL (an error is set) changes nothing and
 * returns -1, so that calls chain: `if (change_set(o, i, f()) < 0) ...` */
static inline RAISES_NEG int
change_set(PyObject *o, int i, PyObject *v)
{
    if (!v) { return -1; }
    Py_SETREF(((changeObject *)o)->f[i], v);
    return 0;
}

#endif /* PLD_CHANGE_H */
