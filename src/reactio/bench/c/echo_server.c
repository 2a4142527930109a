/*
 * echo_server.c: the C floor server of `python -m reactio.bench` (pingpong and scale).
 *
 * Minimal single-threaded, level-triggered epoll echo server for reactio's wire format:
 *   u16 body length (little-endian) | i64 send timestamp (little-endian) | body
 * Every complete message is written back unchanged. It does no more work than any server
 * needs to do for this protocol (frame, echo), so it is the floor the other servers are
 * compared with.
 *
 * Usage: echo_server [--conns N] [--spin] [--timeout S] [--workers W] [--unix PATH]
 *   Binds 127.0.0.1 on an ephemeral port and prints "port <n>" on stdout (the harness reads
 *   it); with --unix, listens on a Unix stream socket at PATH instead (removed at exit) and
 *   prints "port 0". Accepts N connections (default 1), then closes the listener, and exits 0 once all
 *   of them are closed. --spin polls epoll with a zero timeout (busy poll) instead of
 *   blocking. --timeout S (default 600) is a watchdog: SIGALRM ends the process, so a lost
 *   harness never leaves it behind.
 *
 *   --workers W (the `scale --workers` mode): the process holds an ephemeral port with a
 *   bound, non-listening SO_REUSEPORT socket, prints it, and forks W workers that each
 *   listen on it with SO_REUSEPORT (the kernel spreads the connections over them) and serve
 *   until they are told to stop: SIGTERM to the parent stops the workers, reaps them and
 *   exits 0. Workers die with the parent (PR_SET_PDEATHSIG) and have the same watchdog.
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
#include <sys/prctl.h>
#include <sys/un.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>

#define PROG "echo_server"
#include "net_util.h"

#define MAX_EVENTS 256

struct conn {
    int fd;
    char *rbuf;        /* received, not yet echoed bytes */
    size_t rlen, rcap;
    char *wbuf;        /* echoed bytes the kernel did not take yet */
    size_t woff, wlen, wcap;
};

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

/* A listening socket on 127.0.0.1:port (0: ephemeral), SO_REUSEPORT when reuse_port. */
static int open_listener(int port, int reuse_port, int do_listen) {
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuse_port && setsockopt(lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        die("setsockopt(SO_REUSEPORT)");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (do_listen && listen(lfd, 4096) < 0) die("listen");
    return lfd;
}

/* A listening Unix stream socket at path (a stale file there is removed first). */
static int open_unix_listener(const char *path) {
    struct sockaddr_un ua = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof ua.sun_path) fail("unix socket path too long");
    strcpy(ua.sun_path, path);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket(AF_UNIX)");
    unlink(path);
    if (bind(lfd, (struct sockaddr *)&ua, sizeof ua) < 0) die("bind(unix)");
    if (listen(lfd, 4096) < 0) die("listen");
    return lfd;
}

static int bound_port(int fd) {
    struct sockaddr_in addr;
    socklen_t alen = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &alen) < 0) die("getsockname");
    return ntohs(addr.sin_port);
}

/* Serve on listener lfd; with target > 0, close it after target connections and return
 * once they are all closed; with target 0, serve until killed. */
static void serve(int lfd, long target, int spin) {
    int one = 1;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) die("epoll_ctl(listener)");

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
                    /* (fails harmlessly on a Unix socket: once per connection) */
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    if (!nc) { errno = ENOMEM; die("calloc"); }
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = nc};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl(ADD)");
                    open_conns++;
                    if (target > 0 && ++accepted >= target) {
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
}

static volatile sig_atomic_t stop_requested = 0;
static void on_stop(int sig) { (void)sig; stop_requested = 1; }

/* --workers: hold a port, fork the workers, wait for SIGTERM, stop and reap them. */
static int run_workers(long workers, int spin, long timeout_s) {
    int holder = open_listener(0, 1, 0);          /* bound, not listening: holds the port */
    int port = bound_port(holder);
    pid_t parent = getpid();
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &old);         /* until the workers are forked */
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    pid_t *pids = calloc((size_t)workers, sizeof *pids);
    if (!pids) { errno = ENOMEM; die("calloc"); }
    int ready[2];                                  /* one byte per worker that listens */
    if (pipe(ready) < 0) die("pipe");
    for (long w = 0; w < workers; w++) {
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            sigprocmask(SIG_SETMASK, &old, NULL);
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent) _exit(1);
            alarm((unsigned)timeout_s);           /* alarms are not inherited */
            close(holder);
            int lfd = open_listener(port, 1, 1);
            if (write(ready[1], "+", 1) != 1) die("write(ready)");
            close(ready[0]);
            close(ready[1]);
            serve(lfd, 0, spin);
            _exit(0);
        }
        pids[w] = pid;
    }
    /* announce the port once every worker listens: no connection of the run may find
     * fewer listeners than workers (EOF first: a worker died before it listened) */
    close(ready[1]);
    for (long got = 0; got < workers;) {
        char buf[64];
        ssize_t r = read(ready[0], buf, sizeof buf);
        if (r > 0) got += r;
        else if (r < 0 && errno != EINTR) die("read(ready)");
        else if (r == 0) { fprintf(stderr, "echo_server: a worker died at start\n"); return 1; }
    }
    close(ready[0]);
    printf("port %d\n", port);
    fflush(stdout);
    sigset_t waitmask = old;
    sigdelset(&waitmask, SIGTERM);
    sigdelset(&waitmask, SIGINT);
    int failed = 0;
    long alive = workers;
    while (!stop_requested && alive > 0) {
        sigsuspend(&waitmask);                     /* SIGTERM, SIGINT, SIGALRM (default: die) */
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {  /* a worker died on its own */
            fprintf(stderr, "echo_server: worker %d ended early\n", (int)pid);
            failed = 1;
            for (long w = 0; w < workers; w++) if (pids[w] == pid) { pids[w] = 0; alive--; }
        }
        if (failed) break;
    }
    for (long w = 0; w < workers; w++) if (pids[w] > 0) kill(pids[w], SIGTERM);
    for (long w = 0; w < workers; w++) if (pids[w] > 0) waitpid(pids[w], NULL, 0);
    return failed;
}

int main(int argc, char **argv) {
    long target = 1, timeout_s = 600, workers = 0;
    int spin = 0;
    const char *unix_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--conns") && i + 1 < argc) target = atol(argv[++i]);
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout_s = atol(argv[++i]);
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc) workers = atol(argv[++i]);
        else if (!strcmp(argv[i], "--spin")) spin = 1;
        else if (!strcmp(argv[i], "--unix") && i + 1 < argc) unix_path = argv[++i];
        else { fprintf(stderr, "usage: echo_server [--conns N] [--spin] [--timeout S] [--workers W] [--unix PATH]\n"); return 2; }
    }
    if (target < 1) target = 1;
    alarm((unsigned)timeout_s);
    signal(SIGPIPE, SIG_IGN);  /* a peer that resets gives EPIPE, not a dead process */
    raise_nofile();
    if (workers > 0) return run_workers(workers, spin, timeout_s);

    if (unix_path) {
        int lfd = open_unix_listener(unix_path);
        printf("port 0\n");
        fflush(stdout);
        serve(lfd, target, spin);
        unlink(unix_path);
        return 0;
    }
    int lfd = open_listener(0, 0, 1);
    printf("port %d\n", bound_port(lfd));
    fflush(stdout);
    serve(lfd, target, spin);
    return 0;
}
