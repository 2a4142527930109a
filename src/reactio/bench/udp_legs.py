"""The UDP legs of ``pingpong --udp``: an echo server and a strict ping-pong client over one
UDP socket each on 127.0.0.1, for asyncio / uvloop (``create_datagram_endpoint``, a
DatagramProtocol), reactio-py (a Python ``DatagramReactor``) and reactio-cy (the Cython one in
``_cyudp.pyx``: ``on_datagram_raw`` + ``send_to_raw``, no Python object per datagram).  The C
floor is ``c/udp_pingpong.c``.  The protocol with the harness is the TCP legs' (worker.py);
the server exits when it receives a datagram shorter than a header (one byte: asyncio
does not send empty datagrams), which the client sends at the end.
Every datagram is one message of reactio's wire format, checked by the client.
"""
from __future__ import annotations

import asyncio
import struct
import time
from typing import Any, Callable, List, Optional

from .legs_reactio import _run as _run_rt
from .worker import HDR, Recorder, check_echo

_HEAD = struct.Struct("<Hq")


def check(leg: str) -> None:
    if leg == "reactio-aio":
        raise ImportError("reactio.aio has no datagram API: no UDP leg")
    if leg == "reactio-cy":
        try:
            from . import _cyudp  # noqa: F401
        except ImportError as e:
            raise ImportError(f"the Cython UDP reactors (reactio.bench._cyudp) are not "
                              f"compiled in this install ({e})") from None
    if leg == "uvloop":
        import uvloop  # noqa: F401


def _record(rec: Recorder, i: int, t0: int, t1: int) -> int:
    """Round trip i (warm-up included) took t1 - t0 ns: store it, report progress, note the
    end after the last one; returns i + 1."""
    if i >= rec.warmup:
        rec.samples[i - rec.warmup] = t1 - t0
    i += 1
    if (i & 1023) == 0:
        rec.progress(i, t1)
    if i == rec.total:
        rec.end_ns = t1
    return i


# ----------------------------------------------------------------------- asyncio / uvloop

def _loop(leg: str) -> asyncio.AbstractEventLoop:
    if leg == "uvloop":
        import uvloop
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def _run_aio(leg: str, main: Any) -> None:
    loop = _loop(leg)
    try:
        loop.run_until_complete(main)
    finally:
        loop.close()


class _AioEcho(asyncio.DatagramProtocol):
    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < HDR:
            if not self.done.done():
                self.done.set_result(None)
            return
        self.transport.sendto(data, addr)


class _AioPing(asyncio.DatagramProtocol):
    def __init__(self, size: int, rec: Recorder, done: asyncio.Future[None]) -> None:
        self.size, self.rec, self.done = size, rec, done
        self.body = b"x" * (size - HDR)
        self.i = 0
        self.t0 = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        t0 = self.t0 = time.monotonic_ns()
        if self.i == self.rec.warmup:
            self.rec.start_ns = t0
        self.transport.sendto(_HEAD.pack(self.size - HDR, t0) + self.body)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        t1 = time.monotonic_ns()
        check_echo(data, self.size, self.t0)
        if len(data) != self.size:
            raise RuntimeError("echo of the wrong size")
        self.i = _record(self.rec, self.i, self.t0, t1)
        if self.i < self.rec.total:
            self._send()
        else:
            self.transport.sendto(b"\0")      # goodbye: the server exits
            if not self.done.done():
                self.done.set_result(None)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


def _aio_serve(leg: str, announce: Callable[[int], None]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(lambda: _AioEcho(done),
                                                           local_addr=("127.0.0.1", 0))
        announce(transport.get_extra_info("sockname")[1])
        await done
        transport.close()
    _run_aio(leg, main())


def _aio_ping(leg: str, port: int, size: int, rec: Recorder) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _AioPing(size, rec, done), remote_addr=("127.0.0.1", port))
        await done
        transport.close()
    _run_aio(leg, main())


# ----------------------------------------------------------------------- reactio

def _reactio_reactors() -> Any:
    from reactio import DatagramReactor

    class PyUdpEcho(DatagramReactor):
        def on_datagram(self, buf: memoryview, addr: Any, ctx: Any) -> None:
            if len(buf) < HDR:
                ctx.close()
            else:
                ctx.send_to(buf, addr)

    class PyUdpPing(DatagramReactor):
        def __init__(self, size: int, rec: Recorder, errors: List[BaseException]) -> None:
            self.size, self.rec, self.errors = size, rec, errors
            self.msg = bytearray(b"x" * size)
            self.i = 0
            self.t0 = 0

        def _send(self, ctx: Any) -> None:
            t0 = self.t0 = time.monotonic_ns()
            if self.i == self.rec.warmup:
                self.rec.start_ns = t0
            _HEAD.pack_into(self.msg, 0, self.size - HDR, t0)
            ctx.send(self.msg)

        def on_bound(self, ctx: Any) -> None:
            self._send(ctx)

        def on_datagram(self, buf: memoryview, addr: Any, ctx: Any) -> None:
            t1 = time.monotonic_ns()
            n, stamp = _HEAD.unpack_from(buf)
            if len(buf) != self.size or n + HDR != self.size or stamp != self.t0:
                raise RuntimeError("echo does not match the message sent")
            self.i = _record(self.rec, self.i, self.t0, t1)
            if self.i < self.rec.total:
                self._send(ctx)
            else:
                ctx.send(b"\0")      # goodbye: the server exits
                ctx.close()

        def on_error(self, exc: BaseException, ctx: Any) -> None:
            self.errors.append(exc)
            ctx.close()

    return PyUdpEcho, PyUdpPing


def _bind(rt: Any, reactor: Any, **kw: Any) -> Any:
    from reactio import Deferred
    result: List[Any] = []
    rt.cmd_sender.send_bind_udp(("127.0.0.1", 0), reactor, Deferred.IMMEDIATE, result.append,
                                **kw)
    deadline = time.monotonic() + 30
    while not result:
        if time.monotonic() > deadline:
            raise TimeoutError("bind_udp did not complete")
        rt.process_events(0.1)
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def serve(leg: str, spin: bool, announce: Callable[[int], None]) -> None:
    if leg in ("asyncio", "uvloop"):
        return _aio_serve(leg, announce)
    from reactio import ReactRuntime
    if leg == "reactio-cy":
        from ._cyudp import CyUdpEcho
        echo: Any = CyUdpEcho()
    else:
        echo = _reactio_reactors()[0]()
    with ReactRuntime() as rt:
        rid = _bind(rt, echo)
        announce(rt.local_address(rid)[1])
        _run_rt(rt, spin)


def ping(leg: str, port: int, size: int, rec: Recorder, spin: bool) -> None:
    if leg in ("asyncio", "uvloop"):
        return _aio_ping(leg, port, size, rec)
    from reactio import Deferred, ReactRuntime
    errors: List[BaseException] = []
    if leg == "reactio-cy":
        from ._cyudp import CyUdpPing
        client: Any = CyUdpPing(size, rec, errors)
    else:
        client = _reactio_reactors()[1](size, rec, errors)
    bound: List[Any] = []
    with ReactRuntime() as rt:
        rt.cmd_sender.send_bind_udp(("127.0.0.1", 0), client, Deferred.IMMEDIATE, bound.append,
                                    connect_to=("127.0.0.1", port))
        _run_rt(rt, spin)
    failed: Optional[BaseException] = next(
        (x for x in bound + errors if isinstance(x, BaseException)), None)
    if failed is not None:
        raise failed
    if client.i < rec.total:
        raise RuntimeError("the runtime went idle before the last round trip")


# ----------------------------------------------------------------------- udpflood sinks

def flood_sink(leg: str, batch: int, announce: Callable[[int], None]) -> None:
    """The receiving end of ``udpflood``: echo every datagram to its sender until a 1-byte
    goodbye, then print ``stats received=N elapsed_ns=E recv_calls=R send_calls=S`` (calls
    -1 where the endpoint does not count them: asyncio, uvloop).  The clock starts when the
    first datagram is readable (the socket is idle until the flood comes) and stops at the
    goodbye."""
    if leg in ("asyncio", "uvloop"):
        return _aio_flood_sink(leg, announce)
    import select

    from reactio import ReactRuntime
    base = _cy_echo_class() if leg == "reactio-cy" else _reactio_reactors()[0]
    contexts: List[Any] = []

    class Sink(base):  # type: ignore[misc, valid-type]
        def on_bound(self, ctx: Any) -> None:
            contexts.append(ctx)

    with ReactRuntime() as rt:
        _bind(rt, Sink(), recv_batch=batch, recv_buffer_size=4 << 20)
        ctx = contexts[0]
        announce(ctx.local_address[1])
        select.select([ctx.fileno()], [], [])
        first = time.monotonic_ns()
        while rt.process_events(-1.0):
            pass
        last = time.monotonic_ns()
    print(f"stats received={ctx.datagrams_received - 1} elapsed_ns={last - first} "
          f"recv_calls={ctx.recv_calls} send_calls={ctx.send_calls}", flush=True)


def _cy_echo_class() -> Any:
    from ._cyudp import CyUdpEcho
    return CyUdpEcho


class _AioSink(_AioEcho):
    def __init__(self, done: asyncio.Future[None]) -> None:
        super().__init__(done)
        self.n = 0
        self.first = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.first == 0:
            self.first = time.monotonic_ns()
        if len(data) >= HDR:
            self.n += 1
        _AioEcho.datagram_received(self, data, addr)


def _aio_flood_sink(leg: str, announce: Callable[[int], None]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        sink = _AioSink(done)
        transport, _ = await loop.create_datagram_endpoint(lambda: sink,
                                                           local_addr=("127.0.0.1", 0))
        import socket
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                                      4 << 20)
        announce(transport.get_extra_info("sockname")[1])
        await done
        last = time.monotonic_ns()
        transport.close()
        print(f"stats received={sink.n} elapsed_ns={last - sink.first} recv_calls=-1 "
              f"send_calls=-1", flush=True)
    _run_aio(leg, main())
