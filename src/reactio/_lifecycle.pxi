# The life of a stream: one state machine.  _stream_event() is the only function that moves a
# stream between ST_CONNECTING .. ST_CLOSING (docs/internals.md has the table), _finalize() the
# only one that makes it ST_CLOSED, and _discard_connecting() the only shortcut (a connect
# attempt that failed before anything was owed to anyone).
#
# Holding: every runtime operation on a stream and every callback of its reactor runs between
# _hold() and _release().  A transition to ST_CLOSING never finalizes under a holder; the last
# _release() does, once.  So however events, commands, callbacks and errors nest -- a close
# requested from another reactor's callback, a reset seen while draining input for that close,
# an on_close that closes more streams -- finalize, on_close, the connect completion and the
# slot release each happen exactly once.

# Events of _stream_event
cdef enum:
    EV_CLOSE = 1        # a graceful close was asked for (ctx.close(), send_close, a callback error)
    EV_ABORT = 2        # close with a reset, dropping queued bytes (an I/O error, a limit, abort=True)
    EV_PEER_EOF = 3     # recv() returned 0: the peer shut its write side
    EV_DRAINED = 4      # the send queue of a DRAINING stream became empty
    EV_TIMEOUT = 5      # the drain (or linger) timer fired

# How long a graceful close waits, after half-closing, for the peer's EOF before it closes
# anyway (Apache's lingering close uses the same order of magnitude).
cdef int64_t LINGER_NS = 2000000000
# What a closing stream reads and drops per loop iteration: a peer that floods a closing
# stream gets its turn, like every other stream, and no more.
cdef Py_ssize_t DISCARD_BUDGET = 256 * 1024
cdef int DISCARD_EOF = -1


cdef inline void _hold(DispatchContext ctx) noexcept:
    ctx.holds += 1


cdef inline int _release(ReactRuntime rt, DispatchContext ctx) except -1:
    ctx.holds -= 1
    if ctx.holds == 0 and ctx.state == ST_CLOSING:
        _finalize(rt, ctx)
    return 0


cdef inline void _closing(DispatchContext ctx, object err, bint abort):
    if ctx.close_error is None:
        ctx.close_error = err
    if abort:
        ctx.abort = True
    ctx.state = ST_CLOSING


cdef int _stream_event(ReactRuntime rt, DispatchContext ctx, int ev, object err) except -1:
    """Apply one event to a stream: the transition table of docs/internals.md.  ``err`` is the
    reason (kept as close_error if none is set yet).  (Longer than most functions on purpose:
    it is the table, and the table is read in one place.)"""
    cdef int st = ctx.state
    cdef int r
    if st >= ST_CLOSING:
        return 0            # the end is decided: later events change nothing
    _hold(ctx)
    try:
        if ev == EV_ABORT:
            _closing(ctx, err, st != ST_CONNECTING)
        elif ev == EV_CLOSE:
            if st < ST_OPEN:                # CONNECTING, HANDSHAKE: nothing to flush yet
                _closing(ctx, err, False)
            elif st == ST_OPEN:
                if ctx.close_error is None:
                    ctx.close_error = err
                if ctx.tls is not None:
                    _tls_queue_close_notify(ctx)
                if _unsent(ctx):
                    _start_draining(rt, ctx)
                elif ctx.peer_eof or not READS_INLINE:
                    # (IOCP: a pending WSARecv owns the socket's input; close() cancels it)
                    _closing(ctx, None, False)
                else:
                    # unread input would turn close() into a reset that destroys what the peer
                    # has not read yet: read and drop it first
                    r = _discard_input(ctx)
                    if r > 0:
                        _closing(ctx, _net.os_error(r, "recv while closing"), True)
                    else:
                        _closing(ctx, None, False)
            # DRAINING, HALF_CLOSED: already closing gracefully
        elif ev == EV_PEER_EOF:
            ctx.peer_eof = True
            if st == ST_OPEN:
                if _unsent(ctx):
                    _start_draining(rt, ctx)   # the peer may still read what we queued
                else:
                    _closing(ctx, None, False)
            elif st == ST_HANDSHAKE:
                _closing(ctx, _tls_eof_in_handshake(), False)
            elif st == ST_DRAINING:
                # level-triggered: an EOF stays readable forever, so reading must stop here
                ctx._set_want(WANT_WRITE)
            elif st == ST_HALF_CLOSED:
                _closing(ctx, None, False)
        elif ev == EV_DRAINED:
            if st == ST_DRAINING:
                if ctx.peer_eof:
                    _closing(ctx, None, False)
                else:
                    _half_close(rt, ctx)
        elif ev == EV_TIMEOUT:
            if st == ST_HANDSHAKE:
                _closing(ctx, TimeoutError(
                    f"TLS handshake of {ctx.reactor_id} not done within "
                    f"{ctx.tls.timeout_ns / 1e9:g} s"), True)
            elif st == ST_DRAINING:
                _closing(ctx, TimeoutError(
                    f"graceful close of {ctx.reactor_id}: {ctx.sender.tail - ctx.sender.head} "
                    f"queued bytes not taken by the peer within {rt.drain_timeout} s"), True)
            elif st == ST_HALF_CLOSED:
                _closing(ctx, None, False)     # everything was sent; the peer never closed
        if REACTIO_CHECK_INVARIANTS:
            _check_stream(rt, ctx)
    finally:
        _release(rt, ctx)
    return 0


cdef int _check_stream(ReactRuntime rt, DispatchContext ctx) except -1:
    """The invariants of a live stream (debug builds): what the table promises."""
    cdef int st = ctx.state
    if not ST_CONNECTING <= st <= ST_CLOSED or ctx.holds < 0:
        raise AssertionError(f"stream {ctx.reactor_id}: state {st}, holds {ctx.holds}")
    if st == ST_CLOSED:
        if ctx.fd != -1 or ctx.connect is not None:
            raise AssertionError(f"closed stream {ctx.reactor_id} keeps fd {ctx.fd}")
        return 0
    if _lookup(rt, ctx.reactor_id) is not ctx or ctx.fd < 0:
        raise AssertionError(f"live stream {ctx.reactor_id} lost its slot or its socket")
    if (st == ST_CONNECTING and ctx.connect is None) or (
            ST_OPEN <= st < ST_CLOSING and ctx.connect is not None):
        raise AssertionError(f"stream {ctx.reactor_id}: state {st} with connect {ctx.connect}")
    if st == ST_HALF_CLOSED and _unsent(ctx):
        raise AssertionError(f"half-closed stream {ctx.reactor_id} has queued bytes")
    if ctx.peer_eof and ST_OPEN < st < ST_CLOSING and ctx.want & WANT_READ:
        raise AssertionError(f"stream {ctx.reactor_id} polls for input after the peer's EOF")
    if rt.n_streams < 0 or rt.nfree > rt.nslots:
        raise AssertionError(f"runtime counters: {rt.n_streams} streams, {rt.nfree} free "
                             f"of {rt.nslots} slots")
    return 0


cdef int _start_draining(ReactRuntime rt, DispatchContext ctx) except -1:
    """OPEN -> DRAINING: flush the queue (bounded by drain_timeout), reading and dropping
    input until the peer's EOF."""
    cdef _Command timer
    ctx.state = ST_DRAINING
    ctx._set_want(WANT_WRITE if ctx.peer_eof else WANT_READ | WANT_WRITE)
    if rt.drain_ns > 0:
        _set_stream_timer(rt, ctx, rt.drain_ns)
    return 0


cdef int _half_close(ReactRuntime rt, DispatchContext ctx) except -1:
    """DRAINING -> HALF_CLOSED: everything is sent; send our FIN and wait for the peer's."""
    shutdown(ctx.fd, SHUT_WR)
    ctx.state = ST_HALF_CLOSED
    ctx._set_want(WANT_READ)
    return _set_stream_timer(rt, ctx, LINGER_NS)


cdef int _set_stream_timer(ReactRuntime rt, DispatchContext ctx, int64_t delay_ns) except -1:
    cdef _Command timer
    if ctx.drain_timer is not None:
        _cancel(rt, <_Command>ctx.drain_timer)
    timer = _new_command(CMD_DRAIN_TIMEOUT, ctx.reactor_id, None, None, None)
    ctx.drain_timer = timer
    return _schedule(rt, timer, rio_monotonic_ns() + delay_ns)


cdef int _discard_input(DispatchContext ctx) except -2:
    """Read and drop what the peer sent to a closing stream, at most DISCARD_BUDGET bytes.
    Returns 0 (nothing more now), DISCARD_EOF at the peer's EOF, or the errno of a failed
    recv."""
    cdef char scratch[16384]
    cdef ssize_t n
    cdef Py_ssize_t total = 0
    cdef int err
    while total < DISCARD_BUDGET:
        n = recv(ctx.fd, scratch, sizeof(scratch), 0)
        if n > 0:
            total += n
            continue
        if n == 0:
            return DISCARD_EOF
        err = rio_errno()
        if err == EINTR:
            continue
        return 0 if rio_would_block(err) else err
    return 0


cdef int _closing_input(ReactRuntime rt, DispatchContext ctx) except -1:
    """The peer sent something (or an error) to a DRAINING / HALF_CLOSED stream."""
    cdef int r = _discard_input(ctx)
    if r == DISCARD_EOF:
        return _stream_event(rt, ctx, EV_PEER_EOF, None)
    if r > 0:
        return _stream_event(rt, ctx, EV_ABORT, _net.os_error(r, "recv while closing"))
    return 0


cdef int _finalize(ReactRuntime rt, DispatchContext ctx) except -1:
    """CLOSING -> CLOSED, exactly once: stop watching and close the socket, free the slot, then
    what is owed: send completions (those whose bytes went out succeed, the rest fail) and
    on_close -- or, for a stream that never connected, its connect's completion."""
    cdef _PendingConnect p = ctx.connect
    if REACTIO_CHECK_INVARIANTS and (ctx.state != ST_CLOSING or ctx.holds != 0):
        raise AssertionError(f"finalize of {ctx.reactor_id} in state {ctx.state}, "
                             f"holds {ctx.holds}")
    ctx.state = ST_CLOSED
    if ctx.drain_timer is not None:
        _cancel(rt, <_Command>ctx.drain_timer)
        ctx.drain_timer = None
    _be_close_socket(rt, ctx.fd, ctx.abort)
    ctx.fd = -1
    _free_slot(rt, ctx.reactor_id.slot)
    ctx.reader._release_buffer()
    if p is not None:
        ctx.connect = None
        p.ctx = None
        err = ctx.close_error
        if err is None:
            err = ReactorClosedError(f"reactor {ctx.reactor_id} was closed while connecting")
        return _connect_failed(rt, p, err)
    if ctx.tls is not None and not ctx.tls.opened:
        return _tls_inbound_failed(ctx)     # an inbound handshake failed: nothing was owed
    rio_bump_ssize(&rt.n_streams, -1)
    held = _settle_completions(ctx)
    reactor = ctx.reactor
    err = ctx.close_error
    reactor._close_error = err
    # one log line per stream closed by an error: a reactio rule broken (a limit, a bad
    # MessageResult) at ERROR, the peer's doing (reset, broken pipe) at INFO; callback
    # exceptions were logged with their traceback when raised
    if isinstance(err, ReactioError):
        log.error("reactor %s (%s) closed: %s", ctx.reactor_id, type(reactor).__name__, err)
    elif isinstance(err, OSError):
        log.info("reactor %s (%s) closed: %s", ctx.reactor_id, type(reactor).__name__, err)
    elif log.isEnabledFor(logging.DEBUG):
        log.debug("reactor %s closed (%s); %d bytes unsent", ctx.reactor_id, err,
                  ctx.sender.tail - ctx.sender.head)
    ctx.sender._release_buffer()
    try:
        reactor.on_close(ctx.reactor_id, rt.cmd_sender)
    except (KeyboardInterrupt, SystemExit):
        raise
    except RuntimeClosedError as exc:
        log.debug("reactor %s: on_close sent a command to the closed runtime: %s",
                  ctx.reactor_id, exc)
    except BaseException as exc:
        log.error("reactor %s (%s): on_close raised %s", ctx.reactor_id,
                  type(reactor).__name__, type(exc).__name__, exc_info=exc)
    if held is not None:
        raise held
    return 0


cdef object _settle_completions(DispatchContext ctx):
    """A finalized stream's send completions: those whose bytes reached the kernel succeed,
    the rest get the close error.  Returns a KeyboardInterrupt/SystemExit one of them raised
    (to be raised after on_close), else None."""
    held = None
    q = ctx.sender.completions
    if not q:
        return None
    try:
        ctx._flush_completions()
    except (KeyboardInterrupt, SystemExit) as exc:
        held = exc
    err = ctx.close_error
    if err is None or not isinstance(err, BaseException):
        err = ReactorClosedError(f"reactor {ctx.reactor_id} closed before the bytes were sent")
    while q:
        _, cb = q.popleft()
        try:
            _complete(cb, err)
        except (KeyboardInterrupt, SystemExit) as exc:
            held = held or exc
    return held


# Reactor callbacks run through _call_reactor: the stream is held, an exception closes this
# stream only (logged), KeyboardInterrupt / SystemExit propagate once the stream is settled.
cdef enum:
    CB_CONNECTED = 1
    CB_COMMAND = 2
    CB_PAUSE_WRITING = 3
    CB_RESUME_WRITING = 4


cdef object _call_reactor(ReactRuntime rt, DispatchContext ctx, int which, object arg):
    """Returns None, or the exception the callback raised (a CommandNotHandledError from the
    default on_command does not close the stream)."""
    failed = None
    _hold(ctx)
    try:
        if which == CB_CONNECTED:
            ctx.reactor.on_connected(ctx, arg)
        elif which == CB_COMMAND:
            ctx.reactor.on_command(arg, ctx)
        elif which == CB_PAUSE_WRITING:
            ctx.reactor.on_pause_writing(ctx)
        else:
            ctx.reactor.on_resume_writing(ctx)
    except CommandNotHandledError as exc:
        if which != CB_COMMAND:
            _callback_failed(rt, ctx, exc)
        failed = exc
    except (KeyboardInterrupt, SystemExit):
        _release(rt, ctx)
        raise
    except BaseException as exc:
        _callback_failed(rt, ctx, exc)
        failed = exc
    _release(rt, ctx)
    return failed
