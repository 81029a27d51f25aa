/* connection.h - the Connection type: a libpq connection and its lock */

#ifndef PLD_CONNECTION_H
#define PLD_CONNECTION_H 1

#include "pld.h"

#include <pthread.h>
#include <sys/types.h>

extern HIDDEN PyTypeObject connectionType;

/* What belongs to the connection rather than to a stream on it, as
 * psycopg2's connectionObject is apart from its replicationCursorObject:
 * the PGconn, the lock serialising libpq, the process that opened it, and
 * the state of a connect or command run without blocking. The stream
 * (positions, ack rules, keepalive thread: readerObject) holds one. */
typedef struct {
    PyObject_HEAD

    PGconn *pgconn;
    PyObject *weakreflist;

    /* Serialises libpq use between the Python side and the keepalive
     * thread. Held by whoever calls libpq; never held while Python code
     * (event(), a signal handler) runs or while waiting in poll(). */
    pthread_mutex_t lock;
    pid_t owner_pid;            /* the process that opened the connection */

    /* The non-blocking path (asyncio): the event loop waits on the socket,
     * these calls only ever do what can be done without waiting. */
    int connecting;             /* PQconnectStart done, not yet CONNECTION_OK */
    int cmd_running;            /* a command sent by _send_query() runs */
    int cmd_copy;               /* ... and is expected to start COPY BOTH */
    PGresult *cmd_result;       /* the last result of the running command */
} connectionObject;

HIDDEN RAISES_NEG int connection_init_type(PyObject *module);

#endif /* PLD_CONNECTION_H */
