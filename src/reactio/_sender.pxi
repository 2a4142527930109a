# MsgSender and DispatchContext: a send writes straight to the socket when nothing is queued and
# queues only what the kernel did not take -- except while a read holding several messages is
# dispatched (DispatchContext.corked): the replies after the first (and the first too when the
# stream's last read held several: MsgReader.batched) are queued and leave in one send() when
# that dispatch ends (or every CORK_BYTES), so N pipelined requests cost one send, not N, and a
# lone message (ping-pong) still goes out at once, from inside send_or_que.  The runtime flushes
# the queue when the socket is writable (the backend's write readiness, or the completion of an
# IOCP WSASend).  Write interest is registered by whoever queues (any callback, any command),
# so queued bytes always drain.  Send completions (on_sent) run in send order, never inside
# the send_or_que call that registered them.


# Replies held back during one dispatch leave when they reach this many bytes: one send() of
# 16 KiB is cheap, and the queue stays well under the default high watermark (64 KiB).
cdef Py_ssize_t CORK_BYTES = 16 * 1024


@cython.final
cdef class MsgSender:
    """Per-stream send queue (a contiguous buffer with a moving head, compacted only when it
    needs room) and the in-order send completions."""

    def __init__(self, max_send_queue, high_water, low_water):
        """Deprecated: a stream's sender is made by the runtime (ctx.sender)."""
        warnings.warn("constructing a MsgSender is deprecated (0.2; an error in 0.3): the "
                      "runtime makes each stream's sender, see DispatchContext.sender",
                      DeprecationWarning, stacklevel=2)
        _size_option(max_send_queue, "max_send_queue", 1, PY_SSIZE_T_MAX)
        _size_option(high_water, "high_water", 0, PY_SSIZE_T_MAX)
        _size_option(low_water, "low_water", 0, high_water)
        self.max_send_queue = max_send_queue
        self.high_water = high_water
        self.low_water = low_water

    def __dealloc__(self):
        if self.inflight_buf != NULL and self.inflight_buf != self.buf:
            free(self.inflight_buf)
        free(self.buf)

    def __sizeof__(self):
        """The sender and the queue buffer it holds."""
        return sizeof(MsgSender) + self.cap

    cdef void _release_buffer(self):
        """Free the queue's buffer once it is empty (unless an IOCP WSASend reads it)."""
        if self.inflight_buf == NULL and self.head == self.tail:
            free(self.buf)
            self.buf = NULL
            self.cap = self.head = self.tail = 0

    @property
    def queued(self):
        """Deprecated: use ctx.send_queue_size (bytes accepted, not yet written to the
        kernel)."""
        warnings.warn("MsgSender.queued is deprecated; use ctx.send_queue_size",
                      DeprecationWarning, stacklevel=2)
        return self.tail - self.head

    @property
    def bytes_sent(self):
        """Bytes written to the kernel over the stream's life (TLS: plaintext bytes whose
        records were written)."""
        return self.total_sent

    cdef int _append(self, const char *data, Py_ssize_t n) except -1:
        cdef Py_ssize_t used, newcap
        cdef char *p
        if self.tail + n > self.cap:
            used = self.tail - self.head
            if self.inflight_buf != NULL and self.inflight_buf == self.buf:
                # IOCP: a WSASend reads this buffer; continue in a copy, free it on completion
                newcap = max(2 * self.cap, used + n, 4096)
                p = <char *>malloc(newcap)
                if p == NULL:
                    raise MemoryError()
                memcpy(p, self.buf + self.head, used)
                self.buf = p
                self.cap = newcap
                self.head = 0
                self.tail = used
            else:
                if self.head > 0:
                    memmove(self.buf, self.buf + self.head, used)
                    self.head = 0
                    self.tail = used
                if used + n > self.cap:
                    newcap = max(2 * self.cap, used + n, 4096)
                    p = <char *>realloc(self.buf, newcap)
                    if p == NULL:
                        raise MemoryError()
                    self.buf = p
                    self.cap = newcap
        memcpy(self.buf + self.tail, data, n)
        self.tail += n
        return 0


@cython.final
cdef class DispatchContext:
    """A reactor's handle on its stream, passed to every callback: sending, closing, socket
    options and addresses.  It stays usable while the stream is open; afterwards sends raise
    ReactorClosedError."""

    def __cinit__(self):
        self.fd = -1
        self.state = ST_CLOSED      # until the runtime makes it a stream

    def __init__(self):
        raise TypeError("DispatchContext objects are created by the runtime")

    def __dealloc__(self):
        free(self.backend_ops)     # an op holds a reference to us while pending: none is
        # still open: the runtime was dropped without close() and the GC freed this first
        if self.fd >= 0:
            rio_close(self.fd)

    @property
    def cmd_sender(self):
        if self.rt is None:
            raise ReactorClosedError("this DispatchContext belongs to no runtime")
        return self.rt.cmd_sender

    @property
    def is_open(self):
        return self.state == ST_OPEN

    @property
    def send_queue_size(self):
        return 0 if self.sender is None else self.sender.tail - self.sender.head

    @property
    def peer_address(self):
        """The peer's address as socket.getpeername() gives it."""
        self._check_fd()
        return _sock_address(self.fd, True)

    @property
    def local_address(self):
        self._check_fd()
        return _sock_address(self.fd, False)

    def fileno(self):
        return self.fd

    @property
    def ssl_object(self):
        """The stream's ssl.SSLObject (peer certificate, cipher, ALPN protocol, version), or
        None on a plain TCP stream."""
        return None if self.tls is None else self.tls.sslobj

    @property
    def nodelay(self):
        """TCP_NODELAY; always False on a Unix stream (no such option there; setting it is
        a no-op, so one reactor serves both transports)."""
        cdef int v = 0
        cdef socklen_t n = sizeof(v)
        self._check_fd()
        if rio_getsockopt(self.fd, IPPROTO_TCP, TCP_NODELAY, &v, &n) != 0:
            if _is_unix_socket(self.fd):
                return False
            raise _net.os_error(rio_errno(), "getsockopt(TCP_NODELAY)")
        return v != 0

    @nodelay.setter
    def nodelay(self, bint on):
        cdef int v = on
        self._check_fd()
        if rio_setsockopt(self.fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof(v)) != 0:
            if not _is_unix_socket(self.fd):
                raise _net.os_error(rio_errno(), "setsockopt(TCP_NODELAY)")

    def _check_fd(self):
        if self.state == ST_CLOSED:
            raise ReactorClosedError(f"reactor {self.reactor_id} is closed")

    def send_or_que(self, data, on_sent=None):
        """Send ``data`` (any bytes-like object): written at once when nothing is queued, the
        rest queued.  on_sent(reactor_id) runs when the last byte reached the kernel (in send
        order), or on_sent(exception) if the stream closes first."""
        cdef Py_buffer view
        cdef const char *p
        cdef Py_ssize_t n
        cdef int r
        if on_sent is not None and not callable(on_sent):
            raise TypeError(f"on_sent must be callable or None, not {type(on_sent).__name__}")
        if PyBytes_CheckExact(data):
            r = self.send_raw(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), on_sent)
        elif rio_memoryview_bytes(data, &p, &n):    # (the view handed to on_inbound_message)
            r = self.send_raw(p, n, on_sent)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                r = self.send_raw(<const char *>view.buf, view.len, on_sent)
            finally:
                PyBuffer_Release(&view)
        return _SEND_RESULTS[r]

    def send_no_que(self, data):
        """Write what the kernel takes now and return the byte count (the caller handles the
        rest).  Writes nothing and returns 0 while bytes are queued, so order is kept."""
        cdef Py_buffer view
        cdef ssize_t n
        cdef int err
        if self.state != ST_OPEN:
            raise ReactorClosedError(f"reactor {self.reactor_id} is not open")
        if RIO_CHECK_THREADS:
            _refuse_foreign_thread(self.rt, self.reactor_id)
        if self.tls is not None:
            raise ValueError("send_no_que on a TLS stream: a part of a TLS record cannot be "
                             "counted in plaintext bytes; use send_or_que")
        if self.sender.tail != self.sender.head:
            return 0
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            while True:
                n = send(self.fd, view.buf, view.len, MSG_NOSIGNAL)
                if n >= 0:
                    self.sender.total_queued += n
                    self.sender.total_sent += n
                    return n
                err = rio_errno()
                if err == EINTR:
                    continue
                if rio_would_block(err):
                    return 0
                exc = _net.os_error(err, "send")
                _stream_event(self.rt, self, EV_ABORT, exc)
                raise exc
        finally:
            PyBuffer_Release(&view)

    def acquire_send(self):
        """A writable buffer: ``with ctx.acquire_send() as w: w.write(...)`` sends what was
        written when the block exits without an exception."""
        return AutoSendBuffer(self)

    def close(self, abort=False):
        """Close this stream: queued bytes are flushed first, then on_close runs; with
        abort=True queued bytes are dropped and the peer gets a reset.  Closing a closed
        stream does nothing."""
        if self.state < ST_CLOSING:
            if RIO_CHECK_THREADS:
                _refuse_foreign_thread(self.rt, self.reactor_id)
            _stream_event(self.rt, self, EV_ABORT if abort else EV_CLOSE, None)

    cdef int send_raw(self, const char *data, Py_ssize_t n, object on_sent=None) except -1:
        # (one function on purpose: it is the hot path of every reply, and the TLS, queue-
        # overflow and error branches are cold code that costs nothing when not taken)
        cdef MsgSender s = self.sender
        cdef Py_ssize_t sent = 0
        cdef ssize_t r
        cdef int err
        if self.state != ST_OPEN:
            raise ReactorClosedError(f"reactor {self.reactor_id} is not open; cannot send")
        if RIO_CHECK_THREADS:
            _refuse_foreign_thread(self.rt, self.reactor_id)
        if n < 0:
            raise ValueError(f"send_raw: a negative size ({n})")
        if self.tls is not None:
            # the same contract in plaintext: the records of what can go at once are written,
            # the rest of the plaintext is queued below (_tls_send.pxi)
            sent = _tls_send_cold(self, data, n, on_sent)
            if sent == TLS_ALL_SENT:
                return 0
        elif s.tail == s.head and not self.corked:
            while sent < n:
                r = send(self.fd, data + sent, n - sent, MSG_NOSIGNAL)
                if r >= 0:
                    sent += r
                    continue
                err = rio_errno()
                if err == EINTR:
                    continue
                if rio_would_block(err):
                    break
                exc = _net.os_error(err, "send")
                _stream_event(self.rt, self, EV_ABORT, exc)
                raise exc
            s.total_sent += sent
            if sent == n:
                s.total_queued += n
                if on_sent is not None:
                    # due now, but run after the current callback (never inside this call:
                    # a sender chaining its next send from on_sent must not recurse)
                    self._owe_completion(on_sent)
                return 0
        # what the kernel did not take (a TLS stream: plaintext, its first record in the wire)
        if s.tail - s.head + (n - sent) > s.max_send_queue:
            self._refuse_overflow(n, n - sent)
        if s.tail + (n - sent) <= s.cap:    # room at the end (every corked reply but a few)
            memcpy(s.buf + s.tail, data + sent, n - sent)
            s.tail += n - sent
        else:
            s._append(data + sent, n - sent)
        s.total_queued += n
        if on_sent is not None:
            if s.completions is None:
                s.completions = collections.deque()
            s.completions.append((s.total_queued, on_sent))
        if self.corked and s.tail - s.head < CORK_BYTES:
            return 1        # leaves with the others when the dispatch of this read ends
        return self._send_queued()

    cdef int _send_queued(self) except -1:
        """After send_raw queued bytes: the flush of a cork holding CORK_BYTES, or the request
        for writability.  Returns 1 (IN_QUEUE).  A flush made here (the cork's, or a backend
        that completes a send at once) leaves the completions it makes due to rt.ready
        (in_send): on_sent never runs inside the send_or_que that registered it.  (A send
        from a watermark callback run in here nests: the outer call's flag is restored.)"""
        cdef bint outer = self.in_send
        self.in_send = True
        try:
            if self.corked:
                self._flush()
                if self.sender.head == self.sender.tail or self.state != ST_OPEN:
                    return 1
            return self._after_queueing()
        finally:
            self.in_send = outer

    cdef int _refuse_overflow(self, Py_ssize_t n, Py_ssize_t rest) except -1:
        """rest bytes of a send of n would take the queue over max_send_queue: the stream
        closes (reset) and the sender gets SendQueueOverflowError."""
        cdef MsgSender s = self.sender
        if rest > s.max_send_queue:
            exc = SendQueueOverflowError(
                f"reactor {self.reactor_id}: one send of {n} bytes is larger than "
                f"max_send_queue={s.max_send_queue}; raise it (ReactRuntime(max_send_queue=...)"
                f" or the send_connect / listener keyword) or send in pieces, pausing on "
                f"on_pause_writing")
        else:
            exc = SendQueueOverflowError(
                f"reactor {self.reactor_id}: {s.tail - s.head + rest} bytes would be "
                f"queued, over max_send_queue={s.max_send_queue}: the peer does not read "
                f"as fast as this stream sends (pause on on_pause_writing)")
        _stream_event(self.rt, self, EV_ABORT, exc)
        raise exc

    cdef int _after_queueing(self) except -1:
        """Bytes wait in the queue: have the backend report writability, and pause the
        reactor above the high watermark.  Returns 1 (IN_QUEUE)."""
        cdef MsgSender s = self.sender
        if not (self.want & WANT_WRITE):
            self._set_want(self.want | WANT_WRITE)
        if not s.paused and s.tail - s.head > s.high_water:
            s.paused = True
            self._watermark_callback(True)
        return 1

    cdef int _uncork(self) except -1:
        """The dispatch of a read that held back replies is over: send them (one send()),
        what the kernel does not take stays queued."""
        self.corked = False
        if self.sender.head != self.sender.tail and self.state == ST_OPEN:
            self._flush()
            if self.sender.head != self.sender.tail and self.state == ST_OPEN:
                self._after_queueing()
        return 0

    cdef int _watermark_callback(self, bint pause) except -1:
        """on_pause_writing / on_resume_writing.  Their exceptions close this stream, not the
        caller of send_or_que (which may be another reactor)."""
        _call_reactor(self.rt, self, CB_PAUSE_WRITING if pause else CB_RESUME_WRITING, None)
        return 0

    cdef int _owe_completion(self, object on_sent) except -1:
        """on_sent's bytes are all written: run it in send order once the runtime gets
        control back (ReactRuntime._run_ready)."""
        cdef MsgSender s = self.sender
        if s.completions is None:
            s.completions = collections.deque()
        s.completions.append((s.total_queued, on_sent))
        if not self.in_ready:
            self.in_ready = True
            self.rt.ready.append(self)
        return 0

    cdef int _flush(self) except -1:
        """Write queued bytes until EAGAIN.  Runs when the socket is writable and while
        draining for close."""
        cdef MsgSender s = self.sender
        cdef ssize_t r
        cdef int err
        if self.tls is not None:
            return _tls_flush_cold(self)    # (encrypts the queue's head as it goes)
        if _be_flush_blocked(s):
            return 0            # a WSASend owns the queue's head; its completion flushes
        while s.head < s.tail:
            r = send(self.fd, s.buf + s.head, s.tail - s.head, MSG_NOSIGNAL)
            if r >= 0:
                s.head += r
                s.total_sent += r
                continue
            err = rio_errno()
            if err == EINTR:
                continue
            if rio_would_block(err):
                break
            return _stream_event(self.rt, self, EV_ABORT, _net.os_error(err, "send"))
        return self._flushed(s.head == s.tail)

    cdef int _flushed(self, bint empty) except -1:
        """After a flush: the completions now due, the write interest (off once nothing is
        left to write: ``empty``), the end of a drain, on_resume_writing."""
        cdef MsgSender s = self.sender
        if s.completions:
            if self.in_send:
                self._defer_completions()
            else:
                self._flush_completions()
        if empty:
            s.head = s.tail = 0
            if s.cap >= KEEP_BUFFER:
                s._release_buffer()     # a burst made it grow: give the memory back
            if self.state == ST_DRAINING:
                _stream_event(self.rt, self, EV_DRAINED, None)
            elif self.want & WANT_WRITE and (self.state == ST_OPEN or self.state == ST_HANDSHAKE):
                self._set_want(self.want & ~WANT_WRITE)
        else:
            _be_after_flush(self.rt, self)
        if s.paused and s.tail - s.head <= s.low_water and self.state == ST_OPEN:
            s.paused = False
            self._watermark_callback(False)
        return 0

    cdef int _flush_completions(self) except -1:
        """Run, in send order, the completions of messages whose last byte was written.  A
        completion that sends more appends to the same queue, behind the ones still owed."""
        cdef MsgSender s = self.sender
        cdef Py_ssize_t budget
        q = s.completions
        budget = len(q)     # those owed now: one sent from a completion runs in a later round
        while budget > 0 and q and <uint64_t>q[0][0] <= s.total_sent:
            budget -= 1
            cb = q.popleft()[1]
            _complete(cb, self.reactor_id)
        return self._defer_completions()

    cdef int _defer_completions(self) except -1:
        """Completions now due run from rt.ready (ReactRuntime._run_ready), in send order."""
        cdef MsgSender s = self.sender
        q = s.completions
        if q and <uint64_t>q[0][0] <= s.total_sent and not self.in_ready and self.state != ST_CLOSED:
            self.in_ready = True
            self.rt.ready.append(self)
        return 0

    cdef int _set_want(self, int want) except -1:
        """What the stream waits for (WANT_READ | WANT_WRITE).  Set before the backend is told:
        a backend may complete a send at once (IOCP) and flush, which reads it."""
        cdef int before = self.want
        if want == before:
            return 0
        self.want = want
        try:
            _be_set_want(self, want)
        except BaseException:
            self.want = before
            raise
        return 0
