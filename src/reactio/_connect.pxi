# Outbound connects and listens: the payloads of send_connect / send_listen (validated by the
# caller's thread, carried by the command), name resolution off the loop's thread, then the
# non-blocking connect tried address by address, or the bind.  A connect that ends without a
# stream runs no reactor callback; its completion gets the error.


cdef class _Pending:
    pass


@cython.final
cdef class _PendingConnect(_Pending):
    pass


@cython.final
cdef class _PendingListen(_Pending):
    pass


cdef int _start_pending(ReactRuntime rt, _Pending p, object completion) except -1:
    """CMD_CONNECT / CMD_LISTEN: register the pending operation and resolve its address."""
    cdef _PendingConnect c
    cdef _Command timer
    p.completion = completion
    if rt.shutting_down:
        return _connect_failed(rt, p, ReactorClosedError("the runtime is shutting down"))
    _resolve_defaults(rt, p.opts)
    rt.pending_connects.add(p)
    if type(p) is _PendingConnect and (<_PendingConnect>p).timeout_ns > 0:
        c = <_PendingConnect>p
        timer = _new_command(CMD_CONNECT_TIMEOUT, c, None, None, None)
        c.timer = timer
        _schedule(rt, timer, rio_monotonic_ns() + c.timeout_ns)
    try:
        path = _unix.parse(p.addr)
        if path is not None:
            return _unix_resolved(rt, p, path)
        host, port = _net.parse_address(p.addr)
        infos = _net.resolve_numeric(host, port)
    except Exception as exc:
        return _connect_failed(rt, p, exc)
    if infos is not None:
        return _resolved(rt, p, infos)
    # (a partial, not a closure with default arguments: under binding=False those defaults
    # are shared by every call, and concurrent lookups reached the wrong connect)
    _net.resolve_async(host, port, type(p) is _PendingListen,
                       functools.partial(_deliver_resolution, rt.cmd_sender, p))
    return 0


def _deliver_resolution(CmdSender sender, _Pending p, result):
    """On the resolver's thread: hand the lookup's result to the runtime's loop."""
    try:
        sender._inbox().push(_new_command(CMD_RESOLVED, p, result, None, None))
    except RuntimeClosedError:
        pass        # close() already failed this command's completion


cdef int _resolved(ReactRuntime rt, _Pending p, object result) except -1:
    """The name lookup is done (result: [(family, sockaddr)] or the exception)."""
    if p.done:
        return 0
    if isinstance(result, BaseException):
        return _connect_failed(rt, p, result)
    p.infos = result
    if type(p) is _PendingListen:
        return _bind(rt, <_PendingListen>p)
    (<_PendingConnect>p).idx = 0
    return _try_next_address(rt, <_PendingConnect>p)


cdef int _unix_resolved(ReactRuntime rt, _Pending p, str path) except -1:
    """A "unix:" address needs no lookup; a Unix stream has no TCP_NODELAY to set."""
    if not UNIX_SOCKETS:
        raise OSError(errno.EAFNOSUPPORT, f"Unix sockets are not supported on the {BACKEND} "
                      f"backend ({p.addr!r}; see docs/unix.md)")
    p.opts.nodelay = False
    return _resolved(rt, p, [(AF_UNIX, path)])


cdef int _bind(ReactRuntime rt, _PendingListen p) except -1:
    """Open the listening socket on the first address, register it, on_start_listen."""
    cdef _Listener lst
    handler = p.handler
    family, sockaddr_ = p.infos[0]
    unix_file = None
    try:
        if family == AF_UNIX:
            fd, unix_file = _unix.open_listener(sockaddr_, p.backlog, p.reuse_port)
        else:
            fd = _net.open_listener(family, sockaddr_, p.backlog, p.reuse_port, p.dual_stack)
    except OSError as exc:      # (EADDRINUSE and the like: say which address)
        return _connect_failed(rt, p, OSError(exc.errno,
                                              f"{exc.strerror} (listen on {p.addr!r})"))
    except Exception as exc:
        return _connect_failed(rt, p, exc)
    lst = _Listener.__new__(_Listener)
    lst.fd = fd
    lst.handler = handler
    lst.opts = p.opts
    lst.family = family
    lst.unix_file = unix_file
    lst.reactor_id = _alloc_slot(rt, lst)
    try:
        _be_add_listener(rt, lst)
    except Exception as exc:
        _free_slot(rt, lst.reactor_id.slot)
        rio_close(fd)
        _unix.remove_file(unix_file)
        lst.fd = -1             # closed here; __dealloc__ must not close the number again
        lst.closed = True
        return _connect_failed(rt, p, exc)
    rio_bump_ssize(&rt.n_listeners, 1)
    p.done = True
    rt.pending_connects.discard(p)
    try:
        handler.on_start_listen(lst.reactor_id, rt.cmd_sender)
    except (KeyboardInterrupt, SystemExit) as exc:
        _complete(p.completion, exc)
        raise
    except BaseException as exc:
        log.error("listener %s: on_start_listen raised %s; closing it", lst.reactor_id,
                  type(exc).__name__, exc_info=exc)
        _close_listener(rt, lst)
        return _complete(p.completion, exc)
    _be_listener_started(rt, lst)
    return _complete(p.completion, lst.reactor_id)


cdef int _try_next_address(ReactRuntime rt, _PendingConnect p) except -1:
    """Start a non-blocking connect to the next address; the backend reports the outcome
    (_connect_succeeded, or _discard_connecting and another try).  None left: fail."""
    cdef DispatchContext ctx
    while p.idx < len(p.infos):
        family, sockaddr_ = p.infos[p.idx]
        p.idx += 1
        try:
            fd = _be_connect_socket(family, sockaddr_, p.opts.nodelay)
            ctx = _new_stream(rt, fd, p.reactor, p.opts, p)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            p.last_error = exc
            continue
        p.ctx = ctx
        try:
            _be_connect_registered(rt, ctx, family, sockaddr_)
        except Exception as exc:
            p.last_error = exc
            if p.ctx is ctx:
                _discard_connecting(rt, ctx)
            continue
        return 0
    return _connect_failed(
        rt, p, p.last_error if p.last_error is not None else OSError(f"no address for {p.addr!r}"))


cdef int _connect_attempt_failed(ReactRuntime rt, DispatchContext ctx, int err) except -1:
    """The backend saw this address refuse (or time out): try the next one."""
    cdef _PendingConnect p = ctx.connect
    p.last_error = _net.os_error(err, f"connect to {p.addr!r}")
    _discard_connecting(rt, ctx)
    return _try_next_address(rt, p)


cdef int _connect_succeeded(ReactRuntime rt, DispatchContext ctx) except -1:
    """The TCP connect is done: CONNECTING -> OPEN, or -> HANDSHAKE on a TLS stream (whose
    handshake then opens it: _tls.pxi).  The connect's timeout ends here."""
    cdef _PendingConnect p = ctx.connect
    if p.timer is not None:
        _cancel(rt, p.timer)
        p.timer = None
    if ctx.tls is not None:
        return _tls_start(rt, ctx, None)
    return _outbound_opened(rt, ctx)


cdef int _outbound_opened(ReactRuntime rt, DispatchContext ctx) except -1:
    """-> OPEN: on_connected, then the connect's completion."""
    cdef _PendingConnect p = ctx.connect
    p.done = True
    p.ctx = None
    rt.pending_connects.discard(p)
    ctx.connect = None
    ctx.state = ST_OPEN
    rio_bump_ssize(&rt.n_streams, 1)
    try:
        ctx._set_want(WANT_READ | WANT_WRITE if _unsent(ctx) else WANT_READ)
    except Exception as exc:
        _stream_event(rt, ctx, EV_ABORT, exc)
        return _complete(p.completion, exc)
    try:
        failed = _connected(rt, ctx, None)
    except BaseException as exc:            # KeyboardInterrupt/SystemExit from on_connected
        _complete(p.completion, exc)
        raise
    return _complete(p.completion, failed if failed is not None else ctx.reactor_id)


cdef int _discard_connecting(ReactRuntime rt, DispatchContext ctx) except -1:
    """CONNECTING -> CLOSED without callbacks: one attempt of a connect failed (the connect
    goes on with its next address, or fails as a whole)."""
    cdef _PendingConnect p = ctx.connect
    if ctx.state != ST_CONNECTING:
        return 0
    _be_close_socket(rt, ctx.fd, False)
    ctx.fd = -1
    ctx.state = ST_CLOSED
    ctx.connect = None
    if p is not None and p.ctx is ctx:
        p.ctx = None
    return _free_slot(rt, ctx.reactor_id.slot)


cdef int _connect_failed(ReactRuntime rt, _Pending p, object exc) except -1:
    """The connect (or listen) is over without a stream: no reactor callback runs; the
    completion gets the error (logged at ERROR when there is no completion), and a connect's
    reactor keeps it as close_error."""
    cdef _PendingConnect c
    if p.done:
        return 0
    p.done = True
    rt.pending_connects.discard(p)
    if type(p) is _PendingConnect:
        c = <_PendingConnect>p
        (<Reactor>c.reactor)._close_error = exc
        if c.ctx is not None and c.ctx.state == ST_HANDSHAKE:
            _stream_event(rt, c.ctx, EV_ABORT, exc)    # TLS: the connection exists; end it
        elif c.ctx is not None:
            _discard_connecting(rt, c.ctx)
        if c.timer is not None:
            _cancel(rt, c.timer)
    return _complete(p.completion, exc)


cdef int _exec_connect_timeout(ReactRuntime rt, _PendingConnect p) except -1:
    if not p.done:
        p.timer = None
        _connect_failed(rt, p, TimeoutError(
            f"connect to {p.addr!r} timed out after {p.timeout_ns / 1e9:g} s"))
    return 0
