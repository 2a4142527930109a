# The epoll backend (Linux): readiness, level-triggered.  A stream's key is its ReactorID
# (_poll_key), read interest is on while it reads, write interest while bytes are queued; the
# eventfd of the inbox wakes a blocked wait; events land in a preallocated array.  What an
# event means for a stream is decided in _lifecycle.pxi / _streams.pxi: this file only decodes.

cdef int _epoll_init(ReactRuntime rt) except -1:
    rt.events = malloc(sizeof(epoll_event) * rt.max_events)
    if rt.events == NULL:
        raise MemoryError()
    rt.epfd = epoll_create1(EPOLL_CLOEXEC)
    if rt.epfd < 0:
        raise _net.os_error(rio_errno(), "epoll_create1")
    rt.inbox.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
    if rt.inbox.evfd < 0:
        raise _net.os_error(rio_errno(), "eventfd")
    return _epoll_ctl(rt, EPOLL_CTL_ADD, rt.inbox.evfd, EPOLLIN, WAKE_KEY)


cdef int _epoll_release(ReactRuntime rt) except -1:
    # (after inbox.retire(): no sender writes the eventfd any more)
    if rt.inbox.evfd >= 0:
        rio_close_fd(rt.inbox.evfd)
        rt.inbox.evfd = -1
    if rt.epfd >= 0:
        rio_close_fd(rt.epfd)
        rt.epfd = -1
    return 0


cdef int _epoll_wake(_Inbox inbox) except -1:
    cdef int rc
    while True:
        rc = rio_write_u64(inbox.evfd, 1)
        if rc >= 0 or rio_errno() != EINTR:
            return 0


cdef inline uint32_t _epoll_bits(int want) noexcept:
    return (EPOLLIN if want & WANT_READ else 0) | (EPOLLOUT if want & WANT_WRITE else 0)


cdef int _epoll_ctl(ReactRuntime rt, int op, int fd, uint32_t bits, uint64_t key) except -1:
    cdef epoll_event ev
    ev.events = bits
    ev.data.u64 = key
    if epoll_ctl(rt.epfd, op, fd, &ev) != 0:
        raise _net.os_error(rio_errno(), "epoll_ctl")
    return 0


cdef int _epoll_close_socket(ReactRuntime rt, int fd, bint abort) except -1:
    """Stop watching a socket and close it (with a reset when abort)."""
    cdef linger lg
    cdef epoll_event ev
    epoll_ctl(rt.epfd, EPOLL_CTL_DEL, fd, &ev)
    if abort:
        lg.l_onoff = 1
        lg.l_linger = 0
        rio_setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg))
    rio_close(fd)
    return 0


# How long a wait may hold the GIL when no other thread can want it (rio_sole_python_thread):
# the bound on how long a C thread that starts calling into Python meanwhile waits for it.
# Longer than a kernel tick on purpose (4 ms at HZ=250, 10 ms at HZ=100): epoll_wait arms a
# timer for its timeout, and one due before the next tick reprograms the CPU's timer device
# when armed and again when cancelled by the wake-up -- on a VM a trap to the hypervisor
# each.  With 1 ms here, same-core ping-pong took 22.1-22.9 us (p50, reactio-py) against
# 14.0-15.4 us held with no limit or 1000 ms, or released; C 11.2-13.0 in the same
# interleaved runs (BENCHMARKS.md, issue 12 section).
cdef int HELD_WAIT_MS = 20


cdef int _epoll_poll(ReactRuntime rt, int timeout_ms) except -1:
    """One wait and the batch of events it returns.  (One function on purpose, like
    _iocp_poll: the wake-up handshake, the held or released wait and the dispatch of each event
    share locals of the hot path; split into calls, each boundary costs reference counting on
    the Cython objects passed, which tests/test_cost.py counts per message.)"""
    cdef epoll_event *evs = <epoll_event *>rt.events
    cdef int n, i, err, held
    cdef uint64_t key, counter
    cdef uint32_t slot
    cdef PyObject *obj
    cdef DispatchContext ctx
    cdef DatagramContext dg
    cdef _Listener lst
    # (rt.inbox and rt.slots are read through rt: a local would cost a reference per wait)
    if timeout_ms != 0:
        rio_mutex_lock(&rt.inbox.lock)      # (the handshake of _commands.pxi)
        rt.inbox.polling = True
        rio_mutex_unlock(&rt.inbox.lock)
        if rio_deque_nonempty(rt.inbox.queue) or rt.ready:
            timeout_ms = 0
    if timeout_ms == 0:     # a poll never blocks: keep the GIL (no hand-off per busy-poll)
        n = epoll_wait(rt.epfd, evs, rt.max_events, 0)
    else:
        n = 0
        if rio_sole_python_thread(rt.tstate):
            # Nobody else can want the GIL: the first HELD_WAIT_MS of the wait keep it (a
            # release and re-take costs ~400 instructions per wake-up, as much as the rest
            # of a Cython echo); only a wait that lasts longer releases it.  (Never on a
            # free-threaded build: there a wait always detaches.)
            held = timeout_ms if 0 < timeout_ms < HELD_WAIT_MS else HELD_WAIT_MS
            n = epoll_wait(rt.epfd, evs, rt.max_events, held)
            if n == 0 and timeout_ms > 0:
                timeout_ms -= held
        if n == 0 and timeout_ms != 0:
            # before a long wait: the handler of a signal that came while the loop was busy
            # (no EINTR then) runs now, not at the next event (once per wait that outlasts
            # HELD_WAIT_MS, not per message: the check costs ~50 instructions)
            try:
                PyErr_CheckSignals()
            except BaseException:
                _inbox_not_polling(rt.inbox)
                raise
            with nogil:
                n = epoll_wait(rt.epfd, evs, rt.max_events, timeout_ms)
    if rt.inbox.polling:    # (only this thread writes it; in place: a call costs a reference)
        rio_mutex_lock(&rt.inbox.lock)
        rt.inbox.polling = False
        rio_mutex_unlock(&rt.inbox.lock)
    if n < 0:
        err = rio_errno()
        if err == EINTR:
            PyErr_CheckSignals()     # raises KeyboardInterrupt for Ctrl-C
            return 0
        raise _net.os_error(err, "epoll_wait")
    for i in range(n):
        key = evs[i].data.u64
        if key == WAKE_KEY:
            rio_read_u64(rt.inbox.evfd, &counter)
            rio_mutex_lock(&rt.inbox.lock)
            rt.inbox.wake_pending = False
            rio_mutex_unlock(&rt.inbox.lock)
            continue
        rio_bump_u64(&rt.n_sock_events, 1)
        slot = <uint32_t>(key & 0xFFFFFFFFULL)
        if slot >= rt.nslots or rt.gens[slot] != <uint32_t>(key >> 32):
            continue        # the reactor closed earlier in this batch
        obj = PyList_GET_ITEM(rt.slots, slot)     # borrowed: the slot holds it
        if rio_type_is(obj, DispatchContext):
            ctx = <DispatchContext>obj      # a reference of our own: finalize frees the slot's
            _hold(ctx)                      # (held while it is handled)
            if (<_stream_event_fn>_epoll_stream_event)(rt, ctx, evs[i].events) < 0:
                _stream_event_failed(rt, ctx)   # (an exception is pending)
            else:
                _release(rt, ctx)
        elif rio_type_is(obj, DatagramContext):
            dg = <DatagramContext>obj       # a reference of our own, as for ctx: closing the
            _dg_event(rt, dg, evs[i].events)    # endpoint in its callback frees the slot's
        else:
            lst = <_Listener>obj
            _epoll_accept(rt, lst)
    return 0


# _epoll_poll calls _epoll_stream_event as this type: its -1 (an exception pending) is tested
# in place and handled by _stream_event_failed, out of the hot path.  (A try/except around
# the call would save and restore the thread's exception state on every event, ~25
# instructions of the ~600 a Cython echo costs: tests/test_cost.py.)
ctypedef int (*_stream_event_fn)(ReactRuntime, DispatchContext, uint32_t) noexcept


cdef int _pending_error() except -1:
    return -1       # raises the exception already set (see _stream_event_failed)


cdef int _stream_event_failed(ReactRuntime rt, DispatchContext ctx) except -1:
    """The event handler of a held stream returned -1 with an exception set: a callback's
    exception closes that stream only; the stream is released either way."""
    try:
        _pending_error()
    except (KeyboardInterrupt, SystemExit):
        _release(rt, ctx)
        raise
    except BaseException as exc:
        _callback_failed(rt, ctx, exc)
    return _release(rt, ctx)


cdef int _epoll_stream_event(ReactRuntime rt, DispatchContext ctx, uint32_t ev) except -1:
    """One event of a held stream."""
    cdef int st = ctx.state
    cdef int err = 0
    cdef socklen_t n = sizeof(err)
    if st == ST_OPEN:
        if ev & EPOLLOUT:
            # also with an empty queue: drops the write interest, delivers owed completions
            ctx._flush()
        if ctx.state == ST_OPEN and ev & (EPOLLIN | EPOLLERR | EPOLLHUP):
            _stream_readable(rt, ctx)
    elif st == ST_HANDSHAKE:
        if ev & EPOLLOUT:
            ctx._flush()
        if ctx.state == ST_HANDSHAKE and ev & (EPOLLIN | EPOLLERR | EPOLLHUP):
            _tls_handshake_input_cold(rt, ctx)
    elif st == ST_CONNECTING:
        if rio_getsockopt(ctx.fd, SOL_SOCKET, SO_ERROR, &err, &n) != 0:
            err = rio_errno()
        if err != 0:
            return _connect_attempt_failed(rt, ctx, err)
        return _connect_succeeded(rt, ctx)
    elif st == ST_DRAINING or st == ST_HALF_CLOSED:
        if ev & (EPOLLIN | EPOLLERR | EPOLLHUP) and not ctx.peer_eof:
            _closing_input(rt, ctx)
        if ctx.state == ST_DRAINING:
            ctx._flush()
    return 0


cdef int _epoll_accept(ReactRuntime rt, _Listener lst) except -1:
    cdef sockaddr_storage ss
    cdef socklen_t n
    cdef int fd, err, i
    for i in range(64):         # bounded: other sockets get their turn
        if lst.closed:
            return 0
        n = sizeof(ss)
        fd = accept4(lst.fd, <sockaddr *>&ss, &n, SOCK_NONBLOCK | SOCK_CLOEXEC)
        if fd < 0:
            err = rio_errno()
            if err == EINTR:
                continue
            if rio_would_block(err):
                return 0
            if err == EMFILE or err == ENFILE or err == ENOBUFS or err == ENOMEM:
                log.warning("listener %s: accept failed: %s; pausing accepts for 100 ms",
                            lst.reactor_id, os.strerror(err))
                return _pause_accepts(rt, lst)
            log.info("listener %s: accept failed: %s (connection dropped)",
                     lst.reactor_id, os.strerror(err))
            continue
        _adopt(rt, lst, fd, _sockaddr_to_tuple(<sockaddr *>&ss, n))
    return 0
