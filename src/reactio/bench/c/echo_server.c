/*
 * echo_server.c: the C floor server of `python -m reactio.bench` (pingpong and scale).
 *
 * Minimal single-threaded, level-triggered epoll echo server for reactio's wire format:
 *   u16 body length (little-endian) | i64 send timestamp (little-endian) | body
 * Every complete message is written back unchanged. It does no more work than any server
 * needs to do for this protocol (frame, echo), so it is the floor the other servers are
 * compared with.
 *
 * Usage: echo_server [--conns N] [--spin] [--timeout S]
 *   Binds 127.0.0.1 on an ephemeral port and prints "port <n>" on stdout (the harness reads
 *   it). Accepts N connections (default 1), then closes the listener, and exits 0 once all
 *   of them are closed. --spin polls epoll with a zero timeout (busy poll) instead of
 *   blocking. --timeout S (default 600) is a watchdog: SIGALRM ends the process, so a lost
 *   harness never leaves it behind.
 *
 * Errors go to stderr with a non-zero exit status.
 */
#define _GNU_SOURCE
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
#include <unistd.h>
#include <arpa/inet.h>

#define HDR 10
#define MAX_EVENTS 256

struct conn {
    int fd;
    char *rbuf;        /* received, not yet echoed bytes */
    size_t rlen, rcap;
    char *wbuf;        /* echoed bytes the kernel did not take yet */
    size_t woff, wlen, wcap;
};

static void die(const char *what) {
    fprintf(stderr, "echo_server: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void ensure_cap(char **buf, size_t *cap, size_t need) {
    if (*cap >= need) return;
    size_t ncap = *cap ? *cap : 2048;
    while (ncap < need) ncap *= 2;
    char *p = realloc(*buf, ncap);
    if (!p) { errno = ENOMEM; die("realloc"); }
    *buf = p;
    *cap = ncap;
}

static void set_events(int ep, struct conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl(MOD)");
}

static void close_conn(int ep, struct conn *c, int *open_conns) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->rbuf);
    free(c->wbuf);
    free(c);
    (*open_conns)--;
}

/* Write as much of data[0..n) as the socket takes; returns bytes written, -1 on error. */
static ssize_t write_some(int fd, const char *data, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, data + done, n - done);
        if (w > 0) { done += (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        return -1;
    }
    return (ssize_t)done;
}

/* Echo every complete message at the front of rbuf. Returns 0, or -1 to close. */
static int echo_complete(int ep, struct conn *c) {
    size_t end = 0;               /* bytes of complete messages */
    for (;;) {
        if (c->rlen - end < HDR) break;
        const unsigned char *h = (const unsigned char *)c->rbuf + end;
        size_t msg = HDR + ((size_t)h[0] | ((size_t)h[1] << 8));
        if (c->rlen - end < msg) break;
        end += msg;
    }
    if (end == 0) return 0;
    ssize_t w = write_some(c->fd, c->rbuf, end);
    if (w < 0) return -1;
    if ((size_t)w < end) {
        /* The kernel's send buffer is full: keep the rest, stop reading until it drains. */
        size_t rest = end - (size_t)w;
        ensure_cap(&c->wbuf, &c->wcap, rest);
        memcpy(c->wbuf, c->rbuf + w, rest);
        c->woff = 0;
        c->wlen = rest;
        set_events(ep, c, EPOLLOUT);
    }
    memmove(c->rbuf, c->rbuf + end, c->rlen - end);
    c->rlen -= end;
    return 0;
}

/* Readable: read until EAGAIN, echoing as we go. Returns 0, or -1 to close. */
static int on_readable(int ep, struct conn *c) {
    for (;;) {
        if (c->wlen) return 0;    /* backpressure: wait for EPOLLOUT first */
        /* Room for a whole maximal message: one read per arrival, as a good server does.
         * Untouched pages cost no memory, so 1000 idle connections stay cheap. */
        ensure_cap(&c->rbuf, &c->rcap, c->rlen + 65536);
        size_t avail = c->rcap - c->rlen;
        ssize_t r = read(c->fd, c->rbuf + c->rlen, avail);
        if (r > 0) {
            c->rlen += (size_t)r;
            if (echo_complete(ep, c) < 0) return -1;
            if ((size_t)r < avail) return 0;   /* short read: the socket is drained */
            continue;
        }
        if (r == 0) return -1;                           /* peer closed */
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return -1;
    }
}

static int on_writable(int ep, struct conn *c) {
    ssize_t w = write_some(c->fd, c->wbuf + c->woff, c->wlen);
    if (w < 0) return -1;
    c->woff += (size_t)w;
    c->wlen -= (size_t)w;
    if (c->wlen == 0) {
        set_events(ep, c, EPOLLIN | EPOLLRDHUP);
        return on_readable(ep, c);  /* bytes may have been left unread meanwhile */
    }
    return 0;
}

int main(int argc, char **argv) {
    long target = 1, timeout_s = 600;
    int spin = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--conns") && i + 1 < argc) target = atol(argv[++i]);
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout_s = atol(argv[++i]);
        else if (!strcmp(argv[i], "--spin")) spin = 1;
        else { fprintf(stderr, "usage: echo_server [--conns N] [--spin] [--timeout S]\n"); return 2; }
    }
    if (target < 1) target = 1;
    alarm((unsigned)timeout_s);
    signal(SIGPIPE, SIG_IGN);  /* a peer that resets gives EPIPE, not a dead process */
    raise_nofile();

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(lfd, 4096) < 0) die("listen");
    socklen_t alen = sizeof addr;
    if (getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) die("getsockname");

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) die("epoll_ctl(listener)");

    printf("port %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    long accepted = 0;
    int open_conns = 0;
    struct epoll_event evs[MAX_EVENTS];
    while (lfd >= 0 || open_conns > 0) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, spin ? 0 : -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == NULL) {
                if (lfd < 0) continue;   /* listener closed earlier in this batch */
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) {
                        if (errno == EINTR) continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                        if (errno == ECONNABORTED) continue;
                        /* EMFILE/ENFILE/ENOBUFS: say so and let the client time out. */
                        fprintf(stderr, "echo_server: accept: %s\n", strerror(errno));
                        break;
                    }
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    if (!nc) { errno = ENOMEM; die("calloc"); }
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = nc};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl(ADD)");
                    open_conns++;
                    if (++accepted >= target) {
                        epoll_ctl(ep, EPOLL_CTL_DEL, lfd, NULL);
                        close(lfd);
                        lfd = -1;
                        break;
                    }
                }
                continue;
            }
            uint32_t e = evs[i].events;
            int rc = 0;
            if (e & EPOLLOUT) rc = on_writable(ep, c);
            if (rc == 0 && (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) rc = on_readable(ep, c);
            if (rc < 0) close_conn(ep, c, &open_conns);
        }
    }
    return 0;
}
