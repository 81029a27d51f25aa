/* message.h - the Message type: one XLogData message of the stream */

#ifndef PLD_MESSAGE_H
#define PLD_MESSAGE_H 1

#include "pld.h"

extern HIDDEN PyTypeObject messageType;

typedef struct {
    PyObject_HEAD
    PyObject *payload;      /* str or bytes */
    PyObject *change;       /* decoded change, or NULL before decoding */
    lsn_t data_start;
    lsn_t wal_end;
    int64_t send_time;      /* microseconds since 2000-01-01 UTC */
} messageObject;

HIDDEN PyObject *message_new(PyObject *payload, lsn_t data_start,
                             lsn_t wal_end, int64_t send_time) RAISES;

#endif /* PLD_MESSAGE_H */
