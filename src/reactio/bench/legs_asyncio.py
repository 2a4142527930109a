"""The asyncio and uvloop legs: one asyncio Protocol server and client, two event loops.

The code is what a careful asyncio user writes for this protocol: a Protocol (not
streams), the whole message echoed by one ``transport.write``, and a fast path that echoes
the received ``bytes`` object itself when it holds exactly one message (the usual case in
ping-pong), so neither loop is handicapped by avoidable copies. ``--spin`` does not apply:
asyncio loops always block in their selector.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Awaitable, Callable, Optional, cast

from . import tls
from .worker import HDR, Recorder, check_echo, run_forked

_HEAD = struct.Struct("<Hq")


def check(leg: str) -> None:
    if leg == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError as e:
            raise ImportError(f"uvloop is not installed here (pip install uvloop): {e}") from None


def _new_loop(leg: str) -> asyncio.AbstractEventLoop:
    if leg == "uvloop":
        import uvloop
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def _nodelay(transport: asyncio.BaseTransport) -> None:
    # Both loops already set TCP_NODELAY on TCP transports; say it anyway, the leg's
    # contract does not rest on a loop's default.
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family != getattr(socket, "AF_UNIX", None):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class _ServerState:
    """Counts connections; resolves ``done`` when ``target`` were accepted and all closed."""

    def __init__(self, target: int, done: asyncio.Future[None]) -> None:
        self.target = target
        self.accepted = 0
        self.closed = 0
        self.done = done
        self.server: Optional[asyncio.AbstractServer] = None


class EchoServer(asyncio.Protocol):
    """Echo every complete message back unchanged."""

    transport: asyncio.Transport  # set by connection_made, before any other callback

    def __init__(self, state: _ServerState) -> None:
        self.state = state
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream (TCP) connection's transport is an asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)
        _nodelay(transport)
        st = self.state
        st.accepted += 1
        if st.accepted == st.target and st.server is not None:
            st.server.close()  # stop accepting; open connections carry on

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        if not buf and len(data) >= HDR and len(data) == HDR + (data[0] | (data[1] << 8)):
            self.transport.write(data)  # exactly one message: echo the object itself
            return
        buf += data
        n = len(buf)
        end = 0
        while n - end >= HDR:
            m = HDR + (buf[end] | (buf[end + 1] << 8))
            if n - end < m:
                break
            end += m
        if end:
            self.transport.write(bytes(buf[:end]))
            del buf[:end]

    def connection_lost(self, exc: Optional[Exception]) -> None:
        st = self.state
        st.closed += 1
        if st.closed >= st.target and not st.done.done():
            st.done.set_result(None)


def serve(leg: str, conns: int, spin: bool, announce: Callable[[int], None],
          unix: Optional[str] = None) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        state = _ServerState(conns, loop.create_future())
        if unix:
            server = await loop.create_unix_server(lambda: EchoServer(state), unix,
                                                   backlog=4096)
            announce(0)
        else:
            server = await loop.create_server(lambda: EchoServer(state), "127.0.0.1", 0,
                                              backlog=4096, ssl=tls.server_context())
            announce(server.sockets[0].getsockname()[1])
        state.server = server
        await state.done
        server.close()

    _run(leg, main())


def serve_workers(leg: str, workers: int, spin: bool, announce: Callable[[int], None],
                  timeout: int) -> None:
    """``workers`` processes, each an asyncio server with ``reuse_port=True`` on one port."""
    def serve_on(port: int, ready: Callable[[], None]) -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            state = _ServerState(1 << 62, loop.create_future())     # never done: SIGTERM
            server = await loop.create_server(lambda: EchoServer(state), "127.0.0.1", port,
                                              backlog=4096, reuse_port=True)
            ready()
            await server.serve_forever()

        _run(leg, main())

    run_forked(workers, serve_on, announce, timeout)


class PingClient(asyncio.Protocol):
    """Strict ping-pong: send one message, wait for its echo, record the RTT, repeat."""

    transport: asyncio.Transport  # set by connection_made, before any other callback

    def __init__(self, size: int, rec: Recorder, done: asyncio.Future[None]) -> None:
        self.size = size
        self.rec = rec
        self.done = done
        self.body = b"x" * (size - HDR)
        self.buf = bytearray()
        self.i = 0
        self.t0 = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream (TCP) connection's transport is an asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)
        _nodelay(transport)
        self._send()

    def _send(self) -> None:
        t0 = self.t0 = time.monotonic_ns()
        if self.i == self.rec.warmup:
            self.rec.start_ns = t0
        self.transport.write(_HEAD.pack(self.size - HDR, t0) + self.body)

    def data_received(self, data: bytes) -> None:
        if self.buf or len(data) != self.size:
            self.buf += data
            if len(self.buf) < self.size:
                return
            data, self.buf = bytes(self.buf), bytearray()
            if len(data) != self.size:
                raise RuntimeError("received more than one message in strict ping-pong")
        t1 = time.monotonic_ns()
        check_echo(data, self.size, self.t0)
        rec = self.rec
        i = self.i
        if i >= rec.warmup:
            rec.samples[i - rec.warmup] = t1 - self.t0
        i = self.i = i + 1
        if (i & 1023) == 0:
            rec.progress(i, t1)
        if i < rec.total:
            self._send()
        else:
            rec.end_ns = t1
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost early: {exc}"))


def ping(leg: str, port: int, size: int, rec: Recorder, spin: bool,
         unix: Optional[str] = None) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if unix:
            await loop.create_unix_connection(lambda: PingClient(size, rec, done), unix)
        else:
            await loop.create_connection(lambda: PingClient(size, rec, done), "127.0.0.1",
                                         port, ssl=tls.client_context())
        await done

    _run(leg, main())


def _run(leg: str, coro: Awaitable[None]) -> None:
    loop = _new_loop(leg)
    try:
        loop.run_until_complete(coro)
    finally:
        loop.close()
