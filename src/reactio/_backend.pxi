# The backend interface: what the shared code asks of an event backend, and the only place that
# chooses one (REACTIO_IOCP is a compile-time constant of reactio_sys.h, so the C compiler keeps
# one branch).  A backend is one file: _epoll_loop.pxi (Linux, readiness) or _iocp_loop.pxi
# (Windows, completions).  A new backend (kqueue, io_uring, a test double recording calls)
# implements these functions and adds its branch here; shared files never test the platform.
#
#   init / release / teardown   make the poller and the wake-up; free them (dealloc) or, at
#                               close(), free them after outstanding I/O is done
#   wake(inbox)                 wake a loop blocked in poll (another thread's command)
#   poll(rt, timeout_ms)        wait with the GIL released, then handle every event: streams
#                               through _stream_readable / ctx._flush / _stream_event,
#                               connects through _connect_succeeded / _connect_attempt_failed,
#                               listeners through _adopt / _pause_accepts
#   add_stream(rt, ctx)         watch a new stream for ctx.want (WANT_READ | WANT_WRITE)
#   set_want(ctx, want)         change what it waits for
#   stream_opened(rt, ctx)      after on_connected (IOCP: post the first receive)
#   connect_socket / connect_registered   a socket whose connect starts now / once registered
#   add_listener, listener_started, pause_accepts, resume_accepts
#   close_socket(rt, fd, abort) stop watching and close (abort: RST)
#   flush_blocked(sender)       True while the backend owns the head of the buffer it sends
#                               from (IOCP WSASend): the queue, or a TLS stream's records
#   after_flush(rt, ctx)        bytes are left queued after a flush (IOCP: send them)
#   READS_INLINE                the runtime may recv() on a socket itself (IOCP: a posted
#                               WSARecv owns the input)

# The most events taken per wait: epoll_wait() refuses more than INT_MAX / sizeof(struct
# epoll_event); the IOCP entry is larger, so this bound holds for both.
cdef int MAX_EVENTS = 2147483647 // max(sizeof(epoll_event), sizeof(w.OVERLAPPED_ENTRY))

cdef bint READS_INLINE = not REACTIO_IOCP

BACKEND = "iocp" if REACTIO_IOCP else "epoll"     # which event backend this build runs on

# "unix:" addresses: the IOCP backend refuses them (docs/unix.md).  Windows has AF_UNIX since
# 10 1803, but wine (8.0), where this backend is tested, has none (WSAEAFNOSUPPORT), and untested
# code is not shipped.
cdef bint UNIX_SOCKETS = not REACTIO_IOCP


cdef inline int _be_init(ReactRuntime rt) except -1:
    if REACTIO_IOCP:
        return _iocp_init(rt)
    return _epoll_init(rt)


cdef inline int _be_release(ReactRuntime rt) except -1:
    if REACTIO_IOCP:
        return _iocp_release(rt)
    return _epoll_release(rt)


cdef inline int _be_teardown(ReactRuntime rt) except -1:
    if REACTIO_IOCP:
        return _iocp_teardown(rt)
    return _epoll_release(rt)


cdef inline int _be_wake(_Inbox inbox) except -1:
    if REACTIO_IOCP:
        return _iocp_wake(inbox.port)
    return _epoll_wake(inbox)


cdef inline int _be_poll(ReactRuntime rt, int timeout_ms) except -1:
    if REACTIO_IOCP:
        return _iocp_poll(rt, timeout_ms)
    return _epoll_poll(rt, timeout_ms)


cdef inline object _be_fileno(ReactRuntime rt):
    if REACTIO_IOCP:
        raise NotImplementedError("an IOCP runtime has no pollable descriptor; drive it from a "
                                  "thread (reactio.aio does)")
    if rt.epfd < 0:
        raise RuntimeClosedError("the runtime is closed")
    return rt.epfd


cdef inline int _be_add_stream(ReactRuntime rt, DispatchContext ctx) except -1:
    if REACTIO_IOCP:
        return _iocp_add_stream(rt, ctx)
    return _epoll_ctl(rt, EPOLL_CTL_ADD, ctx.fd, _epoll_bits(ctx.want), _poll_key(ctx.reactor_id))


cdef inline int _be_set_want(DispatchContext ctx, int want) except -1:
    if REACTIO_IOCP:
        if want & WANT_WRITE:
            _iocp_arm_send(ctx.rt, ctx)
        return 0
    return _epoll_ctl(ctx.rt, EPOLL_CTL_MOD, ctx.fd, _epoll_bits(want), _poll_key(ctx.reactor_id))


cdef inline int _be_stream_opened(ReactRuntime rt, DispatchContext ctx) except -1:
    if REACTIO_IOCP:
        return _iocp_arm_recv(rt, ctx)
    return 0


cdef inline object _be_connect_socket(int family, object sockaddr_, bint nodelay):
    if REACTIO_IOCP:
        return _net.new_socket(family, nodelay)     # ConnectEx needs it registered first
    if family == AF_UNIX:
        return _unix.start_connect(sockaddr_)[0]
    return _net.start_connect(family, sockaddr_, nodelay)[0]


cdef inline int _be_connect_registered(ReactRuntime rt, DispatchContext ctx, int family,
                                       object sockaddr_) except -1:
    if REACTIO_IOCP:
        return _iocp_connect(rt, ctx, family, sockaddr_)
    return 0        # EPOLLOUT (or ERR/HUP) reports the outcome, even an immediate one


cdef inline int _be_add_listener(ReactRuntime rt, _Listener lst) except -1:
    if REACTIO_IOCP:
        return _iocp_add_listener(rt, lst)
    return _epoll_ctl(rt, EPOLL_CTL_ADD, lst.fd, EPOLLIN, _poll_key(lst.reactor_id))


cdef inline int _be_listener_started(ReactRuntime rt, _Listener lst) except -1:
    if REACTIO_IOCP:
        return _iocp_post_accepts(rt, lst)
    return 0


cdef inline int _be_pause_accepts(ReactRuntime rt, _Listener lst) except -1:
    if REACTIO_IOCP:
        return 0        # no AcceptEx is posted again until resume
    _epoll_ctl(rt, EPOLL_CTL_MOD, lst.fd, 0, _poll_key(lst.reactor_id))
    return 0


cdef inline int _be_resume_accepts(ReactRuntime rt, _Listener lst) except -1:
    if REACTIO_IOCP:
        return _iocp_post_accepts(rt, lst)
    try:
        _epoll_ctl(rt, EPOLL_CTL_MOD, lst.fd, EPOLLIN, _poll_key(lst.reactor_id))
    except OSError as exc:
        log.error("listener %s: cannot resume accepting: %s", lst.reactor_id, exc)
    return 0


cdef inline int _be_close_socket(ReactRuntime rt, int fd, bint abort) except -1:
    if REACTIO_IOCP:
        return _iocp_close_socket(rt, fd, abort)
    return _epoll_close_socket(rt, fd, abort)


cdef inline bint _be_flush_blocked(MsgSender s) noexcept:
    if REACTIO_IOCP:
        return s.inflight_buf != NULL
    return False


cdef inline int _be_after_flush(ReactRuntime rt, DispatchContext ctx) except -1:
    if REACTIO_IOCP:
        return _iocp_arm_send(rt, ctx)
    return 0        # write interest stays on until the queue is empty


cdef inline int _be_dgram_add(ReactRuntime rt, DatagramContext ctx) except -1:
    """Watch a new datagram endpoint (before it is OPEN)."""
    if REACTIO_IOCP:
        return _dgi_add(rt, ctx)
    return _epoll_ctl(rt, EPOLL_CTL_ADD, ctx.fd, _epoll_bits(ctx.want), _poll_key(ctx.reactor_id))


cdef inline int _be_dgram_opened(ReactRuntime rt, DatagramContext ctx) except -1:
    """After on_bound (IOCP: the first WSARecvFrom is posted from the loop, soon)."""
    if REACTIO_IOCP:
        rt.iocp_rearm.append(ctx)
    return 0


cdef inline Py_ssize_t _be_dgram_recv_bytes(Py_ssize_t slot, int nbatch) noexcept:
    """The receive buffer: epoll, nbatch slots; IOCP, one datagram at a time into a buffer
    that no UDP payload overflows (so WSAEMSGSIZE never comes; a datagram of slot bytes or
    more is truncated by the same rule as on epoll)."""
    if REACTIO_IOCP:
        return slot if slot > 65536 else 65536
    return slot * nbatch


cdef inline int _be_dg_send(DatagramContext ctx, const char *data, Py_ssize_t n,
                            const sockaddr *sa, socklen_t salen) except -1:
    if REACTIO_IOCP:
        return _dgi_send(ctx, data, n, sa, salen)
    return _dg_send(ctx, data, n, sa, salen)


cdef inline int _be_dg_flush(DatagramContext ctx) except -1:
    """Send (or post) the out batch."""
    if REACTIO_IOCP:
        return _dgi_arm_send(ctx.rt, ctx)
    return _dg_flush(ctx)


cdef inline int _be_dg_last_flush(DatagramContext ctx) noexcept:
    """At finalize: one last non-blocking send of what is queued; errors are ignored."""
    if REACTIO_IOCP:
        return _dgi_last_flush(ctx)
    return _dg_last_flush(ctx)


cdef inline bint _be_dg_io_pending(DatagramContext ctx) noexcept:
    """The kernel still owns the endpoint's buffers (IOCP: an operation's packet has not come;
    they are freed with the context, which the pending op keeps alive)."""
    if REACTIO_IOCP:
        return _dgi_io_pending(ctx)
    return False
