# TLS over a stream, with the standard ssl module: one _TlsStream per TLS stream (an SSLObject
# between two MemoryBIOs), attached to its DispatchContext by one pointer.  It sits above the
# backend -- ciphertext in and out through the socket calls of the reader and the sender -- and
# below the framing: the receive buffer holds plaintext (SSLObject.read decrypts straight into
# its free space), and so does the send queue (sending: _tls_send.pxi).  A plain stream pays
# one NULL check in send_raw, _flush and _recv.
#
# The handshake is the HANDSHAKE state of the stream state machine (_lifecycle.pxi):
#   outbound  CONNECTING --TCP connected--> HANDSHAKE --done--> OPEN (on_connected, completion)
#   inbound   accepted --> HANDSHAKE --done--> OPEN (on_connected)
# A failure, the peer's EOF or ssl_handshake_timeout closes the stream from HANDSHAKE: an
# outbound connect's completion gets the exception, an inbound one is logged; no on_close.
# ctx.close() of an OPEN stream drains (DRAINING, HALF_CLOSED) like any stream; close_notify
# follows the record of the queue's last byte (t.notify_owed until the pump gets there).
# The ssl module, imported by the first TLS option: a plain-TCP program never loads it.
_ssl = None

cdef double DEFAULT_SSL_HANDSHAKE_TIMEOUT = 60.0     # seconds (as asyncio and nginx)

# The plain stream's hot path (MsgReader._recv and fast_read, send_raw, _flush, the epoll event)
# reaches TLS through these pointers, set at import: called directly, gcc inlined the TLS code
# into those functions, whose larger frames (the TLS read made _recv save six registers and
# take 184 bytes of stack) cost every plain message 40 instructions (callgrind); through the
# pointers, one NULL check each.
ctypedef Py_ssize_t (*_tls_recv_fn)(MsgReader, DispatchContext, Py_ssize_t) except -100
ctypedef Py_ssize_t (*_tls_send_fn)(DispatchContext, const char *, Py_ssize_t, object) except -1
ctypedef int (*_tls_flush_fn)(DispatchContext) except -1
ctypedef bint (*_tls_readable_fn)(DispatchContext) noexcept
ctypedef int (*_tls_input_fn)(ReactRuntime, DispatchContext) except -1

cdef int _tls_options(_StreamOptions o, object context, object server_hostname,
                      object handshake_timeout, bint server_side) except -1:
    """Validate the TLS keywords of send_connect / a listener handler into ``o``."""
    global _ssl
    if context is None:
        if server_hostname is not None or handshake_timeout is not None:
            raise ValueError("server_hostname and ssl_handshake_timeout need ssl=SSLContext")
        return 0
    if _ssl is None:
        import ssl
        _ssl = ssl
    if not isinstance(context, _ssl.SSLContext):
        raise TypeError(f"ssl must be an ssl.SSLContext (ssl.create_default_context()), not "
                        f"{type(context).__name__}")
    if server_side:
        if server_hostname is not None:
            raise ValueError("server_hostname is for connects, not listeners")
        if context.protocol == _ssl.PROTOCOL_TLS_CLIENT:
            raise ValueError("a listener needs a server context (ssl.create_default_context("
                             "ssl.Purpose.CLIENT_AUTH) or ssl.PROTOCOL_TLS_SERVER)")
    elif context.protocol == _ssl.PROTOCOL_TLS_SERVER:
        raise ValueError("a connect needs a client context (ssl.create_default_context())")
    if server_hostname is not None and not isinstance(server_hostname, str):
        raise TypeError("server_hostname must be a str or None")
    if handshake_timeout is None:
        handshake_timeout = DEFAULT_SSL_HANDSHAKE_TIMEOUT
    if _seconds(handshake_timeout, "ssl_handshake_timeout") == 0:
        raise ValueError("ssl_handshake_timeout must be more than 0 seconds (inf: no limit)")
    o.handshake_ns = _limit_ns(handshake_timeout, "ssl_handshake_timeout")
    # renegotiation is refused (a TLS 1.2 peer could restart the handshake mid-stream)
    context.options |= _ssl.OP_NO_RENEGOTIATION
    o.ssl_context = context
    o.server_hostname = server_hostname
    return 0


@cython.final
cdef class _TlsStream:
    pass


cdef _TlsStream _tls_new(_StreamOptions opts, _PendingConnect connecting):
    """The TLS layer of a new stream; a connect checks the certificate against
    server_hostname, by default the host of its address (as asyncio does)."""
    cdef _TlsStream t = _TlsStream.__new__(_TlsStream)
    t.incoming = _ssl.MemoryBIO()
    t.outgoing = _ssl.MemoryBIO()
    t.wire = MsgSender.__new__(MsgSender)
    t.timeout_ns = opts.handshake_ns
    if connecting is None:
        t.sslobj = opts.ssl_context.wrap_bio(t.incoming, t.outgoing, server_side=True)
    else:
        hostname = opts.server_hostname
        if hostname is None:
            hostname = _net.parse_address(connecting.addr)[0]
        t.sslobj = opts.ssl_context.wrap_bio(t.incoming, t.outgoing, server_side=False,
                                             server_hostname=hostname)
    return t


cdef int _tls_start(ReactRuntime rt, DispatchContext ctx, object listener_id) except -1:
    """-> HANDSHAKE: read interest, the handshake timer, the first flight (a client's
    ClientHello)."""
    ctx.tls.listener_id = listener_id
    ctx.state = ST_HANDSHAKE
    ctx._set_want(WANT_READ | WANT_WRITE if _unsent(ctx) else WANT_READ)
    if ctx.tls.timeout_ns > 0:
        _set_stream_timer(rt, ctx, ctx.tls.timeout_ns)
    _be_stream_opened(rt, ctx)      # (IOCP: the first receive; epoll reads when readable)
    return _tls_handshake_step(rt, ctx)


cdef int _tls_start_inbound(ReactRuntime rt, DispatchContext ctx, object listener_id,
                            object peer) except -1:
    """An accepted TLS connection: its handshake starts; an error closes this stream only."""
    ctx.tls.peer = peer
    _hold(ctx)
    try:
        _tls_start(rt, ctx, listener_id)
    except (KeyboardInterrupt, SystemExit):
        _release(rt, ctx)
        raise
    except BaseException as exc:
        _callback_failed(rt, ctx, exc)
    _release(rt, ctx)
    return 0


cdef int _tls_handshake_input(ReactRuntime rt, DispatchContext ctx) except -1:
    """The socket of a HANDSHAKE stream is readable: feed the ciphertext to the SSLObject (at
    most DISCARD_BUDGET bytes per iteration) and go on with the handshake."""
    cdef char scratch[16384]
    cdef ssize_t n
    cdef Py_ssize_t total = 0
    cdef int err
    cdef bint eof = False
    while total < DISCARD_BUDGET:
        n = recv(ctx.fd, scratch, sizeof(scratch), 0)
        if n > 0:
            ctx.tls.incoming.write(PyMemoryView_FromMemory(scratch, n, PyBUF_READ))
            total += n
            continue
        if n == 0:
            eof = True
            break
        err = rio_errno()
        if err == EINTR:
            continue
        if rio_would_block(err):
            break
        return _stream_event(rt, ctx, EV_ABORT, _net.os_error(err, "recv"))
    if total > 0:
        _tls_handshake_step(rt, ctx)
    if eof and ctx.state == ST_HANDSHAKE:
        _stream_event(rt, ctx, EV_PEER_EOF, None)
    return 0


cdef int _tls_handshake_step(ReactRuntime rt, DispatchContext ctx) except -1:
    """Run the handshake as far as the ciphertext received allows; send what it produced (a
    flight, or the alert of a failure); open the stream when it is done."""
    cdef _TlsStream t = ctx.tls
    failed = None
    done = False
    try:
        t.sslobj.do_handshake()
        done = True
    except _ssl.SSLWantReadError:
        pass
    except _ssl.SSLError as exc:        # (SSLCertVerificationError among them)
        failed = exc
    _tls_send_output(ctx)
    if failed is not None:
        return _stream_event(rt, ctx, EV_CLOSE, failed)
    if done and ctx.state == ST_HANDSHAKE:
        return _tls_opened(rt, ctx)
    return 0


cdef int _tls_opened(ReactRuntime rt, DispatchContext ctx) except -1:
    """HANDSHAKE -> OPEN: on_connected (then an outbound connect's completion), then the
    plaintext that came with the handshake's last flight."""
    cdef _TlsStream t = ctx.tls
    t.opened = True
    if ctx.drain_timer is not None:
        _cancel(rt, <_Command>ctx.drain_timer)
        ctx.drain_timer = None
    if ctx.connect is not None:
        _outbound_opened(rt, ctx)
    else:
        ctx.state = ST_OPEN
        rio_bump_ssize(&rt.n_streams, 1)
        _connected(rt, ctx, t.listener_id)
    if ctx.state == ST_OPEN and _tls_readable(ctx):
        _stream_readable(rt, ctx)   # (the socket may not be readable again for these bytes)
    return 0


cdef bint _tls_readable(DispatchContext ctx) noexcept:
    """Ciphertext or plaintext waits inside the TLS layer (not in the socket, where the
    poller would see it)."""
    return ctx.tls is not None and (ctx.tls.incoming.pending > 0 or ctx.tls.sslobj.pending() > 0)


cdef Py_ssize_t _tls_decrypt(_TlsStream t, char *dest, Py_ssize_t room) except -1:
    """Plaintext into dest (at most room bytes) from the ciphertext the SSLObject holds; returns
    the byte count.  Reads record after record (one SSLObject.read gives at most one record)
    until room is full or no ciphertext is left.  The peer's close_notify sets t.peer_closed,
    a bad record t.error."""
    cdef Py_ssize_t got = 0, k
    while got < room and (t.incoming.pending > 0 or t.sslobj.pending() > 0):
        try:
            k = t.sslobj.read(room - got, PyMemoryView_FromMemory(dest + got, room - got,
                                                                 PyBUF_WRITE))
        except _ssl.SSLWantReadError:
            t.partial = True    # a part of a record: the rest is still in the socket
            break
        except _ssl.SSLZeroReturnError:
            t.peer_closed = True
            break
        except _ssl.SSLError as exc:
            t.error = exc
            break
        if k <= 0:
            t.peer_closed = True    # (read() gives 0 bytes at the peer's close_notify)
            break
        got += k
        t.partial = False
    return got


cdef Py_ssize_t _tls_recv(MsgReader r, DispatchContext ctx, Py_ssize_t room) except -100:
    """MsgReader._recv of a TLS stream: ciphertext is read into the buffer's free space, handed
    to the SSLObject (MemoryBIO.write copies it), and decrypted into the same space.  The
    peer's close_notify or a bad record after some plaintext returns READ_EOF / READ_TLS_ERROR
    with that plaintext added to the buffer (the reader dispatches it first): no later read
    event may come to report them."""
    cdef _TlsStream t = ctx.tls
    cdef Py_ssize_t got
    cdef ssize_t n
    cdef int err
    while True:
        got = _tls_decrypt(t, r.store.data + r.end, room)
        r.end += got
        if t.outgoing.pending:
            _tls_send_output(ctx)       # a key update's reply, a ticket
        if t.peer_closed:
            _tls_queue_close_notify(ctx)    # our reply goes out before the stream closes
            return READ_EOF
        if t.error is not None:
            return READ_TLS_ERROR
        if got > 0:
            return got
        n = recv(ctx.fd, r.store.data + r.end, room, 0)
        if n > 0:
            t.incoming.write(PyMemoryView_FromMemory(r.store.data + r.end, n, PyBUF_READ))
            continue
        if n == 0:
            return _tls_eof(t)
        err = rio_errno()
        if err == EINTR:
            continue
        if rio_would_block(err):
            return READ_AGAIN
        r.last_errno = err
        return READ_ERROR


cdef _tls_recv_fn _tls_recv_cold = _tls_recv
cdef _tls_readable_fn _tls_readable_cold = _tls_readable
cdef _tls_input_fn _tls_handshake_input_cold = _tls_handshake_input


cdef int _tls_received(ReactRuntime rt, DispatchContext ctx, Py_ssize_t n,
                       Py_ssize_t room) except -1:
    """A completion-based backend (IOCP) received n bytes of ciphertext at reader.end (room
    bytes were free there): the handshake goes on, or they are decrypted in place and the
    plaintext is dispatched as the completion's data (n == 0: the peer's EOF)."""
    cdef MsgReader r = ctx.reader
    cdef _TlsStream t = ctx.tls
    cdef char *p = r.store.data + r.end
    cdef Py_ssize_t got = 0
    cdef Py_ssize_t status
    if n > 0:
        t.incoming.write(PyMemoryView_FromMemory(p, n, PyBUF_READ))
    if ctx.state == ST_HANDSHAKE:
        if n == 0:
            return _stream_event(rt, ctx, EV_PEER_EOF, None)
        return _tls_handshake_step(rt, ctx)
    if n == 0:
        status = _tls_eof(t)
    else:
        got = _tls_decrypt(t, p, room)
        r.end += got
        if t.outgoing.pending:
            _tls_send_output(ctx)
        if t.peer_closed:
            _tls_queue_close_notify(ctx)
            status = READ_EOF
        elif t.error is not None:
            status = READ_TLS_ERROR
        else:
            status = READ_MORE if got == room else READ_AGAIN
    r.arrived = got
    r.arrived_status = status
    return _stream_readable(rt, ctx)


cdef Py_ssize_t _tls_eof(_TlsStream t) except -100:
    """The peer's EOF without close_notify: at a record boundary a plain EOF (as asyncio takes
    it); inside a record (truncated) an ssl.SSLEOFError."""
    if t.partial or t.incoming.pending > 0:
        t.error = _ssl.SSLEOFError(
            "TLS stream truncated: the peer closed the connection in the middle of a record")
        return READ_TLS_ERROR
    return READ_EOF


cdef object _tls_eof_in_handshake():
    return _ssl.SSLEOFError("the peer closed the connection during the TLS handshake")


cdef int _tls_inbound_failed(DispatchContext ctx) except -1:
    """_finalize of an accepted TLS stream whose handshake did not complete: logged (a
    reactor was made, but no callback of it ran and none is owed)."""
    err = ctx.close_error
    ctx.sender._release_buffer()
    if err is None:
        err = "closed before the handshake completed"
    log.warning("listener %s: TLS handshake with %s failed: %s", ctx.tls.listener_id,
                ctx.tls.peer, err)
    return 0
