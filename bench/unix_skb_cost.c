/* unix_skb_cost: what a reader pays per message the writer sends, without
 * PostgreSQL. Built and run by bench_unix_floor.py --synthetic.
 *
 * A forked writer sends N messages of SIZE bytes, PER_SEND messages to
 * each send() (1: one send() per message, as the walsender does),
 * non-blocking, poll()ing for POLLOUT when the socket is full; the reader
 * sleeps PAUSE_US before each poll() and reads with recv(16 kB), as libpq
 * does. Prints the reader's CPU (user, sys) per million messages and its
 * wake-ups: over a Unix socket each send() is one buffer (skb) in the
 * receive queue, which the reader's recv() frees one by one.
 *
 *     unix_skb_cost unix|tcp N SIZE PAUSE_US PER_SEND */

#define _DEFAULT_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double
tv(struct timeval t)
{
    return t.tv_sec + t.tv_usec * 1e-6;
}

static int
tcp_pair(int sv[2])
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0
            || listen(l, 1) < 0
            || getsockname(l, (struct sockaddr *)&a, &al) < 0) {
        return -1;
    }
    sv[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(sv[0], (struct sockaddr *)&a, sizeof(a)) < 0) { return -1; }
    sv[1] = accept(l, NULL, NULL);
    close(l);
    /* the walsender's TCP socket has TCP_NODELAY too */
    setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return sv[1] < 0 ? -1 : 0;
}

int
main(int argc, char **argv)
{
    struct rusage r0, r1;
    struct timespec pause;
    long n, got = 0, need, wakes = 0;
    int size, pause_us, per_send, sv[2];
    char *buf;
    pid_t pid;

    if (argc < 6) {
        fprintf(stderr, "usage: unix_skb_cost unix|tcp N SIZE PAUSE_US "
            "PER_SEND\n");
        return 2;
    }
    n = atol(argv[2]);
    size = atoi(argv[3]);
    pause_us = atoi(argv[4]);
    per_send = atoi(argv[5]);
    if (n <= 0 || size <= 0 || per_send <= 0) { return 2; }
    pause.tv_sec = pause_us / 1000000;
    pause.tv_nsec = (pause_us % 1000000) * 1000L;
    if (strcmp(argv[1], "unix") == 0) {
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
            perror("socketpair");
            return 1;
        }
    }
    else if (tcp_pair(sv) < 0) {
        perror("tcp");
        return 1;
    }

    if ((pid = fork()) == 0) {
        size_t len = (size_t)size * per_send;
        char *m = calloc(len, 1);
        long i;
        close(sv[0]);
        fcntl(sv[1], F_SETFL, O_NONBLOCK);
        for (i = 0; i < n; i += per_send) {
            size_t off = 0;
            while (off < len) {
                ssize_t k = send(sv[1], m + off, len - off, 0);
                if (k > 0) { off += (size_t)k; continue; }
                if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
                    struct pollfd p = {sv[1], POLLOUT, 0};
                    (void)poll(&p, 1, -1);
                    continue;
                }
                _exit(1);
            }
        }
        _exit(0);
    }
    close(sv[1]);
    buf = malloc(16384);
    need = (n + per_send - 1) / per_send * (long)per_send * size;
    getrusage(RUSAGE_SELF, &r0);
    while (got < need) {
        ssize_t k = recv(sv[0], buf, 16384, MSG_DONTWAIT);
        if (k > 0) { got += k; continue; }
        if (k == 0) { break; }
        if (errno == EINTR) { continue; }
        if (pause_us > 0) { nanosleep(&pause, NULL); }
        {
            struct pollfd p = {sv[0], POLLIN, 0};
            (void)poll(&p, 1, -1);
        }
        wakes++;
    }
    getrusage(RUSAGE_SELF, &r1);
    waitpid(pid, NULL, 0);
    printf("{\"user_per_m\": %.4f, \"sys_per_m\": %.4f, "
        "\"wakes_per_m\": %.0f}\n",
        (tv(r1.ru_utime) - tv(r0.ru_utime)) * 1e6 / n,
        (tv(r1.ru_stime) - tv(r0.ru_stime)) * 1e6 / n, wakes * 1e6 / n);
    return got < need;
}
