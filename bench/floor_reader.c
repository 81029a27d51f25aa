/* floor_reader: the least CPU any client can spend draining a slot.
 *
 * Built and run by bench_unix_floor.py (not part of the package). libpq
 * connects and sends START_REPLICATION; from then on the socket is read
 * raw, recv() into a 1 MiB buffer, and the CopyData framing walked only to
 * find the first XLogData at or past END: no copy, no allocation, no
 * object per message, no status update (the slot is not moved).
 *
 * PAUSE_US > 0 batches wake-ups as our Reader does while it batches: the
 * socket gets SO_RCVLOWAT 64 kB and each poll() lasts at most 2 ms (TCP
 * honours it), and the reader sleeps PAUSE_US microseconds before each
 * poll() (what batches a Unix socket, which ignores SO_RCVLOWAT).
 * PAUSE_US = 0: no batching, a poll() as soon as the socket is empty.
 *
 *     floor_reader CONNINFO SLOT END PAUSE_US [OPTIONS]
 *
 * CONNINFO must ask for replication=database; OPTIONS is the plugin's
 * option list as START_REPLICATION takes it, e.g. ("proto_version" '1').
 * Prints one JSON line: wall, user, sys (connect included), messages
 * (XLogData), recvs, waits (poll() calls). */

#define _DEFAULT_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define BUF_SIZE (1 << 20)
#define LOWAT 65536
#define LOWAT_WAIT_MS 2

static double
mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double
tv(struct timeval t)
{
    return t.tv_sec + t.tv_usec * 1e-6;
}

static uint32_t
be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16)
        | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t
be64(const unsigned char *p)
{
    return ((uint64_t)be32(p) << 32) | be32(p + 4);
}

int
main(int argc, char **argv)
{
    PGconn *conn;
    unsigned char *buf;
    char query[4096];
    struct rusage r0, r1;
    struct timespec pause;
    uint64_t end;
    size_t have = 0;
    long pause_us, messages = 0, recvs = 0, waits = 0;
    double t0;
    int fd, done = 0;

    if (argc < 5) {
        fprintf(stderr, "usage: floor_reader CONNINFO SLOT END PAUSE_US "
            "[OPTIONS]\n");
        return 2;
    }
    end = strtoull(argv[3], NULL, 10);
    pause_us = atol(argv[4]);
    pause.tv_sec = pause_us / 1000000;
    pause.tv_nsec = (pause_us % 1000000) * 1000L;
    if (!(buf = malloc(BUF_SIZE))) { return 1; }

    getrusage(RUSAGE_SELF, &r0);
    t0 = mono();
    conn = PQconnectdb(argv[1]);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "%s", PQerrorMessage(conn));
        return 1;
    }
    snprintf(query, sizeof(query), "START_REPLICATION SLOT \"%s\" LOGICAL "
        "0/0 %s", argv[2], argc > 5 ? argv[5] : "");
    if (!PQsendQuery(conn, query) || PQflush(conn) != 0) {
        fprintf(stderr, "%s", PQerrorMessage(conn));
        return 1;
    }
    fd = PQsocket(conn);
    if (pause_us > 0) {
        int v = LOWAT;
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v));
    }

    while (!done) {
        size_t off = 0;
        ssize_t n = recv(fd, buf + have, BUF_SIZE - have, MSG_DONTWAIT);

        if (n == 0) {
            fprintf(stderr, "the server closed the connection\n");
            return 1;
        }
        if (n < 0) {
            struct pollfd p;
            if (errno == EINTR) { continue; }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                perror("recv");
                return 1;
            }
            if (pause_us > 0) { nanosleep(&pause, NULL); }
            p.fd = fd;
            p.events = POLLIN;
            p.revents = 0;
            (void)poll(&p, 1, pause_us > 0 ? LOWAT_WAIT_MS : -1);
            waits++;
            continue;
        }
        recvs++;
        have += (size_t)n;
        /* walk the framing: type byte, int32 length (itself included) */
        while (have - off >= 5) {
            uint32_t len = be32(buf + off + 1);
            if (len < 4 || len > BUF_SIZE - 1) {
                fprintf(stderr, "bad message length %u\n", len);
                return 1;
            }
            if (have - off < 1 + (size_t)len) { break; }
            if (buf[off] == 'E') {
                fprintf(stderr, "the server sent an error\n");
                return 1;
            }
            /* CopyData holding XLogData: 'w', dataStart, walEnd, time */
            if (buf[off] == 'd' && len >= 4 + 25 && buf[off + 5] == 'w') {
                messages++;
                if (be64(buf + off + 6) >= end) { done = 1; break; }
            }
            off += 1 + (size_t)len;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
    }

    getrusage(RUSAGE_SELF, &r1);
    printf("{\"wall\": %.6f, \"user\": %.6f, \"sys\": %.6f, "
        "\"messages\": %ld, \"recvs\": %ld, \"waits\": %ld}\n",
        mono() - t0, tv(r1.ru_utime) - tv(r0.ru_utime),
        tv(r1.ru_stime) - tv(r0.ru_stime), messages, recvs, waits);
    fflush(stdout);
    /* no Terminate, no CopyDone: the server sees the connection close */
    _exit(0);
}
