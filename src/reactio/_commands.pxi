# Commands: the only way into a runtime from other reactors and other threads.
#
# Wake-up protocol.  The inbox's lock (a PyMutex on a free-threaded build; under the GIL the
# GIL itself, which none of these steps releases) orders the steps:
#   loop:    under the lock: polling = True; then if the queue is non-empty, wait 0 ms;
#            epoll_wait without the GIL; under the lock: polling = False
#   sender:  under the lock: refuse if closed; append; if polling and not wake_pending:
#            wake_pending = True; write(eventfd)
#   loop:    on the eventfd's event read it and, under the lock, clear wake_pending; then
#            drain the queue.
# A sender's section comes before the loop's "polling = True" (then its command is in the
# queue the loop checks next) or after it (then it sees polling and writes the eventfd).
# Either way epoll_wait does not sleep on a queued command.  A runtime driven by another event
# loop through fileno() sets `external`: every command then wakes the eventfd (unless a
# wake-up is already pending), since that loop may sleep at any time.  close() retires the
# inbox under the lock: no command is accepted after its queue drain, and no sender is
# writing the eventfd when it is closed (docs/internals-threading.md, C1/C2).

cdef enum:
    CMD_CONNECT = 1
    CMD_LISTEN = 2
    CMD_CLOSE = 3
    CMD_USER = 4
    CMD_CALL = 5              # cmd_sender.send_call
    CMD_BIND_UDP = 6          # cmd_sender.send_bind_udp (_datagram.pxi)
    # internal, never counted as user commands
    CMD_RESOLVED = 10         # a name lookup finished (posted by the resolver thread)
    CMD_CONNECT_TIMEOUT = 11
    CMD_RESUME_ACCEPT = 12    # accepts were paused after EMFILE/ENFILE
    CMD_DRAIN_TIMEOUT = 13    # a graceful close waited too long for the peer to read
    CMD_TIMER = 14            # rt.call_later / rt.call_at (target: the TimerHandle)


@cython.final
@cython.freelist(64)
cdef class _Command:
    pass


cdef inline _Command _new_command(int kind, object target, object arg,
                                  object deferred, object completion):
    cdef _Command c
    if deferred is not None and type(deferred) is not Deferred:
        raise TypeError(f"deferred must be a Deferred (Deferred.IMMEDIATE, Deferred.after(s), "
                        f"Deferred.until(ns)), not {type(deferred).__name__}")
    if completion is not None and not callable(completion):
        raise TypeError(f"on_completion must be callable, not {type(completion).__name__}")
    c = _Command.__new__(_Command)
    c.kind = kind
    c.target = target
    c.arg = arg
    c.completion = completion
    c.due_ns = 0 if deferred is None else deferred.due_ns
    return c


@cython.final
cdef class _Inbox:

    def __cinit__(self):
        self.queue = collections.deque()
        self.evfd = -1
        self.fork_epoch = _fork_epoch

    cdef int push(self, object cmd) except -1:
        if self.fork_epoch != _fork_epoch:
            raise RuntimeError("this runtime was made before fork(); its commands cannot be "
                               "sent from the child process")
        rio_mutex_lock(&self.lock)
        try:
            if self.closed:
                raise RuntimeClosedError("the runtime is closed; the command was not sent")
            self.queue.append(cmd)
            if (self.polling or self.external) and not self.wake_pending:
                self.wake_pending = True
                _be_wake(self)      # under the lock: retire() cannot close the eventfd meanwhile
        finally:
            rio_mutex_unlock(&self.lock)
        return 0

    cdef int wake_if_waiting(self, bint external_only_with_commands) except -1:
        """Wake a loop that waits (stop()) or, once _external_poll(True), the other loop when
        commands wait; nothing once retired."""
        cdef bint wake
        rio_mutex_lock(&self.lock)
        try:
            if external_only_with_commands:
                wake = self.external and len(self.queue) != 0
            else:
                wake = self.polling or self.external
            if wake and not self.closed and not self.wake_pending:
                self.wake_pending = True
                _be_wake(self)
        finally:
            rio_mutex_unlock(&self.lock)
        return 0

    cdef int retire(self) except -1:
        """No command is accepted from now on, and no sender touches evfd/port any more
        (close(), __dealloc__, a child after fork)."""
        rio_mutex_lock(&self.lock)
        self.closed = True
        rio_mutex_unlock(&self.lock)
        return 0


cdef inline void _inbox_not_polling(_Inbox inbox) noexcept:
    """The loop's wait is over (the end of its side of the handshake above)."""
    rio_mutex_lock(&inbox.lock)
    inbox.polling = False
    rio_mutex_unlock(&inbox.lock)


cdef inline bint _external_wake_owed(_Inbox inbox) noexcept:
    """Another event loop polls fileno() and a wake-up of it is pending (to be consumed)."""
    cdef bint owed
    rio_mutex_lock(&inbox.lock)
    owed = inbox.external and inbox.wake_pending
    rio_mutex_unlock(&inbox.lock)
    return owed


@cython.final
cdef class CmdSender:
    """Sends commands to one runtime; thread-safe.  Every command takes a ``deferred``
    (Deferred.IMMEDIATE by default) and an ``on_completion`` callable that runs exactly once on
    the runtime's thread with the ReactorID, or with the exception that stopped the command.
    Sending to a closed runtime raises RuntimeClosedError."""

    def __init__(self):
        raise TypeError("use ReactRuntime.cmd_sender")

    cdef _Inbox _inbox(self):
        if self.inbox is None:
            raise TypeError("this CmdSender belongs to no runtime (use ReactRuntime.cmd_sender)")
        return self.inbox

    def send_connect(self, addr, recv_buffer_min_size, Reactor reactor not None,
                     deferred=None, on_completion=None, *, timeout=None, max_send_queue=None,
                     max_msg_size=None, nodelay=True, ssl=None, server_hostname=None,
                     ssl_handshake_timeout=None):
        """Connect to ``addr`` ("host:port" or (host, port); "unix:/path" or "unix:@name" for
        a Unix stream socket, see docs/unix.md) without blocking the loop (names are
        resolved on a helper thread); on success reactor.on_connected runs, then
        on_completion(reactor_id).  Failures reach on_completion as exceptions:
        ConnectionRefusedError, TimeoutError (``timeout`` seconds, None or inf: no limit),
        socket.gaierror, ValueError for a malformed address, ReactorClosedError when the
        stream is closed (send_close) before it connects; for a Unix socket also
        FileNotFoundError, PermissionError, BlockingIOError (the listener's backlog is
        full).  Bad option values raise ValueError here.  ``ssl=SSLContext`` makes it a TLS
        stream (docs/tls.md): the certificate is checked against ``server_hostname``
        (default: the address's host), on_connected runs after the handshake, and a handshake
        failure (ssl.SSLError, TimeoutError after ``ssl_handshake_timeout`` seconds, default
        60) reaches on_completion."""
        cdef _Inbox inbox = self._inbox()
        cdef _PendingConnect p = _PendingConnect.__new__(_PendingConnect)
        p.opts = _stream_options(recv_buffer_min_size, max_send_queue, max_msg_size, nodelay)
        _tls_options(p.opts, ssl, server_hostname, ssl_handshake_timeout, False)
        if timeout is not None:
            if _seconds(timeout, "timeout") == 0:
                raise ValueError("timeout must be more than 0 seconds (None: no limit)")
            p.timeout_ns = _limit_ns(timeout, "timeout")
        p.addr = addr
        p.reactor = reactor
        inbox.push(_new_command(CMD_CONNECT, p, None, deferred, on_completion))

    def send_listen(self, addr, handler not None, deferred=None, on_completion=None):
        """Listen on ``addr`` ("host:port", (host, port), or "unix:/path" / "unix:@name": a
        Unix listener removes the socket file it created when it closes, see docs/unix.md);
        ``handler`` is a TcpListenerHandler, whose options
        (recv_buffer_min_size, max_send_queue, max_msg_size, nodelay, backlog, reuse_port,
        dual_stack, ssl, ssl_handshake_timeout attributes, where present) are checked here: a bad value raises ValueError.
        on_completion gets the listener's ReactorID (rt.local_address(id) tells a port-0
        listener's port) or the error (OSError with errno EADDRINUSE, PermissionError, ...)."""
        cdef _Inbox inbox = self._inbox()
        cdef _PendingListen p = _PendingListen.__new__(_PendingListen)
        p.opts = _stream_options(getattr(handler, "recv_buffer_min_size", 4096),
                                 getattr(handler, "max_send_queue", None),
                                 getattr(handler, "max_msg_size", None),
                                 getattr(handler, "nodelay", True))
        _tls_options(p.opts, getattr(handler, "ssl", None), None,
                     getattr(handler, "ssl_handshake_timeout", None), True)
        p.backlog = _size_option(getattr(handler, "backlog", 1024), "backlog", 0, 65535)
        p.reuse_port = bool(getattr(handler, "reuse_port", False))
        if p.reuse_port and not _net.HAS_REUSE_PORT:
            raise ValueError("reuse_port=True: this platform has no SO_REUSEPORT (one listener "
                             "per port; see docs/listeners.md)")
        p.dual_stack = bool(getattr(handler, "dual_stack", False))
        p.addr = addr
        p.handler = handler
        inbox.push(_new_command(CMD_LISTEN, p, None, deferred, on_completion))

    def send_bind_udp(self, addr, reactor, deferred=None, on_completion=None, *,
                      connect_to=None, reuse_port=False, broadcast=False, multicast_groups=(),
                      multicast_interface=None, multicast_loop=True, multicast_ttl=1,
                      recv_buffer_size=None, max_datagram_size=65507, recv_batch=32):
        """Open a UDP endpoint bound to ``addr`` (numeric "host:port" or (host, port); port 0
        picks one) for a DatagramReactor; docs/udp.md has every option.  on_bound runs, then
        on_completion(reactor_id) -- or on_completion(OSError) when the bind fails.  Bad
        options raise ValueError / TypeError here."""
        cdef _Inbox inbox = self._inbox()
        inbox.push(_bind_udp_command(addr, reactor, deferred, on_completion, dict(
            connect_to=connect_to, reuse_port=reuse_port, broadcast=broadcast,
            multicast_groups=multicast_groups, multicast_interface=multicast_interface,
            multicast_loop=multicast_loop, multicast_ttl=multicast_ttl,
            recv_buffer_size=recv_buffer_size, max_datagram_size=max_datagram_size,
            recv_batch=recv_batch)))

    def send_close(self, ReactorID reactor_id not None, deferred=None, on_completion=None, *,
                   abort=False):
        """Close a stream (queued bytes are flushed first unless abort=True), a connect in
        progress (its completion gets ReactorClosedError) or a listener."""
        cdef _Command cmd = _new_command(CMD_CLOSE, reactor_id, None, deferred, on_completion)
        cmd.abort = bool(abort)
        self._inbox().push(cmd)

    def send_user_cmd(self, ReactorID reactor_id not None, cmd, deferred=None,
                      on_completion=None):
        """Deliver ``cmd`` to the reactor's on_command.  A stale or unknown id completes with
        ReactorNotFoundError; an exception from on_command is passed to on_completion (and
        closes the reactor)."""
        self._inbox().push(_new_command(CMD_USER, reactor_id, cmd, deferred, on_completion))

    def send_call(self, callback, deferred=None, on_completion=None):
        """Run ``callback()`` on the runtime's thread (at the ``deferred`` time); on_completion
        gets its return value, or the exception it raised (logged at ERROR when there is no
        on_completion)."""
        if not callable(callback):
            raise TypeError(f"the callback must be callable, not {type(callback).__name__}")
        self._inbox().push(_new_command(CMD_CALL, None, callback, deferred, on_completion))

    @property
    def closed(self):
        return self.inbox is None or rio_load_int(&self.inbox.closed) != 0


# ---------------------------------------------------------------------------- ownership
# What only the loop thread may do is refused on other threads while the runtime runs.

cdef inline int _claim(ReactRuntime rt, bint closing) except -1:
    """Become the runtime's loop thread (process_events, close): one thread at a time,
    claimed by compare-and-swap (C4 of docs/internals-threading.md) and given back with
    _unclaim.  1: close() finds the runtime closed already."""
    cdef int free_ = 0
    if not rio_cas_int(&rt.in_process, &free_, 1):
        return _refuse_claim(rt, closing)
    if rio_load_int(&rt.closed):        # (read under the claim: close() holds it too)
        _unclaim(rt)
        if closing:
            return 1
        raise RuntimeClosedError("the runtime is closed")
    rio_store_ulong(&rt.owner_thread, PyThread_get_thread_ident())
    rt.tstate = rio_loop_thread_state()
    return 0


cdef inline void _unclaim(ReactRuntime rt) noexcept:
    # Free-threaded: forget the owner first, so that a thread losing the next claim before
    # its winner stores its id never reads its own id from an earlier run ("re-entrant").
    # Under the GIL the claim and the store are one step: nothing to forget.
    if RIO_FREE_THREADED:
        rio_store_ulong(&rt.owner_thread, 0)
    rio_store_int(&rt.in_process, 0)


cdef int _refuse_claim(ReactRuntime rt, bint closing) except -1:
    if PyThread_get_thread_ident() != rio_load_ulong(&rt.owner_thread):
        if closing:
            raise RuntimeError("close() from another thread while the runtime runs in its own: "
                               "stop() it (thread-safe) and close it from its thread")
        raise RuntimeError("the runtime is running in another thread: a runtime is used from "
                           "one thread; reach it through its cmd_sender")
    if closing:
        raise RuntimeError("close() called from a callback; use stop() or send_close()")
    raise RuntimeError("process_events()/run() called re-entrantly from a callback: return "
                       "from the callback instead (use a deferred command, or stop() to leave "
                       "run_forever())")


cdef inline bint _runs_elsewhere(ReactRuntime rt) noexcept:
    """The runtime is running on another thread: what only its loop thread may do is refused
    (cheap: an atomic load, and the thread id only while it runs)."""
    return (rio_load_int(&rt.in_process) != 0
            and PyThread_get_thread_ident() != rio_load_ulong(&rt.owner_thread))


cdef int _refuse_foreign_thread(ReactRuntime rt, ReactorID reactor_id) except -1:
    """A stream or datagram endpoint belongs to its runtime's thread while the runtime runs
    (free-threaded and debug builds check it: there a send from another thread races the
    loop's own writes)."""
    if _runs_elsewhere(rt):
        raise RuntimeError(f"reactor {reactor_id} used from another thread while its runtime "
                           "runs: a reactor is used from its runtime's thread; reach it through "
                           "cmd_sender (send_user_cmd, send_call)")
    return 0



# ---------------------------------------------------------------------------- execution

cdef int _run_commands(ReactRuntime rt) except -1:
    """Run the commands queued when the drain starts (later ones wait for the next round, so a
    command that sends commands cannot starve the sockets).  Deferred commands go through the
    timer heap even when already due, so they always run in due order."""
    cdef Py_ssize_t i, n
    cdef _Command cmd
    cdef bint deferred = False
    q = rt.inbox.queue
    n = len(q)
    for i in range(n):
        if not q:
            break
        cmd = <_Command>q.popleft()
        if cmd.kind < CMD_RESOLVED:
            rio_bump_u64(&rt.n_received_cmds, 1)
        if cmd.due_ns != 0:
            rio_bump_ssize(&rt.n_user_deferred, 1)
            _schedule(rt, cmd, cmd.due_ns)
            deferred = True
            continue
        _execute(rt, cmd)
    if deferred:
        _run_timers(rt)
    return 0


cdef inline int _complete_cmd(_Command cmd, object result) except -1:
    """A command's completion, at most once even if reactio fails after calling it."""
    completion = cmd.completion
    cmd.completion = None
    return _complete(completion, result)


cdef int _execute(ReactRuntime rt, _Command cmd) except -1:
    try:
        if cmd.kind == CMD_USER:
            _exec_user(rt, cmd)
        elif cmd.kind == CMD_CLOSE:
            _exec_close(rt, cmd)
        elif cmd.kind == CMD_CONNECT or cmd.kind == CMD_LISTEN:
            _start_pending(rt, <_Pending>cmd.target, cmd.completion)
        elif cmd.kind == CMD_CALL:
            _run_call(rt, cmd)
        elif cmd.kind == CMD_BIND_UDP:
            _dg_exec_bind(rt, cmd)
        elif cmd.kind == CMD_RESOLVED:
            _resolved(rt, <_Pending>cmd.target, cmd.arg)
        elif cmd.kind == CMD_TIMER:
            _run_timer(rt, <TimerHandle>cmd.target)
        elif cmd.kind == CMD_CONNECT_TIMEOUT:
            _exec_connect_timeout(rt, <_PendingConnect>cmd.target)
        elif cmd.kind == CMD_RESUME_ACCEPT:
            _exec_resume_accept(rt, _lookup(rt, <ReactorID>cmd.target))
        elif cmd.kind == CMD_DRAIN_TIMEOUT:
            _exec_drain_timeout(rt, _lookup(rt, <ReactorID>cmd.target))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        log.error("command %d failed inside reactio: %s", cmd.kind, exc, exc_info=exc)
        _complete_cmd(cmd, exc)
    return 0


cdef int _exec_user(ReactRuntime rt, _Command cmd) except -1:
    cdef DispatchContext ctx
    obj = _lookup(rt, <ReactorID>cmd.target)
    if obj is None:
        return _complete_cmd(cmd, ReactorNotFoundError(
            f"no reactor {cmd.target}: it was closed or the id is stale"))
    if type(obj) is _Listener:
        return _complete_cmd(cmd, ReactorNotFoundError(
            f"{cmd.target} is a listener; user commands go to stream reactors"))
    if type(obj) is DatagramContext:
        return _dg_exec_user(rt, <DatagramContext>obj, cmd)
    ctx = <DispatchContext>obj
    if ctx.state != ST_OPEN:
        return _complete_cmd(cmd, ReactorClosedError(f"reactor {cmd.target} is not open"))
    try:
        failed = _call_reactor(rt, ctx, CB_COMMAND, cmd.arg)
    except (KeyboardInterrupt, SystemExit) as exc:
        _complete_cmd(cmd, exc)     # exactly once, even when unwinding
        raise
    return _complete_cmd(cmd, ctx.reactor_id if failed is None else failed)


cdef int _exec_close(ReactRuntime rt, _Command cmd) except -1:
    obj = _lookup(rt, <ReactorID>cmd.target)
    if obj is None:
        return _complete_cmd(cmd, ReactorNotFoundError(
            f"no reactor {cmd.target}: it was closed or the id is stale"))
    try:
        if type(obj) is _Listener:
            _close_listener(rt, <_Listener>obj)
        elif type(obj) is DatagramContext:
            (<DatagramContext>obj).close()
        else:       # (a connect in progress ends too: its completion gets the error)
            _stream_event(rt, <DispatchContext>obj, EV_ABORT if cmd.abort else EV_CLOSE, None)
    finally:        # on_close may unwind with KeyboardInterrupt: the completion still runs
        _complete_cmd(cmd, cmd.target)
    return 0


cdef int _exec_drain_timeout(ReactRuntime rt, object obj) except -1:
    """A stream's drain or linger time is up (obj: what its id finds now; None once the stream
    is gone, its slot freed)."""
    cdef DispatchContext ctx
    if type(obj) is not DispatchContext:
        return 0
    ctx = <DispatchContext>obj
    ctx.drain_timer = None
    return _stream_event(rt, ctx, EV_TIMEOUT, None)
