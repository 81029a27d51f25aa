/* connection.h - the Connection type: a libpq connection and its lock */

#ifndef PLD_CONNECTION_H
#define PLD_CONNECTION_H 1

#include "pld.h"

#include <pthread.h>
#include <sys/types.h>

extern HIDDEN PyTypeObject connectionType;

/* What belongs to the connection rather than to a stream on it, as
 * psycopg2's connectionObject is apart from its replicationCursorObject:
 * the PGconn, the lock serialising libpq, the process that opened it, the
 * wake-up pipe of its waits, and the state of a connect or command run
 * without blocking. The stream (positions, ack rules, keepalive thread:
 * readerObject) holds one. */
typedef struct {
    PyObject_HEAD

    PGconn *pgconn;
    PyObject *weakreflist;

    /* Serialises libpq use between the Python side and the keepalive
     * thread. Held by whoever calls libpq; never held while Python code
     * (event(), a signal handler) runs or while waiting in poll(). */
    pthread_mutex_t lock;
    int lock_ok;                /* lock initialised */
    pid_t owner_pid;            /* the process that opened the connection */

    /* Self-pipe: every wait for the socket (pq_wait()) also waits on
     * wakeup_fds[0], so that a write to wakeup_fds[1] (pq_wake_up(): the
     * stream's stop() and ack(), from a signal handler or another thread)
     * interrupts it, a command's wait included. -1 when not made. */
    int wakeup_fds[2];
    int waiting;                /* threads in pq_wait() on the socket (GIL
                                 * held to change it): close() from Python
                                 * refuses meanwhile */

    /* The non-blocking path (asyncio): the event loop waits on the socket,
     * these calls only ever do what can be done without waiting. */
    int connecting;             /* PQconnectStart done, not yet CONNECTION_OK */
    int cmd_running;            /* a command sent by send_query() runs */
    int cmd_copy;               /* ... and is expected to start COPY BOTH */
    PGresult *cmd_result;       /* the last result of the running command */

    /* The blocking path: a command waits for its answer (send_command()),
     * it was sent by the stream (ReaderBase.execute()/start_copy(): the
     * stream's stop() ends it too), and close() or that stop() asked it to
     * end (GIL held for all three). */
    int in_command;
    int stream_command;
    int interrupt_command;

    /* The stream using the connection (its ReaderBase), if any, told when
     * the connection opens (stream_opened(): GIL held, lock not held) and
     * closes (stream_closed(): under the lock, or in a forked child
     * without it), so that the stream's state follows the connection
     * however it is opened or closed (`reader.connection.close()`
     * included). Plain C, never calling into Python. Borrowed: the stream
     * clears it before it goes. psycopg2 has no such link: its cursor
     * checks `conn->closed` before each use. */
    void *stream;
    void (*stream_opened)(void *stream);
    void (*stream_closed)(void *stream);
} connectionObject;

/* The lock rule (psycopg2's): the connection lock serialises libpq between
 * the Python side and the keepalive thread, and guards the positions of the
 * stream on the connection.
 *
 * - Never block on the lock while holding the GIL: CONN_LOCK() tries it,
 *   and if another thread has it, releases the GIL before waiting for it.
 *   (The keepalive thread, which never takes the GIL, uses plain locking.)
 * - While holding the lock: never wait on the socket (poll()), never call
 *   into Python (no callback, no signal handler, no object created or
 *   released: that may run the GC and finalizers, which may touch the
 *   reader), never run a blocking libpq call. Only non-blocking libpq
 *   calls and plain C state changes happen under it; errors are raised
 *   after CONN_UNLOCK().
 *
 * Then whoever holds the lock releases it without needing anything that
 * a thread waiting for it holds: no deadlock between the lock and the GIL,
 * and a signal handler or finalizer touching the reader cannot deadlock
 * its own thread. */
#define CONN_LOCK(conn) do { \
    if (pthread_mutex_trylock(&(conn)->lock) != 0) { \
        Py_BEGIN_ALLOW_THREADS \
        pthread_mutex_lock(&(conn)->lock); \
        Py_END_ALLOW_THREADS \
    } \
} while (0)
#define CONN_LOCK_NOGIL(conn) pthread_mutex_lock(&(conn)->lock)
#define CONN_UNLOCK(conn) pthread_mutex_unlock(&(conn)->lock)

HIDDEN RAISES_NEG int connection_init_type(PyObject *module);
HIDDEN RAISES_NEG int conn_timeout_from_object(PyObject *obj, double *out);

#endif /* PLD_CONNECTION_H */
