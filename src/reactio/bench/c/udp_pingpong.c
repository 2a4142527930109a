/*
 * udp_pingpong.c: the C floor of `python -m reactio.bench pingpong --udp`, server and client.
 *
 * One UDP socket each on 127.0.0.1, one datagram in flight, reactio's wire format in every
 * datagram (u16 body length LE | i64 CLOCK_MONOTONIC send stamp LE | body), SIZE bytes in all.
 *
 *   udp_pingpong server [--spin] [--timeout S]
 *     binds 127.0.0.1:0, prints "port <n>", sends every datagram back to its sender with
 *     one recvfrom + one sendto, and exits 0 when it receives a datagram shorter than a header.
 *   udp_pingpong client PORT COUNT WARMUP SIZE SAMPLES_FILE [--spin] [--timeout S]
 *     connected to the server; pingpong_loop.h's loop (shared with pingpong_client.c) over
 *     send() and recv() (blocking, or non-blocking in a loop with --spin): "progress <n>"
 *     lines, then "done <count> <elapsed_ns>"; the COUNT samples as native int64 ns in
 *     SAMPLES_FILE; at the end a 1-byte datagram tells the server to exit.
 *   udp_pingpong flood PORT COUNT SIZE
 *     (the udpflood mode) sends COUNT datagrams of SIZE bytes as fast as sendmmsg() takes
 *     them, 64 per call, without reading the echoes; then a 1-byte goodbye, 50 times over
 *     100 ms (it may be dropped like any datagram); prints "sent <count> <elapsed_ns>".
 * A lost datagram (not seen on loopback) stalls the run until the --timeout watchdog.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define PROG "udp_pingpong"
#include "net_util.h"
#include "pingpong_loop.h"

static int udp_socket(int spin) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | (spin ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) die("socket");
    return fd;
}

static int server(int spin) {
    int fd = udp_socket(spin);
    struct sockaddr_in a = loopback_addr(0);
    socklen_t n = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (getsockname(fd, (struct sockaddr *)&a, &n) < 0) die("getsockname");
    printf("port %d\n", ntohs(a.sin_port));
    fflush(stdout);
    static unsigned char buf[65536];
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t pl = sizeof peer;
        ssize_t r = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &pl);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            die("recvfrom");
        }
        if (r < HDR) return 0;
        if (sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&peer, pl) < 0 && errno != EAGAIN)
            die("sendto");
    }
}

static void dgram_send(void *io, const unsigned char *msg, size_t size) {
    while (send(*(int *)io, msg, size, 0) < 0)
        if (errno != EINTR && errno != EAGAIN && errno != ENOBUFS) die("send");
}

/* One datagram (blocking recv, or a non-blocking one in a loop with --spin); room for one
 * byte more than SIZE, so that a longer echo shows. */
static size_t dgram_recv(void *io, unsigned char *in, size_t size) {
    ssize_t r;
    while ((r = recv(*(int *)io, in, size + 1, 0)) < 0)
        if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) die("recv");
    return (size_t)r;
}

static int client(char **argv, int spin) {
    int port = atoi(argv[2]);
    long count = atol(argv[3]), warmup = atol(argv[4]), size = atol(argv[5]);
    if (size < HDR || size > 65507) fail("SIZE must be 10..65507");
    if (count < 1 || warmup < 0) fail("bad COUNT or WARMUP");
    int fd = udp_socket(spin);
    struct sockaddr_in a = loopback_addr(port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    struct pp_transport t = {dgram_send, dgram_recv, &fd};
    pingpong_loop(&t, count, warmup, size, argv[6]);
    send(fd, "", 1, 0);   /* goodbye (shorter than a header): the server exits */
    return 0;
}

static int flood(char **argv) {
    int port = atoi(argv[2]);
    long count = atol(argv[3]), size = atol(argv[4]);
    if (size < 2 || size > 65507 || count < 1) fail("bad COUNT or SIZE");
    enum { BATCH = 64 };
    static unsigned char buf[65507];
    struct iovec iov[BATCH];
    struct mmsghdr m[BATCH];
    memset(buf, 'x', sizeof buf);
    memset(m, 0, sizeof m);
    for (int k = 0; k < BATCH; k++) {
        iov[k].iov_base = buf;
        iov[k].iov_len = (size_t)size;
        m[k].msg_hdr.msg_iov = &iov[k];
        m[k].msg_hdr.msg_iovlen = 1;
    }
    int fd = udp_socket(0);
    struct sockaddr_in a = loopback_addr(port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    int64_t t0 = now_ns();
    long sent = 0;
    while (sent < count) {
        int n = sendmmsg(fd, m, (unsigned)(count - sent < BATCH ? count - sent : BATCH), 0);
        if (n > 0) sent += n;
        else if (n < 0 && errno != EINTR && errno != ENOBUFS && errno != ECONNREFUSED)
            die("sendmmsg");
    }
    int64_t t1 = now_ns();
    struct timespec pause = {0, 2000000};
    for (int k = 0; k < 50; k++) {
        send(fd, buf, 1, 0);
        nanosleep(&pause, NULL);
    }
    printf("sent %ld %lld\n", sent, (long long)(t1 - t0));
    return 0;
}

int main(int argc, char **argv) {
    int spin = 0, first_opt = 2;
    long timeout_s = 600;
    if (argc < 2) fail("usage: udp_pingpong server|client ...");
    if (!strcmp(argv[1], "flood")) {
        if (argc < 5) fail("usage: udp_pingpong flood PORT COUNT SIZE");
        return flood(argv);
    }
    int is_client = !strcmp(argv[1], "client");
    if (is_client) {
        if (argc < 7) fail("usage: udp_pingpong client PORT COUNT WARMUP SIZE SAMPLES_FILE");
        first_opt = 7;
    } else if (strcmp(argv[1], "server")) fail("first argument: server or client");
    for (int i = first_opt; i < argc; i++) {
        if (!strcmp(argv[i], "--spin")) spin = 1;
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout_s = atol(argv[++i]);
        else fail("bad option");
    }
    alarm((unsigned)timeout_s);
    return is_client ? client(argv, spin) : server(spin);
}
