# Public Cython API of reactio.  A user's Cython module may
#     from reactio._core cimport Reactor, DispatchContext, MessageResult, ExpectMsgSize, DropMsgSize
# and subclass Reactor as a cdef class: the runtime then calls the overridden methods through
# the C vtable, with no Python call and (through on_inbound_raw / send_raw) no Python object per
# message.
from libc.stdint cimport uint32_t, uint64_t, int64_t
from reactio._epoll cimport sockaddr, sockaddr_storage, socklen_t


cdef class ReactorID:
    """Slot + generation: unique for the lifetime of a runtime; a stale id never matches."""
    cdef readonly uint32_t slot
    cdef readonly uint32_t generation


cdef class MessageResult:
    """ExpectMsgSize(n) (is_drop False) or DropMsgSize(n) (is_drop True).  Instances for small n
    are cached, so returning one allocates nothing."""
    cdef readonly Py_ssize_t size
    cdef readonly bint is_drop


cpdef MessageResult ExpectMsgSize(Py_ssize_t n)
cpdef MessageResult DropMsgSize(Py_ssize_t n)


cdef class _RecvStore:
    # Owner of the receive bytes.  Exported as the memoryview handed to on_inbound_message; a
    # store with live exports is never resized or freed in place (a new one replaces it), so a
    # view kept past its callback can show stale bytes but never freed memory.
    cdef char *data
    cdef Py_ssize_t cap
    cdef Py_ssize_t exports
    cdef Py_ssize_t view_start, view_len


cdef class MsgReader:
    cdef _RecvStore store          # None until the first read, and again after a burst
    cdef Py_ssize_t start          # first unprocessed byte
    cdef Py_ssize_t end            # one past the last received byte
    cdef Py_ssize_t decoded        # last ExpectMsgSize(n), 0 if none
    cdef Py_ssize_t unseen         # buffered bytes the dispatcher has not been shown yet
    cdef Py_ssize_t recv_min        # recv_buffer_min_size: the free space every read gets
    cdef readonly Py_ssize_t max_msg_size
    cdef bint busy                 # inside a read/dispatch: re-entry is refused
    cdef bint batched              # the last dispatch left bytes after a message (_dispatch_all)
    cdef int last_errno            # errno of the failed recv() behind READ_ERROR
    # The completion-model contract (a backend whose kernel reads into our buffer, as IOCP's
    # WSARecv does; a readiness backend such as epoll leaves all three 0): bytes a completed
    # read put at the end of the buffer, not yet dispatched; what that completion says about
    # the socket (READ_AGAIN / READ_MORE / READ_EOF); and whether a posted read owns the free
    # space now (then the buffer must not move).
    cdef Py_ssize_t arrived
    cdef int arrived_status
    cdef bint io_pending
    # the memoryview handed to on_inbound_message, pointed at the next message (any place, any
    # size) when nobody else holds it: no allocation, no GC pressure per message
    cdef object view

    cdef object _view(self, char *data, Py_ssize_t size)

    cdef Py_ssize_t _ensure_space(self) except -1
    cdef Py_ssize_t _recv(self, DispatchContext ctx) except -100
    cdef int _after_read(self, DispatchContext ctx, Py_ssize_t status) except -1
    cdef int _dispatch_all(self, DispatchContext ctx, Py_ssize_t new_bytes) except -1
    cdef int fast_read(self, DispatchContext ctx) except -1
    cdef int fast_dispatch(self, DispatchContext ctx) except -1
    cdef void _release_buffer(self)
    cdef void _park(self, ReactRuntime rt)
    cdef void _adopt_spare(self, ReactRuntime rt)


cdef class MsgSender:
    cdef char *buf
    cdef Py_ssize_t cap
    cdef Py_ssize_t head, tail      # queued bytes are buf[head:tail]
    cdef uint64_t total_queued      # bytes ever accepted (sent directly or queued)
    cdef uint64_t total_sent        # bytes ever written to the kernel
    cdef object completions         # deque of (total_queued at end of message, callable) or None
    cdef readonly Py_ssize_t max_send_queue
    cdef readonly Py_ssize_t high_water
    cdef readonly Py_ssize_t low_water
    cdef bint paused                # on_pause_writing was called, on_resume_writing is owed
    cdef char *inflight_buf         # completion model: the buffer a posted send reads (IOCP's
                                    # WSASend); never moved or freed while it is in flight

    cdef int _append(self, const char *data, Py_ssize_t n) except -1
    cdef void _release_buffer(self)


cdef class Reactor:
    cdef object _close_error

    cpdef on_connected(self, DispatchContext ctx, object listener_id)
    cpdef on_inbound_message(self, object buf, Py_ssize_t new_bytes,
                             Py_ssize_t decoded_msg_size, DispatchContext ctx)
    # Zero-object path: the default wraps the bytes in a memoryview and calls
    # on_inbound_message.  A Cython subclass may override it to parse the bytes in place.
    cdef MessageResult on_inbound_raw(self, char *data, Py_ssize_t size, Py_ssize_t new_bytes,
                                      Py_ssize_t decoded_msg_size, DispatchContext ctx)
    cpdef on_readable(self, DispatchContext ctx)
    cpdef on_command(self, object cmd, DispatchContext ctx)
    cpdef on_close(self, ReactorID reactor_id, object cmd_sender)
    cpdef on_pause_writing(self, DispatchContext ctx)
    cpdef on_resume_writing(self, DispatchContext ctx)


cdef class _TlsStream:
    # The TLS layer of one stream (_tls.pxi): ciphertext in/out through two MemoryBIOs, above
    # the backend.  The send queue (ctx.sender) and the receive buffer hold plaintext; the
    # records on their way to the socket wait in ``wire`` (about one record of the queue's
    # head, plus what the SSLObject wrote by itself: handshake flights, alerts, close_notify).
    cdef object sslobj, incoming, outgoing
    cdef MsgSender wire             # ciphertext for the socket; the backends send from it
    cdef Py_ssize_t covered         # plaintext at the queue's head already in wire's records
    cdef bint notify_owed           # close(): close_notify follows the queue's last record
    cdef object listener_id         # inbound: the listener, for on_connected after the handshake
    cdef object peer                # inbound: the peer's address, for the log of a failure
    cdef object error               # the SSLError that ends the stream (a bad record, truncation)
    cdef int64_t timeout_ns         # ssl_handshake_timeout
    cdef bint opened                # the handshake succeeded (on_close is owed)
    cdef bint peer_closed           # the peer's close_notify was read
    cdef bint partial               # the SSLObject holds a part of a record


cdef class DispatchContext:
    cdef ReactRuntime rt
    cdef readonly Reactor reactor
    cdef readonly ReactorID reactor_id
    cdef readonly MsgReader reader
    cdef readonly MsgSender sender
    cdef int fd
    cdef int state                  # ST_* of _lifecycle.pxi; only _stream_event changes it
    cdef int holds                  # callbacks / runtime operations on this stream in progress:
                                    # finalize waits until it is 0
    cdef bint in_ready              # on ReactRuntime.ready: send completions are owed
    cdef bint in_send               # in send_raw's queueing: completions wait for rt.ready
    cdef int want                   # WANT_READ | WANT_WRITE, as registered with the backend
    cdef bint abort                 # close with RST, dropping queued bytes
    cdef bint default_readable      # on_readable not overridden: call the reader directly
    cdef object close_error
    cdef _PendingConnect connect    # while connecting
    cdef void *backend_ops          # the backend's own per-stream record, freed with the
                                    # stream (IOCP: rio_op[2], receive and send/connect;
                                    # epoll: NULL, it keeps nothing per stream)
    cdef object py_on_inbound       # the Python function overriding on_inbound_message, or None
    cdef object drain_timer         # _Command: the drain_timeout of a graceful close
    cdef bint peer_eof              # the peer shut its write side (recv returned 0)
    cdef bint corked                # a multi-message read is being dispatched: hold replies
    cdef _TlsStream tls             # None for plain TCP: the one check TLS costs a plain stream

    # Send: 0 = all bytes written, 1 = some bytes queued.  Raises on a closed or broken
    # connection and when the queue would exceed max_send_queue (the connection is then closed).
    # Trusts n like memcpy: n < 0 raises ValueError, an n past the end of data is not caught.
    cdef int send_raw(self, const char *data, Py_ssize_t n, object on_sent=*) except -1
    cdef int _flush(self) except -1
    cdef int _flushed(self, bint empty) except -1
    cdef int _refuse_overflow(self, Py_ssize_t n, Py_ssize_t rest) except -1
    cdef int _after_queueing(self) except -1
    cdef int _send_queued(self) except -1
    cdef int _uncork(self) except -1
    cdef int _set_want(self, int want) except -1
    cdef int _flush_completions(self) except -1
    cdef int _defer_completions(self) except -1
    cdef int _owe_completion(self, object on_sent) except -1
    cdef int _watermark_callback(self, bint pause) except -1


cdef class _Command:
    cdef int kind
    # One record for every kind; each field has one meaning (None where a kind has no use for it).
    cdef object target          # CMD_USER/CLOSE/DRAIN_TIMEOUT/RESUME_ACCEPT: the ReactorID it is
                                # about (a stale id makes it a no-op); CONNECT/LISTEN/RESOLVED/
                                # CONNECT_TIMEOUT: the _Pending; CMD_TIMER: the TimerHandle
    cdef object arg             # what the sender handed over: CMD_USER the user's command,
                                # CMD_CALL the callable, CMD_RESOLVED the addresses or the error
    cdef bint abort             # CMD_CLOSE: reset instead of a graceful close
    cdef object completion
    cdef int64_t due_ns
    cdef bint cancelled         # internal timers are cancelled lazily


cdef class _Inbox:
    # The one object shared by a runtime's thread and every sender (docs/internals-threading.md):
    # `lock` (a PyMutex on a free-threaded build, nothing under the GIL) guards polling,
    # external, wake_pending, closed, evfd/port and each append.
    cdef object queue               # collections.deque: appended under lock, popped by the loop
    cdef unsigned long fork_epoch   # _fork_epoch when made: a forked child may not use it
    cdef int evfd
    cdef unsigned char lock         # rio_mutex (reactio_sys.h)
    cdef bint polling               # the loop is (about to be) blocked in epoll_wait
    cdef bint external              # another event loop polls fileno(): always wake
    cdef bint wake_pending          # an eventfd write is in flight
    cdef int closed                 # set once, under lock (retire); read anywhere
    cdef void *port                 # IOCP: the completion port to post wake-ups to
    cdef int push(self, object cmd) except -1
    cdef int wake_if_waiting(self, bint external_only_with_commands) except -1
    cdef int retire(self) except -1


cdef class CmdSender:
    cdef _Inbox inbox
    cdef _Inbox _inbox(self)


cdef class _StreamOptions:
    cdef Py_ssize_t recv_min, max_send_queue, max_msg_size
    cdef bint nodelay
    cdef object ssl_context, server_hostname    # TLS (ssl=); None: plain TCP
    cdef int64_t handshake_ns                   # ssl_handshake_timeout


cdef class _Listener:
    cdef int fd
    cdef object handler
    cdef ReactorID reactor_id
    cdef bint paused
    cdef bint closed
    cdef _StreamOptions opts
    cdef int family
    cdef object unix_file           # the socket file to remove at close (_unix.open_listener)
    cdef void *backend_ops          # the backend's per-listener record (IOCP:
                                    # rio_op[ACCEPTS_PER_LISTENER]; epoll: NULL)


cdef class _Pending:
    """A connect or a listen from its command until it has a stream / listener or failed: the
    command's payload, validated by the sender."""
    cdef object addr, completion, infos
    cdef _StreamOptions opts
    cdef bint done


cdef class _PendingConnect(_Pending):
    cdef object reactor, last_error
    cdef int64_t timeout_ns         # 0 = no limit
    cdef Py_ssize_t idx             # next address of infos to try
    cdef DispatchContext ctx        # the attempt in progress
    cdef _Command timer


cdef class _PendingListen(_Pending):
    cdef object handler
    cdef int backlog
    cdef bint reuse_port, dual_stack


cdef class ReactRuntime:
    cdef int epfd
    cdef void *port                 # IOCP: the completion port
    cdef Py_ssize_t n_pending_ops   # IOCP: operations whose packet has not been dequeued
    cdef _Inbox inbox
    cdef readonly CmdSender cmd_sender
    cdef void *events               # epoll_event[max_events], preallocated
    cdef int max_events
    cdef list slots                 # DispatchContext | _Listener | None, indexed by slot
    cdef uint32_t *gens             # current generation of each slot
    cdef uint32_t *free_slots       # stack of free slot numbers
    cdef Py_ssize_t nslots, nfree, slots_cap
    cdef list timers                # heap of (due_ns, seq, _Command)
    cdef uint64_t timer_seq
    cdef Py_ssize_t n_cancelled_timers
    cdef set pending_connects       # _Pending: resolving, connecting, or binding
    cdef list ready                 # DispatchContext with send completions owed (in_ready)
    cdef list iocp_rearm            # IOCP: DispatchContext whose next WSARecv waits a turn
    # an empty receive buffer (and its memoryview, or None) that a stream parked after a read:
    # the next stream that reads takes it (MsgReader._park / _adopt_spare)
    cdef _RecvStore spare_store
    cdef object spare_view
    cdef unsigned long fork_epoch   # _fork_epoch when made: a forked child may not use it
    cdef unsigned long owner_thread # thread running process_events(), while in_process (atomic)
    cdef void *tstate               # its PyThreadState, for rio_sole_python_thread (reactio_sys.h)
    cdef bint initialized
    cdef int64_t drain_ns           # drain_timeout in ns, 0 = no limit
    cdef Py_ssize_t n_streams, n_listeners, n_user_deferred, n_timers
    cdef uint64_t n_sock_events, n_received_cmds
    cdef int closed                 # written by the loop thread, read anywhere (atomic)
    cdef int in_process             # claimed by compare-and-swap: one loop thread at a time
    cdef int stopping               # set by stop() on any thread, taken by run_forever
    cdef bint shutting_down         # shutdown() began: no connect or listen starts
    cdef readonly Py_ssize_t max_send_queue, max_msg_size, high_water, low_water
    cdef readonly double drain_timeout

    cdef bint _idle(self)
    cdef int _check_usable(self) except -1
    cdef int _enter(self, double timeout) except -2
    cdef object _process(self, double timeout, bint wait_when_idle)
    cdef int _loop(self, double timeout, bint forever, bint busy) except -1
    cdef bint _turn(self, int timeout_ms, bint wait_when_idle) except -1


# ------------------------------------------------------------------ datagrams (_datagram.pxi)

cdef class DatagramReactor:
    cdef object _close_error

    cpdef on_bound(self, DatagramContext ctx)
    cpdef on_datagram(self, object buf, object addr, DatagramContext ctx)
    # Zero-object path: the default wraps the datagram in a memoryview, builds (or reuses) the
    # sender's address tuple and calls on_datagram.  A Cython subclass may override it to read
    # the bytes and the raw address in place, and reply with ctx.send_to_raw(..., addr, addrlen).
    cdef int on_datagram_raw(self, char *data, Py_ssize_t size, const sockaddr *addr,
                             socklen_t addrlen, DatagramContext ctx) except -1
    cpdef on_error(self, object exc, DatagramContext ctx)
    cpdef on_command(self, object cmd, DatagramContext ctx)
    cpdef on_close(self, ReactorID reactor_id, object cmd_sender)


cdef class DatagramContext:
    cdef ReactRuntime rt
    cdef readonly DatagramReactor reactor
    cdef readonly ReactorID reactor_id
    cdef MsgReader reader           # its store is the receive buffer, its view the datagram's
    cdef int fd
    cdef int family
    cdef int state                  # ST_OPEN, ST_CLOSING or ST_CLOSED
    cdef int holds                  # as DispatchContext.holds: finalize waits for 0
    cdef int want                   # WANT_READ | WANT_WRITE (datagrams wait in the out batch)
    cdef bint connected             # connect_to was given: send() and ctx.peer work
    cdef bint corked                # a receive batch is being dispatched: replies are batched
    cdef object close_error
    cdef object peer                # the connected peer's address tuple, else None
    cdef object py_on_datagram      # the Python function overriding on_datagram, or None
    cdef Py_ssize_t slot            # bytes per received datagram (max_datagram_size + 1)
    cdef Py_ssize_t max_payload     # the largest datagram the family can carry
    cdef int nbatch                 # datagrams per recvmmsg (recv_batch)
    cdef void *rmsgs                # mmsghdr[nbatch], iovec[nbatch], sockaddr_storage[nbatch]
    cdef void *riov
    cdef sockaddr_storage *raddrs
    # addresses handed to on_datagram: a direct-mapped cache of the tuples built for senders
    cdef sockaddr_storage *cache_sa
    cdef socklen_t *cache_len
    cdef list cache_obj
    cdef int last_idx               # the cache entry of the last sender (send_to fast path)
    cdef dict sa_of                 # address tuple -> raw sockaddr bytes, for send_to
    # the out batch: datagrams queued during a dispatch (or while the socket is full)
    cdef char *obuf
    cdef Py_ssize_t olen
    cdef int nout, ohead
    cdef Py_ssize_t *ooff
    cdef Py_ssize_t *olens
    cdef sockaddr_storage *osa
    cdef socklen_t *osalen
    cdef void *omsgs
    cdef void *oiov
    cdef void *backend_ops          # IOCP: the receive and send rio_op (freed in __dealloc__:
                                    # a pending op holds a reference to this context)
    cdef int refuse_sends           # tests: the next N direct sends act as refused by the
                                    # socket (loopback never refuses a UDP send)
    cdef int rfromlen               # IOCP: WSARecvFrom's address length (the kernel's while
                                    # the receive is pending)
    cdef readonly uint64_t recv_calls, datagrams_received, send_calls, datagrams_sent
    cdef readonly uint64_t send_dropped, truncated

    # Send one datagram to addr (addrlen 0: the connected peer).  1 when sent or queued,
    # 0 when the out batch is full and the socket does not take more (the datagram is
    # dropped and counted in send_dropped).  Raises OSError(EMSGSIZE) for a datagram larger
    # than the protocol carries, ReactorClosedError on a closed endpoint.
    cdef int send_to_raw(self, const char *data, Py_ssize_t n, const sockaddr *addr,
                          socklen_t addrlen) except -1
    cdef int _flush_out(self) except -1
