# Sending on a TLS stream (_TlsStream: _tls.pxi).  The send queue (ctx.sender) holds the
# plaintext the user sent, so its size, max_send_queue, the watermarks and the completions
# count plaintext exactly as on a plain stream.  The records go to the socket from t.wire,
# which holds the records of the queue's first t.covered bytes (at most TLS_RECORD: one record)
# behind whatever the SSLObject wrote by itself (handshake flights, alerts, key update replies,
# tickets, close_notify).  When the wire is written out, those t.covered bytes leave the queue
# (they count as sent: on_sent, bytes_sent) and the next record's worth is encrypted
# (_tls_pump).  Invariant: queued plaintext not held back by a cork (DispatchContext.corked)
# has its first record in the wire, so an empty wire with nothing corked means nothing is left
# to write.  Each send of a plain stream pays nothing for this but the NULL checks of ctx.tls in
# send_raw and _flush.

# Plaintext per record (TLS's maximum): the most of the queue that is ciphertext at any time.
cdef Py_ssize_t TLS_RECORD = 16384
# An idle stream keeps a wire buffer of at most this size (small replies' records fit in it);
# one that held a full record is freed once everything is written.
cdef Py_ssize_t WIRE_KEEP = 4096


cdef inline MsgSender _wire(DispatchContext ctx):
    """The buffer the backend sends from: the queue itself, or a TLS stream's records."""
    return ctx.sender if ctx.tls is None else ctx.tls.wire


cdef inline bint _unsent(DispatchContext ctx) noexcept:
    """Bytes are left to write: queued plaintext or, on a TLS stream, records."""
    return ctx.sender.head != ctx.sender.tail or (ctx.tls is not None and
                                                  ctx.tls.wire.head != ctx.tls.wire.tail)


cdef int _tls_send_output(DispatchContext ctx) except -1:
    """Send the records the SSLObject wrote by itself: handshake flights, alerts, key update
    replies, tickets (behind the records already in the wire; no watermark callback)."""
    if _tls_queue_records(ctx):
        ctx._flush()
        if _unsent(ctx) and ctx.state < ST_CLOSING and not (ctx.want & WANT_WRITE):
            ctx._set_want(ctx.want | WANT_WRITE)
    return 0


cdef bint _tls_queue_records(DispatchContext ctx) except -1:
    """Append what the SSLObject wrote to the wire; False when it wrote nothing."""
    if not ctx.tls.outgoing.pending:
        return False
    out = ctx.tls.outgoing.read()
    ctx.tls.wire._append(PyBytes_AS_STRING(out), PyBytes_GET_SIZE(out))
    return True


cdef Py_ssize_t _tls_pump(DispatchContext ctx, const char *src, Py_ssize_t avail,
                          int *err) except -1:
    """Write the wire to the socket and, each time it is empty, encrypt the next record's worth
    of src (avail plaintext bytes, whose first t.covered are in the wire already), until the
    kernel takes no more, src is all sent, or a send fails (*err: its errno, else 0).  Returns
    how many bytes of src had all their records written; t.covered bytes after them are in the
    wire."""
    cdef _TlsStream t = ctx.tls
    cdef MsgSender w = t.wire
    cdef Py_ssize_t done = 0, k
    cdef ssize_t r
    cdef int e
    err[0] = 0
    while True:
        while w.head < w.tail:
            r = send(ctx.fd, w.buf + w.head, w.tail - w.head, MSG_NOSIGNAL)
            if r >= 0:
                w.head += r
                continue
            e = rio_errno()
            if e == EINTR:
                continue
            if not rio_would_block(e):
                err[0] = e
            return done
        w.head = w.tail = 0
        done += t.covered
        t.covered = 0
        if done == avail:
            return done
        k = min(avail - done, TLS_RECORD)
        try:
            t.sslobj.write(PyMemoryView_FromMemory(<char *>src + done, k, PyBUF_READ))
        except _ssl.SSLError as exc:
            _stream_event(ctx.rt, ctx, EV_ABORT, exc)
            raise
        _tls_queue_records(ctx)
        t.covered = k


# _tls_send's answer when every byte was sent (and on_sent is owed): send_raw returns 0
cdef enum:
    TLS_ALL_SENT = -2


cdef Py_ssize_t _tls_send(DispatchContext ctx, const char *data, Py_ssize_t n,
                          object on_sent) except -1:
    """send_raw's direct send on a TLS stream, with a plain stream's contract in plaintext
    bytes: with nothing queued (nor corked) the records are sent at once.  Returns
    TLS_ALL_SENT when all n went (on_sent owed), else how many of them had all their records
    written; send_raw queues the rest as plaintext (max_send_queue, watermarks), whose first
    t.covered bytes are in the wire already."""
    cdef MsgSender s = ctx.sender
    cdef MsgSender w = ctx.tls.wire
    cdef Py_ssize_t sent = 0
    cdef int err
    if s.tail == s.head and w.tail == w.head and not ctx.corked:
        sent = _tls_pump(ctx, data, n, &err)
        s.total_sent += sent
        if err:
            exc = _net.os_error(err, "send")
            _stream_event(ctx.rt, ctx, EV_ABORT, exc)
            raise exc
        if sent == n:
            s.total_queued += n
            if w.cap > WIRE_KEEP:
                w._release_buffer()
            if on_sent is not None:
                ctx._owe_completion(on_sent)
            return TLS_ALL_SENT
    return sent


cdef int _tls_flush(DispatchContext ctx) except -1:
    """DispatchContext._flush of a TLS stream: the pump over the queue, close_notify once the
    queue is all written if close() asked for it, then what follows any flush."""
    cdef MsgSender s = ctx.sender
    cdef MsgSender w = ctx.tls.wire
    cdef Py_ssize_t done
    cdef int err
    if _be_flush_blocked(w):
        return 0            # a WSASend owns the wire's head; its completion flushes
    while True:
        done = _tls_pump(ctx, s.buf + s.head, s.tail - s.head, &err)
        s.head += done
        s.total_sent += done
        if err:
            return _stream_event(ctx.rt, ctx, EV_ABORT, _net.os_error(err, "send"))
        if not (ctx.tls.notify_owed and s.head == s.tail):
            break       # (close_notify goes behind the last plaintext record, then is sent)
        ctx.tls.notify_owed = False
        _tls_queue_close_notify(ctx)
    if w.head == w.tail and w.cap > WIRE_KEEP:
        w._release_buffer()
    return ctx._flushed(s.head == s.tail and w.head == w.tail)


cdef int _tls_queue_close_notify(DispatchContext ctx) except -1:
    """Our close_notify, after the records of all the queued plaintext: into the wire now if
    nothing is queued, else once the pump has encrypted the queue's last byte (_tls_flush)."""
    if ctx.sender.head != ctx.sender.tail:
        ctx.tls.notify_owed = True
        return 0
    try:
        ctx.tls.sslobj.unwrap()
    except _ssl.SSLError:
        pass            # (SSLWantReadError: the peer's close_notify is not awaited)
    _tls_queue_records(ctx)
    return 0


cdef _tls_send_fn _tls_send_cold = _tls_send
cdef _tls_flush_fn _tls_flush_cold = _tls_flush
