# Type stubs of the compiled hot loop, reactio._core (src/reactio/_core.pyx and its .pxi files).
# Only the Python-visible API is here; the cdef API (on_inbound_raw, send_raw, ...) is in
# _core.pxd for Cython users.  Checked against the built module by `python -m mypy.stubtest
# reactio` (tools/build-dist.sh).
import enum
import ssl
from types import TracebackType
from typing import Any, Callable, ClassVar, Iterable, Literal, Optional, Protocol, Tuple, Type, TypeVar, Union, final

from _typeshed import ReadableBuffer
from typing_extensions import deprecated, disjoint_base

_T = TypeVar("_T")
_DeferredT = TypeVar("_DeferredT", bound="Deferred")

# ``"host:port"``, ``"[v6addr]:port"``, ``(host, port)`` or ``(host, port, flowinfo, scope_id)``;
# ``"unix:/path"`` or ``"unix:@name"`` (Linux abstract namespace) for a Unix stream socket
_Address = Union[str, Tuple[str, int], Tuple[str, int, int, int]]
# (host, port) / (host, port, flowinfo, scope_id) as socket.getpeername() gives them for
# AF_INET / AF_INET6; for a Unix socket a str: the path, "@name" (abstract), "" (unnamed).
# Any, as typeshed types socket.getpeername(): a port read as ``addr[1]`` stays an int.
_SockAddr = Any
# A completion runs exactly once, on the runtime's thread, with the ReactorID on success or
# the exception instance that stopped the command (it is never raised).
_CompletionResult = Union["ReactorID", BaseException]
_Completion = Callable[[_CompletionResult], object]

BACKEND: Literal["epoll", "iocp"]
DEFAULT_MAX_SEND_QUEUE: int
DEFAULT_MAX_MSG_SIZE: int
DEFAULT_HIGH_WATER: int
DEFAULT_LOW_WATER: int

def monotonic_ns() -> int:
    """The clock of Deferred.until(), deferred commands and timers: time.perf_counter_ns()'s
    clock, to the nanosecond (CLOCK_MONOTONIC on Linux, QueryPerformanceCounter on Windows; on
    Windows before CPython 3.13, time.monotonic() is the coarser GetTickCount64)."""

@final
class ReactorID:
    """Slot + generation: unique for the lifetime of a runtime; a stale id never matches."""

    def __new__(cls, slot: int, generation: int) -> ReactorID: ...
    @property
    def slot(self) -> int: ...
    @property
    def generation(self) -> int: ...
    def to_int(self) -> int:
        """(generation << 32) | slot."""
    @staticmethod
    def from_int(value: int) -> ReactorID: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def __reduce__(self) -> Tuple[Type[ReactorID], Tuple[int, int]]: ...

@final
class MessageResult:
    """What on_inbound_message returns: ExpectMsgSize(n) or DropMsgSize(n)."""

    @property
    def size(self) -> int: ...
    @property
    def is_drop(self) -> bool: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

def ExpectMsgSize(n: int) -> MessageResult:
    """The message is incomplete: n == 0, size unknown (call again on any new bytes); n > 0,
    call again once n bytes (counted from the start of buf) are buffered."""

def DropMsgSize(n: int) -> MessageResult:
    """n bytes (0 < n <= len(buf)) are consumed; remaining bytes are dispatched at once."""

class Deferred:
    """When a command runs: Deferred.IMMEDIATE, Deferred.after(seconds) or
    Deferred.until(monotonic_ns)."""

    IMMEDIATE: ClassVar[Deferred]
    due_ns: int
    def __init__(self, due_ns: int = 0) -> None: ...
    @classmethod
    def after(cls: Type[_DeferredT], seconds: float) -> _DeferredT: ...
    @classmethod
    def until(cls: Type[_DeferredT], monotonic_ns: int) -> _DeferredT: ...

class SendOrQueResult(enum.IntEnum):
    COMPLETE = 0
    IN_QUEUE = 1

@disjoint_base
class Reactor:
    """One TCP stream's protocol.  Subclass it and override on_inbound_message (required) and
    any other callback; a callback that raises closes this reactor (on_close still runs)."""

    def on_connected(self, ctx: DispatchContext, listener_id: Optional[ReactorID]) -> None:
        """The stream is connected; listener_id is the accepting listener's id, or None for
        an outbound connection."""
    def on_inbound_message(
        self, buf: memoryview, new_bytes: int, decoded_msg_size: int, ctx: DispatchContext
    ) -> MessageResult:
        """Frame received bytes: return ExpectMsgSize(n) or DropMsgSize(n).  buf is valid only
        during the call."""
    def on_readable(self, ctx: DispatchContext) -> None: ...
    def on_command(self, cmd: Any, ctx: DispatchContext) -> None: ...
    def on_close(self, reactor_id: ReactorID, cmd_sender: CmdSender) -> None: ...
    def on_pause_writing(self, ctx: DispatchContext) -> None: ...
    def on_resume_writing(self, ctx: DispatchContext) -> None: ...
    @property
    def close_error(self) -> Optional[BaseException]:
        """Why the stream closed (set before on_close): None, or the exception."""

@final
class MsgReader:
    """Per-stream receive buffer and framing dispatch loop."""

    @deprecated("the runtime makes each stream's reader (DispatchContext.reader)")
    def __init__(self, min_reserve: int, max_msg_size: int) -> None: ...
    @property
    def recv_buffer_min_size(self) -> int: ...
    @property
    @deprecated("use recv_buffer_min_size")
    def min_reserve(self) -> int: ...
    @property
    def max_msg_size(self) -> int: ...
    def bytes_in_buffer(self) -> int: ...
    def clear(self) -> None: ...
    def try_read_fast_read(self, ctx: DispatchContext) -> None: ...
    def try_read_fast_dispatch(self, ctx: DispatchContext) -> None: ...

@final
class MsgSender:
    """Per-stream send queue and in-order send completions."""

    @deprecated("the runtime makes each stream's sender (DispatchContext.sender)")
    def __init__(self, max_send_queue: int, high_water: int, low_water: int) -> None: ...
    @property
    @deprecated("use DispatchContext.send_queue_size")
    def queued(self) -> int: ...
    @property
    def bytes_sent(self) -> int: ...
    @property
    def max_send_queue(self) -> int: ...
    @property
    def high_water(self) -> int: ...
    @property
    def low_water(self) -> int: ...

@final
class DispatchContext:
    """A reactor's handle on its stream, passed to every callback (created by the runtime)."""

    @property
    def reactor(self) -> Reactor: ...
    @property
    def reactor_id(self) -> ReactorID: ...
    @property
    def reader(self) -> MsgReader: ...
    @property
    def sender(self) -> MsgSender: ...
    @property
    def cmd_sender(self) -> CmdSender: ...
    @property
    def is_open(self) -> bool: ...
    @property
    def send_queue_size(self) -> int: ...
    @property
    def peer_address(self) -> _SockAddr: ...
    @property
    def local_address(self) -> _SockAddr: ...
    @property
    def nodelay(self) -> bool: ...
    @nodelay.setter
    def nodelay(self, on: bool) -> None: ...
    def fileno(self) -> int: ...
    @property
    def ssl_object(self) -> Optional[ssl.SSLObject]:
        """The stream's ssl.SSLObject (peer certificate, cipher, ALPN, version); None for plain TCP."""
    def send_or_que(
        self, data: ReadableBuffer, on_sent: Optional[_Completion] = None
    ) -> SendOrQueResult:
        """Write now when nothing is queued, queue the rest; on_sent runs when the last byte
        reached the kernel (or with the exception if the stream closes first)."""
    def send_no_que(self, data: ReadableBuffer) -> int:
        """Write what the kernel takes now; returns the byte count (0 while bytes are queued)."""
    def acquire_send(self) -> AutoSendBuffer: ...
    def close(self, abort: bool = False) -> None: ...

@final
class AutoSendBuffer:
    """Collects writes and sends them as one message on send() or on leaving a with block."""

    def __new__(cls, ctx: DispatchContext) -> AutoSendBuffer: ...
    def write(self, data: ReadableBuffer) -> int: ...
    def count_written(self) -> int: ...
    def __len__(self) -> int: ...
    def get_written(self) -> bytes: ...
    def clear(self) -> None: ...
    def send(self, on_sent: Optional[_Completion] = None) -> SendOrQueResult: ...
    def __enter__(self) -> AutoSendBuffer: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...

@disjoint_base
class DatagramReactor:
    """One UDP endpoint's handling.  Subclass it and override on_datagram (required) and any
    other callback; a callback that raises closes this endpoint (on_close still runs)."""

    def on_bound(self, ctx: DatagramContext) -> None: ...
    def on_datagram(self, buf: memoryview, addr: _SockAddr, ctx: DatagramContext) -> None:
        """One datagram; buf is valid only during the call."""
    def on_error(self, exc: BaseException, ctx: DatagramContext) -> None: ...
    def on_command(self, cmd: Any, ctx: DatagramContext) -> None: ...
    def on_close(self, reactor_id: ReactorID, cmd_sender: CmdSender) -> None: ...
    @property
    def close_error(self) -> Optional[BaseException]: ...

@final
class DatagramContext:
    """A datagram reactor's handle on its socket (created by the runtime)."""

    @property
    def reactor(self) -> DatagramReactor: ...
    @property
    def reactor_id(self) -> ReactorID: ...
    @property
    def cmd_sender(self) -> CmdSender: ...
    @property
    def is_open(self) -> bool: ...
    @property
    def peer(self) -> Optional[_SockAddr]: ...
    @property
    def local_address(self) -> _SockAddr: ...
    @property
    def max_datagram_size(self) -> int: ...
    @property
    def recv_calls(self) -> int: ...
    @property
    def datagrams_received(self) -> int: ...
    @property
    def send_calls(self) -> int: ...
    @property
    def datagrams_sent(self) -> int: ...
    @property
    def send_dropped(self) -> int: ...
    @property
    def truncated(self) -> int: ...
    def fileno(self) -> int: ...
    def send_to(self, data: ReadableBuffer, addr: _Address) -> bool:
        """One datagram to addr: True when sent or queued, False when dropped (full)."""
    def send(self, data: ReadableBuffer) -> bool:
        """One datagram to the connect_to peer."""
    def join_group(self, group: str, interface: Union[str, int, None] = None) -> None: ...
    def leave_group(self, group: str, interface: Union[str, int, None] = None) -> None: ...
    def close(self) -> None: ...

class _ListenerHandler(Protocol):
    """What send_listen needs of a handler (reactio.TcpListenerHandler provides it).  The
    runtime also reads the optional attributes recv_buffer_min_size, max_send_queue,
    max_msg_size, nodelay, backlog and reuse_port."""

    def on_start_listen(self, reactor_id: ReactorID, cmd_sender: CmdSender) -> None: ...
    def on_new_connection(self, peer_address: _SockAddr) -> Optional[Reactor]: ...
    def on_close_listen(self, reactor_id: ReactorID, cmd_sender: CmdSender) -> None: ...

@final
class CmdSender:
    """Sends commands to one runtime; thread-safe (use ReactRuntime.cmd_sender)."""

    def send_connect(
        self,
        addr: _Address,
        recv_buffer_min_size: int,
        reactor: Reactor,
        deferred: Optional[Deferred] = None,
        on_completion: Optional[_Completion] = None,
        *,
        timeout: Optional[float] = None,
        max_send_queue: Optional[int] = None,
        max_msg_size: Optional[int] = None,
        nodelay: bool = True,
        ssl: Optional[ssl.SSLContext] = None,
        server_hostname: Optional[str] = None,
        ssl_handshake_timeout: Optional[float] = None,
    ) -> None:
        """Connect to addr ("host:port", (host, port), "unix:/path", "unix:@name") without
        blocking the loop; on_completion gets the ReactorID or the error."""
    def send_listen(
        self,
        addr: _Address,
        handler: _ListenerHandler,
        deferred: Optional[Deferred] = None,
        on_completion: Optional[_Completion] = None,
    ) -> None:
        """Listen on addr ("host:port", (host, port), "unix:/path", "unix:@name": a Unix
        listener removes the socket file it made when it closes); on_completion gets the
        listener's ReactorID or the error."""
    def send_bind_udp(
        self,
        addr: _Address,
        reactor: DatagramReactor,
        deferred: Optional[Deferred] = None,
        on_completion: Optional[_Completion] = None,
        *,
        connect_to: Optional[_Address] = None,
        reuse_port: bool = False,
        broadcast: bool = False,
        multicast_groups: Iterable[str] = (),
        multicast_interface: Union[str, int, None] = None,
        multicast_loop: bool = True,
        multicast_ttl: int = 1,
        recv_buffer_size: Optional[int] = None,
        max_datagram_size: int = 65507,
        recv_batch: int = 32,
    ) -> None:
        """Open a UDP endpoint bound to a numeric address; on_bound runs, then
        on_completion(reactor_id), or on_completion(OSError) when the bind fails."""
    def send_close(
        self,
        reactor_id: ReactorID,
        deferred: Optional[Deferred] = None,
        on_completion: Optional[_Completion] = None,
        *,
        abort: bool = False,
    ) -> None: ...
    def send_user_cmd(
        self,
        reactor_id: ReactorID,
        cmd: Any,
        deferred: Optional[Deferred] = None,
        on_completion: Optional[_Completion] = None,
    ) -> None: ...
    def send_call(
        self,
        callback: Callable[[], Any],
        deferred: Optional[Deferred] = None,
        on_completion: Optional[Callable[[Any], Any]] = None,
    ) -> None: ...
    @property
    def closed(self) -> bool: ...

@final
class TimerHandle:
    """A callback scheduled with ReactRuntime.call_later / call_at (runtime thread only)."""

    @property
    def when(self) -> int: ...
    def cancel(self) -> None: ...
    def cancelled(self) -> bool: ...

@final
class ReactRuntime:
    """One event loop.  Use it from one thread; other threads reach it through cmd_sender."""

    def __init__(
        self,
        *,
        max_send_queue: int = ...,
        max_msg_size: int = ...,
        high_water: int = ...,
        low_water: int = ...,
        drain_timeout: float = 30.0,
        max_events: int = 1024,
    ) -> None: ...
    def __enter__(self: _T) -> _T: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...
    @property
    def cmd_sender(self) -> CmdSender: ...
    @deprecated("use the cmd_sender attribute")
    def get_cmd_sender(self) -> CmdSender: ...
    @property
    def max_send_queue(self) -> int: ...
    @property
    def max_msg_size(self) -> int: ...
    @property
    def high_water(self) -> int: ...
    @property
    def low_water(self) -> int: ...
    @property
    def drain_timeout(self) -> float: ...
    @property
    def closed(self) -> bool: ...
    def count_reactors(self) -> int: ...
    def count_streams(self) -> int: ...
    def count_deferred_queue(self) -> int: ...
    def count_sock_events(self) -> int: ...
    def count_received_commands(self) -> int: ...
    def local_address(self, reactor_id: ReactorID) -> _SockAddr: ...
    def peer_address(self, reactor_id: ReactorID) -> _SockAddr: ...
    def get_context(self, reactor_id: ReactorID) -> Optional[DispatchContext]: ...
    def call_later(self, seconds: float, callback: Callable[..., Any], *args: Any) -> TimerHandle: ...
    def call_at(self, monotonic_ns: int, callback: Callable[..., Any], *args: Any) -> TimerHandle: ...
    def fileno(self) -> int: ...
    def _external_poll(self, on: bool) -> None: ...
    def _next_due_ns(self) -> Optional[int]: ...
    def process_events(self, timeout: float = 0.01) -> bool:
        """Wait up to timeout seconds (0: poll, negative: no limit), handle events, timers and
        commands; False (without waiting) when the runtime is idle."""
    def run(self, timeout: float = 1.0, *, busy_poll: bool = False) -> None: ...
    def run_forever(self, timeout: float = 1.0, *, busy_poll: bool = False) -> None: ...
    def stop(self) -> None: ...
    def shutdown(self, timeout: float = 5.0) -> int: ...
    def close(self) -> None: ...
