/*
 * pingpong_client.c: the C floor client of `python -m reactio.bench pingpong`.
 *
 * One TCP connection to 127.0.0.1:PORT with TCP_NODELAY (or, when PORT is "unix:PATH", a Unix
 * stream socket connection to PATH), strict ping-pong (one message in
 * flight), reactio's wire format:
 *   u16 body length (little-endian) | i64 CLOCK_MONOTONIC send time in ns (little-endian) | body
 * A message is SIZE bytes in all. The loop, its timing, checks and output are
 * pingpong_loop.h's (shared with udp_pingpong.c); this file is the stream transport.
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
#include "pingpong_loop.h"

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

struct stream_io { int fd, ep, spin; };

/* Send the whole message; on a full send buffer wait for EPOLLOUT. */
static void stream_send(void *io, const unsigned char *msg, size_t size) {
    struct stream_io *s = io;
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(s->fd, msg + off, size - off);
        if (w > 0) { off += (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wait_writable(s->ep, s->fd, s->spin);
            continue;
        }
        die("write");
    }
}

/* Read exactly one echoed message. Strict ping-pong: the server sends nothing else. */
static size_t stream_recv(void *io, unsigned char *in, size_t size) {
    struct stream_io *s = io;
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(s->fd, in + got, size - got);
        if (r > 0) { got += (size_t)r; continue; }
        if (r == 0) fail("server closed the connection");
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) die("read");
        struct epoll_event out;
        int n = epoll_wait(s->ep, &out, 1, s->spin ? 0 : -1);
        if (n < 0 && errno != EINTR) die("epoll_wait");
    }
    return got;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: pingpong_client PORT COUNT WARMUP SIZE SAMPLES_FILE [--spin] [--timeout S]\n");
        return 2;
    }
    const char *addr = argv[1];
    long count = atol(argv[2]), warmup = atol(argv[3]), size = atol(argv[4]);
    struct stream_io s = {.spin = 0};
    long timeout_s = 600;
    for (int i = 6; i < argc; i++) {
        if (!strcmp(argv[i], "--spin")) s.spin = 1;
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout_s = atol(argv[++i]);
        else fail("bad option");
    }
    if (size < HDR || size > HDR + 65535) fail("SIZE must be 10..65545");
    if (count < 1 || warmup < 0) fail("bad COUNT or WARMUP");
    alarm((unsigned)timeout_s);
    signal(SIGPIPE, SIG_IGN);  /* a peer that resets gives EPIPE, not a dead process */

    /* Blocking connect: no signal handler is installed, so it cannot return EINTR. */
    s.fd = connect_to(addr);
    s.ep = epoll_create1(EPOLL_CLOEXEC);
    if (s.ep < 0) die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = s.fd};
    if (epoll_ctl(s.ep, EPOLL_CTL_ADD, s.fd, &ev) < 0) die("epoll_ctl(ADD)");

    struct pp_transport t = {stream_send, stream_recv, &s};
    pingpong_loop(&t, count, warmup, size, argv[5]);
    close(s.fd);
    return 0;
}
