# ReactRuntime: the public face of one event loop, and the loop itself.  process_events() = wait
# for socket events with the GIL released and handle them (the backend: _epoll_loop.pxi or
# _iocp_loop.pxi), run due timers, run the commands queued when the drain began, then run owed
# send completions.  What happens to a stream is in _streams.pxi (accept, adopt) and
# _lifecycle.pxi (its states), connects and listens in _connect.pxi, commands in
# _commands.pxi, timers in _timers.pxi, slots (ReactorIDs) in _slots.pxi.
from cpython.pythread cimport PyThread_get_thread_ident


cdef inline int _ceil_ms(int64_t ns) noexcept:
    """A wait in ns as whole milliseconds, rounded up (never wake before a timer is due)."""
    if ns <= 0:
        return 0
    if ns >= <int64_t>2000000000 * 1000000:
        return 2000000000
    return <int>((ns + 999999) // 1000000)


# no_gc_clear: a runtime dropped without close() is usually in a cycle (rt -> slots -> ctx -> rt);
# the GC's tp_clear would set slots/inbox to None before __dealloc__, which then leaked every fd.
@cython.final
@cython.no_gc_clear
cdef class ReactRuntime:
    """ReactRuntime(*, max_send_queue=16777216, max_msg_size=16777216, high_water=65536, low_water=16384, drain_timeout=30.0, max_events=1024)
--

One event loop (epoll on Linux, IOCP on Windows).  Use it from one thread; other threads
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
      max_events      events taken per wait (1024; at most MAX_EVENTS, what the kernel takes)
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
        _be_init(self)

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
                elif type(obj) is DatagramContext and (<DatagramContext>obj).fd >= 0:
                    rio_close((<DatagramContext>obj).fd)
                    (<DatagramContext>obj).fd = -1
            if self.inbox is not None:
                self.inbox.retire()
            _be_release(self)
        free(self.events)
        free(self.gens)
        free(self.free_slots)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def get_cmd_sender(self):
        """Deprecated spelling of the ``cmd_sender`` attribute."""
        warnings.warn("ReactRuntime.get_cmd_sender() is deprecated; use rt.cmd_sender",
                      DeprecationWarning, stacklevel=2)
        return self.cmd_sender

    # ------------------------------------------------------------------ counters and lookups

    # (any thread: one writer, the loop thread, and relaxed atomic reads; C5 of
    # docs/internals-threading.md)

    def count_reactors(self):
        """Live streams and listeners (from another thread: two reads, not one snapshot)."""
        return rio_load_ssize(&self.n_streams) + rio_load_ssize(&self.n_listeners)

    def count_streams(self):
        return rio_load_ssize(&self.n_streams)

    def count_deferred_queue(self):
        """User commands waiting for their Deferred time."""
        return rio_load_ssize(&self.n_user_deferred)

    def count_sock_events(self):
        return rio_load_u64(&self.n_sock_events)

    def count_received_commands(self):
        return rio_load_u64(&self.n_received_cmds)

    @property
    def closed(self):
        return rio_load_int(&self.closed) != 0

    def local_address(self, ReactorID reactor_id not None):
        """The local address of a stream or listener (a port-0 listener's real port)."""
        obj = _lookup(self, reactor_id)
        if obj is None:
            raise ReactorNotFoundError(f"no reactor {reactor_id}")
        if type(obj) is _Listener:
            return _sock_address((<_Listener>obj).fd, False)
        if type(obj) is DatagramContext:
            return _sock_address((<DatagramContext>obj).fd, False)
        return _sock_address((<DispatchContext>obj).fd, False)

    def peer_address(self, ReactorID reactor_id not None):
        obj = _lookup(self, reactor_id)
        if type(obj) is not DispatchContext:
            raise ReactorNotFoundError(f"no stream {reactor_id}")
        return _sock_address((<DispatchContext>obj).fd, True)

    def get_context(self, ReactorID reactor_id not None):
        """The DispatchContext of a live stream, or None."""
        obj = _lookup(self, reactor_id)
        return obj if type(obj) is DispatchContext else None

    # ------------------------------------------------------------------ timers

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
        if _runs_elsewhere(self):
            raise RuntimeError("call_at()/call_later() from another thread while the runtime "
                               "runs: use cmd_sender.send_call (thread-safe)")
        return _schedule_call(self, when, callback, args)

    # ------------------------------------------------------------------ running

    def process_events(self, double timeout=0.01):
        """Wait up to ``timeout`` seconds (0: poll without blocking, negative: no limit) for
        socket events, handle them, run due timers and deferred commands and the queued
        commands.  Returns False, without waiting, when there are no reactors, no pending
        connects, no timers and no queued or deferred commands."""
        return self._process(timeout, False)

    def run(self, double timeout=1.0, *, bint busy_poll=False):
        """process_events() until the runtime is idle, the loop staying in C between
        events.  busy_poll=True polls without ever blocking (``timeout`` is then unused):
        lowest latency, one core at 100 % (docs/reactor.md)."""
        self._loop(timeout, False, busy_poll)

    def run_forever(self, double timeout=1.0, *, bint busy_poll=False):
        """process_events() until stop() is called (from any thread; a stop() that came
        before this call makes it return at once; each stop() ends one run).  busy_poll as
        for run()."""
        self._loop(timeout, True, busy_poll)

    def stop(self):
        """Make run_forever() return; thread-safe."""
        rio_store_int(&self.stopping, 1)
        self.inbox.wake_if_waiting(False)

    cdef bint _idle(self):
        return (self.n_streams == 0 and self.n_listeners == 0 and self.n_user_deferred == 0
                and self.n_timers == 0 and not self.pending_connects
                and len(self.inbox.queue) == 0 and not self.ready)

    cdef int _check_usable(self) except -1:
        if self.fork_epoch != _fork_epoch:
            raise RuntimeError("this ReactRuntime was made before fork(): a child process may "
                               "only close() it (that releases the child's copies of its "
                               "sockets); make a new runtime in the child")
        if not self.initialized:
            raise RuntimeError("ReactRuntime.__init__ was not called")
        return 0

    cdef int _enter(self, double timeout) except -2:
        """Claim the loop for this thread (given back by the caller's _unclaim); returns the
        wait of one turn in ms (-1: no limit)."""
        self._check_usable()
        if timeout != timeout:
            raise ValueError("timeout must be a number of seconds, not NaN")
        _claim(self, False)         # (refuses a closed runtime, another thread, re-entry)
        if timeout < 0 or timeout > 1e6:
            return -1               # no limit (commands and timers still wake the loop)
        return _ceil_ms(<int64_t>(timeout * 1e9))

    cdef object _process(self, double timeout, bint wait_when_idle):
        cdef int timeout_ms = self._enter(timeout)
        try:
            if self.ready:
                _run_ready(self)    # completions owed by sends made outside process_events
            return self._turn(timeout_ms, wait_when_idle)
        finally:
            _unclaim(self)

    cdef int _loop(self, double timeout, bint forever, bint busy) except -1:
        """run() / run_forever(): the checks once, then turns without leaving C.  A turn
        that polled without blocking and found no socket event lets other threads (if any)
        take the GIL (a thread waiting for it asks within 5 ms), so a busy loop starves
        none."""
        cdef int timeout_ms = self._enter(timeout)
        cdef uint64_t before
        if busy:
            timeout_ms = 0
        try:
            if self.ready:
                _run_ready(self)    # completions owed by sends made outside the loop
            # stop() may come from any thread: the flag is taken by an atomic exchange, so a
            # stop() after it is kept for the next run (C3 of docs/internals-threading.md);
            # the plain load first keeps the exchange off the turns where it is not set
            while not (forever and rio_load_int(&self.stopping)
                       and rio_exchange_int(&self.stopping, 0)):
                before = self.n_sock_events
                if not self._turn(timeout_ms, forever) and not forever:
                    break
                if timeout_ms == 0 and self.n_sock_events == before:
                    # an empty busy poll: run the handler of a signal that came outside the
                    # wait (no EINTR; a Cython reactor runs no bytecode that would run it),
                    # then let other threads take the GIL
                    PyErr_CheckSignals()
                    if not rio_sole_python_thread(self.tstate):
                        with nogil:
                            pass
                if self.fork_epoch != _fork_epoch:
                    self._check_usable()    # a callback forked: the child may not go on
        finally:
            _unclaim(self)
        return 0

    cdef bint _turn(self, int timeout_ms, bint wait_when_idle) except -1:
        """One iteration of the loop: wait up to timeout_ms (-1: no limit) for events, handle
        them, then due timers, queued commands, owed completions.  Returns False, without
        waiting, when the runtime is idle (unless wait_when_idle).  (Completions owed by sends
        made outside the loop are run by the caller, once, before the first turn: inside the
        loop every send is made by a callback, and the end of its turn runs them.)"""
        cdef int64_t wait_ns
        if not wait_when_idle and self.n_streams == 0 and self._idle():
            if _external_wake_owed(self.inbox):
                _be_poll(self, 0)   # consume the wake-up: the other loop polls fileno()
            return False
        if timeout_ms != 0 and self.timers:
            wait_ns = <int64_t>self.timers[0][0] - rio_monotonic_ns()
            if timeout_ms < 0 or _ceil_ms(wait_ns) < timeout_ms:
                timeout_ms = _ceil_ms(wait_ns)
        _be_poll(self, timeout_ms)
        if self.timers:
            _run_timers(self)
        if rio_deque_nonempty(self.inbox.queue):
            _run_commands(self)
        if self.ready:
            _run_ready(self)
        return self.n_streams != 0 or not self._idle()

    # ------------------------------------------------------------------ another event loop

    def fileno(self):
        """The poller's descriptor, for driving this runtime from another event loop
        (reactio.aio): it polls readable while socket events are pending, and -- once
        _external_poll(True) -- when a command arrives.  IOCP has no pollable descriptor:
        NotImplementedError."""
        return _be_fileno(self)

    def _external_poll(self, bint on):
        """While on, a command from another thread always wakes fileno() (normally only a
        loop blocked in process_events() is woken)."""
        rio_mutex_lock(&self.inbox.lock)
        self.inbox.external = on
        rio_mutex_unlock(&self.inbox.lock)
        if on:
            self.inbox.wake_if_waiting(True)

    def _next_due_ns(self):
        """When process_events() has work without a socket event: 0 (now) for queued commands
        or owed completions, the monotonic ns of the earliest timer, or None."""
        if self.ready or self.inbox.queue or self.iocp_rearm:
            return 0
        if self.timers:
            return self.timers[0][0]
        return None

    # ------------------------------------------------------------------ closing

    def shutdown(self, timeout=5.0):
        """Stop gracefully: listeners close, connects and listens in progress fail with
        ReactorClosedError, every stream is closed as send_close() does (queued bytes flushed,
        then the peer's EOF awaited), and the loop runs until no stream is left or ``timeout``
        seconds (inf: no limit) have passed; then close() ends what is left (with a WARNING).
        Commands that arrive meanwhile are run; connects and listens among them fail the same
        way.  Returns how many streams were still open at the deadline (0: a clean stop).
        Called like close(): from the runtime's thread, not from a callback.  Idempotent."""
        if rio_load_int(&self.closed):
            return 0
        self._check_usable()
        if rio_load_int(&self.in_process):      # refused before its command is sent
            _refuse_claim(self, False)
        return _shutdown(self, timeout)

    def close(self):
        """Close every stream and listener (each on_close / on_close_listen runs; queued bytes
        get one last non-blocking write, and what the kernel does not take is dropped with a
        WARNING), and fail every pending command's completion with RuntimeClosedError.
        Idempotent.  In a child process after fork(): only releases the child's descriptors."""
        if rio_load_int(&self.closed):
            return
        if self.fork_epoch != _fork_epoch:
            return _close_in_child(self)
        if not self.initialized:
            rio_store_int(&self.closed, 1)
            self.inbox.retire()
            return
        # the callbacks run below may not re-enter process_events() or close() either
        if _claim(self, True):
            return          # another thread closed it meanwhile
        self.inbox.retire()
        interrupted = None
        try:
            # A KeyboardInterrupt/SystemExit from a callback is raised only once everything is
            # closed: each pass resumes where the last stopped (finalized streams, closed
            # listeners, done connects and popped commands are not visited again).
            while True:
                try:
                    _close_everything(self, RuntimeClosedError("the runtime was closed"))
                    break
                except (KeyboardInterrupt, SystemExit) as exc:
                    interrupted = interrupted or exc
        finally:
            rio_store_int(&self.closed, 1)
            try:
                _be_teardown(self)
            finally:
                _unclaim(self)
        if interrupted is not None:
            raise interrupted


cdef int _run_ready(ReactRuntime rt) except -1:
    """Run the send completions owed to streams whose bytes were all written inside a
    send_or_que call: in send order, after the callback that sent them.  One round: those that
    completions of this round owe run in the next one, so a chain of sends cannot starve the
    sockets."""
    cdef DispatchContext ctx
    ready = rt.ready
    rt.ready = []
    for obj in ready:
        ctx = <DispatchContext>obj
        ctx.in_ready = False
        if ctx.state == ST_CLOSED:
            continue                # finalize delivered them
        _hold(ctx)
        try:
            ctx._flush_completions()
        finally:
            _release(rt, ctx)
    return 0


cdef int _complete(object completion, object result) except -1:
    """Run a completion (exactly once is the caller's business); its exception is logged.  A
    failure with no completion to receive it is logged at ERROR, as asyncio logs an exception
    nobody retrieved (RuntimeClosedError at close() excepted: that is everyone's)."""
    if completion is None:
        if isinstance(result, BaseException) and not isinstance(result, RuntimeClosedError):
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
