# A graceful stop, as a server's SIGTERM handler wants it: no new connections, every stream
# closed the graceful way (its queued bytes flushed, our FIN, the peer's FIN awaited: what
# send_close does), the loop run until they are gone or a deadline passes, then close() for
# whatever is left.  Cold code.

# The longest single wait of the shutdown loop (it also returns on every event).
cdef int64_t SHUTDOWN_POLL_NS = 100_000_000


cdef int _shutdown_pass(ReactRuntime rt) except -1:
    """Run once as a command on the runtime's thread (inside process_events, as send_close
    runs): from here on no connect or listen starts (_start_pending refuses them); the ones in
    progress fail, the listeners close, every open stream starts its graceful close."""
    cdef DispatchContext ctx
    rt.shutting_down = True
    err = ReactorClosedError("the runtime is shutting down")
    for p in list(rt.pending_connects):
        _connect_failed(rt, <_Pending>p, err)
    for obj in list(rt.slots):
        if type(obj) is _Listener:
            _close_listener(rt, <_Listener>obj)
        elif type(obj) is DispatchContext:
            ctx = <DispatchContext>obj
            if ctx.state == ST_OPEN or ctx.state == ST_HANDSHAKE:
                _stream_event(rt, ctx, EV_CLOSE, None)
        elif type(obj) is DatagramContext:
            (<DatagramContext>obj).close()
    return 0


def _shutdown_command(ReactRuntime rt):
    _shutdown_pass(rt)


cdef Py_ssize_t _shutdown(ReactRuntime rt, object timeout) except -1:
    """ReactRuntime.shutdown(): returns the streams still open at the deadline."""
    cdef double s = _seconds(timeout, "timeout")
    cdef int64_t timeout_ns = NEVER_NS if s * 1e9 >= <double>NEVER_NS else <int64_t>(s * 1e9)
    cdef int64_t now = rio_monotonic_ns()
    cdef int64_t deadline = now + timeout_ns
    cdef Py_ssize_t left
    rt.cmd_sender.send_call(functools.partial(_shutdown_command, rt))
    while True:
        rt._process(min(max(deadline - now, 0), SHUTDOWN_POLL_NS) / 1e9, True)
        now = rio_monotonic_ns()
        if (rt.shutting_down and rt.n_streams == 0 and rt.n_listeners == 0
                and not rt.pending_connects):
            break
        if now >= deadline:
            break
    left = rt.n_streams
    if left:
        log.warning("shutdown: %d stream(s) still closing after %g s; closing them now",
                    left, s)
    rt.close()
    return left
