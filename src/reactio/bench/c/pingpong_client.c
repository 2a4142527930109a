/*
 * pingpong_client.c: the C floor client of `python -m reactio.bench pingpong`.
 *
 * One TCP connection to 127.0.0.1:PORT with TCP_NODELAY (or, when PORT is "unix:PATH", a Unix
 * stream socket connection to PATH), strict ping-pong (one message in
 * flight), reactio's wire format:
 *   u16 body length (little-endian) | i64 CLOCK_MONOTONIC send time in ns (little-endian) | body
 * A message is SIZE bytes in all. The round-trip time is taken with CLOCK_MONOTONIC from just
 * before the write until the whole echo has been read. The first WARMUP round trips are not
 * recorded; the next COUNT are written to SAMPLES_FILE as native int64 nanoseconds.
 *
 * Usage: pingpong_client PORT COUNT WARMUP SIZE SAMPLES_FILE [--spin] [--timeout S]
 * Stdout, for the harness: "progress <n>" lines about twice a second, then
 * "done <count> <elapsed_ns>" where elapsed_ns is the wall time of the recorded round trips.
 * The echo is checked (length and timestamp) so that a broken server fails loudly.
 * --spin polls epoll with a zero timeout; --timeout S (default 600) is a SIGALRM watchdog.
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

#define PROG "pingpong_client"
#include "net_util.h"

/* The send buffer is full (rare: only for large messages): wait until the socket is
 * writable, then go back to the usual read interest. */
static void wait_writable(int ep, int fd, int spin) {
    struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0) die("epoll_ctl");
    for (;;) {
        struct epoll_event out;
        int n = epoll_wait(ep, &out, 1, spin ? 0 : -1);
        if (n > 0) break;
        if (n < 0 && errno != EINTR) die("epoll_wait");
    }
    ev.events = EPOLLIN;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0) die("epoll_ctl");
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: pingpong_client PORT COUNT WARMUP SIZE SAMPLES_FILE [--spin] [--timeout S]\n");
        return 2;
    }
    const char *addr = argv[1];
    long count = atol(argv[2]), warmup = atol(argv[3]), size = atol(argv[4]);
    const char *samples_path = argv[5];
    int spin = 0;
    long timeout_s = 600;
    for (int i = 6; i < argc; i++) {
        if (!strcmp(argv[i], "--spin")) spin = 1;
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout_s = atol(argv[++i]);
        else fail("bad option");
    }
    if (size < HDR || size > HDR + 65535) fail("SIZE must be 10..65545");
    if (count < 1 || warmup < 0) fail("bad COUNT or WARMUP");
    alarm((unsigned)timeout_s);
    signal(SIGPIPE, SIG_IGN);  /* a peer that resets gives EPIPE, not a dead process */

    int64_t *samples = malloc((size_t)count * sizeof *samples);
    unsigned char *msg = calloc(1, (size_t)size), *in = malloc((size_t)size);
    if (!samples || !msg || !in) fail("out of memory");
    init_msg(msg, size);

    /* Blocking connect: no signal handler is installed, so it cannot return EINTR. */
    int fd = connect_to(addr);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl(ADD)");

    long total = warmup + count;
    int64_t start = 0, next_progress = now_ns() + 500000000LL;
    for (long i = 0; i < total; i++) {
        int64_t t0 = now_ns();
        if (i == warmup) start = t0;
        put_i64le(msg + 2, t0);
        /* Send the whole message; on a full send buffer wait for EPOLLOUT. */
        size_t off = 0;
        while (off < (size_t)size) {
            ssize_t w = write(fd, msg + off, (size_t)size - off);
            if (w > 0) { off += (size_t)w; continue; }
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                wait_writable(ep, fd, spin);
                continue;
            }
            die("write");
        }
        /* Read exactly one echoed message. Strict ping-pong: the server sends nothing else. */
        size_t got = 0;
        while (got < (size_t)size) {
            ssize_t r = read(fd, in + got, (size_t)size - got);
            if (r > 0) { got += (size_t)r; continue; }
            if (r == 0) fail("server closed the connection");
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) die("read");
            struct epoll_event out;
            int n = epoll_wait(ep, &out, 1, spin ? 0 : -1);
            if (n < 0 && errno != EINTR) die("epoll_wait");
        }
        int64_t t1 = now_ns();
        if (in[0] != msg[0] || in[1] != msg[1] || get_i64le(in + 2) != t0)
            fail("echo does not match the message sent");
        if (i >= warmup) samples[i - warmup] = t1 - t0;
        if (t1 >= next_progress) {
            printf("progress %ld\n", i >= warmup ? i - warmup + 1 : 0);
            fflush(stdout);
            next_progress = t1 + 500000000LL;
        }
    }
    int64_t elapsed = now_ns() - start;
    close(fd);

    FILE *f = fopen(samples_path, "wb");
    if (!f) die("open samples file");
    if (fwrite(samples, sizeof *samples, (size_t)count, f) != (size_t)count || fclose(f) != 0)
        die("write samples file");
    printf("done %ld %lld\n", count, (long long)elapsed);
    fflush(stdout);
    return 0;
}
