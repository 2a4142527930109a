# ReactRuntime: one epoll loop.  process_events() = wait for socket events (GIL released), handle
# them, run due timers (deferred commands), run the commands queued when the drain began.


@cython.final
cdef class _Listener:

    def __cinit__(self):
        self.fd = -1

    def __dealloc__(self):
        # still open: the runtime was dropped without close() and the GC freed this first
        if self.fd >= 0:
            rio_close(self.fd)
        free(self.iocp_ops)     # a pending AcceptEx holds a reference to us: none is


@cython.final
cdef class _PendingConnect:
    """An outbound connect or a listen waiting for a name lookup / the TCP handshake."""
    pass


# How long a graceful close waits, after half-closing, for the peer's EOF before it closes
# anyway (Apache's lingering close uses the same order of magnitude).
cdef int64_t LINGER_NS = 2000000000


cdef inline int _ceil_ms(int64_t ns):
    if ns <= 0:
        return 0
    if ns >= <int64_t>2000000000 * 1000000:
        return 2000000000
    return <int>((ns + 999999) // 1000000)


# no_gc_clear: a runtime dropped without close() is usually in a cycle (rt -> slots -> ctx -> rt);
# the GC's tp_clear would set slots/inbox to None before __dealloc__, which then leaked every fd.
@cython.no_gc_clear
cdef class ReactRuntime:
    """One event loop (epoll on Linux, IOCP on Windows).  Use it from one thread; other threads
    reach it only through its cmd_sender.  ``with ReactRuntime() as rt:`` closes it on exit.

    Keywords (defaults for every stream; send_connect and listener handlers may override the
    first two per connection):
      max_send_queue  bytes a stream may have queued; a send beyond it closes that stream
                      with SendQueueOverflowError (16 MiB)
      max_msg_size    the largest message: refused before dispatch when ExpectMsgSize(n)
                      announces more or an incomplete message fills the receive buffer, and
                      at its DropMsgSize(n) otherwise; closes that stream with
                      MessageTooLargeError (16 MiB)
      high_water, low_water  on_pause_writing above high_water queued bytes, then
                      on_resume_writing at low_water (64 KiB / 16 KiB)
      drain_timeout   seconds a graceful close may wait for the peer to take queued bytes
                      before it resets the connection (30 s; 0 = no limit)
      max_events      events taken per wait (1024)
    """

    def __cinit__(self):
        self.epfd = -1
        self.inbox = _Inbox()
        self.slots = []
        self.timers = []
        self.pending_connects = set()

    def __init__(self, *, max_send_queue=DEFAULT_MAX_SEND_QUEUE, max_msg_size=DEFAULT_MAX_MSG_SIZE,
                 high_water=DEFAULT_HIGH_WATER, low_water=DEFAULT_LOW_WATER,
                 drain_timeout=30.0, int max_events=1024):
        cdef epoll_event ev
        if max_events <= 0:
            raise ValueError("max_events must be positive")
        MsgSender(max_send_queue, high_water, low_water)       # validates the limits
        MsgReader(1, max_msg_size)
        self.max_send_queue = max_send_queue
        self.max_msg_size = max_msg_size
        self.high_water = high_water
        self.low_water = low_water
        self.drain_timeout = drain_timeout
        self.max_events = max_events
        self.cmd_sender = CmdSender.__new__(CmdSender)
        self.cmd_sender.inbox = self.inbox
        if REACTIO_IOCP:
            _iocp_init(self)
            return
        self.events = malloc(sizeof(epoll_event) * max_events)
        if self.events == NULL:
            raise MemoryError()
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise _net.os_error(rio_errno(), "epoll_create1")
        self.inbox.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.inbox.evfd < 0:
            raise _net.os_error(rio_errno(), "eventfd")
        ev.events = EPOLLIN
        ev.data.u64 = WAKE_KEY
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, self.inbox.evfd, &ev) != 0:
            raise _net.os_error(rio_errno(), "epoll_ctl(eventfd)")

    def __dealloc__(self):
        # no Python callbacks here: close() is where on_close and completions run
        if not self.closed:
            for obj in self.slots:      # (the GC may have emptied it: contexts close their own fd)
                if type(obj) is DispatchContext and (<DispatchContext>obj).fd >= 0:
                    rio_close((<DispatchContext>obj).fd)
                    (<DispatchContext>obj).fd = -1
                elif type(obj) is _Listener and (<_Listener>obj).fd >= 0:
                    rio_close((<_Listener>obj).fd)
                    (<_Listener>obj).fd = -1
            if self.inbox is not None:
                self.inbox.closed = True
                if self.inbox.evfd >= 0:
                    rio_close_fd(self.inbox.evfd)
            if self.epfd >= 0:
                rio_close_fd(self.epfd)
            if self.port != NULL and self.n_pending_ops == 0:
                w.CloseHandle(<w.HANDLE>self.port)
        free(self.events)
        free(self.gens)
        free(self.free_slots)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def get_cmd_sender(self):
        return self.cmd_sender

    # ------------------------------------------------------------------ counters

    def count_reactors(self):
        """Live streams and listeners."""
        return self.n_streams + self.n_listeners

    def count_streams(self):
        return self.n_streams

    def count_deferred_queue(self):
        """User commands waiting for their Deferred time."""
        return self.n_user_deferred

    def count_sock_events(self):
        return self.n_sock_events

    def count_received_commands(self):
        return self.n_received_cmds

    @property
    def closed(self):
        return self.closed

    def local_address(self, ReactorID reactor_id not None):
        """The local address of a stream or listener (a port-0 listener's real port)."""
        obj = self._lookup(reactor_id)
        if obj is None:
            raise ReactorNotFoundError(f"no reactor {reactor_id}")
        if type(obj) is _Listener:
            return _sock_address((<_Listener>obj).fd, False)
        return _sock_address((<DispatchContext>obj).fd, False)

    def peer_address(self, ReactorID reactor_id not None):
        obj = self._lookup(reactor_id)
        if type(obj) is not DispatchContext:
            raise ReactorNotFoundError(f"no stream {reactor_id}")
        return _sock_address((<DispatchContext>obj).fd, True)

    def get_context(self, ReactorID reactor_id not None):
        """The DispatchContext of a live stream, or None."""
        obj = self._lookup(reactor_id)
        return obj if type(obj) is DispatchContext else None

    # ------------------------------------------------------------------ running

    def process_events(self, double timeout=0.01):
        """Wait up to ``timeout`` seconds (0: poll without blocking, negative: no limit) for
        socket events, handle them, run due deferred commands and the queued commands.
        Returns False, without waiting, when there are no reactors, no pending connects and no
        queued or deferred commands."""
        return self._process(timeout, False)

    def run(self, double timeout=1.0):
        """process_events() until the runtime is idle."""
        while self._process(timeout, False):
            pass

    def run_forever(self, double timeout=1.0):
        """process_events() until stop() is called (from any thread; a stop() that came
        before this call makes it return at once)."""
        while not self.stopping:
            self._process(timeout, True)
        self.stopping = False

    def stop(self):
        """Make run_forever() return; thread-safe."""
        self.stopping = True
        if not self.inbox.closed and self.inbox.polling and not self.inbox.wake_pending:
            self.inbox.wake_pending = True
            self.inbox.wake()

    cdef bint _idle(self):
        return (self.n_streams == 0 and self.n_listeners == 0 and self.n_user_deferred == 0
                and not self.pending_connects and len(self.inbox.queue) == 0)

    cdef object _process(self, double timeout, bint wait_when_idle):
        cdef int timeout_ms
        cdef int64_t now, wait_ns
        if self.closed:
            raise RuntimeClosedError("the runtime is closed")
        if self.in_process:
            raise RuntimeError("process_events() called re-entrantly from a callback")
        if timeout != timeout:
            raise ValueError("timeout must be a number of seconds, not NaN")
        self.in_process = True
        try:
            if not wait_when_idle and self._idle():
                return False
            if timeout < 0 or timeout > 1e6:
                timeout_ms = -1         # no limit (commands and timers still wake the loop)
            else:
                timeout_ms = _ceil_ms(<int64_t>(timeout * 1e9))
            if timeout_ms != 0 and self.timers:
                now = rio_monotonic_ns()
                wait_ns = <int64_t>self.timers[0][0] - now
                if timeout_ms < 0 or _ceil_ms(wait_ns) < timeout_ms:
                    timeout_ms = _ceil_ms(wait_ns)
            self._poll(timeout_ms)
            if self.timers:
                self._run_timers()
            if self.inbox.queue:
                self._run_commands()
            return not self._idle()
        finally:
            self.in_process = False

    cdef int _poll(self, int timeout_ms) except -1:
        cdef epoll_event *evs = <epoll_event *>self.events
        cdef int n, i, err
        cdef uint64_t key, counter
        cdef uint32_t slot
        cdef _Inbox inbox = self.inbox
        cdef list slots = self.slots
        cdef DispatchContext ctx
        if REACTIO_IOCP:
            return _iocp_poll(self, timeout_ms)
        if timeout_ms != 0:
            inbox.polling = True
            if inbox.queue:
                timeout_ms = 0
        with nogil:
            n = epoll_wait(self.epfd, evs, self.max_events, timeout_ms)
        inbox.polling = False
        if n < 0:
            err = rio_errno()
            if err == EINTR:
                PyErr_CheckSignals()     # raises KeyboardInterrupt for Ctrl-C
                return 0
            raise _net.os_error(err, "epoll_wait")
        for i in range(n):
            key = evs[i].data.u64
            if key == WAKE_KEY:
                rio_read_u64(inbox.evfd, &counter)
                inbox.wake_pending = False
                continue
            self.n_sock_events += 1
            slot = <uint32_t>(key & 0xFFFFFFFFULL)
            if slot >= self.nslots or self.gens[slot] != <uint32_t>(key >> 32):
                continue        # the reactor closed earlier in this batch
            obj = <object>PyList_GET_ITEM(slots, slot)
            if type(obj) is DispatchContext:
                ctx = <DispatchContext>obj
                try:
                    self._handle_stream_event(ctx, evs[i].events)
                except (KeyboardInterrupt, SystemExit):
                    self._after_callback(ctx)
                    raise
                except BaseException as exc:
                    self._callback_failed(ctx, exc)
                if ctx.state >= ST_CLOSING:
                    self._after_callback(ctx)
            else:
                self._accept(<_Listener>obj)
        return 0

    cdef int _handle_stream_event(self, DispatchContext ctx, uint32_t ev) except -1:
        if ctx.state == ST_CONNECTING:
            return self._connect_ready(ctx)
        if ctx.state == ST_DRAINING:
            return self._drain_event(ctx, ev)
        if ev & EPOLLOUT:
            # also with an empty queue: drops the write interest, delivers owed completions
            self._flush_stream(ctx)
        if ctx.state == ST_OPEN and ev & (EPOLLIN | EPOLLERR | EPOLLHUP):
            self._readable(ctx)
        return 0

    cdef int _flush_stream(self, DispatchContext ctx) except -1:
        """Write the queue; completions and watermark callbacks run inside, so finalizing
        waits until they return."""
        ctx.in_callback += 1
        try:
            ctx._flush()
        finally:
            ctx.in_callback -= 1
        return 0

    cdef int _drain_event(self, DispatchContext ctx, uint32_t ev) except -1:
        """A graceful close in progress: write the queue, read and discard what the peer
        sends (unread input would make close() reset the connection and destroy the bytes
        still in flight), then half-close and wait for the peer's EOF (LINGER_NS at most)."""
        if ev & (EPOLLIN | EPOLLERR | EPOLLHUP):
            self._discard_input(ctx)
        if ctx.state == ST_DRAINING and ctx.sender.head != ctx.sender.tail:
            self._flush_stream(ctx)
        if ctx.state == ST_DRAINING and ctx.sender.head == ctx.sender.tail:
            self._drained(ctx)
        return 0

    cdef int _drained(self, DispatchContext ctx) except -1:
        """The queue of a closing stream is empty: half-close; finish at the peer's EOF."""
        cdef _Command timer
        if ctx.peer_eof:
            ctx.state = ST_CLOSING
            return 0
        if not (ctx.events & EPOLLOUT):
            return 0                # already half-closed: waiting for the peer's EOF
        shutdown(ctx.fd, SHUT_WR)
        ctx._set_events(EPOLLIN)
        if ctx.drain_timer is not None:
            self._cancel(<_Command>ctx.drain_timer)
        timer = _new_command(CMD_DRAIN_TIMEOUT, ctx, ctx.reactor_id, None, None, None)
        ctx.drain_timer = timer
        self._schedule(timer, rio_monotonic_ns() + LINGER_NS)
        return 0

    cdef int _discard_input(self, DispatchContext ctx) except -1:
        """Read and drop what the peer sent to a stream that is closing."""
        cdef char scratch[16384]
        cdef ssize_t n
        cdef int err
        while True:
            n = recv(ctx.fd, scratch, sizeof(scratch), 0)
            if n > 0:
                continue
            if n == 0:
                ctx.peer_eof = True
                if ctx.state == ST_DRAINING and ctx.sender.head == ctx.sender.tail:
                    ctx.state = ST_CLOSING
                return 0
            err = rio_errno()
            if err == EINTR:
                continue
            if not rio_would_block(err):
                self._request_close(ctx, _net.os_error(err, "recv while closing"), True)
            return 0

    cdef int _readable(self, DispatchContext ctx) except -1:
        ctx.in_callback += 1
        try:
            if ctx.default_readable:
                ctx.reader.fast_read(ctx)
            else:
                ctx.reactor.on_readable(ctx)
        finally:
            ctx.in_callback -= 1
        return 0

    # ------------------------------------------------------------------ errors and closing

    cdef int _callback_failed(self, DispatchContext ctx, exc) except -1:
        if ctx.close_error is exc:
            pass                # an error reactio raised itself after starting the close
        elif isinstance(exc, ReactioError):
            log.error("reactor %s (%s) closed: %s", ctx.reactor_id, type(ctx.reactor).__name__, exc)
        else:
            log.error("reactor %s (%s): callback raised %s; closing it", ctx.reactor_id,
                      type(ctx.reactor).__name__, type(exc).__name__, exc_info=exc)
        self._request_close(ctx, exc, isinstance(exc, (MessageTooLargeError, SendQueueOverflowError)))
        return 0

    cdef int _after_callback(self, DispatchContext ctx) except -1:
        if ctx.state == ST_CLOSING and ctx.in_callback == 0:
            self._finalize(ctx)
        return 0

    cdef int _request_close(self, DispatchContext ctx, object err, bint abort) except -1:
        cdef _Command timer
        if ctx.state >= ST_CLOSING:
            return 0
        if ctx.state == ST_DRAINING and not abort:
            return 0                # already closing gracefully: let the flush finish
        if ctx.close_error is None:
            ctx.close_error = err
        if abort:
            ctx.abort = True
        if not abort and ctx.state == ST_OPEN and ctx.sender.head != ctx.sender.tail:
            ctx.state = ST_DRAINING
            ctx._set_events(EPOLLIN | EPOLLOUT)
            if self.drain_timeout > 0:
                timer = _new_command(CMD_DRAIN_TIMEOUT, ctx, ctx.reactor_id, None, None, None)
                ctx.drain_timer = timer
                self._schedule(timer, rio_monotonic_ns() + <int64_t>(self.drain_timeout * 1e9))
            return 0
        if not abort and ctx.state == ST_OPEN and not REACTIO_IOCP:
            self._discard_input(ctx)    # unread input would turn close() into a reset
        ctx.state = ST_CLOSING
        if ctx.in_callback == 0:
            self._finalize(ctx)
        return 0

    cdef int _finalize(self, DispatchContext ctx) except -1:
        """Unregister, close the socket, free the slot, fail unsent completions, on_close."""
        cdef bint was_open = ctx.connect is None
        ctx.state = ST_CLOSED
        if ctx.drain_timer is not None:
            self._cancel(<_Command>ctx.drain_timer)
            ctx.drain_timer = None
        self._unregister(ctx.fd, ctx.abort)
        ctx.fd = -1
        self._free_slot(ctx.reactor_id.slot)
        if not was_open:
            return 0                     # a connect that never completed: no on_close
        self.n_streams -= 1
        held = None     # KeyboardInterrupt/SystemExit from a completion: raised after on_close
        q = ctx.sender.completions
        if q:
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
                    self._complete(cb, err)
                except (KeyboardInterrupt, SystemExit) as exc:
                    held = held or exc
        reactor = ctx.reactor
        reactor._close_error = ctx.close_error
        if log.isEnabledFor(logging.DEBUG):
            log.debug("reactor %s closed (%s); %d bytes unsent, %d unprocessed", ctx.reactor_id,
                      ctx.close_error, ctx.sender.tail - ctx.sender.head,
                      ctx.reader.end - ctx.reader.start)
        ctx.reader.view = None          # the buffers go now, not when the last ref does
        if ctx.sender.inflight_buf == NULL:
            free(ctx.sender.buf)
            ctx.sender.buf = NULL
            ctx.sender.cap = ctx.sender.head = ctx.sender.tail = 0
        try:
            reactor.on_close(ctx.reactor_id, self.cmd_sender)
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

    cdef int _unregister(self, int fd, bint abort) except -1:
        """Stop watching a socket and close it (with a reset when abort)."""
        cdef linger lg
        cdef epoll_event ev
        if REACTIO_IOCP:
            return _iocp_close_socket(self, fd, abort)
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, &ev)
        if abort:
            lg.l_onoff = 1
            lg.l_linger = 0
            rio_setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg))
        rio_close(fd)
        return 0

    cdef int _close_listener(self, _Listener lst) except -1:
        if lst.closed:
            return 0
        lst.closed = True
        self._unregister(lst.fd, False)
        lst.fd = -1
        self._free_slot(lst.reactor_id.slot)
        self.n_listeners -= 1
        try:
            lst.handler.on_close_listen(lst.reactor_id, self.cmd_sender)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            log.error("listener %s: on_close_listen raised %s", lst.reactor_id,
                      type(exc).__name__, exc_info=exc)
        return 0

    def close(self):
        """Close every stream and listener (each on_close / on_close_listen runs; queued bytes
        get one last non-blocking write), and fail every pending command's completion with
        RuntimeClosedError.  Idempotent."""
        if self.closed:
            return
        cdef _Command cmd
        cdef DispatchContext ctx
        if self.in_process:
            raise RuntimeError("close() called from a callback; use stop() or send_close()")
        # the callbacks run below may not re-enter process_events() or close() either
        self.in_process = True
        self.inbox.closed = True
        err = RuntimeClosedError("the runtime was closed")
        interrupted = None
        try:
            # A KeyboardInterrupt/SystemExit from a callback is raised only once everything is
            # closed: each pass resumes where the last stopped (finalized streams, closed
            # listeners, done connects and popped commands are not visited again).
            while True:
                try:
                    for obj in list(self.slots):
                        if type(obj) is DispatchContext:
                            ctx = <DispatchContext>obj
                            if ctx.state == ST_CLOSED:
                                continue
                            if ctx.state == ST_OPEN or ctx.state == ST_DRAINING:
                                try:
                                    ctx._flush()
                                except (KeyboardInterrupt, SystemExit) as exc:
                                    interrupted = interrupted or exc
                                except BaseException:
                                    pass
                            if ctx.state != ST_CLOSED:
                                ctx.state = ST_CLOSING
                                ctx.in_callback = 0
                                self._finalize(ctx)
                        elif type(obj) is _Listener:
                            self._close_listener(<_Listener>obj)
                    for p in list(self.pending_connects):
                        self._connect_failed(<_PendingConnect>p, err)
                    while self.inbox.queue:
                        cmd = <_Command>self.inbox.queue.popleft()
                        self._complete(cmd.completion, err)
                    while self.timers:
                        cmd = <_Command>heapq.heappop(self.timers)[2]
                        if cmd.kind < CMD_RESOLVED and not cmd.cancelled:
                            self.n_user_deferred -= 1
                            self._complete(cmd.completion, err)
                    break
                except (KeyboardInterrupt, SystemExit) as exc:
                    interrupted = interrupted or exc
        finally:
            self.in_process = False
            self.closed = True
            if REACTIO_IOCP:
                _iocp_drain(self)
                if self.n_pending_ops == 0:
                    w.CloseHandle(<w.HANDLE>self.port)
                self.port = NULL
                self.inbox.port = NULL
            else:
                rio_close_fd(self.inbox.evfd)
                self.inbox.evfd = -1
                rio_close_fd(self.epfd)
                self.epfd = -1
        if interrupted is not None:
            raise interrupted

    # ------------------------------------------------------------------ slots

    cdef object _lookup(self, ReactorID rid):
        if rid.slot < self.nslots and self.gens[rid.slot] == rid.generation:
            return self.slots[rid.slot]
        return None

    cdef ReactorID _alloc_slot(self, object obj):
        cdef uint32_t slot
        cdef Py_ssize_t newcap
        cdef void *p
        if self.nfree > 0:
            self.nfree -= 1
            slot = self.free_slots[self.nfree]
            self.slots[slot] = obj
        else:
            if self.nslots == self.slots_cap:
                newcap = max(64, 2 * self.slots_cap)
                p = realloc(self.gens, newcap * sizeof(uint32_t))
                if p == NULL:
                    raise MemoryError()
                self.gens = <uint32_t *>p
                p = realloc(self.free_slots, newcap * sizeof(uint32_t))
                if p == NULL:
                    raise MemoryError()
                self.free_slots = <uint32_t *>p
                self.slots_cap = newcap
            slot = <uint32_t>self.nslots
            self.gens[slot] = 1
            self.nslots += 1
            self.slots.append(obj)
        return ReactorID(slot, self.gens[slot])

    cdef void _free_slot(self, uint32_t slot):
        self.slots[slot] = None
        self.gens[slot] += 1
        if self.gens[slot] == 0:
            self.gens[slot] = 1
        self.free_slots[self.nfree] = slot
        self.nfree += 1

    cdef DispatchContext _new_stream(self, int fd, Reactor reactor, Py_ssize_t recv_min,
                                     object max_send_queue, object max_msg_size, bint nodelay,
                                     bint connecting):
        cdef DispatchContext ctx = DispatchContext.__new__(DispatchContext)
        cdef epoll_event ev
        cdef int one = 1
        try:
            ctx.rt = self
            ctx.reactor = reactor
            ctx.fd = fd
            ctx.reader = MsgReader(recv_min, self.max_msg_size if max_msg_size is None else max_msg_size)
            ctx.sender = MsgSender(self.max_send_queue if max_send_queue is None else max_send_queue,
                                   self.high_water, self.low_water)
            ctx.default_readable = getattr(type(reactor), "on_readable") is _DEFAULT_ON_READABLE
            f = getattr(type(reactor), "on_inbound_message")
            if type(f) is types.FunctionType and "on_inbound_message" not in getattr(
                    reactor, "__dict__", ()):
                ctx.py_on_inbound = f
        except BaseException:
            ctx.fd = -1             # not ours to close twice in __dealloc__
            rio_close(fd)
            raise
        if nodelay and not connecting:
            rio_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
        ctx.reactor_id = self._alloc_slot(ctx)
        ctx.state = ST_CONNECTING if connecting else ST_OPEN
        ctx.events = EPOLLOUT if connecting else EPOLLIN
        if REACTIO_IOCP:
            ctx.iocp_ops = calloc(2, sizeof(rio_op))
            try:
                if ctx.iocp_ops == NULL:
                    raise MemoryError()
                _iocp_register(self, fd, ctx.reactor_id)
            except BaseException:
                self._free_slot(ctx.reactor_id.slot)
                ctx.state = ST_CLOSED
                rio_close(fd)
                ctx.fd = -1
                raise
            return ctx
        ev.events = ctx.events
        ev.data.u64 = (<uint64_t>ctx.reactor_id.generation << 32) | ctx.reactor_id.slot
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) != 0:
            err = _net.os_error(rio_errno(), "epoll_ctl(ADD)")
            self._free_slot(ctx.reactor_id.slot)
            ctx.state = ST_CLOSED
            rio_close(fd)
            ctx.fd = -1
            raise err
        return ctx

    cdef object _connected(self, DispatchContext ctx, object listener_id):
        """Count the stream and run on_connected; returns its exception, or None."""
        failed = None
        self.n_streams += 1
        ctx.in_callback += 1
        try:
            ctx.reactor.on_connected(ctx, listener_id)
        except (KeyboardInterrupt, SystemExit):
            ctx.in_callback -= 1
            self._after_callback(ctx)
            ctx.in_callback += 1                # (the finally below takes it back)
            raise
        except BaseException as exc:
            self._callback_failed(ctx, exc)
            failed = exc
        finally:
            ctx.in_callback -= 1
        if REACTIO_IOCP and ctx.state == ST_OPEN:
            try:
                _iocp_arm_recv(self, ctx)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                self._callback_failed(ctx, exc)
        self._after_callback(ctx)
        return failed

    # ------------------------------------------------------------------ accept

    cdef int _accept(self, _Listener lst) except -1:
        cdef sockaddr_storage ss
        cdef socklen_t n
        cdef int fd, err, i
        for i in range(64):         # bounded: other sockets get their turn
            if lst.closed:
                return 0
            n = sizeof(ss)
            fd = accept4(lst.fd, <sockaddr *>&ss, &n, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                err = rio_errno()
                if err == EINTR:
                    continue
                if rio_would_block(err):
                    return 0
                if err == EMFILE or err == ENFILE or err == ENOBUFS or err == ENOMEM:
                    # the pending connection stays in the backlog and level-triggered epoll
                    # would report it forever: stop listening for a moment instead of spinning
                    log.warning("listener %s: accept failed: %s; pausing accepts for 100 ms",
                                lst.reactor_id, os.strerror(err))
                    return self._pause_accepts(lst)
                log.info("listener %s: accept failed: %s (connection dropped)",
                         lst.reactor_id, os.strerror(err))
                continue
            self._adopt(lst, fd, _sockaddr_to_tuple(<sockaddr *>&ss))
        return 0

    cdef int _pause_accepts(self, _Listener lst) except -1:
        """Out of descriptors: the pending connection stays in the backlog and level-triggered
        epoll would report it forever, so stop listening for 100 ms instead of spinning."""
        cdef epoll_event ev
        cdef _Command timer
        if not REACTIO_IOCP:
            ev.events = 0
            ev.data.u64 = (<uint64_t>lst.reactor_id.generation << 32) | lst.reactor_id.slot
            epoll_ctl(self.epfd, EPOLL_CTL_MOD, lst.fd, &ev)
        lst.paused = True
        timer = _new_command(CMD_RESUME_ACCEPT, lst, lst.reactor_id, None, None, None)
        self._schedule(timer, rio_monotonic_ns() + 100000000)
        return 0

    cdef int _adopt(self, _Listener lst, int fd, object peer) except -1:
        cdef DispatchContext ctx
        try:
            reactor = lst.handler.on_new_connection(peer)
        except (KeyboardInterrupt, SystemExit):
            rio_close(fd)
            raise
        except BaseException as exc:
            log.error("listener %s: on_new_connection raised %s; connection from %s dropped",
                      lst.reactor_id, type(exc).__name__, peer, exc_info=exc)
            rio_close(fd)
            return 0
        if reactor is None:
            rio_close(fd)
            return 0
        if not isinstance(reactor, Reactor):
            log.error("listener %s: on_new_connection returned %r, not a Reactor or None; "
                      "connection from %s dropped", lst.reactor_id, reactor, peer)
            rio_close(fd)
            return 0
        try:
            ctx = self._new_stream(fd, <Reactor>reactor, lst.recv_min, lst.max_send_queue,
                                   lst.max_msg_size, lst.nodelay, False)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            log.error("listener %s: cannot add the connection from %s: %s", lst.reactor_id,
                      peer, exc)
            return 0
        self._connected(ctx, lst.reactor_id)
        return 0

    # ------------------------------------------------------------------ connect / listen

    cdef int _start_connect(self, _Command cmd) except -1:
        cdef _PendingConnect p = _PendingConnect.__new__(_PendingConnect)
        cdef _Command timer
        addr, reactor = cmd.a
        p.recv_min, max_send_queue, max_msg_size, p.nodelay, p.timeout = cmd.b
        p.max_send_queue = self.max_send_queue if max_send_queue is None else max_send_queue
        p.max_msg_size = self.max_msg_size if max_msg_size is None else max_msg_size
        p.addr = addr
        p.reactor = reactor
        p.completion = cmd.completion
        self.pending_connects.add(p)
        if p.timeout is not None:
            timer = _new_command(CMD_CONNECT_TIMEOUT, p, None, None, None, None)
            p.timer = timer
            self._schedule(timer, rio_monotonic_ns() + <int64_t>(p.timeout * 1e9))
        self._resolve(p)
        return 0

    cdef int _start_listen(self, _Command cmd) except -1:
        cdef _PendingConnect p = _PendingConnect.__new__(_PendingConnect)
        p.is_listen = True
        p.addr = cmd.a
        p.handler = cmd.b
        p.completion = cmd.completion
        self.pending_connects.add(p)
        self._resolve(p)
        return 0

    cdef int _resolve(self, _PendingConnect p) except -1:
        try:
            host, port = _net.parse_address(p.addr)
            infos = _net.resolve_numeric(host, port)
        except Exception as exc:
            self._connect_failed(p, exc)
            return 0
        if infos is not None:
            return self._resolved(p, infos)
        sender = self.cmd_sender

        def done(result, p=p, sender=sender):
            try:
                sender._post_internal(CMD_RESOLVED, p, result)
            except RuntimeClosedError:
                pass        # close() already failed this command's completion

        _net.resolve_async(host, port, p.is_listen, done)
        return 0

    cdef int _resolved(self, _PendingConnect p, object result) except -1:
        if p.done:
            return 0
        if isinstance(result, BaseException):
            return self._connect_failed(p, result)
        p.infos = result
        p.idx = 0
        if p.is_listen:
            return self._bind(p)
        return self._try_next_address(p)

    cdef int _bind(self, _PendingConnect p) except -1:
        cdef _Listener lst
        cdef epoll_event ev
        handler = p.handler
        family, sockaddr_ = p.infos[0]
        try:
            fd = _net.open_listener(family, sockaddr_, getattr(handler, "backlog", 1024),
                                    getattr(handler, "reuse_port", False), dual_stack=getattr(handler, "dual_stack", False))
        except Exception as exc:
            return self._connect_failed(p, exc)
        lst = _Listener.__new__(_Listener)
        lst.fd = fd
        lst.handler = handler
        try:
            lst.recv_min = getattr(handler, "recv_buffer_min_size", 4096)
            v = getattr(handler, "max_send_queue", None)
            lst.max_send_queue = self.max_send_queue if v is None else v
            v = getattr(handler, "max_msg_size", None)
            lst.max_msg_size = self.max_msg_size if v is None else v
            lst.nodelay = getattr(handler, "nodelay", True)
            MsgReader(lst.recv_min, lst.max_msg_size)      # validates the options
            MsgSender(lst.max_send_queue, self.high_water, self.low_water)
        except Exception as exc:
            rio_close(fd)
            lst.fd = -1             # closed here; __dealloc__ must not close the number again
            return self._connect_failed(p, exc)
        lst.reactor_id = self._alloc_slot(lst)
        lst.family = family
        try:
            if REACTIO_IOCP:
                lst.iocp_ops = calloc(ACCEPTS_PER_LISTENER, sizeof(rio_op))
                if lst.iocp_ops == NULL:
                    raise MemoryError()
                _iocp_register(self, fd, lst.reactor_id)
            else:
                ev.events = EPOLLIN
                ev.data.u64 = (<uint64_t>lst.reactor_id.generation << 32) | lst.reactor_id.slot
                if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) != 0:
                    raise _net.os_error(rio_errno(), "epoll_ctl(ADD)")
        except Exception as exc:
            self._free_slot(lst.reactor_id.slot)
            rio_close(fd)
            lst.fd = -1
            lst.closed = True
            return self._connect_failed(p, exc)
        self.n_listeners += 1
        p.done = True
        self.pending_connects.discard(p)
        try:
            handler.on_start_listen(lst.reactor_id, self.cmd_sender)
        except (KeyboardInterrupt, SystemExit) as exc:
            self._complete(p.completion, exc)
            raise
        except BaseException as exc:
            log.error("listener %s: on_start_listen raised %s; closing it", lst.reactor_id,
                      type(exc).__name__, exc_info=exc)
            self._close_listener(lst)
            self._complete(p.completion, exc)
            return 0
        if REACTIO_IOCP:
            _iocp_post_accepts(self, lst)
        self._complete(p.completion, lst.reactor_id)
        return 0

    cdef int _try_next_address(self, _PendingConnect p) except -1:
        cdef DispatchContext ctx
        while p.idx < len(p.infos):
            family, sockaddr_ = p.infos[p.idx]
            p.idx += 1
            try:
                if REACTIO_IOCP:
                    fd = _net.new_socket(family, p.nodelay)
                else:
                    fd = _net.start_connect(family, sockaddr_, p.nodelay)[0]
                ctx = self._new_stream(fd, p.reactor, p.recv_min, p.max_send_queue,
                                       p.max_msg_size, p.nodelay, True)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                p.last_error = exc
                continue
            ctx.connect = p
            p.ctx = ctx
            if REACTIO_IOCP:
                try:
                    _iocp_connect(self, ctx, family, sockaddr_)
                except Exception as exc:
                    p.last_error = exc
                    if p.ctx is ctx:
                        self._discard_connecting(ctx)
                        p.ctx = None
                    continue
            return 0        # EPOLLOUT (or ERR/HUP) reports the outcome, even if immediate
        return self._connect_failed(
            p, p.last_error if p.last_error is not None else OSError(f"no address for {p.addr!r}"))

    cdef int _connect_ready(self, DispatchContext ctx) except -1:
        cdef _PendingConnect p = <_PendingConnect>ctx.connect
        cdef int err = 0
        cdef socklen_t n = sizeof(err)
        if rio_getsockopt(ctx.fd, SOL_SOCKET, SO_ERROR, &err, &n) != 0:
            err = rio_errno()
        if err != 0:
            p.last_error = _net.os_error(err, f"connect to {p.addr!r}")
            self._discard_connecting(ctx)
            return self._try_next_address(p)
        return self._connect_succeeded(ctx, p)

    cdef int _connect_succeeded(self, DispatchContext ctx, _PendingConnect p) except -1:
        p.done = True
        p.ctx = None
        self.pending_connects.discard(p)
        if p.timer is not None:
            self._cancel(p.timer)
        ctx.connect = None
        ctx.state = ST_OPEN
        ctx._set_events(EPOLLIN)
        try:
            failed = self._connected(ctx, None)
        except BaseException as exc:            # KeyboardInterrupt/SystemExit from on_connected
            self._complete(p.completion, exc)
            raise
        self._complete(p.completion, failed if failed is not None else ctx.reactor_id)
        return 0

    cdef int _discard_connecting(self, DispatchContext ctx) except -1:
        if ctx.state == ST_CLOSED:
            # already discarded (a refused connect: _connect_ready, then _connect_failed) or
            # finalized by close(): freeing the slot twice put it twice on the free list,
            # so two reactors shared a ReactorID and free_slots overflowed its allocation
            return 0
        self._unregister(ctx.fd, False)
        ctx.fd = -1
        ctx.state = ST_CLOSED
        self._free_slot(ctx.reactor_id.slot)
        return 0

    cdef int _connect_failed(self, _PendingConnect p, object exc) except -1:
        if p.done:
            return 0
        p.done = True
        self.pending_connects.discard(p)
        if p.ctx is not None:
            self._discard_connecting(p.ctx)
            p.ctx = None
        if p.timer is not None:
            self._cancel(p.timer)
        self._complete(p.completion, exc)
        return 0

    # ------------------------------------------------------------------ timers and commands

    cdef int _schedule(self, _Command cmd, int64_t due_ns) except -1:
        cmd.due_ns = due_ns
        self.timer_seq += 1
        heapq.heappush(self.timers, (due_ns, self.timer_seq, cmd))
        return 0

    cdef int _cancel(self, _Command cmd) except -1:
        if not cmd.cancelled:
            cmd.cancelled = True
            cmd.target = cmd.a = cmd.b = cmd.completion = None  # the heap entry stays a while
            self.n_cancelled_timers += 1
            if self.n_cancelled_timers > 64 and self.n_cancelled_timers * 2 > len(self.timers):
                self.timers = [t for t in self.timers if not (<_Command>t[2]).cancelled]
                heapq.heapify(self.timers)
                self.n_cancelled_timers = 0
        return 0

    cdef int _run_timers(self) except -1:
        cdef int64_t now = rio_monotonic_ns()
        cdef _Command cmd
        cdef list timers = self.timers
        while timers and <int64_t>timers[0][0] <= now:
            cmd = <_Command>heapq.heappop(timers)[2]
            if cmd.cancelled:
                self.n_cancelled_timers -= 1
                continue
            if cmd.kind < CMD_RESOLVED:
                self.n_user_deferred -= 1
            self._execute(cmd)
            timers = self.timers        # close() inside a command may have replaced it
        return 0

    cdef int _run_commands(self) except -1:
        """Run the commands queued when the drain starts (later ones wait for the next round,
        so a command that sends commands cannot starve the sockets).  Deferred commands go
        through the timer heap even when already due, so they always run in due order."""
        cdef Py_ssize_t i, n
        cdef _Command cmd
        cdef bint deferred = False
        q = self.inbox.queue
        n = len(q)
        for i in range(n):
            if not q:
                break
            cmd = <_Command>q.popleft()
            if cmd.kind < CMD_RESOLVED:
                self.n_received_cmds += 1
            if cmd.due_ns != 0:
                self.n_user_deferred += 1
                self._schedule(cmd, cmd.due_ns)
                deferred = True
                continue
            self._execute(cmd)
        if deferred:
            self._run_timers()
        return 0

    cdef int _execute(self, object command) except -1:
        cdef _Command cmd = <_Command>command
        try:
            if cmd.kind == CMD_USER:
                self._exec_user(cmd)
            elif cmd.kind == CMD_CLOSE:
                self._exec_close(cmd)
            elif cmd.kind == CMD_CONNECT:
                self._start_connect(cmd)
            elif cmd.kind == CMD_LISTEN:
                self._start_listen(cmd)
            elif cmd.kind == CMD_RESOLVED:
                self._resolved(<_PendingConnect>cmd.target, cmd.a)
            elif cmd.kind == CMD_CONNECT_TIMEOUT:
                self._exec_connect_timeout(<_PendingConnect>cmd.target)
            elif cmd.kind == CMD_RESUME_ACCEPT:
                self._exec_resume_accept(<_Listener>cmd.target, cmd.a)
            elif cmd.kind == CMD_DRAIN_TIMEOUT:
                self._exec_drain_timeout(<DispatchContext>cmd.target, cmd.a)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            log.error("command %d failed inside reactio: %s", cmd.kind, exc, exc_info=exc)
            self._complete(cmd.completion, exc)
        return 0

    cdef int _exec_user(self, _Command cmd) except -1:
        cdef DispatchContext ctx
        obj = self._lookup(<ReactorID>cmd.target)
        if obj is None:
            return self._complete(cmd.completion, ReactorNotFoundError(
                f"no reactor {cmd.target}: it was closed or the id is stale"))
        if type(obj) is _Listener:
            return self._complete(cmd.completion, ReactorNotFoundError(
                f"{cmd.target} is a listener; user commands go to stream reactors"))
        ctx = <DispatchContext>obj
        if ctx.state != ST_OPEN:
            return self._complete(cmd.completion, ReactorClosedError(
                f"reactor {cmd.target} is not open"))
        result = ctx.reactor_id
        ctx.in_callback += 1
        try:
            ctx.reactor.on_command(cmd.a, ctx)
        except CommandNotHandledError as exc:
            result = exc
        except (KeyboardInterrupt, SystemExit) as exc:
            ctx.in_callback -= 1
            self._complete(cmd.completion, exc)     # exactly once, even when unwinding
            ctx.in_callback += 1                    # (the finally below takes it back)
            raise
        except BaseException as exc:
            self._callback_failed(ctx, exc)
            result = exc
        finally:
            ctx.in_callback -= 1
        self._after_callback(ctx)
        return self._complete(cmd.completion, result)

    cdef int _exec_close(self, _Command cmd) except -1:
        obj = self._lookup(<ReactorID>cmd.target)
        if obj is None:
            return self._complete(cmd.completion, ReactorNotFoundError(
                f"no reactor {cmd.target}: it was closed or the id is stale"))
        try:
            if type(obj) is _Listener:
                self._close_listener(<_Listener>obj)
            else:
                self._request_close(<DispatchContext>obj, None, cmd.a)
        finally:        # on_close may unwind with KeyboardInterrupt: the completion still runs
            self._complete(cmd.completion, cmd.target)
        return 0

    cdef int _exec_connect_timeout(self, _PendingConnect p) except -1:
        if not p.done:
            p.timer = None
            self._connect_failed(p, TimeoutError(
                f"connect to {p.addr!r} timed out after {p.timeout} s"))
        return 0

    cdef int _exec_resume_accept(self, _Listener lst, ReactorID rid) except -1:
        cdef epoll_event ev
        if lst.closed or self._lookup(rid) is not lst:
            return 0
        lst.paused = False
        if REACTIO_IOCP:
            return _iocp_post_accepts(self, lst)
        ev.events = EPOLLIN
        ev.data.u64 = (<uint64_t>rid.generation << 32) | rid.slot
        if epoll_ctl(self.epfd, EPOLL_CTL_MOD, lst.fd, &ev) != 0:
            log.error("listener %s: cannot resume accepting: %s", rid, os.strerror(rio_errno()))
        return 0

    cdef int _exec_drain_timeout(self, DispatchContext ctx, ReactorID rid) except -1:
        ctx.drain_timer = None
        if ctx.state != ST_DRAINING or self._lookup(rid) is not ctx:
            return 0
        if ctx.sender.head == ctx.sender.tail:
            ctx.state = ST_CLOSING  # everything was sent; the peer just never closed
        else:
            self._request_close(ctx, TimeoutError(
                f"graceful close of {rid}: {ctx.sender.tail - ctx.sender.head} queued bytes "
                f"not taken by the peer within {self.drain_timeout} s"), True)
        self._after_callback(ctx)
        return 0

    cdef int _complete(self, object completion, object result) except -1:
        if completion is None:
            return 0
        try:
            completion(result)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            log.error("completion %r raised %s", completion, type(exc).__name__, exc_info=exc)
        return 0
