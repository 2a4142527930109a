# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: freethreading_compatible = True
"""The Cython datagram reactors of the ``reactio-cy`` leg of ``pingpong --udp``: cdef
subclasses of ``DatagramReactor`` that read each datagram in place (``on_datagram_raw`` gets a
pointer into the receive batch and the sender's raw address) and reply with
``DatagramContext.send_to_raw``: no Python object per datagram."""
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from reactio._core cimport DatagramContext, DatagramReactor, ReactorID
from reactio._epoll cimport sockaddr, socklen_t

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


cdef class CyUdpEcho(DatagramReactor):
    """Send every datagram back to its sender; one shorter than a header ends the endpoint."""

    cdef int on_datagram_raw(self, char *data, Py_ssize_t size, const sockaddr *addr,
                             socklen_t addrlen, DatagramContext ctx) except -1:
        if size < HDR:
            ctx.close()
            return 0
        ctx.send_to_raw(data, size, addr, addrlen)
        return 0


cdef class CyUdpPing(DatagramReactor):
    """Strict ping-pong over a connected endpoint (see _cyecho.CyPingClient)."""
    cdef readonly Py_ssize_t i
    cdef Py_ssize_t size, warmup, total
    cdef int64_t t0
    cdef unsigned char *msg
    cdef long long[::1] samples
    cdef object rec, errors

    def __cinit__(self, *args, **kwargs):
        self.msg = NULL

    def __init__(self, Py_ssize_t size, rec, list errors):
        if size < HDR or size > 65507:
            raise ValueError("size must be 10..65507")
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

    cdef int _send(self, DatagramContext ctx) except -1:
        cdef int64_t t0 = now_ns()
        cdef uint64_t u = <uint64_t>t0
        cdef int k
        self.t0 = t0
        if self.i == self.warmup:
            self.rec.start_ns = t0
        for k in range(8):
            self.msg[2 + k] = (u >> (8 * k)) & 0xFF
        ctx.send_to_raw(<const char *>self.msg, self.size, NULL, 0)
        return 0

    cpdef on_bound(self, DatagramContext ctx):
        self._send(ctx)

    cdef int on_datagram_raw(self, char *data, Py_ssize_t size, const sockaddr *addr,
                             socklen_t addrlen, DatagramContext ctx) except -1:
        cdef const unsigned char *p = <const unsigned char *>data
        cdef int64_t t1 = now_ns()
        cdef uint64_t stamp = 0
        cdef int k
        if size != self.size:
            raise RuntimeError("echo of the wrong size")
        for k in range(8):
            stamp |= (<uint64_t>p[2 + k]) << (8 * k)
        if <int64_t>stamp != self.t0:
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
            ctx.send_to_raw(<const char *>self.msg, 1, NULL, 0)     # goodbye: the server ends
            ctx.close()
        return 0

    cpdef on_error(self, object exc, DatagramContext ctx):
        self.errors.append(exc)
        ctx.close()
