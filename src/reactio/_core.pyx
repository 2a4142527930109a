# cython: language_level=3, auto_pickle=False
# cython: freethreading_compatible = True
"""reactio's hot loop: the runtime, reactor slots, framed reading, queued sending, commands and
timers.

Layout of this module (one compilation unit, split by concern; docs/internals.md is the map):
  _core.pyx        values handed to users (ReactorID, MessageResult, Deferred) and Reactor
  _limits.pxi      validation of every numeric option at the API boundary
  _lifecycle.pxi   the state machine of a stream's life: every transition, finalize
  _reader.pxi      MsgReader: receive buffer, bounded read strategies, the framing dispatch loop
  _sender.pxi      MsgSender + DispatchContext: direct writes, the send queue, watermarks
  _autosend.pxi    AutoSendBuffer (ctx.acquire_send()): pieces sent as one message
  _tls.pxi         TLS streams: options, the handshake, decrypting into the receive buffer
  _tls_send.pxi    TLS sending: the plaintext queue, its records, close_notify
  _commands.pxi    CmdSender, the cross-thread inbox, and running commands
  _streams.pxi     new streams, accepted connections, listeners, callback failures
  _connect.pxi     connects and listens: resolution, address by address, bind
  _runtime.pxi     ReactRuntime: the public API, process_events, run, close
  _shutdown.pxi    ReactRuntime.shutdown(): the graceful stop
  _close_all.pxi   what close() does to every stream, listener, command and timer
  _slots.pxi       slots: ReactorID allocation, lookup, release
  _timers.pxi      the timer heap, TimerHandle (call_later / call_at), send_call
  _backend.pxi     the backend interface: the only place that picks epoll or IOCP
  _epoll_loop.pxi  the epoll backend (Linux)
  _iocp_loop.pxi   the IOCP backend (Windows); _iocp_accept.pxi its AcceptEx listeners,
                   _iocp_send.pxi its WSASend path
  _datagram*.pxi   UDP endpoints: contexts, addresses, batches, epoll / IOCP I/O

Rules the code keeps everywhere:
  * a callback's exception closes only its reactor; KeyboardInterrupt/SystemExit propagate;
  * a stream is finalized (fd closed, slot freed, on_close called) exactly once, and only when
    nothing holds it (DispatchContext.holds == 0: no callback of it on the stack, no runtime
    operation on it in progress);
  * every completion runs exactly once, on the runtime's thread, never inside the call that
    registered it.
"""
cimport cython
from cpython.buffer cimport (PyBUF_READ, PyBUF_SIMPLE, PyBUF_WRITE, PyBuffer_FillInfo,
                             PyBuffer_Release, PyObject_GetBuffer)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from cpython.list cimport PyList_GET_ITEM
from cpython.ref cimport PyObject, Py_INCREF
from cpython.memoryview cimport PyMemoryView_FromMemory, PyMemoryView_FromObject
from libc.stdint cimport INT64_MAX, int64_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove

from reactio._epoll cimport *
from reactio cimport _iocp as w

import collections
import enum
import errno
import functools
import heapq
import operator
import logging
import os
import types
import warnings

from reactio import _net, _udpnet, _unix
from reactio.errors import (CommandNotHandledError, MessageResultError, MessageTooLargeError,
                            ReactioError, ReactorClosedError, ReactorNotFoundError,
                            RuntimeClosedError, SendQueueOverflowError)

log = logging.getLogger("reactio")

# Incremented in a child process after fork(): a runtime (and its inbox) remembers the epoch it
# was made in, and refuses to run in another one -- its epoll set, sockets and eventfd are
# shared with the parent, which still uses them.
cdef unsigned long _fork_epoch = 0


def _after_fork_in_child():
    global _fork_epoch
    _fork_epoch += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

# DispatchContext.state, in the order of a stream's life (_lifecycle.pxi is the state machine;
# docs/internals.md has its table).  A context made without the runtime is ST_CLOSED.
cdef enum:
    ST_CONNECTING = 0   # outbound connect in progress; no reactor callbacks yet
    ST_HANDSHAKE = 1    # TLS: connected, the handshake runs (_tls.pxi); no reactor callbacks yet
    ST_OPEN = 2
    ST_DRAINING = 3     # graceful close: flushing the queue; input is read and dropped
    ST_HALF_CLOSED = 4  # queue flushed, our FIN sent: waiting (LINGER_NS) for the peer's EOF
    ST_CLOSING = 5      # finalize as soon as nothing holds the stream (DispatchContext.holds)
    ST_CLOSED = 6

cdef uint64_t WAKE_KEY = 0xFFFFFFFFFFFFFFFFULL

DEFAULT_MAX_SEND_QUEUE = 16 * 1024 * 1024
DEFAULT_MAX_MSG_SIZE = 16 * 1024 * 1024
DEFAULT_HIGH_WATER = 64 * 1024
DEFAULT_LOW_WATER = 16 * 1024


def monotonic_ns():
    """The clock of Deferred.until(), deferred commands and timers: time.perf_counter_ns()'s
    clock, to the nanosecond (CLOCK_MONOTONIC on Linux, QueryPerformanceCounter on Windows; on
    Windows before CPython 3.13, time.monotonic() is the coarser GetTickCount64)."""
    return rio_monotonic_ns()


@cython.final
cdef class ReactorID:
    """Identifies a reactor or listener of one runtime: slot + generation.  A slot's generation
    changes each time it is freed, so an id is never reused and a stale id is refused."""

    def __cinit__(self, uint32_t slot, uint32_t generation):
        self.slot = slot
        self.generation = generation

    def __eq__(self, other):
        if type(other) is not ReactorID:
            return NotImplemented
        return (self.slot == (<ReactorID>other).slot
                and self.generation == (<ReactorID>other).generation)

    def __hash__(self):
        return hash((self.slot, self.generation))

    def to_int(self):
        """(generation << 32) | slot: the key registered with the poller."""
        return _poll_key(self)

    @staticmethod
    def from_int(uint64_t value):
        return ReactorID(<uint32_t>(value & 0xFFFFFFFFULL), <uint32_t>(value >> 32))

    def __repr__(self):
        return f"ReactorID({self.slot}:{self.generation})"

    def __str__(self):
        return f"{self.slot}:{self.generation}"

    def __reduce__(self):
        return (ReactorID, (self.slot, self.generation))


cdef inline uint64_t _poll_key(ReactorID rid) noexcept:
    return (<uint64_t>rid.generation << 32) | rid.slot


# ----------------------------------------------------------------------------- MessageResult

@cython.final
cdef class MessageResult:
    """What on_inbound_message returns; build it with ExpectMsgSize(n) or DropMsgSize(n)."""

    def __repr__(self):
        return f"{'DropMsgSize' if self.is_drop else 'ExpectMsgSize'}({self.size})"

    def __eq__(self, other):
        if type(other) is not MessageResult:
            return NotImplemented
        return self.size == (<MessageResult>other).size and self.is_drop == (<MessageResult>other).is_drop

    def __hash__(self):
        return hash((self.size, self.is_drop))

    def __reduce__(self):
        # (auto_pickle is off module-wide: live objects -- reactors, contexts, runtimes --
        # cannot be pickled; a result can, and unpickles to the cached instance)
        return (DropMsgSize if self.is_drop else ExpectMsgSize, (self.size,))


cdef enum:
    RESULT_CACHE_SIZE = 8192   # results for sizes below this are made once, on first use

# The cached results, as C arrays of owned references (never freed: they live as long as the
# module): a cache hit is an index and an INCREF, with no list or None check.  Any thread may
# fill a slot (C7, docs/internals-threading.md): on a free-threaded build a result is made
# immortal before it is published (so the INCREFs of threads on other cores do not fight over
# its reference count), published with a compare-and-swap and read with an acquire load; a
# thread that loses the race for a slot returns the winner's result (its own, immortal, stays
# allocated: one small object per losing thread and size, at most).  Under the GIL these are
# plain accesses, as before.
cdef PyObject *_expect_cache[RESULT_CACHE_SIZE]
cdef PyObject *_drop_cache[RESULT_CACHE_SIZE]


cdef MessageResult _make_result(Py_ssize_t n, bint is_drop):
    cdef MessageResult r
    cdef PyObject **slot
    cdef PyObject *seen = NULL
    if n < 0:
        raise MessageResultError(
            f"{'DropMsgSize' if is_drop else 'ExpectMsgSize'}({n}): size must not be negative")
    r = MessageResult.__new__(MessageResult)
    r.size = n
    r.is_drop = is_drop
    if n < RESULT_CACHE_SIZE:
        slot = &_drop_cache[n] if is_drop else &_expect_cache[n]
        rio_immortalize(r)                  # (a no-op under the GIL)
        Py_INCREF(r)                        # the cache's reference
        if not rio_cas_ptr(slot, &seen, <PyObject *>r):
            return <MessageResult>seen      # another thread's, published first
    return r


cdef inline MessageResult _cached_result(PyObject **cache, Py_ssize_t n, bint is_drop):
    """The cached result of size n (published by _make_result), else a new one."""
    cdef PyObject *r
    if <size_t>n < RESULT_CACHE_SIZE:
        r = <PyObject *>rio_load_ptr_acquire(&cache[n])
        if r != NULL:
            return <MessageResult>r
    return _make_result(n, is_drop)


cpdef MessageResult ExpectMsgSize(Py_ssize_t n):
    """The message is incomplete.  n == 0: its size is unknown, call again on any new bytes;
    n > 0: call again once n bytes (counted from the start of buf) are buffered; n must then be
    larger than the bytes buffered now."""
    return _cached_result(_expect_cache, n, False)


cpdef MessageResult DropMsgSize(Py_ssize_t n):
    """n bytes (0 < n <= len(buf)) are consumed; remaining bytes are dispatched at once."""
    return _cached_result(_drop_cache, n, True)


# Every Python call of these takes a reference to the function object itself, shared by all
# threads (CPython 3.13t defers, then immortalizes, Python functions' counts, not Cython's):
# immortal too, made so here by the importing thread, which owns them until import returns.
# (looked up by name: the Python objects, not the C functions; the GC untracks immortals)
for _name in ("ExpectMsgSize", "DropMsgSize"):
    rio_immortalize(globals()[_name])
del _name


class Deferred:
    """When a command runs: ``Deferred.IMMEDIATE``, ``Deferred.after(seconds)`` or
    ``Deferred.until(monotonic_ns)`` (reactio.monotonic_ns() clock).  Deferred commands run in
    due order (ties in send order), never before their time."""
    __slots__ = ("due_ns",)

    def __init__(self, due_ns=0):
        self.due_ns = _due_ns(due_ns)

    @classmethod
    def after(cls, seconds):
        """Due ``seconds`` (a finite number >= 0) from now."""
        cdef int64_t delay = _delay_ns(seconds, "Deferred.after()")
        if delay >= INT64_MAX - rio_monotonic_ns():
            raise ValueError(f"Deferred.after({seconds!r}): the due time does not fit in "
                             "64-bit nanoseconds")
        return cls(rio_monotonic_ns() + delay)

    @classmethod
    def until(cls, monotonic_ns):
        return cls(monotonic_ns)

    def __repr__(self):
        return "Deferred.IMMEDIATE" if self.due_ns == 0 else f"Deferred.until({self.due_ns})"


Deferred.IMMEDIATE = Deferred(0)


class SendOrQueResult(enum.IntEnum):
    COMPLETE = 0    # every byte reached the kernel; nothing is queued
    IN_QUEUE = 1    # some bytes wait in the send queue and go out when the socket is writable


cdef tuple _SEND_RESULTS = (SendOrQueResult.COMPLETE, SendOrQueResult.IN_QUEUE)


# ----------------------------------------------------------------------------------- Reactor

# 0..256 as Python ints, for the sizes handed to on_inbound_message (CPython's own small ints:
# an index instead of a call per argument)
cdef PyObject *_small_ints[257]
for _i in range(257):
    _o = _i
    Py_INCREF(_o)
    _small_ints[_i] = <PyObject *>_o
del _i, _o


cdef inline object _small_int(Py_ssize_t v):
    if <size_t>v < 257:
        return <object>_small_ints[v]
    return v


cdef inline int _ordinary_dict(object reactor) except -1:
    """Give an instance of a Python subclass (CPython 3.11+ manages its dict) an ordinary dict
    when it is made.  The dict CPython would make at its first attribute store shares its keys
    with the class (a Cython base skips the inline values a plain class gets), and the
    interpreter's specialised attribute reads and writes miss on it every time: a read of
    self.x cost 518 instructions instead of 267, -16 % per frame in bench/test_dispatch.py's
    1000-frame benchmark (BENCHMARKS.md, dispatch micro-benchmarks); the ordinary dict is
    also smaller."""
    if rio_managed_dict(<PyObject *>reactor):
        PyObject_GenericSetDict(reactor, {}, NULL)
    return 0


cdef class Reactor:
    """Reactor()
--

One TCP stream's protocol: framing (on_inbound_message) and handling.

    Subclass it in Python (override with ``def``) or in Cython (``cimport reactio._core`` and
    override the cpdef methods, or the cdef ``on_inbound_raw`` for zero-object dispatch).  An
    exception raised by a callback closes this reactor (its on_close still runs) and is logged on
    the ``reactio`` logger; KeyboardInterrupt and SystemExit propagate out of process_events().
    """

    def __cinit__(self, *args, **kwargs):
        _ordinary_dict(self)

    cpdef on_connected(self, DispatchContext ctx, object listener_id):
        """The stream is connected.  listener_id is the accepting listener's ReactorID, or None
        for an outbound connection.  The reactor may send here."""
        pass

    cpdef on_inbound_message(self, object buf, Py_ssize_t new_bytes,
                             Py_ssize_t decoded_msg_size, DispatchContext ctx):
        """Frame and handle received bytes.  buf is a writable memoryview of every unprocessed
        byte, valid only during this call; new_bytes counts the bytes not yet shown to this
        callback; decoded_msg_size is the n of the last ExpectMsgSize(n), else 0.  Return
        ExpectMsgSize(n) or DropMsgSize(n)."""
        raise NotImplementedError(f"{type(self).__name__} must implement on_inbound_message")

    cdef MessageResult on_inbound_raw(self, char *data, Py_ssize_t size, Py_ssize_t new_bytes,
                                      Py_ssize_t decoded_msg_size, DispatchContext ctx):
        cdef PyObject *args[5]
        view = ctx.reader._view(data, size)
        f = ctx.py_on_inbound
        if f is not None:       # a Python override, resolved once per stream: one vectorcall
            nb = _small_int(new_bytes)
            dm = _small_int(decoded_msg_size)
            args[0] = <PyObject *>self
            args[1] = <PyObject *>view
            args[2] = <PyObject *>nb
            args[3] = <PyObject *>dm
            args[4] = <PyObject *>ctx
            r = PyObject_Vectorcall(f, args, 5, NULL)
        else:
            r = self.on_inbound_message(view, new_bytes, decoded_msg_size, ctx)
        if type(r) is not MessageResult:
            raise MessageResultError(
                f"{type(self).__name__}.on_inbound_message returned {r!r}; it must return "
                "ExpectMsgSize(n) or DropMsgSize(n)")
        return <MessageResult>r

    cpdef on_readable(self, DispatchContext ctx):
        """The socket is readable.  The default reads what is available (a bounded amount per
        loop iteration), dispatching whenever the buffer is full (ctx.reader.try_read_fast_read);
        override to use try_read_fast_dispatch or read your own way."""
        if ctx is None or ctx.state != ST_OPEN:
            raise ReactorClosedError("on_readable needs the DispatchContext of an open stream")
        ctx.reader.fast_read(ctx)

    cpdef on_command(self, object cmd, DispatchContext ctx):
        """A user command sent with CmdSender.send_user_cmd.  Not overriding it makes such a
        command complete with CommandNotHandledError (the reactor stays open)."""
        raise CommandNotHandledError(f"{type(self).__name__} does not handle commands "
                                     f"(override on_command); command {cmd!r} not delivered")

    cpdef on_close(self, ReactorID reactor_id, object cmd_sender):
        """The stream is closed (socket gone).  close_error tells why: None for an orderly
        close, else the exception.  Typical use: a deferred reconnect via cmd_sender."""
        pass

    cpdef on_pause_writing(self, DispatchContext ctx):
        """The send queue rose above the high watermark."""
        pass

    cpdef on_resume_writing(self, DispatchContext ctx):
        """The send queue fell to the low watermark after on_pause_writing."""
        pass

    @property
    def close_error(self):
        """Why the stream closed (set before on_close): None, or the exception."""
        return self._close_error


# the descriptor a subclass inherits when it does not override on_readable (in cdef code
# ``Reactor.on_readable`` would be the C function, wrapped anew at each use)
_DEFAULT_ON_READABLE = getattr(Reactor, "on_readable")


include "_limits.pxi"
include "_lifecycle.pxi"
include "_reader.pxi"
include "_sender.pxi"
include "_autosend.pxi"
include "_sockaddr.pxi"
include "_tls.pxi"
include "_tls_send.pxi"
include "_commands.pxi"
include "_streams.pxi"
include "_connect.pxi"
include "_runtime.pxi"
include "_shutdown.pxi"
include "_close_all.pxi"
include "_slots.pxi"
include "_timers.pxi"
include "_backend.pxi"
include "_epoll_loop.pxi"
include "_iocp_loop.pxi"
include "_iocp_send.pxi"
include "_iocp_accept.pxi"
include "_datagram.pxi"
include "_datagram_addr.pxi"
include "_datagram_batch.pxi"
include "_datagram_epoll.pxi"
include "_datagram_iocp.pxi"
