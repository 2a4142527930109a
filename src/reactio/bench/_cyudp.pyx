# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: freethreading_compatible = True
"""The Cython datagram reactors of the ``reactio-cy`` leg of ``pingpong --udp``: cdef
subclasses of ``DatagramReactor`` that read each datagram in place (``on_datagram_raw`` gets a
pointer into the receive batch and the sender's raw address) and reply with
``DatagramContext.send_to_raw``: no Python object per datagram."""
from reactio._core cimport DatagramContext, DatagramReactor, ReactorID
from reactio._epoll cimport sockaddr, socklen_t

include "_cyping.pxi"


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
    """Strict ping-pong over a connected endpoint (PingState, shared with
    _cyecho.CyPingClient); at the end a datagram shorter than a header ends the server."""
    cdef PingState ping
    cdef object errors

    def __init__(self, Py_ssize_t size, rec, list errors):
        self.ping = PingState(size, 65507, rec)
        self.errors = errors

    @property
    def i(self):
        return self.ping.i

    cpdef on_bound(self, DatagramContext ctx):
        ctx.send_to_raw(self.ping.stamp(), self.ping.size, NULL, 0)

    cdef int on_datagram_raw(self, char *data, Py_ssize_t size, const sockaddr *addr,
                             socklen_t addrlen, DatagramContext ctx) except -1:
        if self.ping.take(<const unsigned char *>data, size):
            ctx.send_to_raw(self.ping.stamp(), self.ping.size, NULL, 0)
        else:
            ctx.send_to_raw(b"!", 1, NULL, 0)     # goodbye: the server ends
            ctx.close()
        return 0

    cpdef on_error(self, object exc, DatagramContext ctx):
        self.errors.append(exc)
        ctx.close()
