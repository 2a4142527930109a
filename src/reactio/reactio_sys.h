/* reactio_sys.h: the one place where the operating systems differ.
 *
 * _core.pyx is cythonized once into a single C file that builds on Linux (epoll) and on
 * Windows (IOCP).  Everything platform specific is an inline function or macro here, and the
 * .pxd mirrors (_epoll.pxd, _iocp.pxd) declare these names.  The backend not in use gets
 * stubs that fail with ENOSYS, so both backends always compile and the dead branch is removed
 * by the C compiler (REACTIO_IOCP is a compile-time constant).
 */
#ifndef REACTIO_SYS_H
#define REACTIO_SYS_H

#include <stdint.h>
#include <string.h>
#include <errno.h>

#if defined(_WIN32)
/* ------------------------------------------------------------------ Windows */
#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  include <winsock2.h>
#  include <ws2tcpip.h>
#  include <mswsock.h>
#  include <windows.h>
#  define REACTIO_IOCP 1
typedef SOCKET rio_sock_t;
#  define RIO_INVALID_SOCK INVALID_SOCKET
#  ifndef ENOSYS
#    define ENOSYS 40
#  endif
typedef int socklen_t_compat;
static inline int rio_errno(void) { return WSAGetLastError(); }
static inline int64_t rio_monotonic_ns(void) {
    static LARGE_INTEGER freq = {0};
    LARGE_INTEGER c;
    if (freq.QuadPart == 0) QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&c);
    return (int64_t)((double)c.QuadPart * 1e9 / (double)freq.QuadPart);
}
/* epoll stubs: never called when REACTIO_IOCP is 1 */
typedef union epoll_data { void *ptr; int fd; uint32_t u32; uint64_t u64; } epoll_data_t;
struct epoll_event { uint32_t events; epoll_data_t data; };
#  define EPOLLIN 0x001
#  define EPOLLOUT 0x004
#  define EPOLLERR 0x008
#  define EPOLLHUP 0x010
#  define EPOLLRDHUP 0x2000
#  define EPOLL_CTL_ADD 1
#  define EPOLL_CTL_DEL 2
#  define EPOLL_CTL_MOD 3
#  define EPOLL_CLOEXEC 0
#  define EFD_NONBLOCK 0
#  define EFD_CLOEXEC 0
#  define SOCK_NONBLOCK 0
#  define SOCK_CLOEXEC 0
#  define EAGAIN_ALT WSAEWOULDBLOCK
#  define MSG_NOSIGNAL 0
#  define SHUT_WR SD_SEND
static inline int epoll_create1(int f) { (void)f; errno = ENOSYS; return -1; }
static inline int epoll_ctl(int a, int b, int c, struct epoll_event *e) { (void)a; (void)b; (void)c; (void)e; errno = ENOSYS; return -1; }
static inline int epoll_wait(int a, struct epoll_event *e, int n, int t) { (void)a; (void)e; (void)n; (void)t; errno = ENOSYS; return -1; }
static inline int eventfd(unsigned int v, int f) { (void)v; (void)f; errno = ENOSYS; return -1; }
static inline int accept4(rio_sock_t s, struct sockaddr *a, int *l, int f) { (void)f; return (int)accept(s, a, l); }
static inline int rio_close(rio_sock_t s) { return closesocket(s); }
static inline int rio_read_u64(int fd, uint64_t *v) { (void)fd; (void)v; errno = ENOSYS; return -1; }
static inline int rio_write_u64(int fd, uint64_t v) { (void)fd; (void)v; errno = ENOSYS; return -1; }
static inline int rio_close_fd(int fd) { (void)fd; return 0; }
#else
/* -------------------------------------------------------------------- Linux */
#  include <unistd.h>
#  include <time.h>
#  include <sys/types.h>
#  include <sys/socket.h>
#  include <sys/epoll.h>
#  include <sys/eventfd.h>
#  include <netinet/in.h>
#  include <netinet/tcp.h>
#  include <arpa/inet.h>
#  define REACTIO_IOCP 0
typedef int rio_sock_t;
#  define RIO_INVALID_SOCK (-1)
#  define EAGAIN_ALT EWOULDBLOCK
static inline int rio_errno(void) { return errno; }
static inline int64_t rio_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static inline int rio_close(rio_sock_t s) { return close(s); }
static inline int rio_close_fd(int fd) { return close(fd); }
/* eventfd counter I/O: 8 bytes, EINTR retried by the caller */
static inline int rio_read_u64(int fd, uint64_t *v) { return (int)read(fd, v, sizeof *v); }
static inline int rio_write_u64(int fd, uint64_t v) { return (int)write(fd, &v, sizeof v); }
#endif

/* True for errors that mean "no data now, try when the poller says so". */
static inline int rio_would_block(int e) { return e == EAGAIN || e == EAGAIN_ALT; }

#endif /* REACTIO_SYS_H */
