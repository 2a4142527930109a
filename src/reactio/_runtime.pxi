# ReactRuntime: one event loop.  process_events() = wait for socket events (GIL released), handle
# them, run due timers (deferred commands), run the commands queued when the drain began, and
# run owed send completions after each of those steps.
from cpython.pythread cimport PyThread_get_thread_ident


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
    pass


cdef inline int _ceil_ms(int64_t ns):
    if ns <= 0:
        return 0
    if ns >= <int64_t>2000000000 * 1000000:
        return 2000000000
    return <int>((ns + 999999) // 1000000)


# epoll_wait() refuses more than INT_MAX / sizeof(struct epoll_event) events; the IOCP entry is
# larger, so this bound holds for both backends.
cdef int MAX_EVENTS = 2147483647 // max(sizeof(epoll_event), sizeof(w.OVERLAPPED_ENTRY))


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
                      before it resets the connection (30 s; 0 or inf = no limit)
      max_events      events taken per wait (1024; at most MAX_EVENTS, what epoll_wait takes)
    A bad value raises ValueError (TypeError for a wrong type) here.
    """

    def __cinit__(self):
        self.epfd = -1
        self.inbox = _Inbox()
        self.slots = []
        self.timers = []
        self.ready = []
        self.iocp_rearm = []
        self.pending_connects = set()
        self.fork_epoch = _fork_epoch

    def __init__(self, *, max_send_queue=DEFAULT_MAX_SEND_QUEUE, max_msg_size=DEFAULT_MAX_MSG_SIZE,
                 high_water=DEFAULT_HIGH_WATER, low_water=DEFAULT_LOW_WATER,
                 drain_timeout=30.0, max_events=1024):
        cdef epoll_event ev
        if self.initialized:
            raise RuntimeError("ReactRuntime.__init__ called twice; make a new runtime instead")
        _check_runtime_limits(max_send_queue, max_msg_size, high_water, low_water)
        self.max_events = _size_option(max_events, "max_events", 1, MAX_EVENTS)
        self.drain_ns = _limit_ns(drain_timeout, "drain_timeout")
        self.drain_timeout = drain_timeout
        self.max_send_queue = max_send_queue
        self.max_msg_size = max_msg_size
        self.high_water = high_water
        self.low_water = low_water
        self.initialized = True
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

    def call_later(self, seconds, callback, *args):
        """Run ``callback(*args)`` on this runtime's thread after ``seconds`` (a finite number
        >= 0); returns a TimerHandle.  Same clock and order as deferred commands; an exception
        from the callback is logged and the loop goes on.  Use from the runtime's thread
        (other threads: cmd_sender.send_call)."""
        return self.call_at(rio_monotonic_ns() + _delay_ns(seconds, "call_later()"), callback,
                            *args)

    def call_at(self, monotonic_ns, callback, *args):
        """Run ``callback(*args)`` at ``monotonic_ns`` (reactio.monotonic_ns() clock); returns
        a TimerHandle."""
        cdef int64_t when = _due_ns(monotonic_ns)
        if self.closed:
            raise RuntimeClosedError("the runtime is closed")
        if self.in_process and PyThread_get_thread_ident() != self.owner_thread:
            raise RuntimeError("call_at()/call_later() from another thread while the runtime "
                               "runs: use cmd_sender.send_call (thread-safe)")
        return _schedule_call(self, when, callback, args)

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
        if (not self.inbox.closed and (self.inbox.polling or self.inbox.external)
                and not self.inbox.wake_pending):
            self.inbox.wake_pending = True
            self.inbox.wake()

    # ------------------------------------------------------------------ another event loop

    def fileno(self):
        """The epoll descriptor, for driving this runtime from another event loop
        (reactio.aio): it polls readable while socket events are pending, and -- once
        _external_poll(True) -- when a command arrives.  IOCP has no pollable descriptor:
        NotImplementedError."""
        if REACTIO_IOCP:
            raise NotImplementedError("an IOCP runtime has no pollable descriptor; drive it "
                                      "from a thread (reactio.aio does)")
        if self.epfd < 0:
            raise RuntimeClosedError("the runtime is closed")
        return self.epfd

    def _external_poll(self, bint on):
        """While on, a command from another thread always wakes fileno() (normally only a
        loop blocked in process_events() is woken)."""
        self.inbox.external = on
        if on and self.inbox.queue and not self.inbox.wake_pending and not self.inbox.closed:
            self.inbox.wake_pending = True
            self.inbox.wake()

    def _next_due_ns(self):
        """When process_events() has work without a socket event: 0 (now) for queued commands
        or owed completions, the monotonic ns of the earliest timer, or None."""
        if self.ready or self.inbox.queue or self.iocp_rearm:
            return 0
        if self.timers:
            return self.timers[0][0]
        return None

    cdef bint _idle(self):
        return (self.n_streams == 0 and self.n_listeners == 0 and self.n_user_deferred == 0
                and self.n_timers == 0 and not self.pending_connects and len(self.inbox.queue) == 0 and not self.ready)

    cdef int _check_usable(self) except -1:
        if self.fork_epoch != _fork_epoch:
            raise RuntimeError("this ReactRuntime was made before fork(): a child process may "
                               "only close() it (that releases the child's copies of its "
                               "sockets); make a new runtime in the child")
        if not self.initialized:
            raise RuntimeError("ReactRuntime.__init__ was not called")
        if self.closed:
            raise RuntimeClosedError("the runtime is closed")
        if self.in_process:
            if PyThread_get_thread_ident() != self.owner_thread:
                raise RuntimeError("the runtime is running in another thread: a runtime is used "
                                   "from one thread; reach it through its cmd_sender")
            raise RuntimeError("process_events()/run() called re-entrantly from a callback: "
                               "return from the callback instead (use a deferred command, or "
                               "stop() to leave run_forever())")
        return 0

    cdef object _process(self, double timeout, bint wait_when_idle):
        cdef int timeout_ms
        cdef int64_t now, wait_ns
        self._check_usable()
        if timeout != timeout:
            raise ValueError("timeout must be a number of seconds, not NaN")
        self.in_process = True
        self.owner_thread = PyThread_get_thread_ident()
        try:
            if self.ready:
                self._run_ready()   # completions owed by sends made outside process_events
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
            if self.ready:
                self._run_ready()
            return not self._idle()
        finally:
            self.in_process = False

    cdef int _run_ready(self) except -1:
        """Run the send completions owed to streams whose bytes were all written inside a
        send_or_que call: in send order, after the callback that sent them.  One round: those
        that completions of this round owe run in the next one, so a chain of sends cannot
        starve the sockets."""
        cdef DispatchContext ctx
        ready = self.ready
        self.ready = []
        for obj in ready:
            ctx = <DispatchContext>obj
            ctx.in_ready = False
            if ctx.state == ST_CLOSED:
                continue                # finalize delivered them
            _hold(ctx)
            try:
                ctx._flush_completions()
            finally:
                _release(self, ctx)
        return 0

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
            if inbox.queue or self.ready:
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
                _hold(ctx)
                try:
                    self._handle_stream_event(ctx, evs[i].events)
                except (KeyboardInterrupt, SystemExit):
                    _release(self, ctx)
                    raise
                except BaseException as exc:
                    self._callback_failed(ctx, exc)
                _release(self, ctx)
            else:
                self._accept(<_Listener>obj)
        return 0

    cdef int _handle_stream_event(self, DispatchContext ctx, uint32_t ev) except -1:
        """One epoll event of a held stream."""
        cdef int st = ctx.state
        if st == ST_OPEN:
            if ev & EPOLLOUT:
                # also with an empty queue: drops the write interest, delivers owed completions
                ctx._flush()
            if ctx.state == ST_OPEN and ev & (EPOLLIN | EPOLLERR | EPOLLHUP):
                self._readable(ctx)
        elif st == ST_CONNECTING:
            self._connect_ready(ctx)
        elif st == ST_DRAINING or st == ST_HALF_CLOSED:
            if ev & (EPOLLIN | EPOLLERR | EPOLLHUP) and not ctx.peer_eof:
                _closing_input(self, ctx)
            if ctx.state == ST_DRAINING:
                ctx._flush()
        return 0

    cdef int _readable(self, DispatchContext ctx) except -1:
        if ctx.default_readable:
            ctx.reader.fast_read(ctx)
        else:
            ctx.reactor.on_readable(ctx)
        return 0

    # ------------------------------------------------------------------ errors and closing

    cdef int _callback_failed(self, DispatchContext ctx, exc) except -1:
        """A callback of this stream raised (or reactio raised inside one): close the stream
        (abort for a broken limit).  A reactio rule broken (ReactioError) is logged once, when
        the stream is finalized; anything else here, with its traceback."""
        if ctx.close_error is not exc and not isinstance(exc, ReactioError):
            # (an error reactio raised itself after starting the close is logged at finalize)
            log.error("reactor %s (%s): callback raised %s; closing it", ctx.reactor_id,
                      type(ctx.reactor).__name__, type(exc).__name__, exc_info=exc)
        _stream_event(self, ctx, EV_ABORT if isinstance(
            exc, (MessageTooLargeError, SendQueueOverflowError)) else EV_CLOSE, exc)
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
        if self.fork_epoch != _fork_epoch:
            return self._close_in_child()
        if not self.initialized:
            self.closed = self.inbox.closed = True
            return
        if self.in_process:
            if PyThread_get_thread_ident() != self.owner_thread:
                raise RuntimeError("close() from another thread while the runtime runs in its "
                                   "own: stop() it (thread-safe) and close it from its thread")
            raise RuntimeError("close() called from a callback; use stop() or send_close()")
        # the callbacks run below may not re-enter process_events() or close() either
        self.in_process = True
        self.owner_thread = PyThread_get_thread_ident()
        self.inbox.closed = True
        err = RuntimeClosedError("the runtime was closed")
        interrupted = None
        try:
            # A KeyboardInterrupt/SystemExit from a callback is raised only once everything is
            # closed: each pass resumes where the last stopped (finalized streams, closed
            # listeners, done connects and popped commands are not visited again).
            while True:
                try:
                    for p in list(self.pending_connects):
                        self._connect_failed(<_PendingConnect>p, err)
                    self._warn_unsent()
                    for obj in list(self.slots):
                        if type(obj) is DispatchContext:
                            ctx = <DispatchContext>obj
                            if ctx.state == ST_CLOSED:
                                continue
                            if ctx.state == ST_OPEN or ctx.state == ST_DRAINING:
                                _hold(ctx)      # one last non-blocking write
                                try:
                                    ctx._flush()
                                except (KeyboardInterrupt, SystemExit) as exc:
                                    interrupted = interrupted or exc
                                except BaseException:
                                    pass
                                finally:
                                    ctx.holds -= 1
                            if ctx.state != ST_CLOSED:
                                ctx.state = ST_CLOSING
                                ctx.holds = 0
                                _finalize(self, ctx)
                        elif type(obj) is _Listener:
                            self._close_listener(<_Listener>obj)
                    self.ready = []
                    while self.inbox.queue:
                        cmd = <_Command>self.inbox.queue.popleft()
                        self._complete(cmd.completion, err)
                    while self.timers:
                        cmd = <_Command>heapq.heappop(self.timers)[2]
                        if cmd.cancelled:
                            continue
                        if cmd.kind < CMD_RESOLVED:
                            self.n_user_deferred -= 1
                            self._complete(cmd.completion, err)
                        elif cmd.kind == CMD_TIMER:
                            (<TimerHandle>cmd.target).cancel()
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

    cdef int _warn_unsent(self) except -1:
        """close() drops what the kernel does not take in one last write: say how much."""
        cdef Py_ssize_t nbytes = 0, nstreams = 0, queued
        cdef DispatchContext ctx
        for obj in self.slots:
            if type(obj) is DispatchContext:
                ctx = <DispatchContext>obj
                if ctx.state < ST_CLOSED and ctx.sender is not None:
                    _hold(ctx)
                    try:
                        if ctx.state == ST_OPEN or ctx.state == ST_DRAINING:
                            ctx._flush()
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except BaseException:
                        pass
                    finally:
                        ctx.holds -= 1
                    queued = ctx.sender.tail - ctx.sender.head
                    if queued > 0:
                        nbytes += queued
                        nstreams += 1
        if nbytes:
            log.warning("runtime close: %d unsent bytes of %d stream(s) dropped (close streams "
                        "with send_close and run the loop until they are gone to deliver "
                        "them)", nbytes, nstreams)
        return 0

    cdef int _close_in_child(self) except -1:
        """close() in a child after fork(): the epoll set, the sockets and the eventfd are
        shared with the parent, which still uses them.  Close the child's descriptors and
        nothing else: no epoll_ctl, no shutdown, no SO_LINGER, no writes, no callbacks."""
        self.closed = self.inbox.closed = True
        for obj in self.slots:
            if type(obj) is DispatchContext and (<DispatchContext>obj).fd >= 0:
                rio_close((<DispatchContext>obj).fd)
                (<DispatchContext>obj).fd = -1
                (<DispatchContext>obj).state = ST_CLOSED
            elif type(obj) is _Listener and (<_Listener>obj).fd >= 0:
                rio_close((<_Listener>obj).fd)
                (<_Listener>obj).fd = -1
                (<_Listener>obj).closed = True
        if self.inbox.evfd >= 0:
            rio_close_fd(self.inbox.evfd)
            self.inbox.evfd = -1
        if self.epfd >= 0:
            rio_close_fd(self.epfd)
            self.epfd = -1
        return 0

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

    cdef DispatchContext _new_stream(self, int fd, Reactor reactor, _StreamOptions opts,
                                     _PendingConnect connecting):
        """A registered stream: OPEN (and counted), or CONNECTING for ``connecting``."""
        cdef DispatchContext ctx = DispatchContext.__new__(DispatchContext)
        cdef epoll_event ev
        cdef int one = 1
        try:
            ctx.rt = self
            ctx.reactor = reactor
            ctx.fd = fd
            ctx.reader = MsgReader(opts.recv_min, opts.max_msg_size)
            ctx.sender = MsgSender(opts.max_send_queue, self.high_water, self.low_water)
            ctx.default_readable = getattr(type(reactor), "on_readable") is _DEFAULT_ON_READABLE
            f = getattr(type(reactor), "on_inbound_message")
            if type(f) is types.FunctionType and "on_inbound_message" not in getattr(
                    reactor, "__dict__", ()):
                ctx.py_on_inbound = f
        except BaseException:
            ctx.fd = -1             # not ours to close twice in __dealloc__
            rio_close(fd)
            raise
        if opts.nodelay and connecting is None:
            rio_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
        ctx.reactor_id = self._alloc_slot(ctx)
        ctx.events = EPOLLIN if connecting is None else EPOLLOUT
        try:
            if REACTIO_IOCP:
                ctx.iocp_ops = calloc(2, sizeof(rio_op))
                if ctx.iocp_ops == NULL:
                    raise MemoryError()
                _iocp_register(self, fd, ctx.reactor_id)
            else:
                ev.events = ctx.events
                ev.data.u64 = _poll_key(ctx.reactor_id)
                if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) != 0:
                    raise _net.os_error(rio_errno(), "epoll_ctl(ADD)")
        except BaseException:
            self._free_slot(ctx.reactor_id.slot)
            rio_close(fd)
            ctx.fd = -1
            raise
        if connecting is None:
            ctx.state = ST_OPEN
            self.n_streams += 1
        else:
            ctx.state = ST_CONNECTING
            ctx.connect = connecting
        return ctx

    cdef object _connected(self, DispatchContext ctx, object listener_id):
        """Run on_connected of a new OPEN stream (and, on IOCP, start receiving); returns the
        callback's exception, or None."""
        _hold(ctx)
        try:
            failed = _call_reactor(self, ctx, CB_CONNECTED, listener_id)
            if REACTIO_IOCP and ctx.state == ST_OPEN:
                try:
                    _iocp_arm_recv(self, ctx)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:
                    self._callback_failed(ctx, exc)
        finally:
            _release(self, ctx)
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
            ev.data.u64 = _poll_key(lst.reactor_id)
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
            ctx = self._new_stream(fd, <Reactor>reactor, lst.opts, None)
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
        cdef _PendingConnect p = <_PendingConnect>cmd.target
        cdef _Command timer
        p.completion = cmd.completion
        _resolve_defaults(self, p.opts)
        self.pending_connects.add(p)
        if p.timeout_ns > 0:
            timer = _new_command(CMD_CONNECT_TIMEOUT, p, None, None, None, None)
            p.timer = timer
            self._schedule(timer, rio_monotonic_ns() + p.timeout_ns)
        self._resolve(p)
        return 0

    cdef int _start_listen(self, _Command cmd) except -1:
        cdef _PendingConnect p = <_PendingConnect>cmd.target
        p.completion = cmd.completion
        _resolve_defaults(self, p.opts)
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
            fd = _net.open_listener(family, sockaddr_, p.backlog, p.reuse_port, p.dual_stack)
        except OSError as exc:      # (EADDRINUSE and the like: say which address)
            return self._connect_failed(p, OSError(exc.errno, f"{exc.strerror} (listen on "
                                                              f"{p.addr!r})"))
        except Exception as exc:
            return self._connect_failed(p, exc)
        lst = _Listener.__new__(_Listener)
        lst.fd = fd
        lst.handler = handler
        lst.opts = p.opts
        lst.family = family
        lst.reactor_id = self._alloc_slot(lst)
        try:
            if REACTIO_IOCP:
                lst.iocp_ops = calloc(ACCEPTS_PER_LISTENER, sizeof(rio_op))
                if lst.iocp_ops == NULL:
                    raise MemoryError()
                _iocp_register(self, fd, lst.reactor_id)
            else:
                ev.events = EPOLLIN
                ev.data.u64 = _poll_key(lst.reactor_id)
                if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) != 0:
                    raise _net.os_error(rio_errno(), "epoll_ctl(ADD)")
        except Exception as exc:
            self._free_slot(lst.reactor_id.slot)
            rio_close(fd)
            lst.fd = -1             # closed here; __dealloc__ must not close the number again
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
                    fd = _net.new_socket(family, p.opts.nodelay)
                else:
                    fd = _net.start_connect(family, sockaddr_, p.opts.nodelay)[0]
                ctx = self._new_stream(fd, p.reactor, p.opts, p)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                p.last_error = exc
                continue
            p.ctx = ctx
            if REACTIO_IOCP:
                try:
                    _iocp_connect(self, ctx, family, sockaddr_)
                except Exception as exc:
                    p.last_error = exc
                    if p.ctx is ctx:
                        self._discard_connecting(ctx)
                    continue
            return 0        # EPOLLOUT (or ERR/HUP) reports the outcome, even if immediate
        return self._connect_failed(
            p, p.last_error if p.last_error is not None else OSError(f"no address for {p.addr!r}"))

    cdef int _connect_ready(self, DispatchContext ctx) except -1:
        cdef _PendingConnect p = ctx.connect
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
        """CONNECTING -> OPEN: on_connected, then the connect's completion."""
        p.done = True
        p.ctx = None
        self.pending_connects.discard(p)
        if p.timer is not None:
            self._cancel(p.timer)
        ctx.connect = None
        ctx.state = ST_OPEN
        self.n_streams += 1
        try:
            ctx._set_events(EPOLLIN)
        except Exception as exc:
            _stream_event(self, ctx, EV_ABORT, exc)
            return self._complete(p.completion, exc)
        try:
            failed = self._connected(ctx, None)
        except BaseException as exc:            # KeyboardInterrupt/SystemExit from on_connected
            self._complete(p.completion, exc)
            raise
        self._complete(p.completion, failed if failed is not None else ctx.reactor_id)
        return 0

    cdef int _discard_connecting(self, DispatchContext ctx) except -1:
        """CONNECTING -> CLOSED without callbacks: one attempt of a connect failed (the
        connect goes on with its next address, or fails as a whole)."""
        cdef _PendingConnect p = ctx.connect
        if ctx.state != ST_CONNECTING:
            return 0
        self._unregister(ctx.fd, False)
        ctx.fd = -1
        ctx.state = ST_CLOSED
        ctx.connect = None
        if p is not None and p.ctx is ctx:
            p.ctx = None
        self._free_slot(ctx.reactor_id.slot)
        return 0

    cdef int _connect_failed(self, _PendingConnect p, object exc) except -1:
        """The connect (or listen) is over without a stream: no reactor callback runs; the
        completion gets the error (logged at ERROR when there is no completion), and a
        connect's reactor keeps it as close_error."""
        if p.done:
            return 0
        p.done = True
        if p.reactor is not None:
            (<Reactor>p.reactor)._close_error = exc
        self.pending_connects.discard(p)
        if p.ctx is not None:
            self._discard_connecting(p.ctx)
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
            elif cmd.kind == CMD_TIMER:
                _run_timer(self, <TimerHandle>cmd.target)
            elif cmd.kind == CMD_CALL:
                _run_call(self, cmd)
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
        try:
            failed = _call_reactor(self, ctx, CB_COMMAND, cmd.a)
        except (KeyboardInterrupt, SystemExit) as exc:
            self._complete(cmd.completion, exc)     # exactly once, even when unwinding
            raise
        return self._complete(cmd.completion, ctx.reactor_id if failed is None else failed)

    cdef int _exec_close(self, _Command cmd) except -1:
        obj = self._lookup(<ReactorID>cmd.target)
        if obj is None:
            return self._complete(cmd.completion, ReactorNotFoundError(
                f"no reactor {cmd.target}: it was closed or the id is stale"))
        try:
            if type(obj) is _Listener:
                self._close_listener(<_Listener>obj)
            else:       # (a connect in progress ends too: its completion gets the error)
                _stream_event(self, <DispatchContext>obj, EV_ABORT if cmd.a else EV_CLOSE, None)
        finally:        # on_close may unwind with KeyboardInterrupt: the completion still runs
            self._complete(cmd.completion, cmd.target)
        return 0

    cdef int _exec_connect_timeout(self, _PendingConnect p) except -1:
        if not p.done:
            p.timer = None
            self._connect_failed(p, TimeoutError(
                f"connect to {p.addr!r} timed out after {p.timeout_ns / 1e9:g} s"))
        return 0

    cdef int _exec_resume_accept(self, _Listener lst, ReactorID rid) except -1:
        cdef epoll_event ev
        if lst.closed or self._lookup(rid) is not lst:
            return 0
        lst.paused = False
        if REACTIO_IOCP:
            return _iocp_post_accepts(self, lst)
        ev.events = EPOLLIN
        ev.data.u64 = _poll_key(rid)
        if epoll_ctl(self.epfd, EPOLL_CTL_MOD, lst.fd, &ev) != 0:
            log.error("listener %s: cannot resume accepting: %s", rid, os.strerror(rio_errno()))
        return 0

    cdef int _exec_drain_timeout(self, DispatchContext ctx, ReactorID rid) except -1:
        if self._lookup(rid) is not ctx:
            return 0
        ctx.drain_timer = None
        return _stream_event(self, ctx, EV_TIMEOUT, None)

    cdef int _complete(self, object completion, object result) except -1:
        if completion is None:
            if isinstance(result, BaseException) and not isinstance(result, RuntimeClosedError):
                # nobody else will hear of it (asyncio logs a never-retrieved exception too)
                log.error("a command failed and no on_completion receives it: %s: %s",
                          type(result).__name__, result)
            return 0
        try:
            completion(result)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            log.error("completion %r raised %s", completion, type(exc).__name__, exc_info=exc)
        return 0
