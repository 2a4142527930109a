# The IOCP backend (Windows): completion I/O with the same reactor semantics as epoll.
#
#   receive  WSARecv straight into the reactor's receive buffer (MsgReader's free space); the
#            completion's bytes are dispatched by the same MsgReader code as on Linux, which
#            then drains the socket with non-blocking recv() when the completion filled the
#            buffer; then the next WSARecv is posted.
#   send     non-blocking send() while nothing is queued (as on Linux); queued bytes go out
#            with an overlapped WSASend of the queue's head, whose completion plays the part of
#            EPOLLOUT.  While a WSASend is in flight the queue never moves its bytes
#            (MsgSender.inflight_buf).
#   accept   AcceptEx, ACCEPTS_PER_LISTENER outstanding per listener.
#   connect  ConnectEx on a socket bound to the wildcard address.
#   wake-up  PostQueuedCompletionStatus with a NULL OVERLAPPED.
#   datagram WSARecvFrom / WSASendTo: _datagram_iocp.pxi (OP_DG_RECV, OP_DG_SEND).
#
# Lifetime rule: a rio_op (OVERLAPPED first) belongs to the kernel from the call that starts it
# until its packet is dequeued.  While pending, the op holds a strong reference to its owner
# (DispatchContext or _Listener), which owns the op memory and the buffers, so nothing the
# kernel may still write is freed -- not on close (CancelIoEx + closesocket only make the packet
# come sooner), not in runtime close() (which drains the port before closing it, and leaks the
# owners rather than free memory the kernel might write if the drain times out).
# With FILE_SKIP_COMPLETION_PORT_ON_SUCCESS an operation that succeeds at once queues no packet
# and is handled inline.

from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.string cimport memset

cdef enum:
    OP_RECV = 1
    OP_SEND = 2
    OP_ACCEPT = 3
    OP_CONNECT = 4
    ACCEPTS_PER_LISTENER = 4
    WAIT_SLICE_MS = 100     # GetQueuedCompletionStatusEx is not interrupted by Ctrl-C


cdef inline w.rio_op *_stream_op(DispatchContext ctx, int kind):
    return &(<w.rio_op *>ctx.backend_ops)[0 if kind == OP_RECV else 1]


cdef inline int _op_start(ReactRuntime rt, w.rio_op *op, object owner, int kind) except -1:
    memset(&op.ov, 0, sizeof(op.ov))
    op.kind = kind
    op.pending = 1
    Py_INCREF(owner)
    op.owner = <void *>owner
    rt.n_pending_ops += 1
    return 0


cdef inline object _op_finish(ReactRuntime rt, w.rio_op *op):
    """The op's packet came (or it ended at once): the owner reference goes back to us."""
    owner = <object>op.owner       # a new reference for this frame
    Py_DECREF(owner)               # the op's own reference
    op.owner = NULL
    op.pending = 0
    rt.n_pending_ops -= 1
    return owner


cdef inline int _op_error(w.SOCKET s, w.rio_op *op):
    """0, or the WSA error of a dequeued operation."""
    cdef w.DWORD n = 0, flags = 0
    if w.WSAGetOverlappedResult(s, &op.ov, &n, w.FALSE, &flags):
        return 0
    return w.WSAGetLastError()


cdef int _iocp_init(ReactRuntime rt) except -1:
    cdef w.WSADATA wsa
    if w.WSAStartup(w.MAKEWORD(2, 2), &wsa) != 0:
        raise _net.os_error(w.WSAGetLastError(), "WSAStartup")
    rt.port = <void *>w.CreateIoCompletionPort(w.INVALID_HANDLE_VALUE, NULL, 0, 1)
    if rt.port == NULL:
        raise _net.os_error(w.GetLastError(), "CreateIoCompletionPort")
    rt.inbox.port = rt.port
    rt.events = malloc(sizeof(w.OVERLAPPED_ENTRY) * rt.max_events)
    if rt.events == NULL:
        raise MemoryError()
    return 0


cdef int _iocp_release(ReactRuntime rt) except -1:
    """The runtime is dropped: close the port unless the kernel still owns operations on it."""
    if rt.port != NULL and rt.n_pending_ops == 0:
        w.CloseHandle(<w.HANDLE>rt.port)
        rt.port = NULL
    return 0


cdef int _iocp_teardown(ReactRuntime rt) except -1:
    """close(): wait (bounded) for the packets of cancelled operations, then close the port."""
    _iocp_drain(rt)
    if rt.n_pending_ops == 0:
        w.CloseHandle(<w.HANDLE>rt.port)
    rt.port = NULL
    rt.inbox.port = NULL        # (after inbox.retire(): no sender posts to it any more)
    return 0


cdef int _iocp_add_stream(ReactRuntime rt, DispatchContext ctx) except -1:
    ctx.backend_ops = calloc(2, sizeof(w.rio_op))
    if ctx.backend_ops == NULL:
        raise MemoryError()
    return _iocp_register(rt, ctx.fd, ctx.reactor_id)


cdef int _iocp_add_listener(ReactRuntime rt, _Listener lst) except -1:
    lst.backend_ops = calloc(ACCEPTS_PER_LISTENER, sizeof(w.rio_op))
    if lst.backend_ops == NULL:
        raise MemoryError()
    return _iocp_register(rt, lst.fd, lst.reactor_id)


cdef int _iocp_wake(void *port) except -1:
    w.PostQueuedCompletionStatus(<w.HANDLE>port, 0, <w.ULONG_PTR>WAKE_KEY, NULL)
    return 0


cdef int _iocp_register(ReactRuntime rt, int fd, ReactorID rid) except -1:
    cdef uint64_t key = _poll_key(rid)
    if w.CreateIoCompletionPort(<w.HANDLE><size_t>fd, <w.HANDLE>rt.port, <w.ULONG_PTR>key, 0) == NULL:
        raise _net.os_error(w.GetLastError(), "CreateIoCompletionPort(socket)")
    if not w.SetFileCompletionNotificationModes(
            <w.HANDLE><size_t>fd,
            w.FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | w.FILE_SKIP_SET_EVENT_ON_HANDLE):
        raise _net.os_error(w.GetLastError(), "SetFileCompletionNotificationModes")
    return 0


cdef int _iocp_poll(ReactRuntime rt, int timeout_ms) except -1:
    # (one function: the sliced wait, the wake-up handshake and the batch with its held
    # Ctrl-C share their locals and their order matters)
    cdef w.OVERLAPPED_ENTRY *ents = <w.OVERLAPPED_ENTRY *>rt.events
    cdef w.ULONG n = 0, i
    cdef w.BOOL ok
    cdef w.DWORD wait, err
    cdef int64_t deadline = 0
    cdef _Inbox inbox = rt.inbox
    cdef w.rio_op *op
    if timeout_ms > 0:
        deadline = rio_monotonic_ns() + <int64_t>timeout_ms * 1000000
    while True:
        if timeout_ms < 0 or timeout_ms > WAIT_SLICE_MS:
            wait = WAIT_SLICE_MS
        else:
            wait = timeout_ms
        if wait != 0:
            rio_mutex_lock(&inbox.lock)     # (the handshake of _commands.pxi)
            inbox.polling = True
            rio_mutex_unlock(&inbox.lock)
            if inbox.queue or rt.ready or rt.iocp_rearm:
                wait = 0
        with nogil:
            ok = w.GetQueuedCompletionStatusEx(<w.HANDLE>rt.port, ents, rt.max_events, &n,
                                               wait, w.FALSE)
        if inbox.polling:   # (only this thread writes it)
            _inbox_not_polling(inbox)
        if not ok:
            err = w.GetLastError()
            if err != w.WAIT_TIMEOUT:
                raise _net.os_error(err, "GetQueuedCompletionStatusEx")
            n = 0
        if n > 0 or wait == 0:
            break
        PyErr_CheckSignals()        # Ctrl-C between slices of a long wait
        if timeout_ms >= 0:
            timeout_ms = _ceil_ms(deadline - rio_monotonic_ns())
            if timeout_ms == 0:
                break
    # Every dequeued packet must be finished (op released, owner reference dropped): unlike
    # level-triggered epoll, a packet is never delivered twice.  So a KeyboardInterrupt or
    # SystemExit from a callback is held until the whole batch is done.
    interrupt = None
    # The owners stay referenced until the whole batch is handled: a stream's receive and send
    # may both complete in one batch, and dropping the stream after the first would free the
    # second's rio_op (its backend_ops) before it is read.
    owners = []
    for i in range(n):
        op = <w.rio_op *>ents[i].lpOverlapped
        if op == NULL:
            rio_mutex_lock(&inbox.lock)
            inbox.wake_pending = False
            rio_mutex_unlock(&inbox.lock)
            continue
        rio_bump_u64(&rt.n_sock_events, 1)
        owner = _op_finish(rt, op)
        owners.append(owner)
        try:
            if op.kind == OP_ACCEPT:
                _iocp_accept_done(rt, <_Listener>owner, op)
            elif op.kind >= OP_DG_RECV:
                _dgi_done(rt, <DatagramContext>owner, op, ents[i].dwNumberOfBytesTransferred)
            else:
                _iocp_stream_done(rt, <DispatchContext>owner, op,
                                  ents[i].dwNumberOfBytesTransferred)
        except (KeyboardInterrupt, SystemExit) as exc:
            if interrupt is None:
                interrupt = exc
    if interrupt is not None:
        raise interrupt
    if rt.iocp_rearm:
        _iocp_rearm_deferred(rt)
    return 0


cdef int _iocp_stream_done(ReactRuntime rt, DispatchContext ctx, w.rio_op *op,
                           w.DWORD nbytes) except -1:
    cdef int err
    if ctx.state == ST_CLOSED:
        return 0                    # the packet of an op cancelled by close
    err = _op_error(<w.SOCKET><size_t>ctx.fd, op)
    _hold(ctx)
    try:
        if op.kind == OP_RECV:
            ctx.reader.io_pending = False
            _iocp_recv_data(rt, ctx, nbytes, err)
            _iocp_arm_recv(rt, ctx)
        elif op.kind == OP_SEND:
            _iocp_send_done(rt, ctx, nbytes, err)
        elif op.kind == OP_CONNECT:
            _iocp_connect_done(rt, ctx, err)
    except (KeyboardInterrupt, SystemExit):
        _release(rt, ctx)
        raise
    except BaseException as exc:
        _callback_failed(rt, ctx, exc)
    _release(rt, ctx)
    return 0


cdef int _iocp_recv_data(ReactRuntime rt, DispatchContext ctx, w.DWORD nbytes, int err) except -1:
    cdef MsgReader r = ctx.reader
    cdef w.rio_op *op = _stream_op(ctx, OP_RECV)
    if err != 0:
        if err != w.WSA_OPERATION_ABORTED:
            _stream_event(rt, ctx, EV_ABORT, _net.os_error(err, "WSARecv"))
        return 0
    if ctx.state == ST_DRAINING or ctx.state == ST_HALF_CLOSED:
        # a graceful close reads and drops input until the peer's EOF
        if nbytes == 0:
            _stream_event(rt, ctx, EV_PEER_EOF, None)
        return 0
    if ctx.tls is not None and (ctx.state == ST_HANDSHAKE or ctx.state == ST_OPEN):
        return _tls_received(rt, ctx, nbytes, op.requested)     # ciphertext at r.end
    if ctx.state != ST_OPEN:
        return 0
    r.end += nbytes
    r.arrived = nbytes
    if nbytes == 0:
        r.arrived_status = READ_EOF
    elif nbytes < op.requested:
        r.arrived_status = READ_AGAIN
    else:
        r.arrived_status = READ_MORE
    _stream_readable(rt, ctx)
    return 0


cdef int _iocp_arm_recv(ReactRuntime rt, DispatchContext ctx) except -1:
    """Post a WSARecv into the free space of the receive buffer; completions that happen at
    once (no packet) are dispatched here, in a loop."""
    cdef MsgReader r = ctx.reader
    cdef w.rio_op *op = _stream_op(ctx, OP_RECV)
    cdef w.WSABUF buf
    cdef w.DWORD got = 0, flags = 0
    cdef Py_ssize_t room, total = 0
    cdef int64_t deadline = 0
    cdef int rc, err
    while (ctx.state == ST_OPEN or ctx.state == ST_HANDSHAKE or (
            (ctx.state == ST_DRAINING or ctx.state == ST_HALF_CLOSED) and not ctx.peer_eof)
           ) and not op.pending:
        if total > 0 and _turn_over(total, &deadline):
            # receives that complete at once are handled inline: after READ_BUDGET bytes the
            # next one is posted at the next loop iteration, so a flooding peer cannot starve
            # the other streams (the IOCP form of epoll's bounded read)
            rt.iocp_rearm.append(ctx)
            return 0
        room = r._ensure_space()
        if room == 0:
            raise MessageTooLargeError(
                f"a message exceeds max_msg_size={r.max_msg_size} bytes")
        if room > 0x7FFFFFFF:
            room = 0x7FFFFFFF
        buf.buf = r.store.data + r.end
        buf.len = <w.ULONG>room
        _op_start(rt, op, ctx, OP_RECV)
        op.requested = room
        r.io_pending = True
        rc = w.WSARecv(<w.SOCKET><size_t>ctx.fd, &buf, 1, &got, &flags, &op.ov, NULL)
        if rc != 0:
            err = w.WSAGetLastError()
            if err == w.WSA_IO_PENDING:
                return 0
        else:
            err = 0
        _op_finish(rt, op)          # done at once: no packet will come
        r.io_pending = False
        _iocp_recv_data(rt, ctx, got, err)
        if err != 0 or got == 0:
            return 0
        total += got
    return 0


cdef int _iocp_rearm_deferred(ReactRuntime rt) except -1:
    """Post the receives deferred by _iocp_arm_recv's budget (and datagram endpoints')."""
    cdef DispatchContext ctx
    rearm = rt.iocp_rearm
    rt.iocp_rearm = []
    for obj in rearm:
        if type(obj) is DatagramContext:
            _dgi_rearm(rt, <DatagramContext>obj)
            continue
        ctx = <DispatchContext>obj
        if ctx.state >= ST_CLOSING:
            continue
        _hold(ctx)
        try:
            _iocp_arm_recv(rt, ctx)
        except (KeyboardInterrupt, SystemExit):
            _release(rt, ctx)
            raise
        except BaseException as exc:
            _callback_failed(rt, ctx, exc)
        _release(rt, ctx)
    return 0


cdef int _iocp_connect(ReactRuntime rt, DispatchContext ctx, int family, object sockaddr_) except -1:
    cdef w.rio_op *op = _stream_op(ctx, OP_CONNECT)
    cdef w.sockaddr_storage ss
    cdef int rc, err
    host = sockaddr_[0].encode("ascii")
    flow = sockaddr_[2] if len(sockaddr_) > 2 else 0
    scope = sockaddr_[3] if len(sockaddr_) > 3 else 0
    if w.rio_sockaddr_from(family, host, sockaddr_[1], flow, scope, &ss) != 0:
        raise ValueError(f"bad address {sockaddr_!r}")
    if w.rio_bind_any(<w.SOCKET><size_t>ctx.fd, family) != 0:
        raise _net.os_error(w.WSAGetLastError(), "bind before ConnectEx")
    _op_start(rt, op, ctx, OP_CONNECT)
    rc = w.rio_ConnectEx(<w.SOCKET><size_t>ctx.fd, <w.sockaddr *>&ss,
                       sizeof(w.sockaddr_in6) if family == AF_INET6 else sizeof(w.sockaddr_in),
                       op)
    if rc:
        err = 0
    else:
        err = w.WSAGetLastError()
        if err == w.WSA_IO_PENDING:
            return 0
    _op_finish(rt, op)
    return _iocp_connect_done(rt, ctx, err)


cdef int _iocp_connect_done(ReactRuntime rt, DispatchContext ctx, int err) except -1:
    if ctx.connect is None or ctx.state != ST_CONNECTING:
        return 0
    if err != 0:
        # (a connect cancelled by its timeout or by close() was reported there, and the
        # stream is no longer CONNECTING; an abort of a live connect is an error like others)
        return _connect_attempt_failed(rt, ctx, err)
    w.setsockopt(<w.SOCKET><size_t>ctx.fd, w.SOL_SOCKET, w.SO_UPDATE_CONNECT_CONTEXT, NULL, 0)
    return _connect_succeeded(rt, ctx)


cdef int _iocp_close_socket(ReactRuntime rt, int fd, bint abort) except -1:
    """Cancel what is pending on the socket and close it; the packets still come."""
    cdef linger lg
    w.CancelIoEx(<w.HANDLE><size_t>fd, NULL)
    if abort:
        lg.l_onoff = 1
        lg.l_linger = 0
        rio_setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg))
    rio_close(fd)
    return 0


cdef int _iocp_drain(ReactRuntime rt) except -1:
    """After close(): wait (bounded) for the packets of cancelled operations, so the memory the
    kernel may still write is released only after it is done.  On time-out the owners are
    leaked, never freed."""
    cdef w.OVERLAPPED_ENTRY *ents = <w.OVERLAPPED_ENTRY *>rt.events
    cdef w.ULONG n = 0, i
    cdef w.rio_op *op
    cdef int64_t deadline = rio_monotonic_ns() + 2000000000
    while rt.n_pending_ops > 0 and rio_monotonic_ns() < deadline:
        with nogil:
            if not w.GetQueuedCompletionStatusEx(<w.HANDLE>rt.port, ents, rt.max_events, &n,
                                                 50, w.FALSE):
                n = 0
        owners = []     # (as in _iocp_poll: alive until the batch is done)
        for i in range(n):
            op = <w.rio_op *>ents[i].lpOverlapped
            if op != NULL:
                if op.kind == OP_ACCEPT and op.sock != w.INVALID_SOCKET:
                    w.closesocket(op.sock)
                    op.sock = w.INVALID_SOCKET
                owners.append(_op_finish(rt, op))   # the op's own reference, now ours
        owners = None
    if rt.n_pending_ops > 0:
        log.error("runtime close: %d overlapped operations did not complete; their memory is "
                  "left allocated", rt.n_pending_ops)
    return 0
