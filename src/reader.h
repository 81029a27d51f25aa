/* reader.h - the Reader type: a replication connection and its stream */

#ifndef PLD_READER_H
#define PLD_READER_H 1

#include "pld.h"

#include <pthread.h>
#include <signal.h>

extern HIDDEN PyTypeObject readerType;

typedef struct {
    PyObject_HEAD

    PGconn *pgconn;
    PyObject *weakreflist;

    /* Serialises libpq use between the Python side and the keepalive
     * thread. Held by whoever calls libpq; never held while Python code
     * (event(), a signal handler) runs or while waiting in poll(). */
    pthread_mutex_t lock;
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

    double status_interval;     /* seconds between status updates */
    double keepalive_interval;  /* thread's period while event() runs, 0=off */
    double last_status;         /* monotonic time of the last status update */
    double recv_timeout;        /* silence that means a dead peer, 0: off */
    int feedback_pending;       /* an ack is waiting to be sent */
    int unacked;                /* a delivered message awaits its ack */
    int confirm_keepalives;     /* see pq_read_message(), 'k' */
    int64_t status_count;       /* status updates sent (for tests/stats) */
    int64_t messages;           /* XLogData messages received */
    int64_t bytes;              /* their payload bytes (stats) */
    int64_t transactions;       /* commits decoded (stats) */
    int64_t acks;               /* ack() calls that moved flushed_lsn */
    PyObject *last_commit;      /* the last commit change decoded, or NULL */

    /* The non-blocking path (asyncio): the event loop waits on the socket,
     * these calls only ever do what can be done without waiting. */
    int connecting;             /* PQconnectStart done, not yet CONNECTION_OK */
    int cmd_running;            /* a command sent by _send_query() runs */
    int cmd_copy;               /* ... and is expected to start COPY BOTH */
    int ending_copy;            /* CopyDone sent by _end_copy_start() */
    PGresult *cmd_result;       /* the last result of the running command */
} readerObject;

HIDDEN RAISES_NEG int reader_init_type(void);
HIDDEN PyObject *reader_read_message_nb(readerObject *self) RAISES;

#endif /* PLD_READER_H */
