# Datagram endpoints (UDP): DatagramReactor, DatagramContext, their life in the runtime, and
# send_bind_udp's command.  An endpoint lives in a slot like a stream (ReactorID, send_close,
# send_user_cmd, rt.local_address) and is counted by count_streams().  Its life is short:
# OPEN -> CLOSING (a close asked for, a callback raised) -> CLOSED (finalize: socket closed,
# slot freed, on_close), with the same holding rule as streams (_lifecycle.pxi): finalize runs
# once, when nothing holds the endpoint.  DispatchContext is a final class (its hot calls are
# direct C calls), so an endpoint is its own small class, not a subclass of it.
# How datagrams are read and sent is the backend's (_datagram_epoll.pxi, _datagram_iocp.pxi,
# through _backend.pxi); the batches they share are in _datagram_batch.pxi.
from reactio._dgram cimport *

# Address tuples kept per endpoint, direct-mapped by a hash of the raw sockaddr: a datagram
# from a sender seen before gets the same tuple object, built once (no allocation per datagram
# for a feed, a peer, or a few hundred clients).
cdef enum:
    ADDR_CACHE = 256
    OUT_MAX = 64                # datagrams in one sendmmsg batch
    SA_OF_MAX = 4096            # send_to address tuples remembered before the table is reset
cdef Py_ssize_t OUT_BYTES = 256 * 1024


cdef class DatagramReactor:
    """DatagramReactor()
--

One datagram (UDP) endpoint's handling.

    Subclass it in Python (override with ``def``) or in Cython (``cimport reactio._core``; the
    cdef ``on_datagram_raw`` gets the bytes and the raw sender address with no Python object).
    An exception raised by a callback closes this endpoint (its on_close still runs) and is
    logged; KeyboardInterrupt and SystemExit propagate out of process_events().
    """

    cpdef on_bound(self, DatagramContext ctx):
        """The socket is bound (and connected, with connect_to); the reactor may send here."""
        pass

    cpdef on_datagram(self, object buf, object addr, DatagramContext ctx):
        """One datagram: buf is a writable memoryview of it, valid only during this call; addr
        is the sender's address as socket.recvfrom() gives it (the same tuple object for every
        datagram of a sender seen recently)."""
        raise NotImplementedError(f"{type(self).__name__} must implement on_datagram")

    cdef int on_datagram_raw(self, char *data, Py_ssize_t size, const sockaddr *addr,
                             socklen_t addrlen, DatagramContext ctx) except -1:
        view = ctx.reader._view(data, size)
        a = _dg_addr(ctx, addr, addrlen)
        f = ctx.py_on_datagram
        if f is not None:       # a Python override, resolved once per endpoint
            f(self, view, a, ctx)
        else:
            self.on_datagram(view, a, ctx)
        return 0

    cpdef on_error(self, object exc, DatagramContext ctx):
        """An error the socket reported that does not end the endpoint: ConnectionRefusedError
        (ICMP port unreachable, on a connected socket), MessageTooLargeError (a datagram larger
        than max_datagram_size, dropped), an OSError from a batched send.  The default logs it;
        call ctx.close() to end the endpoint."""
        log.log(logging.WARNING if isinstance(exc, MessageTooLargeError) else logging.INFO,
                "datagram endpoint %s: %s", None if ctx is None else ctx.reactor_id, exc)

    cpdef on_command(self, object cmd, DatagramContext ctx):
        """A user command sent with CmdSender.send_user_cmd."""
        raise CommandNotHandledError(f"{type(self).__name__} does not handle commands "
                                     f"(override on_command); command {cmd!r} not delivered")

    cpdef on_close(self, ReactorID reactor_id, object cmd_sender):
        """The endpoint is closed (socket gone); close_error tells why (None: asked for)."""
        pass

    @property
    def close_error(self):
        return self._close_error


@cython.final
cdef class DatagramContext:
    """A datagram reactor's handle on its socket: send_to / send, close, addresses, multicast
    membership, counters."""

    def __cinit__(self):
        self.fd = -1
        self.state = ST_CLOSED

    def __init__(self):
        raise TypeError("DatagramContext objects are created by the runtime")

    def __dealloc__(self):
        if self.fd >= 0:
            rio_close(self.fd)
        _dg_free_buffers(self)
        free(self.backend_ops)      # (a pending op holds a reference: none is pending here)

    @property
    def cmd_sender(self):
        if self.rt is None:
            raise ReactorClosedError("this DatagramContext belongs to no runtime")
        return self.rt.cmd_sender

    @property
    def is_open(self):
        return self.state == ST_OPEN

    @property
    def peer(self):
        """The connect_to peer's address (as getpeername() gives it), or None."""
        return self.peer

    @property
    def local_address(self):
        self._check_open()
        return _sock_address(self.fd, False)

    @property
    def max_datagram_size(self):
        return self.slot - 1

    def fileno(self):
        return self.fd

    def _check_open(self):
        if self.state != ST_OPEN:
            raise ReactorClosedError(f"datagram endpoint {self.reactor_id} is closed")

    def send_to(self, data, addr):
        """Send ``data`` (bytes-like) as one datagram to ``addr`` (a numeric (host, port) or
        "host:port", or the addr an on_datagram got).  epoll: inside on_datagram the reply joins
        the batch sent with one sendmmsg after the batch's dispatch; elsewhere (and on IOCP)
        it is sent at once, or queued when the socket does not take it.
        Returns True (sent or queued) or False (the socket and the out batch are full: dropped,
        counted in send_dropped)."""
        cdef sockaddr_storage ss
        cdef socklen_t sl = _dg_sockaddr(self, addr, &ss)
        return _dg_send_obj(self, data, &ss, sl)

    def send(self, data):
        """Send one datagram to the connect_to peer."""
        if not self.connected:
            raise ValueError("send() needs an endpoint bound with connect_to; use send_to")
        return _dg_send_obj(self, data, NULL, 0)

    cdef int send_to_raw(self, const char *data, Py_ssize_t n, const sockaddr *addr,
                         socklen_t addrlen) except -1:
        if self.state != ST_OPEN:
            raise ReactorClosedError(f"datagram endpoint {self.reactor_id} is closed")
        if RIO_CHECK_THREADS:
            _refuse_foreign_thread(self.rt, self.reactor_id)
        if n < 0 or n > self.max_payload:
            raise _net.os_error(EMSGSIZE, f"send_to: a datagram of {n} bytes (at most "
                                          f"{self.max_payload})")
        if addrlen > sizeof(sockaddr_storage):
            raise ValueError("send_to_raw: addrlen larger than a sockaddr_storage")
        return _be_dg_send(self, data, n, addr, addrlen)

    def _refuse_sends(self, int n):
        """For tests: the next ``n`` datagrams this endpoint would send at once are treated
        as the socket refusing them (EAGAIN / WSAEWOULDBLOCK), so that the full-socket path
        (out batch, write interest or WSASendTo, send_dropped) runs on loopback, which never
        refuses a UDP send."""
        if n < 0:
            raise ValueError("n must be >= 0")
        self.refuse_sends = n

    cdef int _flush_out(self) except -1:
        return _be_dg_flush(self)

    def join_group(self, group, interface=None):
        """Join a multicast group (numeric address) on ``interface`` (IPv4: its address; IPv6:
        its index or name; None: the system's choice)."""
        self._check_open()
        _udpnet.change_membership(self.fd, self.family, group, interface, True)

    def leave_group(self, group, interface=None):
        self._check_open()
        _udpnet.change_membership(self.fd, self.family, group, interface, False)

    def close(self):
        """Close the endpoint: queued datagrams get one last non-blocking send, on_close runs
        once no callback of this endpoint is on the stack."""
        if self.state == ST_OPEN:
            if RIO_CHECK_THREADS:
                _refuse_foreign_thread(self.rt, self.reactor_id)
            _dg_close(self.rt, self, None)


cdef object _dg_send_obj(DatagramContext ctx, data, sockaddr_storage *ss, socklen_t sl):
    """send_to / send of a bytes-like object: True when sent or queued."""
    cdef Py_buffer view
    cdef int r
    if PyBytes_CheckExact(data):
        r = ctx.send_to_raw(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                             <sockaddr *>ss, sl)
    else:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            r = ctx.send_to_raw(<const char *>view.buf, view.len, <sockaddr *>ss, sl)
        finally:
            PyBuffer_Release(&view)
    return r == 1


# ------------------------------------------------------------------------- life

cdef inline void _dg_hold(DatagramContext ctx) noexcept:
    ctx.holds += 1


cdef inline int _dg_release(ReactRuntime rt, DatagramContext ctx) except -1:
    ctx.holds -= 1
    if ctx.holds == 0 and ctx.state == ST_CLOSING:
        _dg_finalize(rt, ctx)
    return 0


cdef int _dg_close(ReactRuntime rt, DatagramContext ctx, object err) except -1:
    """OPEN -> CLOSING (the first reason is kept); finalize now unless something holds it."""
    if ctx.state != ST_OPEN:
        return 0
    ctx.close_error = err
    ctx.state = ST_CLOSING
    if ctx.holds == 0:
        _dg_finalize(rt, ctx)
    return 0


cdef int _dg_finalize(ReactRuntime rt, DatagramContext ctx) except -1:
    """CLOSING -> CLOSED, once: last send of the out batch, socket closed, slot freed,
    on_close."""
    ctx.state = ST_CLOSED
    _be_dg_last_flush(ctx)
    _be_close_socket(rt, ctx.fd, False)     # (IOCP: cancels; the packets still come)
    ctx.fd = -1
    _free_slot(rt, ctx.reactor_id.slot)
    rio_bump_ssize(&rt.n_streams, -1)
    if not _be_dg_io_pending(ctx):          # else __dealloc__ frees them, after the packets
        ctx.reader._release_buffer()
        _dg_free_buffers(ctx)
    reactor = ctx.reactor
    err = ctx.close_error
    reactor._close_error = err
    if isinstance(err, ReactioError):
        log.error("datagram endpoint %s (%s) closed: %s", ctx.reactor_id,
                  type(reactor).__name__, err)
    try:
        reactor.on_close(ctx.reactor_id, rt.cmd_sender)
    except (KeyboardInterrupt, SystemExit):
        raise
    except RuntimeClosedError:
        pass
    except BaseException as exc:
        log.error("datagram endpoint %s (%s): on_close raised %s", ctx.reactor_id,
                  type(reactor).__name__, type(exc).__name__, exc_info=exc)
    return 0


cdef int _dg_failed(ReactRuntime rt, DatagramContext ctx, exc) except -1:
    """A callback of this endpoint raised: close it (logged here with the traceback)."""
    if not isinstance(exc, ReactioError):
        log.error("datagram endpoint %s (%s): callback raised %s; closing it", ctx.reactor_id,
                  type(ctx.reactor).__name__, type(exc).__name__, exc_info=exc)
    return _dg_close(rt, ctx, exc)


cdef enum:
    DCB_BOUND = 1
    DCB_COMMAND = 2
    DCB_ERROR = 3


cdef object _dg_call(ReactRuntime rt, DatagramContext ctx, int which, object arg):
    """A guarded callback (as _call_reactor for streams): returns None or the exception."""
    failed = None
    _dg_hold(ctx)
    try:
        if which == DCB_BOUND:
            ctx.reactor.on_bound(ctx)
        elif which == DCB_COMMAND:
            ctx.reactor.on_command(arg, ctx)
        else:
            ctx.reactor.on_error(arg, ctx)
    except CommandNotHandledError as exc:
        failed = exc
    except (KeyboardInterrupt, SystemExit):
        _dg_release(rt, ctx)
        raise
    except BaseException as exc:
        _dg_failed(rt, ctx, exc)
        failed = exc
    _dg_release(rt, ctx)
    return failed


cdef int _dg_report(DatagramContext ctx, object exc) except -1:
    """An error for on_error (the endpoint is held by the caller)."""
    if ctx.state == ST_OPEN:
        _dg_call(ctx.rt, ctx, DCB_ERROR, exc)
    return 0


# --------------------------------------------------------------------- commands

cdef int _dg_exec_bind(ReactRuntime rt, _Command cmd) except -1:
    """CMD_BIND_UDP: make the socket, register the endpoint, on_bound, then the completion."""
    cdef DatagramContext ctx
    cdef DatagramReactor reactor = <DatagramReactor>cmd.arg
    spec = cmd.target
    if rt.shutting_down:
        return _complete_cmd(cmd, ReactorClosedError("the runtime is shutting down"))
    try:
        fd = _udpnet.open_udp(spec)
    except OSError as exc:
        return _complete_cmd(cmd, OSError(exc.errno, f"{exc.strerror} (bind_udp on "
                                                     f"{spec.bind!r})"))
    except Exception as exc:
        return _complete_cmd(cmd, exc)
    try:
        ctx = _dg_new(rt, fd, reactor, spec)
    except Exception as exc:
        return _complete_cmd(cmd, exc)
    failed = _dg_call(rt, ctx, DCB_BOUND, None)
    if ctx.state == ST_OPEN:
        _be_dgram_opened(rt, ctx)
    return _complete_cmd(cmd, ctx.reactor_id if failed is None else failed)


cdef DatagramContext _dg_new(ReactRuntime rt, int fd, DatagramReactor reactor, object spec):
    cdef DatagramContext ctx = DatagramContext.__new__(DatagramContext)
    ctx.fd = fd             # the context closes it from here on, also when this fails
    ctx.rt = rt
    ctx.reactor = reactor
    ctx.family = spec.family
    ctx.nbatch = spec.recv_batch
    ctx.slot = spec.max_datagram_size + 1      # one byte more: a longer datagram is truncated
    ctx.max_payload = _udpnet.MAX_PAYLOAD[spec.family]
    ctx.reader = MsgReader.__new__(MsgReader)    # (only its buffer and view are used)
    ctx.reader.store = _RecvStore(_be_dgram_recv_bytes(ctx.slot, ctx.nbatch))
    ctx.cache_obj = [None] * ADDR_CACHE
    ctx.sa_of = {}
    f = getattr(type(reactor), "on_datagram")
    if type(f) is types.FunctionType and "on_datagram" not in getattr(reactor, "__dict__", ()):
        ctx.py_on_datagram = f
    _dg_alloc_buffers(ctx)
    if spec.peer is not None:
        ctx.connected = True
        ctx.peer = _sock_address(fd, True)
    ctx.reactor_id = _alloc_slot(rt, ctx)
    ctx.want = WANT_READ
    try:
        _be_dgram_add(rt, ctx)
    except BaseException:
        _free_slot(rt, ctx.reactor_id.slot)
        raise
    ctx.state = ST_OPEN
    rio_bump_ssize(&rt.n_streams, 1)
    return ctx


cdef int _dg_exec_user(ReactRuntime rt, DatagramContext ctx, _Command cmd) except -1:
    if ctx.state != ST_OPEN:
        return _complete_cmd(cmd, ReactorClosedError(f"reactor {cmd.target} is not open"))
    try:
        failed = _dg_call(rt, ctx, DCB_COMMAND, cmd.arg)
    except (KeyboardInterrupt, SystemExit) as exc:
        _complete_cmd(cmd, exc)
        raise
    return _complete_cmd(cmd, ctx.reactor_id if failed is None else failed)


cdef int _dg_end(ReactRuntime rt, DatagramContext ctx, object err) except -1:
    """The runtime's close(): end the endpoint now, whatever holds it (close_error stays
    None, as for streams: nothing went wrong with this endpoint)."""
    if ctx.state == ST_CLOSED:
        return 0
    ctx.state = ST_CLOSING
    ctx.holds = 0
    return _dg_finalize(rt, ctx)


def _bind_udp_command(addr, reactor, deferred, on_completion, kw):
    """send_bind_udp's checks (in the caller's thread) and its command."""
    if not isinstance(reactor, DatagramReactor):
        raise TypeError(f"reactor must be a DatagramReactor, not {type(reactor).__name__}")
    spec = _udpnet.check_options(addr, **kw)
    return _new_command(CMD_BIND_UDP, spec, reactor, deferred, on_completion)
