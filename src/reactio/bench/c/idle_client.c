/*
 * idle_client.c: the C client of `python -m reactio.bench idle`.
 *
 * Opens CONNS TCP connections to 127.0.0.1:PORT (non-blocking connects, at most 256 under
 * way at a time so that the server's accept backlog never overflows), sends one SIZE-byte
 * message in reactio's wire format on each (u16 body length LE | i64 stamp LE | body) and
 * reads its echo: a connection the server has echoed on has been accepted and has its
 * per-connection state (reactor, buffers) in place. Then every connection stays open and
 * silent until the harness, having read the server's memory use, says to close them.
 *
 * Usage: idle_client PORT CONNS SIZE [--timeout S]
 * Stdout, for the harness: "progress <ready>" about twice a second, "ready <conns>" once
 * every connection has its echo, then, after SIGUSR1, "done" once all are closed.
 * --timeout S (default 600) is a SIGALRM watchdog; errors go to stderr, exit status 1.
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

#define PROG "idle_client"
#include "net_util.h"

#define MAX_PENDING 256
#define MAX_EVENTS 1024

enum { CONNECTING, ECHOING, IDLE };

struct conn {
    int fd;
    int state;
    size_t woff, rlen;
};

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: idle_client PORT CONNS SIZE [--timeout S]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    long nconns = atol(argv[2]), size = atol(argv[3]);
    long timeout_s = 600;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout_s = atol(argv[++i]);
        else fail("bad option");
    }
    if (nconns < 1 || size < HDR || size > HDR + 65535) fail("bad arguments");
    alarm((unsigned)timeout_s);
    signal(SIGPIPE, SIG_IGN);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    if (sigprocmask(SIG_BLOCK, &usr1, NULL) != 0) die("sigprocmask");
    raise_nofile();

    unsigned char *msg = calloc(1, (size_t)size), *in = malloc((size_t)size);
    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    if (!msg || !in || !conns) fail("out of memory");
    msg[0] = (unsigned char)((size - HDR) & 0xff);
    msg[1] = (unsigned char)(((size - HDR) >> 8) & 0xff);
    memset(msg + HDR, 'x', (size_t)size - HDR);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct sockaddr_in addr = loopback_addr(port);
    long started = 0, pending = 0, ready = 0;
    int64_t next_progress = now_ns() + 500000000LL;
    struct epoll_event evs[MAX_EVENTS];
    while (ready < nconns) {
        while (started < nconns && pending < MAX_PENDING) {
            struct conn *c = &conns[started++];
            c->fd = connect_nonblocking(&addr);
            c->state = CONNECTING;
            struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl(ADD)");
            pending++;
        }
        int n = epoll_wait(ep, evs, MAX_EVENTS, 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->state == CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) die("getsockopt");
                if (err) { errno = err; die("connect"); }
                c->state = ECHOING;
            }
            /* send what is left of the message, then wait for the echo */
            while (c->woff < (size_t)size) {
                ssize_t w = write(c->fd, msg + c->woff, (size_t)size - c->woff);
                if (w > 0) { c->woff += (size_t)w; continue; }
                if (w < 0 && errno == EINTR) continue;
                if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                die("write");
            }
            struct epoll_event ev = {.events = c->woff < (size_t)size ? EPOLLOUT : EPOLLIN,
                                     .data.ptr = c};
            if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl(MOD)");
            for (;;) {
                ssize_t r = read(c->fd, in + c->rlen, (size_t)size - c->rlen);
                if (r > 0) {
                    c->rlen += (size_t)r;
                    if (c->rlen == (size_t)size) break;
                    continue;
                }
                if (r == 0) fail("server closed a connection");
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                die("read");
            }
            if (c->rlen == (size_t)size) {
                if (memcmp(in, msg, HDR) != 0) fail("echo does not match the message sent");
                c->state = IDLE;
                if (epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL) < 0) die("epoll_ctl(DEL)");
                pending--;
                ready++;
            }
        }
        int64_t t = now_ns();
        if (t >= next_progress) {
            printf("progress %ld\n", ready);
            fflush(stdout);
            next_progress = t + 500000000LL;
        }
    }
    printf("ready %ld\n", nconns);
    fflush(stdout);
    int sig;
    if (sigwait(&usr1, &sig) != 0) fail("sigwait failed");
    for (long i = 0; i < nconns; i++) close(conns[i].fd);
    printf("done\n");
    fflush(stdout);
    return 0;
}
