/*
 * pipeline_client.c: the C client of `python -m reactio.bench pipeline` (and `cost`).
 *
 * One TCP connection to 127.0.0.1:PORT (TCP_NODELAY), reactio's wire format:
 *   u16 body length (little-endian) | i64 CLOCK_MONOTONIC send time in ns (little-endian) | body
 * Pipelining in bursts, as redis-benchmark -P does: DEPTH messages of SIZE bytes are written
 * with one write(), all stamped with the burst's send time, then the client reads until all
 * DEPTH echoes are back, and starts the next burst. DEPTH messages are in flight at the start
 * of every burst. Bursts make the server's work per message independent of how fast each
 * side is (the whole burst reaches the server as one segment, one read), so system-call and
 * instruction counts per message are reproducible; a sliding window would make them depend
 * on timing. DEPTH 1 is strict ping-pong.
 *
 * Usage: pipeline_client PORT DEPTH SIZE WARMUP COUNT TRACE_COUNT SAMPLES_FILE [--timeout S]
 *   WARMUP, COUNT and TRACE_COUNT are message counts, rounded up to whole bursts.
 *
 * Phases, each announced on stdout for the harness; "paused" means the client has no message
 * in flight and waits for SIGUSR1 before it goes on, so that the harness can read the
 * server's CPU time or attach/detach a tracer while the server is idle:
 *   1. connect, WARMUP messages (not recorded)     -> "paused measure"
 *   2. COUNT messages, every round trip recorded   -> "measured <msgs> <elapsed_ns>"
 *                                                     and "paused trace" or "paused close"
 *   3. if TRACE_COUNT > 0: TRACE_COUNT messages    -> "traced <msgs> <elapsed_ns>",
 *                                                     "paused close"
 *   4. close the connection, write COUNT native int64 round-trip times (ns; a message's time
 *      runs from its burst's write to the read that completed its echo) to SAMPLES_FILE
 *                                                  -> "done"
 * "progress <msgs>" lines come about twice a second during phase 2. Every echo is checked
 * (length and stamp), so a broken server fails loudly. --timeout S (default 600) is a
 * SIGALRM watchdog. Errors go to stderr with a non-zero exit status.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROG "pipeline_client"
#include "net_util.h"

static int fd, ep;
static long depth, size;
static unsigned char *out, *in;     /* one burst out, its echoes in */
static sigset_t usr1;
static uint32_t interest = EPOLLIN;   /* the epoll events fd is registered for */

/* Say what we wait for, then wait for the harness's SIGUSR1 (blocked since start-up, so a
 * signal sent before we get here is pending, not lost). */
static void pause_for(const char *phase) {
    printf("paused %s\n", phase);
    fflush(stdout);
    int sig;
    if (sigwait(&usr1, &sig) != 0) fail("sigwait failed");
}

/* One burst: write DEPTH messages stamped now, read their DEPTH echoes. Writes and reads
 * interleave, so a burst larger than the socket buffers cannot deadlock with a server that
 * stops reading while its own send buffer is full. Stores each message's round-trip time in
 * rtt[0..depth) when rtt is not NULL. */
static void burst(int64_t *rtt) {
    size_t total = (size_t)depth * (size_t)size, woff = 0, got = 0;
    long checked = 0;
    int64_t t0 = now_ns();
    for (long k = 0; k < depth; k++) put_i64le(out + (size_t)k * size + 2, t0);
    while (got < total) {
        int progressed = 0;
        while (woff < total) {
            ssize_t w = write(fd, out + woff, total - woff);
            if (w > 0) { woff += (size_t)w; progressed = 1; continue; }
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            die("write");
        }
        for (;;) {
            ssize_t r = read(fd, in + got, total - got);
            if (r > 0) {
                got += (size_t)r;
                progressed = 1;
                int64_t t1 = now_ns();
                for (; checked < depth && (size_t)(checked + 1) * size <= got; checked++) {
                    const unsigned char *m = in + (size_t)checked * size;
                    if (m[0] != out[0] || m[1] != out[1] || get_i64le(m + 2) != t0)
                        fail("echo does not match the message sent");
                    if (rtt) rtt[checked] = t1 - t0;
                }
                if (got == total) break;
                continue;
            }
            if (r == 0) fail("server closed the connection");
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            die("read");
        }
        if (got > woff) fail("more echoed than sent");
        if (progressed || got == total) continue;
        uint32_t want = EPOLLIN | (woff < total ? EPOLLOUT : 0);
        if (want != interest) {
            struct epoll_event ev = {.events = want, .data.fd = fd};
            if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0) die("epoll_ctl(MOD)");
            interest = want;
        }
        struct epoll_event evo;
        if (epoll_wait(ep, &evo, 1, -1) < 0 && errno != EINTR) die("epoll_wait");
    }
}

static long bursts_for(long msgs) { return (msgs + depth - 1) / depth; }

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: pipeline_client PORT DEPTH SIZE WARMUP COUNT TRACE_COUNT "
                        "SAMPLES_FILE [--timeout S]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    depth = atol(argv[2]);
    size = atol(argv[3]);
    long warmup = atol(argv[4]), count = atol(argv[5]), trace_count = atol(argv[6]);
    const char *samples_path = argv[7];
    long timeout_s = 600;
    for (int i = 8; i < argc; i++) {
        if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout_s = atol(argv[++i]);
        else fail("bad option");
    }
    if (size < HDR || size > HDR + 65535) fail("SIZE must be 10..65545");
    if (depth < 1 || depth > 65536 || depth * size > (64L << 20)) fail("bad DEPTH (1..65536, DEPTH*SIZE <= 64 MiB)");
    if (count < 1 || warmup < 0 || trace_count < 0) fail("bad WARMUP, COUNT or TRACE_COUNT");
    alarm((unsigned)timeout_s);
    signal(SIGPIPE, SIG_IGN);  /* a peer that resets gives EPIPE, not a dead process */
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    if (sigprocmask(SIG_BLOCK, &usr1, NULL) != 0) die("sigprocmask");

    long nb = bursts_for(count);
    count = nb * depth;
    int64_t *samples = malloc((size_t)count * sizeof *samples);
    out = calloc((size_t)depth, (size_t)size);
    in = malloc((size_t)depth * (size_t)size);
    if (!samples || !out || !in) fail("out of memory");
    for (long k = 0; k < depth; k++) {
        unsigned char *m = out + (size_t)k * size;
        init_msg(m, size);
    }

    /* Blocking connect: EINTR is impossible, SIGUSR1 is blocked and no handler is set. */
    fd = connect_loopback(port);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl(ADD)");

    for (long b = bursts_for(warmup); b > 0; b--) burst(NULL);
    pause_for("measure");

    int64_t start = now_ns(), next_progress = start + 500000000LL;
    for (long b = 0; b < nb; b++) {
        burst(samples + b * depth);
        int64_t t = now_ns();
        if (t >= next_progress) {
            printf("progress %ld\n", (b + 1) * depth);
            fflush(stdout);
            next_progress = t + 500000000LL;
        }
    }
    printf("measured %ld %lld\n", count, (long long)(now_ns() - start));
    fflush(stdout);

    if (trace_count > 0) {
        long tb = bursts_for(trace_count);
        pause_for("trace");
        int64_t t0 = now_ns();
        for (long b = 0; b < tb; b++) burst(NULL);
        printf("traced %ld %lld\n", tb * depth, (long long)(now_ns() - t0));
        fflush(stdout);
    }
    pause_for("close");
    close(fd);

    FILE *f = fopen(samples_path, "wb");
    if (!f) die("open samples file");
    if (fwrite(samples, sizeof *samples, (size_t)count, f) != (size_t)count || fclose(f) != 0)
        die("write samples file");
    printf("done\n");
    fflush(stdout);
    return 0;
}
