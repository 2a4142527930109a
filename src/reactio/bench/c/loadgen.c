/*
 * loadgen.c: the C epoll load generator of `python -m reactio.bench scale`.
 *
 * Opens CONNS TCP connections to 127.0.0.1:PORT (TCP_NODELAY) and keeps exactly one
 * SIZE-byte message in flight on each (reactio's wire format: u16 body length LE | i64
 * CLOCK_MONOTONIC send ns LE | body). Each echo is checked and answered with the next
 * message at once. Phases:
 *   connect  all connections are opened (non-blocking connects, bounded by --timeout);
 *   warm-up  WARMUP_S seconds of traffic, not recorded;
 *   measure  DURATION_S seconds: every echo completed in the window is counted and its
 *            round-trip time (from just before its write to the end of its read) recorded.
 * Then every connection is closed.
 *
 * Usage: loadgen PORT CONNS WARMUP_S DURATION_S SIZE SAMPLES_FILE [--timeout S]
 * Stdout, for the harness (which reads the server's CPU time at the window's edges):
 *   "connected <conns>", "measure-start", "progress <messages>" about once a second
 *   while measuring, "measure-end <messages> <elapsed_ns>",
 *   and "done" once the samples (native int64 ns, one per message) are in SAMPLES_FILE.
 * --timeout S (default 600) is a SIGALRM watchdog.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROG "loadgen"
#include "net_util.h"

#define MAX_EVENTS 1024
#define CONNECT_TIMEOUT_NS (30LL * 1000000000LL)

enum { CONNECTING, RUNNING };

struct conn {
    int fd;
    int state;
    int64_t sent_at;      /* CLOCK_MONOTONIC ns just before the message was written */
    size_t woff;          /* bytes of the current message written so far */
    size_t rlen;          /* bytes of the echo read so far */
    unsigned char *msg;   /* the message in flight (SIZE bytes) */
    unsigned char *in;    /* the echo being read (SIZE bytes) */
};

static long size;
static int ep;

static void set_events(struct conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl(MOD)");
}

/* Write the rest of the message in flight; on a full send buffer wait for EPOLLOUT. */
static void flush(struct conn *c) {
    while (c->woff < (size_t)size) {
        ssize_t w = write(c->fd, c->msg + c->woff, (size_t)size - c->woff);
        if (w > 0) { c->woff += (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_events(c, EPOLLIN | EPOLLOUT);
            return;
        }
        die("write");
    }
}

static void send_next(struct conn *c, int64_t t) {
    put_i64le(c->msg + 2, t);
    c->sent_at = t;
    c->woff = 0;
    c->rlen = 0;
    flush(c);
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: loadgen PORT CONNS WARMUP_S DURATION_S SIZE SAMPLES_FILE [--timeout S]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    long nconns = atol(argv[2]);
    double warmup_s = atof(argv[3]), duration_s = atof(argv[4]);
    size = atol(argv[5]);
    const char *samples_path = argv[6];
    long timeout_s = 600;
    for (int i = 7; i < argc; i++) {
        if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout_s = atol(argv[++i]);
        else fail("bad option");
    }
    if (nconns < 1 || size < HDR || size > HDR + 65535 || duration_s <= 0 || warmup_s < 0)
        fail("bad arguments");
    alarm((unsigned)timeout_s);
    signal(SIGPIPE, SIG_IGN);  /* a peer that resets gives EPIPE, not a dead process */
    raise_nofile();

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns) fail("out of memory");
    struct sockaddr_in addr = loopback_addr(port);
    for (long i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        c->msg = calloc(1, (size_t)size);
        c->in = malloc((size_t)size);
        if (!c->msg || !c->in) fail("out of memory");
        init_msg(c->msg, size);
        c->fd = connect_nonblocking(&addr);
        c->state = CONNECTING;
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl(ADD)");
    }

    /* Samples of the measurement window, grown as needed. */
    size_t ns = 0, cap = 1 << 16;
    int64_t *samples = malloc(cap * sizeof *samples);
    if (!samples) fail("out of memory");

    long connected = 0;
    int64_t t_connect_deadline = now_ns() + CONNECT_TIMEOUT_NS;
    int64_t t_start = 0, t_end = 0;  /* the measurement window, known once all connected */
    int measuring = 0;
    int64_t next_progress = 0;
    long messages = 0;
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, 10);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        int64_t t = now_ns();
        if (connected < nconns) {
            if (t > t_connect_deadline) fail("timed out connecting");
        } else if (!measuring && t >= t_start && t < t_end) {
            measuring = 1;
            next_progress = t + 1000000000LL;
            printf("measure-start\n");
            fflush(stdout);
        } else if (t >= t_end) {
            break;
        } else if (measuring && t >= next_progress) {
            next_progress = t + 1000000000LL;
            printf("progress %ld\n", messages);
            fflush(stdout);
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            uint32_t e = evs[i].events;
            if (c->state == CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) die("getsockopt");
                if (err) { errno = err; die("connect"); }
                c->state = RUNNING;
                set_events(c, EPOLLIN);
                if (++connected == nconns) {
                    printf("connected %ld\n", nconns);
                    fflush(stdout);
                    int64_t t0 = now_ns();
                    t_start = t0 + (int64_t)(warmup_s * 1e9);
                    t_end = t_start + (int64_t)(duration_s * 1e9);
                    for (long j = 0; j < nconns; j++) send_next(&conns[j], now_ns());
                }
                continue;
            }
            if (e & EPOLLOUT) {
                flush(c);
                if (c->woff == (size_t)size) set_events(c, EPOLLIN);
            }
            if (!(e & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            for (;;) {
                ssize_t r = read(c->fd, c->in + c->rlen, (size_t)size - c->rlen);
                if (r > 0) {
                    c->rlen += (size_t)r;
                    if (c->rlen < (size_t)size) continue;
                    break;
                }
                if (r == 0) fail("server closed a connection");
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                die("read");
            }
            if (c->rlen < (size_t)size) continue;
            if (c->woff < (size_t)size) fail("echo arrived before the message was sent");
            int64_t t1 = now_ns();
            if (memcmp(c->in, c->msg, HDR) != 0) fail("echo does not match the message sent");
            if (t1 >= t_start && t1 < t_end) {
                if (ns == cap) {
                    cap *= 2;
                    int64_t *p = realloc(samples, cap * sizeof *samples);
                    if (!p) fail("out of memory");
                    samples = p;
                }
                samples[ns++] = t1 - c->sent_at;
                messages++;
            }
            send_next(c, t1);
        }
    }
    printf("measure-end %ld %lld\n", messages, (long long)(t_end - t_start));
    fflush(stdout);
    for (long i = 0; i < nconns; i++) close(conns[i].fd);

    FILE *f = fopen(samples_path, "wb");
    if (!f) die("open samples file");
    if (fwrite(samples, sizeof *samples, ns, f) != ns || fclose(f) != 0) die("write samples file");
    printf("done\n");
    fflush(stdout);
    return 0;
}
