# The strict ping-pong client state of the reactio-cy legs, one for every transport: included
# by _cyecho.pyx (streams: CyPingClient) and _cyudp.pyx (UDP: CyUdpPing), whose reactors only
# say how a message leaves and when an echo is complete.  The message is reactio's wire format
# (u16 body length LE | i64 CLOCK_MONOTONIC send stamp LE | body); the round trip is timed from
# just before the send until the whole echo is in; no Python object per round trip.
cimport cython
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

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


@cython.final
cdef class PingState:
    """One SIZE-byte message in flight at a time.  ``rec`` is the worker's Recorder: its
    preallocated int64 ``samples`` array is written through a typed memoryview (the first
    ``rec.warmup`` round trips are not recorded), its ``progress`` is called every 1024 round
    trips, ``start_ns``/``end_ns`` bound the recorded ones."""
    cdef Py_ssize_t i, size, warmup, total
    cdef int64_t t0
    cdef unsigned char *msg
    cdef long long[::1] samples
    cdef object rec

    def __cinit__(self, *args, **kwargs):
        self.msg = NULL

    def __init__(self, Py_ssize_t size, Py_ssize_t max_size, rec):
        if size < HDR or size > max_size:
            raise ValueError(f"size must be {HDR}..{max_size}")
        self.size = size
        self.rec = rec
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

    cdef const char *stamp(self) noexcept:
        """The message to send now, stamped with the time."""
        cdef int64_t t0 = now_ns()
        cdef uint64_t u = <uint64_t>t0
        cdef int k
        self.t0 = t0
        if self.i == self.warmup:
            self.rec.start_ns = t0
        for k in range(8):
            self.msg[2 + k] = (u >> (8 * k)) & 0xFF
        return <const char *>self.msg

    cdef bint take(self, const unsigned char *p, Py_ssize_t size) except -1:
        """The whole echo p[:size] of the message stamped last: checked, timed, recorded.
        True when another round trip is due, False after the last one."""
        cdef int64_t t1 = now_ns()
        cdef uint64_t stamp = 0
        cdef int k
        if size != self.size or frame_size(p) != self.size:
            raise RuntimeError(f"echo of {size} bytes does not match the {self.size}-byte "
                               f"message sent")
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
            return True
        self.rec.end_ns = t1
        return False
