# Streams and listeners joining and leaving the runtime: a new stream registered with the
# backend, an accepted connection adopted through its listener's handler, on_connected, a
# stream's readable event, a callback that failed, a listener closed or paused.  How a stream
# ends is _lifecycle.pxi.

# What a stream waits for, in the backend's terms: epoll interest, or (IOCP) whether a WSASend
# of the queue is wanted.  Reading is always wanted while a stream is OPEN.
cdef enum:
    WANT_READ = 1
    WANT_WRITE = 2

# How long a listener out of descriptors (EMFILE) stops accepting.
cdef int64_t ACCEPT_PAUSE_NS = 100000000


@cython.final
cdef class _Listener:

    def __cinit__(self):
        self.fd = -1

    def __dealloc__(self):
        # still open: the runtime was dropped without close() and the GC freed this first
        if self.fd >= 0:
            rio_close(self.fd)
        free(self.backend_ops)     # a pending AcceptEx holds a reference to us: none is


cdef DispatchContext _new_stream(ReactRuntime rt, int fd, Reactor reactor, _StreamOptions opts,
                                 _PendingConnect connecting):
    """A registered stream: OPEN (and counted), or CONNECTING for ``connecting``.  The fd is
    the stream's from here on, also when this fails."""
    cdef DispatchContext ctx = DispatchContext.__new__(DispatchContext)
    cdef int one = 1
    try:
        ctx.rt = rt
        ctx.reactor = reactor
        ctx.fd = fd
        # (no __init__: the options were validated when the connect or listen was sent)
        ctx.reader = MsgReader.__new__(MsgReader)
        ctx.reader.recv_min = opts.recv_min
        ctx.reader.max_msg_size = opts.max_msg_size
        ctx.sender = MsgSender.__new__(MsgSender)
        ctx.sender.max_send_queue = opts.max_send_queue
        ctx.sender.high_water = rt.high_water
        ctx.sender.low_water = rt.low_water
        ctx.default_readable = getattr(type(reactor), "on_readable") is _DEFAULT_ON_READABLE
        f = getattr(type(reactor), "on_inbound_message")
        if type(f) is types.FunctionType and "on_inbound_message" not in getattr(
                reactor, "__dict__", ()):
            ctx.py_on_inbound = f
        if opts.ssl_context is not None:
            ctx.tls = _tls_new(opts, connecting)
    except BaseException:
        ctx.fd = -1             # not ours to close twice in __dealloc__
        rio_close(fd)
        raise
    if opts.nodelay and connecting is None:
        rio_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
    ctx.reactor_id = _alloc_slot(rt, ctx)
    ctx.want = WANT_READ if connecting is None else WANT_WRITE
    try:
        _be_add_stream(rt, ctx)
    except BaseException:
        _free_slot(rt, ctx.reactor_id.slot)
        rio_close(fd)
        ctx.fd = -1
        raise
    if connecting is not None:
        ctx.state = ST_CONNECTING
        ctx.connect = connecting
    elif ctx.tls is not None:
        ctx.state = ST_HANDSHAKE    # _adopt starts the handshake (_tls_start)
    else:
        ctx.state = ST_OPEN
        rt.n_streams += 1
    return ctx


cdef object _connected(ReactRuntime rt, DispatchContext ctx, object listener_id):
    """Run on_connected of a new OPEN stream and let the backend start reading; returns the
    callback's exception, or None."""
    _hold(ctx)
    try:
        failed = _call_reactor(rt, ctx, CB_CONNECTED, listener_id)
        if ctx.state == ST_OPEN and ctx.tls is None:    # (TLS: reading since the handshake)
            try:
                _be_stream_opened(rt, ctx)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                _callback_failed(rt, ctx, exc)
    finally:
        _release(rt, ctx)
    return failed


cdef int _adopt(ReactRuntime rt, _Listener lst, int fd, object peer) except -1:
    """An accepted connection (fd): ask the listener's handler for its reactor."""
    cdef DispatchContext ctx
    try:
        reactor = lst.handler.on_new_connection(peer)
    except (KeyboardInterrupt, SystemExit):
        rio_close(fd)
        raise
    except BaseException as exc:
        log.error("listener %s: on_new_connection raised %s; connection from %s dropped",
                  lst.reactor_id, type(exc).__name__, peer, exc_info=exc)
        rio_close(fd)
        return 0
    if reactor is None:
        rio_close(fd)
        return 0
    if not isinstance(reactor, Reactor):
        log.error("listener %s: on_new_connection returned %r, not a Reactor or None; "
                  "connection from %s dropped", lst.reactor_id, reactor, peer)
        rio_close(fd)
        return 0
    try:
        ctx = _new_stream(rt, fd, <Reactor>reactor, lst.opts, None)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        log.error("listener %s: cannot add the connection from %s: %s", lst.reactor_id,
                  peer, exc)
        return 0
    if ctx.tls is not None:
        return _tls_start_inbound(rt, ctx, lst.reactor_id, peer)
    _connected(rt, ctx, lst.reactor_id)
    return 0


cdef inline int _stream_readable(ReactRuntime rt, DispatchContext ctx) except -1:
    """Input for a held OPEN stream: the reader (or the reactor's own on_readable)."""
    if ctx.default_readable:
        ctx.reader.fast_read(ctx)
    else:
        ctx.reactor.on_readable(ctx)
    return 0


cdef int _callback_failed(ReactRuntime rt, DispatchContext ctx, exc) except -1:
    """A callback of this stream raised (or reactio raised inside one): close the stream
    (abort for a broken limit).  A reactio rule broken (ReactioError), and an error reactio
    raised itself after starting the close, are logged once, when the stream is finalized;
    anything else here, with its traceback."""
    if ctx.close_error is not exc and not isinstance(exc, ReactioError):
        log.error("reactor %s (%s): callback raised %s; closing it", ctx.reactor_id,
                  type(ctx.reactor).__name__, type(exc).__name__, exc_info=exc)
    return _stream_event(rt, ctx, EV_ABORT if isinstance(
        exc, (MessageTooLargeError, SendQueueOverflowError)) else EV_CLOSE, exc)


cdef int _close_listener(ReactRuntime rt, _Listener lst) except -1:
    if lst.closed:
        return 0
    lst.closed = True
    _be_close_socket(rt, lst.fd, False)
    lst.fd = -1
    _unix.remove_file(lst.unix_file)    # (None: not a Unix listener, or an abstract name)
    _free_slot(rt, lst.reactor_id.slot)
    rt.n_listeners -= 1
    try:
        lst.handler.on_close_listen(lst.reactor_id, rt.cmd_sender)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        log.error("listener %s: on_close_listen raised %s", lst.reactor_id,
                  type(exc).__name__, exc_info=exc)
    return 0


cdef int _pause_accepts(ReactRuntime rt, _Listener lst) except -1:
    """Out of descriptors (EMFILE and the like): the pending connection stays in the backlog,
    and a level-triggered poller would report it forever, so stop accepting for a moment
    instead of spinning."""
    cdef _Command timer
    _be_pause_accepts(rt, lst)
    lst.paused = True
    timer = _new_command(CMD_RESUME_ACCEPT, lst.reactor_id, None, None, None)
    return _schedule(rt, timer, rio_monotonic_ns() + ACCEPT_PAUSE_NS)


cdef int _exec_resume_accept(ReactRuntime rt, object obj) except -1:
    """The accept pause is over (obj: what the listener's id finds now; None once it closed)."""
    cdef _Listener lst
    if type(obj) is not _Listener:
        return 0
    lst = <_Listener>obj
    if lst.closed:
        return 0
    lst.paused = False
    return _be_resume_accepts(rt, lst)
