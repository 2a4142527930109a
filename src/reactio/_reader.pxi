# MsgReader: the receive buffer and the framing dispatch loop (reactio's semantics), with limits:
# the buffer never grows past max_msg_size + min_reserve, it grows only to hold a message that
# does not fit (never to read more), it is allocated at the first read and given back when a
# burst that made it grow has been consumed, and one stream reads at most READ_BUDGET bytes per
# loop iteration (level-triggered epoll reports the rest at the next one), so a flooding peer
# cannot delay other streams by more than one bounded read.

# _recv() results other than a byte count
cdef enum:
    READ_EOF = 0
    READ_AGAIN = -1     # drained: EAGAIN, or a short read (level-triggered, so safe)
    READ_ERROR = -3     # reader.last_errno says why
    READ_FULL = -4      # the buffer is at its limit; more bytes may wait in the kernel
    READ_MORE = -5      # IOCP: a completion filled the buffer; the socket may hold more
    READ_TLS_ERROR = -6 # TLS: ctx.tls.error says why (a bad record, a truncated stream)

# What one stream may read and dispatch per loop iteration before the loop moves on (level-
# triggered epoll reports the rest at the next one): READ_BUDGET bytes, or READ_SLICE_NS of
# dispatching, whichever comes first.  The bytes bound makes a bulk transfer cost few wake-ups
# (64 recv() of the default 4 KiB); the time bound is for small frames and a slow handler: a
# Python reactor echoing 30-byte frames spends ~40 ms on 256 KiB, and a bystander would wait
# that long per iteration.  The clock is read only when a read filled the buffer (never on the
# one-short-read path of ordinary traffic).
cdef Py_ssize_t READ_BUDGET = 256 * 1024
cdef int64_t READ_SLICE_NS = 1000000


cdef inline bint _turn_over(Py_ssize_t total, int64_t *deadline) noexcept:
    """After a full buffer was dispatched: has this stream had its turn?"""
    cdef int64_t now
    if total >= READ_BUDGET:
        return True
    now = rio_monotonic_ns()
    if deadline[0] == 0:
        deadline[0] = now + READ_SLICE_NS
        return False
    return now >= deadline[0]
# A buffer that grew to this (and past min_reserve) is given back once it is empty.
cdef Py_ssize_t KEEP_BUFFER = 64 * 1024
# With more streams than this, a stream whose read left nothing buffered parks its buffer on
# the runtime for the next stream that reads (so 10,000 idle connections hold no receive
# buffer, only the one parked); with fewer, each keeps its own (the hand-over costs ~40
# instructions per read, and a few buffers are little memory).
cdef enum:
    PARK_ABOVE_STREAMS = 64


@cython.final
@cython.no_gc
cdef class _RecvStore:

    def __cinit__(self, Py_ssize_t cap):
        self.data = <char *>malloc(cap)
        if self.data == NULL:
            raise MemoryError()
        self.cap = cap

    def __dealloc__(self):
        free(self.data)

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, self.data + self.view_start, self.view_len, 0, flags)
        rio_add_ssize(&self.exports, 1)

    def __releasebuffer__(self, Py_buffer *view):
        # any thread: wherever the last reference to a view (or a slice of it) is dropped
        rio_add_ssize(&self.exports, -1)


@cython.final
cdef class MsgReader:
    """Per-stream receive buffer.  Each read gets at least ``recv_buffer_min_size`` bytes of
    free space; the buffer grows only to hold a message that does not fit (up to max_msg_size)
    and keeps the partial message at its front between reads."""

    def __init__(self, min_reserve, max_msg_size):
        """Deprecated: a stream's reader is made by the runtime (ctx.reader)."""
        warnings.warn("constructing a MsgReader is deprecated (0.2; an error in 0.3): the "
                      "runtime makes each stream's reader, see DispatchContext.reader",
                      DeprecationWarning, stacklevel=2)
        _size_option(min_reserve, "recv_buffer_min_size", 1, MAX_RECV_RESERVE)
        _size_option(max_msg_size, "max_msg_size", 1, PY_SSIZE_T_MAX - min_reserve)
        self.recv_min = min_reserve
        self.max_msg_size = max_msg_size

    @property
    def recv_buffer_min_size(self):
        """The free space every read gets (the stream's recv_buffer_min_size)."""
        return self.recv_min

    @property
    def min_reserve(self):
        """Deprecated spelling of recv_buffer_min_size."""
        warnings.warn("MsgReader.min_reserve is deprecated; use recv_buffer_min_size",
                      DeprecationWarning, stacklevel=2)
        return self.recv_min

    def __sizeof__(self):
        """The reader and the receive buffer it holds."""
        return sizeof(MsgReader) + (0 if self.store is None else self.store.cap)

    cdef void _release_buffer(self):
        """Drop the receive buffer (a memoryview still exported keeps its memory alive), unless
        an IOCP receive owns it."""
        if not self.io_pending:
            self.view = None
            self.store = None
            self.start = self.end = self.unseen = 0

    cdef void _park(self, ReactRuntime rt):
        """After a read that left nothing buffered: give the buffer to the runtime's spare if
        nobody else can see its bytes, else just let it go (a view kept by the user keeps its
        memory).  Not while an IOCP receive owns it."""
        cdef _RecvStore s = self.store
        if self.io_pending:
            return
        if (rt.spare_store is None and s.cap < KEEP_BUFFER and s.exports == (
                0 if self.view is None else 1) and (
                self.view is None or rio_memoryview_sole(self.view))):
            rt.spare_store = s
            rt.spare_view = self.view
        self.store = None
        self.view = None
        self.start = self.end = self.unseen = 0

    cdef void _adopt_spare(self, ReactRuntime rt):
        """Before a read into no buffer: take the runtime's spare if it is large enough."""
        if rt.spare_store is not None and rt.spare_store.cap >= self.recv_min:
            self.store = rt.spare_store
            self.view = rt.spare_view
            rt.spare_store = None
            rt.spare_view = None
            self.start = self.end = 0

    cdef object _view(self, char *data, Py_ssize_t size):
        """The memoryview a Python reactor gets: the reader's one view, pointed at these bytes
        when nobody else holds it (no allocation per message), else a new one."""
        cdef _RecvStore store = self.store
        if self.view is not None and rio_memoryview_retarget(
                <PyObject *>self.view, <PyObject *>store, data, size):
            return self.view
        store.view_start = data - store.data
        store.view_len = size
        v = PyMemoryView_FromObject(store)
        self.view = v
        return v

    def bytes_in_buffer(self):
        """Received bytes not yet consumed by DropMsgSize."""
        return self.end - self.start

    def clear(self):
        """Drop buffered bytes and forget the expected message size.  Not allowed during a
        dispatch (return DropMsgSize instead) nor while an IOCP receive owns the buffer."""
        if self.busy:
            raise RuntimeError("MsgReader.clear() during its own dispatch: return "
                               "DropMsgSize(n) to consume bytes")
        if self.io_pending:
            raise RuntimeError("MsgReader.clear() while a receive is pending on the buffer")
        self.start = self.end = self.decoded = self.unseen = self.arrived = 0
        self._release_buffer()

    def try_read_fast_read(self, DispatchContext ctx not None):
        """Read everything the socket has, then dispatch every complete message (the
        default): fewest system calls per event."""
        self._check_ctx(ctx)
        self.fast_read(ctx)

    def try_read_fast_dispatch(self, DispatchContext ctx not None):
        """Dispatch after every chunk read: earliest dispatch of the first message in a
        burst, and the smallest buffer."""
        self._check_ctx(ctx)
        self.fast_dispatch(ctx)

    def _check_ctx(self, DispatchContext ctx):
        # on_inbound_raw shows the bytes through ctx.reader's buffer: a reader reading for
        # another stream would hand out a view of memory that view does not own
        if ctx.reader is not self:
            raise ValueError("a MsgReader reads only for its own stream (use ctx.reader)")
        if ctx.state != ST_OPEN:
            raise ReactorClosedError(f"reactor {ctx.reactor_id} is not open; cannot read")

    cdef Py_ssize_t _ensure_space(self) except -1:
        """Free bytes after end: at least min_reserve, unless the buffer is at its limit."""
        cdef _RecvStore s = self.store
        cdef _RecvStore grown
        cdef Py_ssize_t used, newcap, limit
        cdef char *p
        if s is None:
            self.store = _RecvStore(self.recv_min)
            self.start = self.end = 0
            return self.recv_min
        if s.cap - self.end >= self.recv_min:
            return s.cap - self.end
        used = self.end - self.start
        if self.start > 0:
            memmove(s.data, s.data + self.start, used)
            self.start = 0
            self.end = used
            if s.cap - used >= self.recv_min:
                return s.cap - used
        limit = self.max_msg_size + self.recv_min
        newcap = max(used + self.recv_min, 2 * s.cap)
        if newcap > limit:
            newcap = limit
        if newcap <= s.cap:
            return s.cap - self.end
        if rio_load_ssize_acquire(&s.exports) == 0:
            p = <char *>realloc(s.data, newcap)
            if p == NULL:
                raise MemoryError()
            s.data = p
            s.cap = newcap
        else:
            # a memoryview of the old bytes is still alive: leave it valid memory
            grown = _RecvStore(newcap)
            memcpy(grown.data, s.data, used)
            self.store = grown
            self.view = None
        return self.store.cap - self.end

    cdef Py_ssize_t _recv(self, DispatchContext ctx) except -100:
        cdef Py_ssize_t room
        cdef ssize_t n
        cdef int err
        if self.store is not None and self.store.cap - self.end >= self.recv_min:
            room = self.store.cap - self.end    # the common case, without a call
        else:
            if self.store is None:
                self._adopt_spare(ctx.rt)
            room = self._ensure_space()
        if room == 0:
            return READ_FULL
        if ctx.tls is not None:
            return _tls_recv_cold(self, ctx, room)  # ciphertext from the socket, plaintext here
        while True:
            n = recv(ctx.fd, self.store.data + self.end, room, 0)
            if n > 0:
                self.end += n
                return n
            if n == 0:
                return READ_EOF
            err = rio_errno()
            if err == EINTR:
                continue
            if rio_would_block(err):
                return READ_AGAIN
            self.last_errno = err
            return READ_ERROR

    cdef int fast_read(self, DispatchContext ctx) except -1:
        cdef Py_ssize_t before, r, total = 0
        cdef int64_t deadline = 0
        if self.busy:
            raise RuntimeError("MsgReader re-entered from its own dispatch")
        r = self.arrived_status     # IOCP: what the completion already read; 0 on epoll
        if r == 0 and self.io_pending:
            return 0                # IOCP: the posted WSARecv owns the free space
        self.busy = True
        try:
            before = self.end - self.start - self.arrived
            self.arrived = 0
            self.arrived_status = 0
            if r == READ_MORE and self.io_pending:
                r = READ_AGAIN      # IOCP: the next WSARecv owns the free space; it reads on
            if r == 0 or r == READ_MORE:
                while True:
                    r = self._recv(ctx)
                    if r <= 0:
                        break
                    total += r
                    if self.end < self.store.cap:   # short read: the socket is drained
                        r = READ_AGAIN
                        break
                    # the buffer is full: dispatch before reading more (it grows only for a
                    # message that does not fit), then give other streams their turn
                    self._dispatch_all(ctx, self.end - self.start - before)
                    before = self.end - self.start
                    if ctx.state != ST_OPEN or (_turn_over(total, &deadline)
                                                and not _tls_readable_cold(ctx)):
                        r = READ_AGAIN
                        break
            if self.end - self.start > before:
                self._dispatch_all(ctx, self.end - self.start - before)
            self._after_read(ctx, r)
            if (ctx.rt.n_streams > PARK_ABOVE_STREAMS and self.start == self.end
                    and self.store is not None and READS_INLINE):
                self._park(ctx.rt)
        finally:
            self.busy = False
            ctx.corked = False      # (an exception ended the dispatch: the close drains the queue)
        return 0

    cdef int fast_dispatch(self, DispatchContext ctx) except -1:
        cdef Py_ssize_t r, before, total = 0
        cdef int64_t deadline = 0
        cdef bint drained
        if self.busy:
            raise RuntimeError("MsgReader re-entered from its own dispatch")
        r = self.arrived_status
        if r == 0 and self.io_pending:
            return 0
        self.busy = True
        try:
            if r != 0:
                self.arrived_status = 0
                if self.arrived > 0:
                    self._dispatch_all(ctx, self.arrived)
                    self.arrived = 0
                if r != READ_MORE or ctx.state != ST_OPEN or self.io_pending:
                    self._after_read(ctx, READ_AGAIN if r == READ_MORE else r)
                    return 0
            while True:
                before = self.end
                r = self._recv(ctx)
                if r <= 0:
                    if self.end > before:   # TLS: plaintext that came with an EOF / error
                        self._dispatch_all(ctx, self.end - before)
                    break
                total += r
                drained = self.end < self.store.cap   # before dispatch moves start/end
                self._dispatch_all(ctx, r)
                if drained or ctx.state != ST_OPEN or (_turn_over(total, &deadline)
                                                       and not _tls_readable_cold(ctx)):
                    r = READ_AGAIN
                    break
            self._after_read(ctx, r)
            if (ctx.rt.n_streams > PARK_ABOVE_STREAMS and self.start == self.end
                    and self.store is not None and READS_INLINE):
                self._park(ctx.rt)
        finally:
            self.busy = False
            ctx.corked = False      # (an exception ended the dispatch: the close drains the queue)
        return 0

    cdef int _after_read(self, DispatchContext ctx, Py_ssize_t status) except -1:
        if status == READ_AGAIN:
            return 0
        if status == READ_EOF:
            # peer shut its write side: bytes already read were dispatched; flush what we
            # queued (the peer may still read), then close
            _stream_event(ctx.rt, ctx, EV_PEER_EOF, None)
        elif status == READ_ERROR:
            _stream_event(ctx.rt, ctx, EV_ABORT, _net.os_error(self.last_errno, "recv"))
        elif status == READ_TLS_ERROR:
            _stream_event(ctx.rt, ctx, EV_ABORT, ctx.tls.error)
        elif status == READ_FULL and self.end - self.start >= self.max_msg_size:
            raise MessageTooLargeError(
                f"a message exceeds max_msg_size={self.max_msg_size} bytes "
                f"({self.end - self.start} bytes buffered without a complete message)")
        return 0

    cdef int _dispatch_all(self, DispatchContext ctx, Py_ssize_t new_bytes) except -1:
        """Offer the buffered bytes to the reactor until it needs more.  new_bytes (the bytes
        just read) is added to the bytes it has not been shown yet, which is what it receives
        as new_bytes: withheld calls (ExpectMsgSize(n)) do not lose count of earlier reads."""
        cdef Py_ssize_t avail, n
        cdef MessageResult res
        cdef Reactor reactor = ctx.reactor
        self.unseen += new_bytes
        # Replies leave together when this read holds several messages: the ones after the
        # first always (corked when the first is dropped with bytes left), and the first too
        # when the last read held more than one message (batched: a pipelining peer gets one
        # send() per read, not two, and is not woken for the first reply alone).  A ping-pong
        # peer's reads hold one message each, so its reply still leaves from send_or_que.
        if self.batched:
            ctx.corked = True
            self.batched = False
        while self.start < self.end and ctx.state == ST_OPEN:
            avail = self.end - self.start
            if self.decoded > avail:
                break
            res = reactor.on_inbound_raw(self.store.data + self.start, avail, self.unseen,
                                         self.decoded, ctx)
            if res is None:
                raise MessageResultError(
                    f"{type(reactor).__name__}.on_inbound_message returned None; it must "
                    "return ExpectMsgSize(n) or DropMsgSize(n)")
            n = res.size
            avail = self.end - self.start   # as it is now: the callback may have read more
            if res.is_drop:
                if n <= 0 or n > avail:
                    raise MessageResultError(
                        f"DropMsgSize({n}) with {avail} bytes buffered: the size must be "
                        f"in 1..{avail}")
                if n > self.max_msg_size:
                    raise MessageTooLargeError(
                        f"DropMsgSize({n}): a message larger than max_msg_size="
                        f"{self.max_msg_size}")
                self.start += n
                self.decoded = 0
                self.unseen = self.end - self.start     # the next message's bytes count as new
                if self.start < self.end:
                    ctx.corked = True   # more messages in this read: their replies go together
                    self.batched = True
            else:
                if n != 0 and n <= avail:
                    raise MessageResultError(
                        f"ExpectMsgSize({n}) with {avail} bytes already buffered: the size "
                        f"must be 0 (unknown) or more than {avail}")
                if n > self.max_msg_size:
                    raise MessageTooLargeError(
                        f"ExpectMsgSize({n}) exceeds max_msg_size={self.max_msg_size}")
                self.decoded = n
                self.unseen = 0
                break
        if ctx.corked:
            ctx._uncork()
        if self.start == self.end:
            self.start = self.end = self.unseen = 0
            if (self.store is not None and self.store.cap >= KEEP_BUFFER
                    and self.store.cap > self.recv_min):
                self._release_buffer()      # a burst made it grow: give the memory back
        return 0
