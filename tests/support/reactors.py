"""Reactors the tests serve and connect with, and an exception they raise."""
from __future__ import annotations

import reactio
from reactio import DropMsgSize

from support.wire import parse_frame


class FrameEcho(reactio.Reactor):
    """Echoes every message of reactio's wire format back unchanged, straight from the receive
    buffer; records nothing (for the long runs of the stress tests)."""
    __slots__ = ()

    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        res, n = parse_frame(buf)
        if res is not None:
            return res
        self.on_frame(buf[:n], ctx)
        return DropMsgSize(n)

    def on_frame(self, msg, ctx):
        """One whole message (header included; valid only during the call): echo it."""
        ctx.send_or_que(msg)


class EchoReactor(FrameEcho):
    """Echoes every frame back; records what it saw: ``frames`` (bytes), ``closed`` (a list of
    ``(reactor_id, close_error)``), ``connected_from`` (the listener id, None when outbound,
    "never" until connected)."""

    def __init__(self):
        self.frames = []
        self.closed = []
        self.connected_from = "never"

    def on_connected(self, ctx, listener_id):
        self.connected_from = listener_id

    def on_frame(self, msg, ctx):
        self.frames.append(bytes(msg))
        super().on_frame(msg, ctx)

    def on_close(self, reactor_id, cmd_sender):
        self.closed.append((reactor_id, self.close_error))


class SinkReactor(reactio.Reactor):
    """Reads and discards every byte; keeps its close error as ``err`` when it closes."""

    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        return reactio.DropMsgSize(len(buf))

    def on_close(self, reactor_id, cmd_sender):
        self.err = self.close_error


class CustomBase(BaseException):
    """A BaseException subclass that is neither KeyboardInterrupt nor SystemExit."""
