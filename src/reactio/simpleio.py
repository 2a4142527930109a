"""Closure-based reactors (reactio's SimpleIo family): handle a stream with plain functions and an
``app_data`` object instead of writing a ``Reactor`` subclass.

Handler signatures (``app_data`` is whatever object was given to the constructor; handlers keep
their state in it, so make it mutable):

- ``on_connected(ctx, listener_id, app_data) -> None``: the stream is open; ``listener_id`` is
  the accepting listener's ReactorID, or None for an outbound connection.  Raising closes it.
- ``on_sock_msg(buf, ctx, app_data) -> int``: ``buf`` is a writable memoryview of every
  unprocessed received byte (valid only during the call).  Return how many bytes were consumed:
  ``0`` means "no complete message yet, call me again when more bytes arrive" (the Rust crate
  reactio panics on 0); ``n < len(buf)`` means "consumed n, call me again at once with the rest".  A
  ``MessageResult`` (``ExpectMsgSize(n)`` / ``DropMsgSize(n)``) may be returned instead, to ask
  for an exact size.  Raising, or returning anything else, closes the stream with that error.
- ``on_closed(reactor_id, cmd_sender, app_data) -> None``: the stream is closed.
- ``on_command(cmd, ctx, app_data) -> None`` (optional): a user command.  Without it a user
  command completes with ``CommandNotHandledError`` and the stream stays open (the Rust crate
  reactio panics).

``ctx`` is the core's ``DispatchContext`` (reactio's ``SimpleIoReactorContext``): ``send_or_que``,
``acquire_send``, ``close``, ``reactor_id``, ``cmd_sender``.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional, Union

from reactio._core import (DispatchContext, DropMsgSize, ExpectMsgSize, MessageResult,
                           ReactorID, ReactRuntime, Reactor)
from reactio.errors import CommandNotHandledError, MessageResultError
from reactio.listener import TcpListenerHandler

__all__ = ["SimpleIoReactor", "SimpleIoListener", "SimpleIoService", "SimpleIoRuntime",
           "OnConnected", "OnClosed", "OnSockMsg", "OnCommand"]

OnConnected = Callable[[DispatchContext, Optional[ReactorID], Any], None]
OnClosed = Callable[[ReactorID, Any, Any], None]
OnSockMsg = Callable[[memoryview, DispatchContext, Any], Union[int, MessageResult]]
OnCommand = Callable[[Any, DispatchContext, Any], None]

# reactio's SimpleIoRuntime is ReactRuntime<()>; Python has no command type parameter, so the
# two are the same class.
SimpleIoRuntime = ReactRuntime

_WAIT_FOR_MORE = ExpectMsgSize(0)


def _consumed_to_result(consumed: Any, avail: int, handler: Any) -> MessageResult:
    """Map an on_sock_msg return value onto the core's framing result."""
    if type(consumed) is int:
        if consumed == 0:
            return _WAIT_FOR_MORE
        if 0 < consumed <= avail:
            return DropMsgSize(consumed)
        raise MessageResultError(
            f"on_sock_msg {handler!r} returned {consumed} with {avail} bytes in buf; it must "
            f"return the number of bytes consumed, 0..{avail} (0 = wait for more bytes)")
    if type(consumed) is MessageResult:
        return consumed
    raise TypeError(
        f"on_sock_msg {handler!r} returned {consumed!r}; it must return the number of bytes "
        f"consumed (an int, 0 = wait for more bytes) or a MessageResult")


class SimpleIoReactor(Reactor):
    """One stream handled by closures (reactio's ``SimpleIoReactor::new``).

    ``SimpleIoReactor(app_data, on_connected, on_closed, on_sock_msg)`` follows reactio's
    argument order; keywords read better: ``SimpleIoReactor(on_sock_msg=echo, app_data=stats)``.
    One instance serves one stream: create a new one per connection (SimpleIoListener's creator
    does), or use SimpleIoService for one handler object shared by many streams.
    """

    def __init__(self, app_data: Any = None, on_connected: Optional[OnConnected] = None,
                 on_closed: Optional[OnClosed] = None, on_sock_msg: Optional[OnSockMsg] = None,
                 *, on_command: Optional[OnCommand] = None) -> None:
        if on_sock_msg is None:
            raise TypeError("SimpleIoReactor needs an on_sock_msg handler")
        self.app_data = app_data
        self._on_connected = on_connected
        self._on_closed = on_closed
        self._on_sock_msg = on_sock_msg
        self._on_command = on_command

    def on_connected(self, ctx: DispatchContext, listener_id: Optional[ReactorID]) -> None:
        if self._on_connected is not None:
            self._on_connected(ctx, listener_id, self.app_data)

    def on_inbound_message(self, buf: memoryview, new_bytes: int, decoded_msg_size: int,
                           ctx: DispatchContext) -> MessageResult:
        consumed = self._on_sock_msg(buf, ctx, self.app_data)
        if type(consumed) is int and 0 < consumed <= len(buf):     # the common case, inline
            return DropMsgSize(consumed)
        return _consumed_to_result(consumed, len(buf), self._on_sock_msg)

    def on_command(self, cmd: Any, ctx: DispatchContext) -> None:
        if self._on_command is None:
            raise CommandNotHandledError(
                f"SimpleIoReactor {ctx.reactor_id} has no on_command handler; command {cmd!r} "
                "not delivered")
        self._on_command(cmd, ctx, self.app_data)

    def on_close(self, reactor_id: ReactorID, cmd_sender: Any) -> None:
        if self._on_closed is not None:
            self._on_closed(reactor_id, cmd_sender, self.app_data)


class SimpleIoListener(TcpListenerHandler):
    """A listener whose ``reactor_creator(count)`` makes the reactor of each accepted stream
    (``count`` is the 1-based number of connections accepted so far); returning None refuses
    the connection.  Options (``max_send_queue``, ``nodelay``, ``backlog``, ...) are those of
    TcpListenerHandler."""

    def __init__(self, recv_buffer_min_size: int,
                 reactor_creator: Callable[[int], Optional[Reactor]], **options: Any) -> None:
        super().__init__(recv_buffer_min_size, **options)
        self.reactor_creator = reactor_creator
        self.count = 0
        self._count_lock = threading.Lock()     # (one listener may run on several runtimes)

    @classmethod
    def with_io_service(cls, service: "SimpleIoService", **options: Any) -> "SimpleIoListener":
        """Every accepted stream is served by ``service`` (reactio's ``new_with_io_service``)."""
        return cls(service.recv_buffer_min_size, lambda count: service.new_reactor(), **options)

    def on_new_connection(self, peer_address: Any) -> Optional[Reactor]:
        with self._count_lock:
            self.count += 1
            count = self.count
        return self.reactor_creator(count)


class _ServiceStream(Reactor):
    """The per-stream reactor of a SimpleIoService.  The core gives every stream its own
    receive buffer (MsgReader), so a stream's bytes only ever reach the handler with that
    stream's ``ctx``: partial messages of different sockets cannot mix."""

    __slots__ = ("service",)

    def __init__(self, service: "SimpleIoService") -> None:
        self.service = service

    def on_connected(self, ctx: DispatchContext, listener_id: Optional[ReactorID]) -> None:
        svc = self.service
        with svc._lock:
            svc._streams.add(self)
            if svc._on_connected is not None:
                svc._on_connected(ctx, listener_id, svc.app_data)

    def on_inbound_message(self, buf: memoryview, new_bytes: int, decoded_msg_size: int,
                           ctx: DispatchContext) -> MessageResult:
        svc = self.service
        with svc._lock:
            consumed = svc._on_sock_msg(buf, ctx, svc.app_data)
        if type(consumed) is int and 0 < consumed <= len(buf):
            return DropMsgSize(consumed)
        return _consumed_to_result(consumed, len(buf), svc._on_sock_msg)

    def on_command(self, cmd: Any, ctx: DispatchContext) -> None:
        svc = self.service
        if svc._on_command is None:
            raise CommandNotHandledError(
                f"SimpleIoService stream {ctx.reactor_id} has no on_command handler; command "
                f"{cmd!r} not delivered")
        with svc._lock:
            svc._on_command(cmd, ctx, svc.app_data)

    def on_close(self, reactor_id: ReactorID, cmd_sender: Any) -> None:
        svc = self.service
        with svc._lock:
            svc._streams.discard(self)
            if svc._on_closed is not None:
                svc._on_closed(reactor_id, cmd_sender, svc.app_data)


class SimpleIoService:
    """One handler object (and one ``app_data``) serving many streams (reactio's
    ``SimpleIoService``): every handler call gets the stream's ``ctx``, so ``ctx.reactor_id``
    tells the streams apart.  Each stream has its own receive buffer: bytes of one socket never
    reach the handler call of another, even when handlers return 0 to wait for more.

    Use ``SimpleIoListener.with_io_service(service)`` to serve accepted connections and
    ``service.new_reactor()`` as the reactor of ``send_connect``.  Handlers run under the
    service's lock, and so does ``apply_app_data``, which makes ``app_data`` safe to inspect
    from any thread (e.g. the test thread while a ThreadedReactorMgr runs the service).
    A service may serve streams of several runtimes; its handlers then run on several threads,
    one at a time.
    """

    def __init__(self, recv_buffer_min_size: int, app_data: Any = None,
                 on_connected: Optional[OnConnected] = None, on_closed: Optional[OnClosed] = None,
                 on_sock_msg: Optional[OnSockMsg] = None, *,
                 on_command: Optional[OnCommand] = None) -> None:
        if on_sock_msg is None:
            raise TypeError("SimpleIoService needs an on_sock_msg handler")
        if recv_buffer_min_size <= 0:
            raise ValueError(f"recv_buffer_min_size must be positive, not {recv_buffer_min_size}")
        self.recv_buffer_min_size = recv_buffer_min_size
        self.app_data = app_data
        self._on_connected = on_connected
        self._on_closed = on_closed
        self._on_sock_msg = on_sock_msg
        self._on_command = on_command
        self._lock = threading.RLock()          # re-entrant: a handler may call apply_app_data
        # The open streams, as their _ServiceStream objects (one per stream): a ReactorID is
        # unique within one runtime only, and a service may serve streams of several runtimes.
        self._streams: set[_ServiceStream] = set()

    def new_reactor(self) -> Reactor:
        """A reactor for one more stream served by this service (for send_connect, or a
        listener of your own)."""
        return _ServiceStream(self)

    def apply_app_data(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(app_data)`` under the service's lock and return its result (reactio's
        ``apply_app_data`` / ``apply_app_data_mut``: Python needs no separate mutable form)."""
        with self._lock:
            return fn(self.app_data)

    def count_streams(self) -> int:
        """Streams of this service that are connected and not yet closed."""
        with self._lock:
            return len(self._streams)
