# The end of a runtime: what ReactRuntime.close() does to every stream, listener, command and
# timer (_close_everything, in passes that survive a KeyboardInterrupt from a callback), the
# warning about bytes dropped, and close() in a child after fork() (descriptors only).

cdef int _close_everything(ReactRuntime rt, object err) except -1:
    """One pass of close(): pending connects, streams (warning about what is dropped),
    listeners, queued commands, timers."""
    cdef _Command cmd
    cdef DispatchContext ctx
    for p in list(rt.pending_connects):
        _connect_failed(rt, <_PendingConnect>p, err)
    _warn_unsent(rt)
    for obj in list(rt.slots):
        if type(obj) is DispatchContext:
            ctx = <DispatchContext>obj
            if ctx.state != ST_CLOSED:
                ctx.state = ST_CLOSING      # the runtime's end: every stream ends with it
                ctx.holds = 0
                _finalize(rt, ctx)
        elif type(obj) is _Listener:
            _close_listener(rt, <_Listener>obj)
        elif type(obj) is DatagramContext:
            _dg_end(rt, <DatagramContext>obj, err)
    rt.ready = []
    while rt.inbox.queue:
        cmd = <_Command>rt.inbox.queue.popleft()
        _complete(cmd.completion, err)
    while rt.timers:
        cmd = <_Command>heapq.heappop(rt.timers)[2]
        if cmd.cancelled:
            continue
        if cmd.kind < CMD_RESOLVED:
            rt.n_user_deferred -= 1
            _complete(cmd.completion, err)
        elif cmd.kind == CMD_TIMER:
            (<TimerHandle>cmd.target).cancel()
    return 0


cdef int _warn_unsent(ReactRuntime rt) except -1:
    """close() gives every open stream one last non-blocking write and drops what the kernel
    does not take: say how much, at WARNING."""
    cdef Py_ssize_t nbytes = 0, nstreams = 0, queued
    cdef DispatchContext ctx
    for obj in rt.slots:
        if type(obj) is not DispatchContext:
            continue
        ctx = <DispatchContext>obj
        if ctx.state == ST_OPEN or ctx.state == ST_DRAINING:
            _hold(ctx)
            try:
                ctx._flush()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:
                pass
            finally:
                ctx.holds -= 1
        if ctx.state < ST_CLOSED and ctx.sender is not None:
            queued = ctx.sender.tail - ctx.sender.head
            if queued > 0:
                nbytes += queued
                nstreams += 1
    if nbytes:
        log.warning("runtime close: %d unsent bytes of %d stream(s) dropped (close streams "
                    "with rt.shutdown() to deliver them)",
                    nbytes, nstreams)
    return 0


cdef int _close_in_child(ReactRuntime rt) except -1:
    """close() in a child after fork(): the poller, the sockets and the wake-up descriptor are
    shared with the parent, which still uses them.  Close the child's descriptors and nothing
    else: no poller call, no shutdown, no SO_LINGER, no writes, no callbacks."""
    rt.closed = rt.inbox.closed = True
    for obj in rt.slots:
        if type(obj) is DispatchContext and (<DispatchContext>obj).fd >= 0:
            rio_close((<DispatchContext>obj).fd)
            (<DispatchContext>obj).fd = -1
            (<DispatchContext>obj).state = ST_CLOSED
        elif type(obj) is _Listener and (<_Listener>obj).fd >= 0:
            rio_close((<_Listener>obj).fd)
            (<_Listener>obj).fd = -1
            (<_Listener>obj).closed = True
        elif type(obj) is DatagramContext and (<DatagramContext>obj).fd >= 0:
            rio_close((<DatagramContext>obj).fd)
            (<DatagramContext>obj).fd = -1
            (<DatagramContext>obj).state = ST_CLOSED
    return _be_release(rt)
