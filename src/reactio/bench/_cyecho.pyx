# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: freethreading_compatible = True
"""The Cython reactors of the ``reactio-cy`` leg of ``python -m reactio.bench``.

They are what a user who wants reactio's floor writes: cdef subclasses of ``Reactor`` that
frame and answer in place through the zero-object path (``on_inbound_raw`` gets a pointer
into the receive buffer; ``DispatchContext.send_raw`` writes straight from a pointer), so
no Python object is created per message. (The runtime calls ``on_inbound_raw`` of a cdef
subclass through the C vtable, so ``on_inbound_message`` is never needed here.)
"""
from reactio._core cimport (DispatchContext, DropMsgSize, ExpectMsgSize, MessageResult,
                            Reactor, ReactorID)

include "_cyping.pxi"


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
    """Strict ping-pong: send, wait for the whole echo, record the RTT, repeat (PingState,
    shared with _cyudp.CyUdpPing).  ``errors`` receives the reason if the connection closes
    before the last round trip."""
    cdef PingState ping
    cdef object errors

    def __init__(self, Py_ssize_t size, rec, list errors):
        self.ping = PingState(size, HDR + 0xFFFF, rec)
        self.errors = errors

    @property
    def i(self):
        return self.ping.i

    cpdef on_connected(self, DispatchContext ctx, object listener_id):
        ctx.send_raw(self.ping.stamp(), self.ping.size)

    cdef MessageResult on_inbound_raw(self, char *data, Py_ssize_t size, Py_ssize_t new_bytes,
                                      Py_ssize_t decoded_msg_size, DispatchContext ctx):
        if size < self.ping.size:
            return ExpectMsgSize(self.ping.size)
        if self.ping.take(<const unsigned char *>data, size):
            ctx.send_raw(self.ping.stamp(), self.ping.size)
        else:
            ctx.close()
        return DropMsgSize(self.ping.size)

    cpdef on_close(self, ReactorID reactor_id, object cmd_sender):
        if self.ping.i < self.ping.total:
            self.errors.append(ConnectionError(
                f"connection closed after {self.ping.i} round trips: {self.close_error!r}"))
