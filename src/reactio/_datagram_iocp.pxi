# Datagram I/O of the IOCP backend, with the lifetime rule of _iocp_loop.pxi (a rio_op and the
# buffers it names are the kernel's until its packet is dequeued; the pending op holds a
# reference to the DatagramContext, which owns them).
#   receive  one WSARecvFrom at a time into the receive buffer (one datagram per completion:
#            the buffer holds any UDP payload, so a datagram of max_datagram_size + 1 bytes or
#            more is truncated by the epoll side's rule); it is dispatched, then the next one is
#            posted.  Receives that complete at once are handled in a loop, within the stream
#            budget (READ_BUDGET / READ_SLICE_NS; past it the next post waits for rt.iocp_rearm).
#   send     non-blocking sendto() while the out batch is empty; a datagram the socket does not
#            take at once (WSAEWOULDBLOCK, WSAENOBUFS) is copied into the out batch, whose head
#            is posted with an overlapped WSASendTo (the out batch only grows while one is in
#            flight; it is reset when the last queued datagram has completed).  A full out
#            batch drops and counts (send_dropped), as on epoll.
#   ICMP     Windows fails the next WSARecvFrom with WSAECONNRESET after a port unreachable.
#            A connected endpoint reports it as ConnectionRefusedError (Linux's ECONNREFUSED);
#            an unconnected one has SIO_UDP_CONNRESET off (and ignores the error anyway), as
#            Linux ignores ICMP on an unconnected socket.
#   close    _iocp_close_socket cancels (CancelIoEx) and closes; the buffers are freed with the
#            context, after the packets (_be_dg_io_pending keeps _dg_finalize from freeing them).

cdef enum:
    OP_DG_RECV = 5
    OP_DG_SEND = 6


cdef inline w.rio_op *_dgi_op(DatagramContext ctx, int kind) noexcept:
    return &(<w.rio_op *>ctx.backend_ops)[0 if kind == OP_DG_RECV else 1]


cdef int _dgi_add(ReactRuntime rt, DatagramContext ctx) except -1:
    ctx.backend_ops = calloc(2, sizeof(w.rio_op))
    if ctx.backend_ops == NULL:
        raise MemoryError()
    _iocp_register(rt, ctx.fd, ctx.reactor_id)
    # (best effort: where the ioctl is missing an unconnected endpoint ignores WSAECONNRESET)
    rio_udp_connreset(<rio_sock_t><size_t>ctx.fd, ctx.connected)
    return 0


cdef bint _dgi_io_pending(DatagramContext ctx) noexcept:
    if ctx.backend_ops == NULL:
        return False
    return _dgi_op(ctx, OP_DG_RECV).pending or _dgi_op(ctx, OP_DG_SEND).pending


cdef int _dgi_done(ReactRuntime rt, DatagramContext ctx, w.rio_op *op, w.DWORD nbytes) except -1:
    """A dequeued packet of an endpoint (called by _iocp_poll)."""
    cdef int err
    if ctx.state == ST_CLOSED:
        return 0                    # the packet of an op cancelled by close
    err = _op_error(<w.SOCKET><size_t>ctx.fd, op)
    _dg_hold(ctx)
    try:
        if op.kind == OP_DG_RECV:
            if _dgi_recv_done(ctx, nbytes, err) == 0 and err != w.WSA_OPERATION_ABORTED:
                rt.iocp_rearm.append(ctx)   # after an error: post again from the loop
            else:
                _dgi_arm_recv(rt, ctx)
        else:
            _dgi_sent(ctx, err)
            _dgi_arm_send(rt, ctx)
    except (KeyboardInterrupt, SystemExit):
        _dg_release(rt, ctx)
        raise
    except BaseException as exc:
        _dg_failed(rt, ctx, exc)
    _dg_release(rt, ctx)
    return 0


cdef int _dgi_rearm(ReactRuntime rt, DatagramContext ctx) except -1:
    """A receive deferred by the budget, an error, or the endpoint's start (rt.iocp_rearm)."""
    if ctx.state != ST_OPEN:
        return 0
    _dg_hold(ctx)
    try:
        _dgi_arm_recv(rt, ctx)
    except (KeyboardInterrupt, SystemExit):
        _dg_release(rt, ctx)
        raise
    except BaseException as exc:
        _dg_failed(rt, ctx, exc)
    _dg_release(rt, ctx)
    return 0


# ------------------------------------------------------------------------- receiving

cdef int _dgi_arm_recv(ReactRuntime rt, DatagramContext ctx) except -1:
    """Post a WSARecvFrom (the endpoint is held by the caller); completions that happen at once
    (no packet) are dispatched here, in a loop."""
    cdef w.rio_op *op = _dgi_op(ctx, OP_DG_RECV)
    cdef w.WSABUF buf
    cdef w.DWORD got, flags
    cdef Py_ssize_t total = 0
    cdef int64_t deadline = 0
    cdef int rc, err
    while ctx.state == ST_OPEN and not op.pending:
        if total > 0 and _turn_over(total, &deadline):
            rt.iocp_rearm.append(ctx)      # a flooding sender does not starve the others
            return 0
        buf.buf = ctx.reader.store.data
        buf.len = <w.ULONG>ctx.reader.store.cap
        ctx.rfromlen = sizeof(sockaddr_storage)
        got = 0
        flags = 0
        _op_start(rt, op, ctx, OP_DG_RECV)
        rc = WSARecvFrom(<w.SOCKET><size_t>ctx.fd, &buf, 1, &got, &flags,
                         <sockaddr *>ctx.raddrs, &ctx.rfromlen, &op.ov, NULL)
        ctx.recv_calls += 1
        err = 0
        if rc != 0:
            err = w.WSAGetLastError()
            if err == w.WSA_IO_PENDING:
                return 0
        _op_finish(rt, op)          # done at once: no packet will come
        if _dgi_recv_done(ctx, got, err) == 0:
            rt.iocp_rearm.append(ctx)       # an error: post again from the loop, not in a spin
            return 0
        total += got + 1
    return 0


cdef int _dgi_recv_done(DatagramContext ctx, w.DWORD nbytes, int err) except -1:
    """One completed receive: 1 after its datagram was dispatched, 0 after an error (reported
    to on_error unless it is a cancel or ICMP noise on an unconnected endpoint)."""
    cdef mmsghdr *m = <mmsghdr *>ctx.rmsgs
    if ctx.state != ST_OPEN:
        return 0
    if err != 0 and err != WSAEMSGSIZE:
        if err == w.WSA_OPERATION_ABORTED:
            return 0
        if err == w.WSAECONNRESET or err == w.WSAECONNREFUSED:
            if ctx.connected:
                _dg_report(ctx, _net.os_error(w.WSAECONNREFUSED, "WSARecvFrom"))
            return 0
        _dg_report(ctx, _net.os_error(err, "WSARecvFrom"))
        return 0
    m[0].msg_len = nbytes
    m[0].msg_hdr.msg_flags = MSG_TRUNC if err == WSAEMSGSIZE else 0
    m[0].msg_hdr.msg_namelen = <socklen_t>ctx.rfromlen
    _dg_dispatch(ctx, 1)
    return 1


# ------------------------------------------------------------------------- sending

cdef int _dgi_send(DatagramContext ctx, const char *data, Py_ssize_t n, const sockaddr *sa,
                   socklen_t salen) except -1:
    cdef ssize_t r
    cdef int err
    if ctx.nout > ctx.ohead:
        return _dg_queue(ctx, data, n, sa, salen)      # behind what waits: order kept
    if ctx.refuse_sends == 0:
        r = rio_sendto(<rio_sock_t><size_t>ctx.fd, data, n, sa, salen)
        ctx.send_calls += 1
        if r >= 0:
            ctx.datagrams_sent += 1
            return 1
        err = rio_errno()
    else:
        ctx.refuse_sends -= 1           # a test's full socket (DatagramContext._refuse_sends)
        err = w.WSAEWOULDBLOCK
    if rio_would_block(err) or err == w.WSAENOBUFS:
        r = _dg_queue(ctx, data, n, sa, salen)
        _dgi_arm_send(ctx.rt, ctx)
        return <int>r
    if err == w.WSAECONNRESET and ctx.connected:
        err = w.WSAECONNREFUSED
    raise _net.os_error(err, "sendto")


cdef int _dgi_arm_send(ReactRuntime rt, DatagramContext ctx) except -1:
    """Post the out batch's head with an overlapped WSASendTo, one at a time; sends that
    complete at once are handled here, in a loop."""
    cdef w.rio_op *op
    cdef w.WSABUF buf
    cdef w.DWORD got
    cdef int rc, err, k
    if ctx.backend_ops == NULL:
        return 0
    op = _dgi_op(ctx, OP_DG_SEND)
    while ctx.nout > ctx.ohead and not op.pending and ctx.state == ST_OPEN:
        k = ctx.ohead
        buf.buf = ctx.obuf + ctx.ooff[k]
        buf.len = <w.ULONG>ctx.olens[k]
        got = 0
        _op_start(rt, op, ctx, OP_DG_SEND)
        rc = WSASendTo(<w.SOCKET><size_t>ctx.fd, &buf, 1, &got, 0,
                       <sockaddr *>&ctx.osa[k] if ctx.osalen[k] else NULL, ctx.osalen[k],
                       &op.ov, NULL)
        ctx.send_calls += 1
        err = 0
        if rc != 0:
            err = w.WSAGetLastError()
            if err == w.WSA_IO_PENDING:
                return 0
        _op_finish(rt, op)
        _dgi_sent(ctx, err)
    return 0


cdef int _dgi_sent(DatagramContext ctx, int err) except -1:
    """The out batch's head is done (sent, or refused: dropped, counted, reported)."""
    ctx.ohead += 1
    if ctx.ohead >= ctx.nout:
        ctx.nout = ctx.ohead = 0
        ctx.olen = 0
    if err == 0:
        ctx.datagrams_sent += 1
        return 0
    ctx.send_dropped += 1
    if err != w.WSA_OPERATION_ABORTED:
        if err == w.WSAECONNRESET and ctx.connected:
            err = w.WSAECONNREFUSED
        _dg_report(ctx, _net.os_error(err, "WSASendTo"))
    return 0


cdef int _dgi_last_flush(DatagramContext ctx) noexcept:
    """At finalize: what waits behind the in-flight send gets one non-blocking sendto."""
    cdef int i = ctx.ohead
    if ctx.backend_ops != NULL and _dgi_op(ctx, OP_DG_SEND).pending:
        i += 1
    while i < ctx.nout:
        rio_sendto(<rio_sock_t><size_t>ctx.fd, ctx.obuf + ctx.ooff[i], ctx.olens[i],
                   <sockaddr *>&ctx.osa[i] if ctx.osalen[i] else NULL, ctx.osalen[i])
        i += 1
    return 0
