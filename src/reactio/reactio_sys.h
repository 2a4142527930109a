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

/* 1 in a debug build (REACTIO_DEBUG=1 or REACTIO_ASAN=1 at build time): the stream state
 * machine checks its invariants at every transition (_lifecycle.pxi). */
#ifndef REACTIO_CHECK_INVARIANTS
#  define REACTIO_CHECK_INVARIANTS 0
#endif

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
#  include <afunix.h>
#  include <windows.h>
#  define REACTIO_IOCP 1
#  if defined(_MSC_VER) && !defined(ssize_t)
#    include <BaseTsd.h>
typedef SSIZE_T ssize_t;     /* POSIX name used by the socket declarations; mingw has it */
#  endif
typedef SOCKET rio_sock_t;
#  define RIO_INVALID_SOCK INVALID_SOCKET
#  ifndef ENOSYS
#    define ENOSYS 40
#  endif
static inline int rio_errno(void) { return WSAGetLastError(); }
/* QueryPerformanceCounter in ns, converted exactly as CPython's time.perf_counter_ns() does
 * it (whole seconds, then the remainder, in integers): the two give the same value, so a timer
 * that fires at its deadline is never "early" to a caller timing it with perf_counter_ns (a
 * double conversion could round a nanosecond the other way).  (time.monotonic() is another
 * clock on Windows before CPython 3.13: GetTickCount64, in milliseconds.) */
static inline int64_t rio_monotonic_ns(void) {
    static LARGE_INTEGER freq = {0};
    LARGE_INTEGER c;
    if (freq.QuadPart == 0) QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&c);
    return (c.QuadPart / freq.QuadPart) * 1000000000LL
           + (c.QuadPart % freq.QuadPart) * 1000000000LL / freq.QuadPart;
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

static inline int rio_getsockopt(rio_sock_t s, int level, int name, void *val, socklen_t *len) {
    return getsockopt(s, level, name, (char *)val, (int *)len);
}
static inline int rio_setsockopt(rio_sock_t s, int level, int name, const void *val, socklen_t len) {
    return setsockopt(s, level, name, (const char *)val, (int)len);
}
#else
/* -------------------------------------------------------------------- Linux */
#  include <unistd.h>
#  include <time.h>
#  include <sys/types.h>
#  include <sys/socket.h>
#  include <sys/un.h>
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
static inline int rio_getsockopt(rio_sock_t s, int level, int name, void *val, socklen_t *len) {
    return getsockopt(s, level, name, val, len);
}
static inline int rio_setsockopt(rio_sock_t s, int level, int name, const void *val, socklen_t len) {
    return setsockopt(s, level, name, val, len);
}

/* Stubs for the Win32 names of the IOCP backend: never called when REACTIO_IOCP is 0. */
typedef int BOOL;
typedef unsigned char UCHAR;
typedef unsigned short WORD;
typedef uint32_t DWORD;
typedef uint32_t ULONG;
typedef uintptr_t ULONG_PTR;
typedef void *HANDLE;
typedef uintptr_t SOCKET;
typedef struct { ULONG_PTR Internal; ULONG_PTR InternalHigh; HANDLE hEvent; } OVERLAPPED;
typedef OVERLAPPED *LPOVERLAPPED;
typedef struct { ULONG_PTR lpCompletionKey; LPOVERLAPPED lpOverlapped; ULONG_PTR Internal;
                 DWORD dwNumberOfBytesTransferred; } OVERLAPPED_ENTRY;
typedef struct { ULONG len; char *buf; } WSABUF;
typedef struct { WORD wVersion; WORD wHighVersion; } WSADATA;
#  define TRUE 1
#  define FALSE 0
#  define INVALID_HANDLE_VALUE ((HANDLE)(intptr_t)-1)
#  define INVALID_SOCKET ((SOCKET)-1)
#  define SOCKET_ERROR (-1)
#  define WAIT_TIMEOUT 258
#  define ERROR_IO_PENDING 997
#  define WSA_IO_PENDING 997
#  define ERROR_OPERATION_ABORTED 995
#  define WSA_OPERATION_ABORTED 995
#  define WSAECONNRESET 10054
#  define FILE_SKIP_COMPLETION_PORT_ON_SUCCESS 1
#  define FILE_SKIP_SET_EVENT_ON_HANDLE 2
#  define WSA_FLAG_OVERLAPPED 1
#  define WSA_FLAG_NO_HANDLE_INHERIT 0x80
#  define SO_UPDATE_ACCEPT_CONTEXT 0x700B
#  define SO_UPDATE_CONNECT_CONTEXT 0x7010
#  define MAKEWORD(a, b) ((WORD)(((a) & 0xff) | (((b) & 0xff) << 8)))
static inline DWORD GetLastError(void) { return ENOSYS; }
static inline int WSAGetLastError(void) { return ENOSYS; }
static inline int WSAStartup(WORD v, WSADATA *d) { (void)v; (void)d; return ENOSYS; }
static inline HANDLE CreateIoCompletionPort(HANDLE f, HANDLE p, ULONG_PTR k, DWORD n) {
    (void)f; (void)p; (void)k; (void)n; return NULL; }
static inline BOOL GetQueuedCompletionStatusEx(HANDLE p, OVERLAPPED_ENTRY *e, ULONG c, ULONG *n,
                                               DWORD ms, BOOL a) {
    (void)p; (void)e; (void)c; (void)ms; (void)a; *n = 0; return FALSE; }
static inline BOOL PostQueuedCompletionStatus(HANDLE p, DWORD n, ULONG_PTR k, LPOVERLAPPED o) {
    (void)p; (void)n; (void)k; (void)o; return FALSE; }
static inline BOOL CancelIoEx(HANDLE h, LPOVERLAPPED o) { (void)h; (void)o; return FALSE; }
static inline BOOL CloseHandle(HANDLE h) { (void)h; return FALSE; }
static inline BOOL SetFileCompletionNotificationModes(HANDLE h, UCHAR f) { (void)h; (void)f; return FALSE; }
static inline int WSARecv(SOCKET s, WSABUF *b, DWORD c, DWORD *n, DWORD *f, LPOVERLAPPED o, void *r) {
    (void)s; (void)b; (void)c; (void)n; (void)f; (void)o; (void)r; return SOCKET_ERROR; }
static inline int WSASend(SOCKET s, WSABUF *b, DWORD c, DWORD *n, DWORD f, LPOVERLAPPED o, void *r) {
    (void)s; (void)b; (void)c; (void)n; (void)f; (void)o; (void)r; return SOCKET_ERROR; }
static inline BOOL WSAGetOverlappedResult(SOCKET s, LPOVERLAPPED o, DWORD *n, BOOL w, DWORD *f) {
    (void)s; (void)o; (void)n; (void)w; (void)f; return FALSE; }
static inline SOCKET WSASocketW(int af, int t, int p, void *i, unsigned g, DWORD f) {
    (void)af; (void)t; (void)p; (void)i; (void)g; (void)f; return INVALID_SOCKET; }
static inline int closesocket(SOCKET s) { return close((int)s); }
#endif

/* ------------------------------------------------------------ IOCP operation records */

/* One outstanding overlapped operation.  ov must stay the first member: a dequeued
 * LPOVERLAPPED is the op.  The record belongs to the kernel from the call that starts the
 * operation until its completion packet is dequeued (see _iocp_loop.pxi). */
typedef struct rio_op {
    OVERLAPPED ov;
    int kind;
    int pending;
    void *owner;                /* PyObject*, a strong reference while pending */
    SOCKET sock;                /* AcceptEx: the accepting socket */
    Py_ssize_t requested;       /* WSARecv: bytes asked for */
    int arming, rearm;          /* WSASend: inside _iocp_arm_send / a nested arm was asked */
    char addrs[128];            /* AcceptEx output: two addresses of RIO_ACCEPT_ADDR_LEN */
} rio_op;
#define RIO_ACCEPT_ADDR_LEN (sizeof(struct sockaddr_in6) + 16)

#if defined(_WIN32)
/* The mswsock extension functions are reached through pointers fetched once with WSAIoctl
 * (the same provider serves every TCP socket of the process). */
static LPFN_ACCEPTEX rio_fn_acceptex = NULL;
static LPFN_CONNECTEX rio_fn_connectex = NULL;
static LPFN_GETACCEPTEXSOCKADDRS rio_fn_getaddrs = NULL;

static inline int rio_load_fn(SOCKET s, GUID guid, void **fn) {
    DWORD bytes = 0;
    if (*fn) return 0;
    return WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof(guid), fn, sizeof(*fn),
                    &bytes, NULL, NULL) == 0 ? 0 : -1;
}
/* TRUE: accepted at once (no packet with FILE_SKIP_COMPLETION_PORT_ON_SUCCESS);
 * FALSE: see WSAGetLastError() (WSA_IO_PENDING: a packet will come). */
static inline int rio_AcceptEx(SOCKET listener, SOCKET accepted, rio_op *op, DWORD *got) {
    GUID g = WSAID_ACCEPTEX;
    if (rio_load_fn(listener, g, (void **)&rio_fn_acceptex) != 0) return FALSE;
    return rio_fn_acceptex(listener, accepted, op->addrs, 0, (DWORD)RIO_ACCEPT_ADDR_LEN,
                           (DWORD)RIO_ACCEPT_ADDR_LEN, got, &op->ov);
}
static inline int rio_ConnectEx(SOCKET s, const struct sockaddr *addr, int len, rio_op *op) {
    GUID g = WSAID_CONNECTEX;
    DWORD sent = 0;
    if (rio_load_fn(s, g, (void **)&rio_fn_connectex) != 0) return FALSE;
    return rio_fn_connectex(s, addr, len, NULL, 0, &sent, &op->ov);
}
/* After AcceptEx: give the socket its listener's context and read the peer's address. */
static inline int rio_accepted_peer(SOCKET listener, SOCKET accepted, rio_op *op,
                                    struct sockaddr_storage *peer) {
    GUID g = WSAID_GETACCEPTEXSOCKADDRS;
    struct sockaddr *local = NULL, *remote = NULL;
    int llen = 0, rlen = 0;
    if (setsockopt(accepted, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (const char *)&listener,
                   sizeof(listener)) != 0) return -1;
    if (rio_load_fn(listener, g, (void **)&rio_fn_getaddrs) != 0) return -1;
    rio_fn_getaddrs(op->addrs, 0, (DWORD)RIO_ACCEPT_ADDR_LEN, (DWORD)RIO_ACCEPT_ADDR_LEN,
                    &local, &llen, &remote, &rlen);
    memset(peer, 0, sizeof(*peer));
    if (remote && rlen > 0 && rlen <= (int)sizeof(*peer)) memcpy(peer, remote, rlen);
    return 0;
}
static inline int rio_set_nonblocking(SOCKET s) {
    u_long on = 1;
    return ioctlsocket(s, FIONBIO, &on) == 0 ? 0 : -1;
}
/* ConnectEx needs a bound socket: the wildcard address, any port. */
static inline int rio_bind_any(SOCKET s, int family) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    ss.ss_family = (ADDRESS_FAMILY)family;
    return bind(s, (struct sockaddr *)&ss,
                family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
}
#else
static inline int rio_AcceptEx(SOCKET l, SOCKET a, rio_op *op, DWORD *got) {
    (void)l; (void)a; (void)op; (void)got; return FALSE; }
static inline int rio_ConnectEx(SOCKET s, const struct sockaddr *a, int n, rio_op *op) {
    (void)s; (void)a; (void)n; (void)op; return FALSE; }
static inline int rio_accepted_peer(SOCKET l, SOCKET a, rio_op *op, struct sockaddr_storage *p) {
    (void)l; (void)a; (void)op; (void)p; return -1; }
static inline int rio_set_nonblocking(SOCKET s) { (void)s; return -1; }
static inline int rio_bind_any(SOCKET s, int f) { (void)s; (void)f; return -1; }
#endif

/* A numeric host + port as a sockaddr (0, or -1 for text that is not an address). */
static inline int rio_sockaddr_from(int family, const char *host, unsigned short port,
                                    unsigned long flowinfo, unsigned long scope_id,
                                    struct sockaddr_storage *out) {
    memset(out, 0, sizeof(*out));
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        a->sin6_flowinfo = htonl((uint32_t)flowinfo);
        a->sin6_scope_id = (uint32_t)scope_id;
        return inet_pton(AF_INET6, host, &a->sin6_addr) == 1 ? 0 : -1;
    }
    {
        struct sockaddr_in *a = (struct sockaddr_in *)out;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
    }
}

/* True once memoryview.release() was called on the view (Python.h is included first). */
static inline int rio_memoryview_released(PyObject *view) {
#ifdef _Py_MEMORYVIEW_RELEASED
    return (((PyMemoryViewObject *)view)->flags & _Py_MEMORYVIEW_RELEASED) != 0;
#else
    (void)view;
    return 1;   /* unknown layout: never reuse a view */
#endif
}

/* Point an unshared memoryview of `owner`'s buffer at another part of it: the Python reactor's
 * per-message view is reused instead of allocated.  Only when nobody else can see the change:
 * one reference (the reader's), not released, nothing exported from it, a 1-D byte view whose
 * managed buffer is `owner`'s export.  A slice or copy the user kept is a separate object with
 * its own Py_buffer, unaffected.  Returns 1 when retargeted, 0 when a new view is needed. */
static inline int rio_memoryview_retarget(PyObject *mv, PyObject *owner, char *buf, Py_ssize_t len) {
#ifdef _Py_MEMORYVIEW_RELEASED
    PyMemoryViewObject *m = (PyMemoryViewObject *)mv;
    if (Py_REFCNT(mv) != 1 || m->exports != 0 || (m->flags & _Py_MEMORYVIEW_RELEASED)
            || m->mbuf == NULL || m->mbuf->master.obj != owner || m->view.ndim != 1
            || m->view.itemsize != 1 || m->view.shape == NULL)
        return 0;
    m->view.buf = buf;
    m->view.len = len;
    m->view.shape[0] = len;
    m->hash = -1;
    return 1;
#else
    (void)mv; (void)owner; (void)buf; (void)len;
    return 0;   /* unknown layout: never reuse a view */
#endif
}

/* The bytes of a memoryview without taking a new buffer export (send_or_que's hot path): 1 for
 * a live C-contiguous view (what PyObject_GetBuffer(PyBUF_SIMPLE) would give), 0 otherwise
 * (then the caller takes the ordinary path, which also raises the ordinary errors).  The caller
 * holds a reference to the view for as long as it reads the bytes. */
static inline int rio_memoryview_bytes(PyObject *o, const char **buf, Py_ssize_t *len) {
#ifdef _Py_MEMORYVIEW_RELEASED
    PyMemoryViewObject *m = (PyMemoryViewObject *)o;
    if (!PyMemoryView_Check(o) || (m->flags & _Py_MEMORYVIEW_RELEASED)
            || !(m->flags & _Py_MEMORYVIEW_C))
        return 0;
    *buf = (const char *)m->view.buf;
    *len = m->view.len;
    return 1;
#else
    (void)o; (void)buf; (void)len;
    return 0;
#endif
}

/* True when nobody but its one holder can see memory through this memoryview: one reference,
 * nothing exported from it, and no other memoryview (a slice the user kept) on its managed
 * buffer.  Then the bytes under it may be handed to another stream. */
static inline int rio_memoryview_sole(PyObject *mv) {
#ifdef _Py_MEMORYVIEW_RELEASED
    PyMemoryViewObject *m = (PyMemoryViewObject *)mv;
    return Py_REFCNT(mv) == 1 && m->exports == 0 && m->mbuf != NULL && m->mbuf->exports == 1;
#else
    (void)mv;
    return 0;
#endif
}

/* Py_TYPE(o) is t, for a borrowed pointer (no reference taken). */
static inline int rio_type_is(PyObject *o, PyObject *t) { return Py_TYPE(o) == (PyTypeObject *)t; }

/* CPython (3.11+) keeps the instance dict of o's type itself (Py_TPFLAGS_MANAGED_DICT: a
 * Python subclass of a Cython class); always 0 before 3.11. */
static inline int rio_managed_dict(PyObject *o) {
#ifdef Py_TPFLAGS_MANAGED_DICT
    return (Py_TYPE(o)->tp_flags & Py_TPFLAGS_MANAGED_DICT) != 0;
#else
    (void)o;
    return 0;
#endif
}

/* Truthiness of a collections.deque without a call: its ob_size is its length.  On a
 * free-threaded build another thread may append meanwhile (under the deque's own lock, which
 * this read does not take): CPython stores ob_size there with a relaxed atomic (Py_SET_SIZE),
 * and the read is one too.  It needs no ordering of its own: the inbox's callers read it after
 * taking and releasing the inbox lock, under which every append is made (_commands.pxi), so a
 * command appended before the loop's "polling = True" is seen, and one appended after it wakes
 * the loop; a stale 0 elsewhere is only a command run one turn later. */
static inline int rio_deque_nonempty(PyObject *dq) {
#ifdef Py_GIL_DISABLED
    return _Py_atomic_load_ssize_relaxed(&((PyVarObject *)dq)->ob_size) != 0;
#else
    return Py_SIZE(dq) != 0;
#endif
}

/* The loop thread's state for rio_sole_python_thread, taken once per run of the loop (when it
 * claims the runtime): NULL in a subinterpreter, where a wait always releases the GIL. */
static inline void *rio_loop_thread_state(void) {
    PyThreadState *t = PyThreadState_Get();     /* the caller's: it holds the GIL */
    return t->interp == PyInterpreterState_Main() ? (void *)t : NULL;
}

/* True when no other thread can want the GIL: one interpreter, whose only thread state is
 * `tstate` (rio_loop_thread_state, on its own thread).  A wait that holds the GIL then blocks
 * nobody (a C thread that starts calling into Python meanwhile waits at most the held wait's
 * bound, HELD_WAIT_MS).  Free-threaded builds: always 0 (a wait
 * must detach for the GC's stop-the-world).  An interpreter's thread states are a doubly
 * linked list (prev/next of the public struct _ts); interpreters a list with the main one at
 * its tail (a new one is put at the head).  Read from the caller's own state, not walked from
 * the heads: this runs before every wait, and the walk was ~30 instructions of a Cython
 * echo's ~600 (tests/test_cost.py). */
static inline int rio_sole_python_thread(void *tstate) {
#ifdef Py_GIL_DISABLED
    (void)tstate;
    return 0;
#else
    PyThreadState *t = (PyThreadState *)tstate;
    return t != NULL && t->prev == NULL && t->next == NULL
        && PyInterpreterState_Head() == t->interp;
#endif
}

/* Make a new object that no other thread has seen immortal on a free-threaded build: its
 * INCREF/DECREF from any thread then only read its reference count, instead of an atomic add
 * that the cores fight over (C7).  Py_SET_REFCNT's documented overflow path (CPython 3.13t,
 * 3.14t: a count above UINT32_MAX on an object the calling thread owns).  A no-op elsewhere. */
static inline void rio_immortalize(PyObject *o) {
#ifdef Py_GIL_DISABLED
    Py_SET_REFCNT(o, (Py_ssize_t)UINT32_MAX + 1);
#else
    (void)o;
#endif
}

/* True for errors that mean "no data now, try when the poller says so". */
static inline int rio_would_block(int e) { return e == EAGAIN || e == EAGAIN_ALT; }

/* ---- cross-thread state (docs/internals-threading.md) ----
 * A free-threaded build (Py_GIL_DISABLED: CPython 3.13t/3.14t) gets CPython's own PyMutex and
 * _Py_atomic_* (Python.h, for GCC, Clang and MSVC).  Every other build has a GIL that is held
 * across each of these critical sections (nothing inside them releases it): the lock is then
 * empty and the accesses plain, so the GIL build compiles to exactly the code it had before.
 * rio_bump_* is the one-writer update of a counter other threads may read. */
#ifdef Py_GIL_DISABLED
typedef unsigned char rio_mutex;    /* a PyMutex is one byte, 0 = unlocked */
typedef char rio_mutex_is_a_pymutex[sizeof(PyMutex) == sizeof(rio_mutex) ? 1 : -1];
#  define RIO_FREE_THREADED 1
#  define rio_mutex_lock(m)             PyMutex_Lock((PyMutex *)(m))
#  define rio_mutex_unlock(m)           PyMutex_Unlock((PyMutex *)(m))
#  define rio_load_int(p)               _Py_atomic_load_int(p)
#  define rio_store_int(p, v)           _Py_atomic_store_int((p), (v))
#  define rio_exchange_int(p, v)        _Py_atomic_exchange_int((p), (v))
#  define rio_cas_int(p, e, v)          _Py_atomic_compare_exchange_int((p), (e), (v))
#  define rio_load_ulong(p)             _Py_atomic_load_ulong_relaxed(p)
#  define rio_store_ulong(p, v)         _Py_atomic_store_ulong_relaxed((p), (v))
#  define rio_load_ssize(p)             _Py_atomic_load_ssize_relaxed(p)
#  define rio_bump_ssize(p, d)          _Py_atomic_store_ssize_relaxed((p), *(p) + (d))
#  define rio_load_u64(p)               _Py_atomic_load_uint64_relaxed(p)
#  define rio_bump_u64(p, d)            _Py_atomic_store_uint64_relaxed((p), *(p) + (d))
#  define rio_add_ssize(p, d)           _Py_atomic_add_ssize((p), (d))
#  define rio_load_ssize_acquire(p)     _Py_atomic_load_ssize_acquire(p)
#  define rio_load_ptr_acquire(p)       _Py_atomic_load_ptr_acquire(p)
#  define rio_cas_ptr(p, e, v)          _Py_atomic_compare_exchange_ptr((p), (e), (v))
#else
typedef unsigned char rio_mutex;
#  define RIO_FREE_THREADED 0
#  define rio_mutex_lock(m)             ((void)(m))
#  define rio_mutex_unlock(m)           ((void)(m))
#  define rio_load_int(p)               (*(p))
#  define rio_store_int(p, v)           ((void)(*(p) = (v)))
static inline int rio_exchange_int(int *p, int v) { int o = *p; *p = v; return o; }
static inline int rio_cas_int(int *p, int *e, int v) {
    if (*p == *e) { *p = v; return 1; }
    *e = *p; return 0;
}
#  define rio_load_ulong(p)             (*(p))
#  define rio_store_ulong(p, v)         ((void)(*(p) = (v)))
#  define rio_load_ssize(p)             (*(p))
#  define rio_bump_ssize(p, d)          ((void)(*(p) += (d)))
#  define rio_load_u64(p)               (*(p))
#  define rio_bump_u64(p, d)            ((void)(*(p) += (d)))
static inline Py_ssize_t rio_add_ssize(Py_ssize_t *p, Py_ssize_t d) { Py_ssize_t o = *p; *p += d; return o; }
#  define rio_load_ssize_acquire(p)     (*(p))
#  define rio_load_ptr_acquire(p)       (*(void **)(p))
static inline int rio_cas_ptr(void *p, void *e, void *v) {
    if (*(void **)p == *(void **)e) { *(void **)p = v; return 1; }
    *(void **)e = *(void **)p; return 0;
}
#endif
/* Refuse a stream's methods from a foreign thread while its runtime runs (C10): where that can
 * corrupt memory (free-threaded) and in debug builds; under the GIL it compiles to nothing. */
#define RIO_CHECK_THREADS (RIO_FREE_THREADED || REACTIO_CHECK_INVARIANTS)

#endif /* REACTIO_SYS_H */
