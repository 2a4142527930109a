# Thin mirror of the Linux calls the epoll backend uses: sys/epoll.h, sys/eventfd.h and the
# socket calls of the hot path.  Declared through reactio_sys.h so that the same generated C
# compiles on Windows, where these names are ENOSYS stubs (see reactio_sys.h).
from libc.stdint cimport uint32_t, uint64_t, int64_t
from cpython.ref cimport PyObject

cdef extern from "reactio_sys.h" nogil:
    const int REACTIO_IOCP          # 1 on Windows: the IOCP backend is compiled in
    const int REACTIO_CHECK_INVARIANTS  # 1 in a debug build: assert the stream invariants

    # --- cross-thread state (docs/internals-threading.md): real on a free-threaded build,
    # plain accesses under the GIL otherwise (RIO_FREE_THREADED 0)
    const int RIO_FREE_THREADED
    const int RIO_CHECK_THREADS     # refuse a stream's methods from a foreign thread (C10)
    void rio_mutex_lock(unsigned char *m)
    void rio_mutex_unlock(unsigned char *m)
    int rio_load_int(int *p)
    void rio_store_int(int *p, int v)
    int rio_exchange_int(int *p, int v)
    int rio_cas_int(int *p, int *expected, int v)
    unsigned long rio_load_ulong(unsigned long *p)
    void rio_store_ulong(unsigned long *p, unsigned long v)
    Py_ssize_t rio_load_ssize(Py_ssize_t *p)
    void rio_bump_ssize(Py_ssize_t *p, Py_ssize_t d)
    uint64_t rio_load_u64(uint64_t *p)
    void rio_bump_u64(uint64_t *p, uint64_t d)
    Py_ssize_t rio_add_ssize(Py_ssize_t *p, Py_ssize_t d)
    Py_ssize_t rio_load_ssize_acquire(Py_ssize_t *p)
    void *rio_load_ptr_acquire(void *p)
    int rio_cas_ptr(void *p, void *expected, void *v)
    void rio_immortalize(object o)      # free-threaded: never refcounted again (C7)

    # --- sys/epoll.h
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLERR
        EPOLLHUP
        EPOLLRDHUP
        EPOLL_CTL_ADD
        EPOLL_CTL_DEL
        EPOLL_CTL_MOD
        EPOLL_CLOEXEC
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    # Level-triggered use only. timeout in ms, -1 blocks; EINTR when a signal arrives.
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)

    # --- sys/eventfd.h: the command wake-up; 8-byte counter reads/writes
    enum:
        EFD_NONBLOCK
        EFD_CLOEXEC
    int eventfd(unsigned int initval, int flags)
    int rio_read_u64(int fd, uint64_t *value)
    int rio_write_u64(int fd, uint64_t value)
    int rio_close_fd(int fd)

    # --- sockets (sys/socket.h, netinet/*)
    ctypedef int rio_sock_t
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    struct in_addr:
        pass
    struct in6_addr:
        pass
    struct sockaddr_in:
        sa_family_t sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        sa_family_t sin6_family
        unsigned short sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    struct sockaddr_un:                 # sys/un.h, Windows afunix.h: sun_path at offset 2
        sa_family_t sun_family
        char sun_path[108]
    struct linger:
        int l_onoff
        int l_linger
    enum:
        AF_INET
        AF_INET6
        AF_UNIX
        SOL_SOCKET
        SO_ERROR
        SO_LINGER
        IPPROTO_TCP
        TCP_NODELAY
        SHUT_WR
        MSG_NOSIGNAL
        SOCK_NONBLOCK
        SOCK_CLOEXEC
        INET6_ADDRSTRLEN
    ctypedef long ssize_t
    # MSG_NOSIGNAL: a write to a reset peer returns EPIPE instead of raising SIGPIPE.
    ssize_t send(rio_sock_t s, const void *buf, size_t n, int flags)
    ssize_t recv(rio_sock_t s, void *buf, size_t n, int flags)
    int accept4(rio_sock_t s, sockaddr *addr, socklen_t *addrlen, int flags)
    int shutdown(rio_sock_t s, int how)
    # (char * on Windows: these cast)
    int rio_getsockopt(rio_sock_t s, int level, int name, void *val, socklen_t *len)
    int rio_setsockopt(rio_sock_t s, int level, int name, const void *val, socklen_t len)
    int getsockname(rio_sock_t s, sockaddr *addr, socklen_t *len)
    int getpeername(rio_sock_t s, sockaddr *addr, socklen_t *len)
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)
    unsigned short ntohs(unsigned short v)
    uint32_t ntohl(uint32_t v)
    int rio_close(rio_sock_t s)

    bint rio_memoryview_released(object view)
    bint rio_memoryview_retarget(PyObject *mv, PyObject *owner, char *buf, Py_ssize_t len)
    void *rio_loop_thread_state()
    bint rio_sole_python_thread(void *tstate)
    bint rio_memoryview_bytes(object o, const char **buf, Py_ssize_t *len)
    bint rio_deque_nonempty(object dq)
    bint rio_type_is(PyObject *o, object t)
    bint rio_managed_dict(PyObject *o)
    bint rio_memoryview_sole(object mv)

    # --- errno and clocks
    int rio_errno()
    bint rio_would_block(int err)
    int64_t rio_monotonic_ns()
    enum:
        EINTR
        EAGAIN
        EMFILE
        ENFILE
        ENOBUFS
        ENOMEM
        ECONNABORTED
        EPROTO
        EPERM
        EINPROGRESS


cdef extern from "Python.h":
    int PyObject_GenericSetDict(object o, object value, void *context) except -1
    # (3.9+) a call with no argument tuple: on_inbound_message's dispatch
    object PyObject_Vectorcall(object f, PyObject **args, size_t nargsf, PyObject *kwnames)
