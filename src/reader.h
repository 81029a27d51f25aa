/* reader.h - the Reader type: a replication connection and its stream */

#ifndef PLD_READER_H
#define PLD_READER_H 1

#include "pld.h"
#include "connection.h"

#include <pthread.h>
#include <signal.h>
#include <sys/types.h>

extern HIDDEN PyTypeObject readerType;

/* The lock rule (psycopg2's): the connection lock serialises libpq between
 * the Python side and the keepalive thread, and guards the positions.
 *
 * - Never block on the lock while holding the GIL: LOCK() tries it, and
 *   if another thread has it, releases the GIL before waiting for it.
 *   (The keepalive thread, which never takes the GIL, uses plain locking.)
 * - While holding the lock: never wait on the socket (poll()), never call
 *   into Python (no callback, no signal handler, no object created or
 *   released: that may run the GC and finalizers, which may touch the
 *   reader), never run a blocking libpq call. Only non-blocking libpq
 *   calls and plain C state changes happen under it; errors are raised
 *   after UNLOCK().
 *
 * Then whoever holds the lock releases it without needing anything that
 * a thread waiting for it holds: no deadlock between the lock and the GIL,
 * and a signal handler or finalizer touching the reader cannot deadlock
 * its own thread. */
#define LOCK(self) do { \
    if (pthread_mutex_trylock(&(self)->conn->lock) != 0) { \
        Py_BEGIN_ALLOW_THREADS \
        pthread_mutex_lock(&(self)->conn->lock); \
        Py_END_ALLOW_THREADS \
    } \
} while (0)
#define LOCK_NOGIL(self) pthread_mutex_lock(&(self)->conn->lock)
#define UNLOCK(self) pthread_mutex_unlock(&(self)->conn->lock)

typedef struct {
    PyObject_HEAD

    connectionObject *conn;     /* PGconn, lock, owner pid, command state */
    PyObject *weakreflist;
    int sync_ok;                /* lock and cond initialised */

    pthread_cond_t cond;        /* wakes the keepalive thread */
    pthread_t ka_thread;
    int ka_running;             /* the keepalive thread exists */
    int ka_quit;                /* asks it to exit */

    int copying;                /* inside COPY BOTH */
    int streaming;              /* inside _stream() */
    volatile sig_atomic_t stop_requested;
    int polling;                /* waiting in poll(): ack() must wake us */
    int wakeup_fds[2];          /* self-pipe: stop()/ack() from elsewhere */

    int binary;                 /* payloads as bytes rather than str */
    PyObject *decoder;          /* decoder(msg) -> change, or NULL */

    lsn_t received_lsn;         /* data_start of the last delivered message */
    lsn_t delivered_max;        /* highest data_start delivered */
    lsn_t flushed_lsn;          /* acked: the only position confirmed */
    lsn_t sent_flushed_lsn;     /* flush position in the last status sent */
    lsn_t server_wal_end;       /* latest walEnd the server told us */
    lsn_t until_lsn;            /* stop before messages past it (0: never) */
    lsn_t backlog_end;          /* server's WAL position at the start: the
                                 * stream batches only well before it */

    double status_interval;     /* seconds between status updates */
    double keepalive_interval;  /* thread's period while event() runs, 0=off */
    double last_status;         /* monotonic time of the last status update */
    double recv_timeout;        /* silence that means a dead peer, 0: off */
    int feedback_pending;       /* an ack is waiting to be sent */
    int out_pending;            /* a status update is queued in libpq, not
                                 * yet all written to the socket */
    lsn_t queued_flushed_lsn;   /* its flush position */
    int unacked;                /* a delivered message awaits its ack */
    int confirm_keepalives;     /* see pq_read_message(), 'k' */
    int64_t status_count;       /* status updates sent (for tests/stats);
                                 * under the lock */
    int64_t messages;           /* XLogData messages received */
    int64_t bytes;              /* their payload bytes (stats) */
    int64_t transactions;       /* commits decoded (stats) */
    int64_t acks;               /* ack() calls that moved flushed_lsn */
    PyObject *last_commit;      /* the last commit change decoded, or NULL */

    /* Batching a backlog's wake-ups: the rule's state (batch_before_wait()
     * in reader_type.c, used by the C stream loop and AsyncReader alike)
     * and its counters (stats, tests, bench/). Stream thread only. */
    int batching;               /* waits batch now */
    int batch_quick;            /* quick wake-ups in a row so far */
    int batch_pauses;           /* the kernel does not batch: pause instead */
    int64_t batch_seen;         /* messages at the last wait */
    double batch_last;          /* monotonic time of the last wait */
    int64_t waits;              /* waits for the socket while streaming */
    double live_quiet_since;    /* liveness: waiting, nothing received since */
    int64_t live_seen;          /* messages at the last wake-up */
    int live_pinged;            /* a reply was asked for */
    int64_t batch_waits;        /* ... of them while batching */
    int64_t pauses;             /* ... of them after a pause (Unix socket) */

    /* The non-blocking path (asyncio): the event loop waits on the socket,
     * these calls only ever do what can be done without waiting. */
    int ending_copy;            /* CopyDone sent by _end_copy_start() */
} readerObject;

HIDDEN RAISES_NEG int reader_init_type(void);
HIDDEN PyObject *reader_read_message_nb(readerObject *self) RAISES;

#endif /* PLD_READER_H */
