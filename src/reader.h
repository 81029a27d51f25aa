/* reader.h - the Reader type: a replication connection and its stream */

#ifndef PLD_READER_H
#define PLD_READER_H 1

#include "pld.h"
#include "connection.h"

#include <pthread.h>
#include <signal.h>
#include <sys/types.h>

extern HIDDEN PyTypeObject readerType;

/* The lock rule: see connection.h. The stream's positions are guarded by
 * its connection's lock. */
#define LOCK(self) CONN_LOCK((self)->conn)
#define LOCK_NOGIL(self) CONN_LOCK_NOGIL((self)->conn)
#define UNLOCK(self) CONN_UNLOCK((self)->conn)

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
    int polling;                /* waiting in poll(): ack() must wake us
                                 * (through conn's wake-up pipe) */

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
