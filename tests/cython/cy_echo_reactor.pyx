# cython: language_level=3
# cython: freethreading_compatible = True
"""Reactors written in Cython against reactio's public .pxd: the runtime calls them through
the C vtable, and on_inbound_raw / send_raw move bytes without building Python objects."""
from libc.stdint cimport int64_t
from libc.string cimport memcpy
from reactio._core cimport (DispatchContext, DropMsgSize, ExpectMsgSize, MessageResult,
                            Reactor)


cdef inline MessageResult partial_frame(const char *data, Py_ssize_t size, Py_ssize_t *n):
    """ExpectMsgSize while the frame at data is incomplete; else None, with its size in n."""
    cdef const unsigned char *p = <const unsigned char *>data
    if size < 10:
        return ExpectMsgSize(0)
    n[0] = 10 + (p[0] | (p[1] << 8))
    if n[0] > size:
        return ExpectMsgSize(n[0])
    return None


cdef class CyEcho(Reactor):
    """Echo server: frames parsed in place, echoed from the receive buffer."""
    cdef public long count

    cdef MessageResult on_inbound_raw(self, char *data, Py_ssize_t size, Py_ssize_t new_bytes,
                                      Py_ssize_t decoded_msg_size, DispatchContext ctx):
        cdef Py_ssize_t n = 0
        cdef MessageResult wait = partial_frame(data, size, &n)
        if wait is not None:
            return wait
        ctx.send_raw(data, n)
        self.count += 1
        return DropMsgSize(n)


cdef class CyClient(Reactor):
    """Sends one frame, then one more per echo until ``target`` echoes came back."""
    cdef public long count, target
    cdef char msg[74]

    def __init__(self, long target):
        self.target = target
        self.msg[0] = 64
        self.msg[1] = 0
        for i in range(2, 74):
            self.msg[i] = 120

    cpdef on_connected(self, DispatchContext ctx, object listener_id):
        ctx.send_raw(self.msg, 74)

    cdef MessageResult on_inbound_raw(self, char *data, Py_ssize_t size, Py_ssize_t new_bytes,
                                      Py_ssize_t decoded_msg_size, DispatchContext ctx):
        cdef Py_ssize_t n = 0
        cdef MessageResult wait = partial_frame(data, size, &n)
        if wait is not None:
            return wait
        self.count += 1
        if self.count >= self.target:
            ctx.close()
        else:
            ctx.send_raw(data, n)
        return DropMsgSize(n)


cdef class CyCpdefEcho(Reactor):
    """Overrides the cpdef on_inbound_message instead (memoryview path, C-level call)."""

    cpdef on_inbound_message(self, object buf, Py_ssize_t new_bytes,
                             Py_ssize_t decoded_msg_size, DispatchContext ctx):
        if len(buf) < 10:
            return ExpectMsgSize(0)
        n = 10 + (buf[0] | (buf[1] << 8))
        if n > len(buf):
            return ExpectMsgSize(n)
        ctx.send_or_que(buf[:n])
        return DropMsgSize(n)


cdef class CyNegativeSend(Reactor):
    """Issue 16, item 13: for every frame, echoes it, then calls send_raw(data, -1) (which must
    raise ValueError: it segfaulted or dropped queued bytes), then echoes it again.  A frame
    whose body starts with b"Q" first queues ``big`` bytes with send_or_que, so the bad call
    meets a non-empty queue.  Records the name of each exception send_raw(-1) raised, or
    "no error"."""
    cdef public list errors
    cdef public object big

    def __init__(self, big):
        self.errors = []
        self.big = big

    cdef MessageResult on_inbound_raw(self, char *data, Py_ssize_t size, Py_ssize_t new_bytes,
                                      Py_ssize_t decoded_msg_size, DispatchContext ctx):
        cdef Py_ssize_t n = 0
        cdef MessageResult wait = partial_frame(data, size, &n)
        if wait is not None:
            return wait
        if n > 10 and data[10] == b"Q"[0]:
            ctx.send_or_que(self.big)
        ctx.send_raw(data, n)
        try:
            ctx.send_raw(data, -1)
            self.errors.append("no error")
        except Exception as exc:
            self.errors.append(type(exc).__name__)
        ctx.send_raw(data, n)
        return DropMsgSize(n)
