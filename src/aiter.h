/* aiter.h - AsyncIter: the C fast path of AsyncReader's `async for` */

#ifndef PLD_AITER_H
#define PLD_AITER_H 1

#include "reader.h"

extern HIDDEN PyTypeObject aiterType;

typedef struct {
    PyObject_HEAD
    readerObject *reader;   /* the stream read (strong reference) */
    PyObject *slow;         /* slow(...) -> awaitable: the Python path */
    PyObject *value;        /* the message the ready awaitable returns */
    double yield_every;     /* let the loop run at least this often (s) */
    double yielded;         /* monotonic time the loop last ran */
    int enabled;            /* the Python path allows the fast one */
    int stopped;            /* stop() was called */
} aiterObject;

HIDDEN RAISES_NEG int aiter_init_type(PyObject *module);

#endif /* PLD_AITER_H */
