/*
 * net_util.h: helpers shared by the harness's C programs (errors, clock, reactio's wire
 * format, RLIMIT_NOFILE, loopback connections). Static inline, so each program compiles
 * alone and an unused helper costs nothing (cbuild.py compiles one .c file per program and
 * folds this header into its cache key).
 *
 * Define PROG (the program's name, a string literal, the prefix of error messages) before
 * including this header; it needs _GNU_SOURCE defined first, like the programs do.
 */
#ifndef REACTIO_BENCH_NET_UTIL_H
#define REACTIO_BENCH_NET_UTIL_H

#ifndef PROG
#error "define PROG (the program's name) before including net_util.h"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* reactio's wire format: u16 body length LE | i64 stamp LE | body */
#define HDR 10

/* Print "PROG: what: strerror(errno)" to stderr and exit with status 1. */
static inline void die(const char *what) {
    fprintf(stderr, PROG ": %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Print "PROG: msg" to stderr and exit with status 1. */
static inline void fail(const char *msg) {
    fprintf(stderr, PROG ": %s\n", msg);
    exit(1);
}

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void put_i64le(unsigned char *p, int64_t v) {
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(u >> (8 * i));
}

static inline int64_t get_i64le(const unsigned char *p) {
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u |= (uint64_t)p[i] << (8 * i);
    return (int64_t)u;
}

/* Fill a SIZE-byte message: body length (SIZE - HDR, LE) and an 'x' body; the stamp bytes
 * (2..9) are left as they are. */
static inline void init_msg(unsigned char *m, long size) {
    m[0] = (unsigned char)((size - HDR) & 0xff);
    m[1] = (unsigned char)(((size - HDR) >> 8) & 0xff);
    memset(m + HDR, 'x', (size_t)size - HDR);
}

/* Raise the soft RLIMIT_NOFILE to the hard limit (best effort). */
static inline void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static inline struct sockaddr_in loopback_addr(int port) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

/* A non-blocking TCP_NODELAY socket whose connect to addr is under way (or done): wait for
 * EPOLLOUT to learn how it ended. */
static inline int connect_nonblocking(const struct sockaddr_in *addr) {
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket (is RLIMIT_NOFILE high enough?)");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) < 0 && errno != EINPROGRESS)
        die("connect");
    return fd;
}

/* A TCP_NODELAY connection to 127.0.0.1:port, connected (blocking), then made non-blocking.
 * The caller must have no signal handler installed that could interrupt the connect: it
 * cannot return EINTR then. */
static inline int connect_loopback(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) die("TCP_NODELAY");
    struct sockaddr_in addr = loopback_addr(port);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
    return fd;
}

/* ADDR is a loopback port number or "unix:PATH": a connected stream to it (blocking connect,
 * then non-blocking), TCP_NODELAY on TCP. */
static inline int connect_to(const char *addr) {
    if (strncmp(addr, "unix:", 5) != 0) return connect_loopback(atoi(addr));
    struct sockaddr_un ua = {.sun_family = AF_UNIX};
    if (strlen(addr + 5) >= sizeof ua.sun_path) fail("unix socket path too long");
    strcpy(ua.sun_path, addr + 5);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket(AF_UNIX)");
    if (connect(fd, (struct sockaddr *)&ua, sizeof ua) < 0) die("connect(unix)");
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
    return fd;
}

#endif
