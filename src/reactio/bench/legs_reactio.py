"""The reactio legs: a Python ``Reactor`` subclass (reactio-py) and a Cython one (reactio-cy).

Both run the same loop shape a user would write: one ``ReactRuntime`` per process, a
listener (server) or a connect (client), then ``process_events`` until the runtime is
idle. Blocking mode waits in epoll without a time limit (``timeout=-1``), like the C
floor; ``--spin`` passes ``timeout=0`` (busy poll).

The server accepts N connections, then closes its listener; when the last connection
closes the runtime is idle and the process exits. The client closes its connection after
the last round trip, with the same effect.

The Python reactors here are the code a performance-aware user writes with the public API:
framing on the memoryview ``buf``, the echo handed to ``send_or_que`` without a copy. The
Cython reactors live in ``_cyecho.pyx`` and use the zero-object path (``on_inbound_raw``,
``send_raw``).
"""
from __future__ import annotations

import struct
import time

from .worker import HDR, Recorder

_HEAD = struct.Struct("<Hq")  # body length, send stamp (reactio's wire header)


def check(leg: str) -> None:
    """Raise (ImportError, usually) when ``leg`` cannot run here."""
    import reactio  # noqa: F401
    from reactio import ReactRuntime  # noqa: F401
    if leg == "reactio-cy":
        try:
            from . import _cyecho  # noqa: F401
        except ImportError as e:
            raise ImportError(f"the Cython reactors (reactio.bench._cyecho) are not compiled "
                              f"in this install ({e})") from None


def _timeout(spin: bool) -> float:
    return 0.0 if spin else -1.0


class _ServerState:
    """Shared by a server's reactors: stop listening once ``target`` connections came in."""

    def __init__(self, target: int):
        self.target = target
        self.accepted = 0

    def on_accept(self, ctx, listener_id) -> None:
        self.accepted += 1
        if self.accepted == self.target and listener_id is not None:
            ctx.cmd_sender.send_close(listener_id)


def _make_py_classes():
    """The Python reactors, built on first use so importing this module needs no reactio."""
    from reactio import DropMsgSize, ExpectMsgSize, Reactor

    class PyEchoServer(Reactor):
        """Echo every complete message back, straight from the receive buffer."""

        def __init__(self, state: _ServerState):
            super().__init__()
            self.state = state

        def on_connected(self, ctx, listener_id):
            self.state.on_accept(ctx, listener_id)

        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            n = len(buf)
            if n < HDR:
                return ExpectMsgSize(0)
            m = HDR + (buf[0] | (buf[1] << 8))
            if m > n:
                return ExpectMsgSize(m)
            ctx.send_or_que(buf if m == n else buf[:m])
            return DropMsgSize(m)

    class PyPingClient(Reactor):
        """Strict ping-pong: send, wait for the whole echo, record the RTT, repeat."""

        def __init__(self, size: int, rec: Recorder, errors: list):
            super().__init__()
            self.size = size
            self.rec = rec
            self.errors = errors  # why the connection closed early, if it did
            # One message buffer, re-stamped for every send: send_or_que writes it at once
            # or copies what the kernel did not take into its queue, so reuse is safe.
            self.msg = bytearray(b"x" * size)
            self.i = 0
            self.t0 = 0

        def _send(self, ctx):
            t0 = self.t0 = time.monotonic_ns()
            if self.i == self.rec.warmup:
                self.rec.start_ns = t0
            _HEAD.pack_into(self.msg, 0, self.size - HDR, t0)
            ctx.send_or_que(self.msg)

        def on_connected(self, ctx, listener_id):
            self._send(ctx)

        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            size = self.size
            if len(buf) < size:
                return ExpectMsgSize(size)
            t1 = time.monotonic_ns()
            if len(buf) != size:
                raise RuntimeError("received more than one message in strict ping-pong")
            n, stamp = _HEAD.unpack_from(buf)
            if n + HDR != size or stamp != self.t0:
                raise RuntimeError("echo does not match the message sent")
            rec = self.rec
            i = self.i
            if i >= rec.warmup:
                rec.samples[i - rec.warmup] = t1 - self.t0
            i = self.i = i + 1
            if (i & 1023) == 0:
                rec.progress(i, t1)
            if i < rec.total:
                self._send(ctx)
            else:
                rec.end_ns = t1
                ctx.close()
            return DropMsgSize(size)

        def on_close(self, reactor_id, cmd_sender):
            if self.i < self.rec.total:
                self.errors.append(ConnectionError(
                    f"connection closed after {self.i} round trips: {self.close_error!r}"))

    return PyEchoServer, PyPingClient


def _listen(rt, handler) -> int:
    """Start listening on 127.0.0.1, port 0; returns the port."""
    from reactio import Deferred
    result = []
    rt.cmd_sender.send_listen(("127.0.0.1", 0), handler, Deferred.IMMEDIATE, result.append)
    deadline = time.monotonic() + 30
    while not result:
        if time.monotonic() > deadline:
            raise TimeoutError("listen did not complete")
        rt.process_events(0.1)
    if isinstance(result[0], BaseException):
        raise result[0]
    return rt.local_address(result[0])[1]


def _run(rt, spin: bool, cy: bool) -> None:
    timeout = _timeout(spin)
    if cy:
        from . import _cyecho
        _cyecho.run(rt, timeout)
    else:
        while rt.process_events(timeout):
            pass


def serve(leg: str, conns: int, spin: bool, announce) -> None:
    from reactio import DefaultTcpListenerHandler, ReactRuntime
    state = _ServerState(conns)
    if leg == "reactio-cy":
        from ._cyecho import CyEchoServer
        factory = lambda count, param: CyEchoServer(state)  # noqa: E731
    else:
        PyEchoServer, _ = _make_py_classes()
        factory = lambda count, param: PyEchoServer(state)  # noqa: E731
    with ReactRuntime() as rt:
        handler = DefaultTcpListenerHandler(factory, 4096, None, backlog=4096)
        announce(_listen(rt, handler))
        _run(rt, spin, leg == "reactio-cy")


def ping(leg: str, port: int, size: int, rec: Recorder, spin: bool) -> None:
    from reactio import Deferred, ReactRuntime
    errors: list = []
    if leg == "reactio-cy":
        from ._cyecho import CyPingClient
        client = CyPingClient(size, rec, errors)
    else:
        _, PyPingClient = _make_py_classes()
        client = PyPingClient(size, rec, errors)
    connected = []
    with ReactRuntime() as rt:
        rt.cmd_sender.send_connect(("127.0.0.1", port), max(4096, 2 * size), client,
                                   Deferred.IMMEDIATE, connected.append)
        _run(rt, spin, leg == "reactio-cy")
    if connected and isinstance(connected[0], BaseException):
        raise connected[0]
    if errors:
        raise errors[0]
    if client.i < rec.total:
        raise RuntimeError("the runtime went idle before the last round trip")
