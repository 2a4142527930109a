"""The Python reactors of the ``reactio-py`` leg of ``python -m reactio.bench``.

They are the code a performance-aware user writes with the public API: framing on the
memoryview ``buf``, the echo handed to ``send_or_que`` without a copy. This module imports
reactio, so ``legs_reactio`` imports it only when a reactio-py server or client runs (the
Cython counterparts are in ``_cyecho.pyx``).
"""
from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING, List, Optional

from reactio import (CmdSender, DispatchContext, DropMsgSize, ExpectMsgSize, MessageResult,
                     Reactor, ReactorID)

from .worker import HDR, Recorder

if TYPE_CHECKING:
    from .legs_reactio import _ServerState

_HEAD = struct.Struct("<Hq")  # body length, send stamp (reactio's wire header)


class PyEchoServer(Reactor):
    """Echo every complete message back, straight from the receive buffer."""

    def __init__(self, state: _ServerState) -> None:
        super().__init__()
        self.state = state

    def on_connected(self, ctx: DispatchContext, listener_id: Optional[ReactorID]) -> None:
        self.state.on_accept(ctx, listener_id)

    def on_inbound_message(self, buf: memoryview, new_bytes: int, decoded_msg_size: int,
                           ctx: DispatchContext) -> MessageResult:
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

    def __init__(self, size: int, rec: Recorder, errors: List[BaseException]) -> None:
        super().__init__()
        self.size = size
        self.rec = rec
        self.errors = errors  # why the connection closed early, if it did
        # One message buffer, re-stamped for every send: send_or_que writes it at once
        # or copies what the kernel did not take into its queue, so reuse is safe.
        self.msg = bytearray(b"x" * size)
        self.i = 0
        self.t0 = 0

    def _send(self, ctx: DispatchContext) -> None:
        t0 = self.t0 = time.monotonic_ns()
        if self.i == self.rec.warmup:
            self.rec.start_ns = t0
        _HEAD.pack_into(self.msg, 0, self.size - HDR, t0)
        ctx.send_or_que(self.msg)

    def on_connected(self, ctx: DispatchContext, listener_id: Optional[ReactorID]) -> None:
        self._send(ctx)

    def on_inbound_message(self, buf: memoryview, new_bytes: int, decoded_msg_size: int,
                           ctx: DispatchContext) -> MessageResult:
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

    def on_close(self, reactor_id: ReactorID, cmd_sender: CmdSender) -> None:
        if self.i < self.rec.total:
            self.errors.append(ConnectionError(
                f"connection closed after {self.i} round trips: {self.close_error!r}"))
