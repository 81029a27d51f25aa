/* pqpath.h - every libpq call of the module */

#ifndef PLD_PQPATH_H
#define PLD_PQPATH_H 1

#include "reader.h"

/* results of pq_read_message() */
#define PQ_MSG_NONE 0       /* nothing complete in the buffer */
#define PQ_MSG_DATA 1       /* an XLogData message was built */
#define PQ_MSG_END 2        /* the server ended the stream */

/* How long the server may take to finish a stream it ended (seconds),
 * when recv_timeout is not set */
#define PQ_END_TIMEOUT 5.0

/* results of pq_wait() */
#define PQ_WAIT_TIMEOUT 0
#define PQ_WAIT_READY 1
#define PQ_WAIT_WAKEUP 2

/* -- the connection (psycopg2: connection_int.c, pqpath.c on a
 * connectionObject) -- */
HIDDEN void pq_raise(connectionObject *conn, PGresult *res,
                     PyObject *cls) RAISES;
HIDDEN void pq_raise_message(PyObject *cls, const char *msg) RAISES;
HIDDEN RAISES_NEG int pq_check_open(connectionObject *conn);
HIDDEN RAISES_NEG int pq_connect(connectionObject *conn,
                                 const char *const *keys,
                                 const char *const *values);
HIDDEN void pq_close(connectionObject *conn);
HIDDEN int pq_in_child(connectionObject *conn);
HIDDEN PyObject *pq_execute(connectionObject *conn, const char *command,
                            double timeout) RAISES;
HIDDEN RAISES_NEG int pq_wait(connectionObject *conn, int for_write,
                              double timeout);
HIDDEN void pq_wake_up(connectionObject *conn);
HIDDEN int pq_set_batching(connectionObject *conn, int on);
HIDDEN void pq_pause(double seconds);

/* the non-blocking path: results of pq_connect_poll() and pq_end_copy_poll() */
#define PQ_POLL_OK 0        /* done */
#define PQ_POLL_READ 1      /* wait until the socket is readable, call again */
#define PQ_POLL_WRITE 2     /* wait until it is writable, call again */

HIDDEN RAISES_NEG int pq_connect_start(connectionObject *conn,
                                       const char *const *keys,
                                       const char *const *values);
HIDDEN RAISES_NEG int pq_connect_poll(connectionObject *conn);
HIDDEN RAISES_NEG int pq_send_query(connectionObject *conn,
                                    const char *command, int copy);
HIDDEN RAISES_NEG int pq_flush(connectionObject *conn);
HIDDEN RAISES_NEG int pq_poll_result(connectionObject *conn, PyObject **out);

/* -- the replication stream on a connection (psycopg2: pqpath.c on a
 * replicationCursorObject) -- */
HIDDEN RAISES_NEG int pq_stream_wait(readerObject *self, int for_write,
                                     double timeout);
HIDDEN RAISES_NEG int pq_start_copy(readerObject *self, const char *command,
                                    double timeout);
HIDDEN void pq_copy_started(readerObject *self);
HIDDEN RAISES_NEG int pq_consume_input(readerObject *self);
HIDDEN RAISES_NEG int pq_read_message(readerObject *self, PyObject **msg);
HIDDEN int pq_send_status_nogil(readerObject *self, int reply);
HIDDEN RAISES_NEG int pq_send_status(readerObject *self, int reply);
HIDDEN RAISES_NEG int pq_send_status_if_due(readerObject *self, double now);
HIDDEN RAISES_NEG int pq_final_status(readerObject *self, double timeout);
HIDDEN RAISES_NEG int pq_end_copy(readerObject *self, double timeout);
HIDDEN RAISES_NEG int pq_stream_flush(readerObject *self);
HIDDEN RAISES_NEG int pq_end_copy_start(readerObject *self);
HIDDEN RAISES_NEG int pq_end_copy_poll(readerObject *self);

HIDDEN PyObject *pq_conninfo_parse(const char *dsn) RAISES;
HIDDEN PyObject *pq_conninfo_keywords(void) RAISES;

#endif /* PLD_PQPATH_H */
