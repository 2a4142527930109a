# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The Cython reactors of the ``reactio-cy`` leg of ``python -m reactio.bench``.

They are what a user who wants reactio's floor writes: cdef subclasses of ``Reactor`` that
frame and answer in place through the zero-object path (``on_inbound_raw`` gets a pointer
into the receive buffer; ``DispatchContext.send_raw`` writes straight from a pointer), so
no Python object is created per message. (The runtime calls ``on_inbound_raw`` of a cdef
subclass through the C vtable, so ``on_inbound_message`` is never needed here.)
"""
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from reactio._core cimport (DispatchContext, DropMsgSize, ExpectMsgSize, MessageResult,
                            Reactor, ReactorID)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec *tp)
    int CLOCK_MONOTONIC

cdef enum:
    HDR = 10


cdef inline int64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline Py_ssize_t frame_size(const unsigned char *p) noexcept nogil:
    """Total size of the message whose header starts at p."""
    return HDR + (p[0] | (<Py_ssize_t>p[1] << 8))


cdef class CyEchoServer(Reactor):
    """Echo every complete message back, straight from the receive buffer."""
    cdef object state

    def __init__(self, state):
        self.state = state

    cpdef on_connected(self, DispatchContext ctx, object listener_id):
        self.state.on_accept(ctx, listener_id)

    cdef MessageResult on_inbound_raw(self, char *data, Py_ssize_t size, Py_ssize_t new_bytes,
                                      Py_ssize_t decoded_msg_size, DispatchContext ctx):
        cdef Py_ssize_t m
        if size < HDR:
            return ExpectMsgSize(0)
        m = frame_size(<const unsigned char *>data)
        if m > size:
            return ExpectMsgSize(m)
        ctx.send_raw(data, m)
        return DropMsgSize(m)


cdef class CyPingClient(Reactor):
    """Strict ping-pong: send, wait for the whole echo, record the RTT, repeat.

    ``rec`` is the worker's Recorder: its preallocated int64 ``samples`` array is written
    through a typed memoryview, its ``progress`` is called every 1024 round trips.
    ``errors`` receives the reason if the connection closes before the last round trip.
    """
    cdef readonly Py_ssize_t i
    cdef Py_ssize_t size, warmup, total
    cdef int64_t t0
    cdef unsigned char *msg
    cdef long long[::1] samples
    cdef object rec, errors

    def __cinit__(self, *args, **kwargs):
        self.msg = NULL

    def __init__(self, Py_ssize_t size, rec, list errors):
        if size < HDR or size > HDR + 0xFFFF:
            raise ValueError("size must be 10..65545")
        self.size = size
        self.rec = rec
        self.errors = errors
        self.warmup = rec.warmup
        self.total = rec.total
        self.samples = rec.samples
        self.msg = <unsigned char *>malloc(size)
        if self.msg == NULL:
            raise MemoryError()
        memset(self.msg, ord('x'), size)
        self.msg[0] = (size - HDR) & 0xFF
        self.msg[1] = ((size - HDR) >> 8) & 0xFF

    def __dealloc__(self):
        free(self.msg)

    cdef int _send(self, DispatchContext ctx) except -1:
        cdef int64_t t0 = now_ns()
        cdef uint64_t u = <uint64_t>t0
        cdef int k
        self.t0 = t0
        if self.i == self.warmup:
            self.rec.start_ns = t0
        for k in range(8):
            self.msg[2 + k] = (u >> (8 * k)) & 0xFF
        ctx.send_raw(<const char *>self.msg, self.size)
        return 0

    cpdef on_connected(self, DispatchContext ctx, object listener_id):
        self._send(ctx)

    cdef MessageResult on_inbound_raw(self, char *data, Py_ssize_t size, Py_ssize_t new_bytes,
                                      Py_ssize_t decoded_msg_size, DispatchContext ctx):
        cdef const unsigned char *p = <const unsigned char *>data
        cdef int64_t t1
        cdef uint64_t stamp = 0
        cdef int k
        if size < self.size:
            return ExpectMsgSize(self.size)
        t1 = now_ns()
        if size != self.size:
            raise RuntimeError("received more than one message in strict ping-pong")
        for k in range(8):
            stamp |= (<uint64_t>p[2 + k]) << (8 * k)
        if frame_size(p) != self.size or <int64_t>stamp != self.t0:
            raise RuntimeError("echo does not match the message sent")
        if self.i >= self.warmup:
            self.samples[self.i - self.warmup] = t1 - self.t0
        self.i += 1
        if (self.i & 1023) == 0:
            self.rec.progress(self.i, t1)
        if self.i < self.total:
            self._send(ctx)
        else:
            self.rec.end_ns = t1
            ctx.close()
        return DropMsgSize(self.size)

    cpdef on_close(self, ReactorID reactor_id, object cmd_sender):
        if self.i < self.total:
            self.errors.append(ConnectionError(
                f"connection closed after {self.i} round trips: {self.close_error!r}"))

