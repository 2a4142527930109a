# AutoSendBuffer: pieces written by a reactor, sent as one message by DispatchContext.send_or_que
# (ctx.acquire_send()).

@cython.final
cdef class AutoSendBuffer:
    """Collects writes and sends them as one message: on ``send()``, or on leaving a ``with``
    block without an exception (an exception discards what was written)."""
    cdef DispatchContext ctx
    cdef bytearray buf

    def __cinit__(self, DispatchContext ctx):
        self.ctx = ctx
        self.buf = bytearray()

    def write(self, data):
        """Append ``data`` (any bytes-like object); returns the number of bytes written."""
        cdef Py_ssize_t before = len(self.buf)
        self.buf += data
        return len(self.buf) - before

    def count_written(self):
        return len(self.buf)

    def __len__(self):
        return len(self.buf)

    def get_written(self):
        return bytes(self.buf)

    def clear(self):
        del self.buf[:]

    def send(self, on_sent=None):
        """Send what was written as one message; returns a SendOrQueResult."""
        if not self.buf and on_sent is None:
            return SendOrQueResult.COMPLETE
        r = self.ctx.send_or_que(self.buf, on_sent)     # (empty: completes in send order)
        del self.buf[:]
        return r

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.send()
        else:
            del self.buf[:]
        return False
