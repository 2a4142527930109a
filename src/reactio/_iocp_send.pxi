# The IOCP send path: an overlapped WSASend of the wire's head (the queue, or a TLS stream's
# records) stands in for epoll's write readiness; its completion flushes and arms the next.

cdef int _iocp_arm_send(ReactRuntime rt, DispatchContext ctx) except -1:
    """Send the queue's head (a TLS stream's: its records) with an overlapped WSASend (the
    IOCP stand-in for EPOLLOUT).  A WSASend that succeeds at once is completed here, and the
    flush that completion makes may want the next send: that one is posted by this loop, not
    by a nested call, so a run of immediate successes over a long queue (a TLS stream posts
    one record at a time) does not grow the C stack.  (ctx owns op until its __dealloc__.)"""
    cdef w.rio_op *op = _stream_op(ctx, OP_SEND)
    if op.arming:
        op.rearm = 1
        return 0
    op.arming = 1
    try:
        while True:
            op.rearm = 0
            _iocp_post_send(rt, ctx, op)
            if not op.rearm:
                return 0
    finally:
        op.arming = 0


cdef int _iocp_post_send(ReactRuntime rt, DispatchContext ctx, w.rio_op *op) except -1:
    cdef MsgSender s = _wire(ctx)
    cdef w.WSABUF buf
    cdef w.DWORD got = 0
    cdef Py_ssize_t n
    cdef int rc, err
    if op.pending or ctx.state >= ST_CLOSING:
        return 0
    if s.head == s.tail:
        if s is not ctx.sender and ctx.sender.head != ctx.sender.tail:
            ctx._flush()    # TLS: plaintext without its record yet (queued while corked)
        return 0
    n = s.tail - s.head
    if n > 0x7FFFFFFF:
        n = 0x7FFFFFFF
    buf.buf = s.buf + s.head
    buf.len = <w.ULONG>n
    s.inflight_buf = s.buf
    _op_start(rt, op, ctx, OP_SEND)
    rc = w.WSASend(<w.SOCKET><size_t>ctx.fd, &buf, 1, &got, 0, &op.ov, NULL)
    if rc != 0:
        err = w.WSAGetLastError()
        if err == w.WSA_IO_PENDING:
            return 0
    else:
        err = 0
    _op_finish(rt, op)
    return _iocp_send_done(rt, ctx, got, err)


cdef int _iocp_send_done(ReactRuntime rt, DispatchContext ctx, w.DWORD nbytes, int err) except -1:
    cdef MsgSender s = _wire(ctx)
    if s.inflight_buf != NULL and s.inflight_buf != s.buf:
        free(s.inflight_buf)        # the queue moved to a new buffer while this one was sent
    s.inflight_buf = NULL
    if err != 0:
        return _stream_event(rt, ctx, EV_ABORT, _net.os_error(err, "WSASend"))
    s.head += nbytes
    s.total_sent += nbytes
    ctx._flush()                    # completions, watermarks, draining; arms the next send
    return 0
