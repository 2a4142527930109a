# Type stubs of reactio/listener.py (whose callbacks are not annotated inline).
from ssl import SSLContext
from typing import Any, Callable, Optional

from reactio._core import CmdSender, Reactor, ReactorID

# (host, port[, flowinfo, scope_id]) for TCP, a str for a Unix socket (its path, "@name", or
# "" for an unnamed peer): Any, as typeshed types socket.getpeername()
_SockAddr = Any

class TcpListenerHandler:
    """Base class of listener handlers: what a listening socket does with each accepted
    connection."""

    recv_buffer_min_size: int
    max_send_queue: Optional[int]
    max_msg_size: Optional[int]
    nodelay: bool
    backlog: int
    reuse_port: bool
    dual_stack: bool
    ssl: Optional[SSLContext]
    ssl_handshake_timeout: Optional[float]
    reactor_id: Optional[ReactorID]
    def __init__(
        self,
        recv_buffer_min_size: int = 4096,
        *,
        max_send_queue: Optional[int] = None,
        max_msg_size: Optional[int] = None,
        nodelay: bool = True,
        backlog: int = 1024,
        reuse_port: bool = False,
        dual_stack: bool = False,
        ssl: Optional[SSLContext] = None,
        ssl_handshake_timeout: Optional[float] = None,
    ) -> None: ...
    def on_start_listen(self, reactor_id: ReactorID, cmd_sender: CmdSender) -> None: ...
    def on_new_connection(self, peer_address: _SockAddr) -> Optional[Reactor]:
        """The Reactor for a connection accepted from peer_address, or None to refuse it."""
    def on_close_listen(self, reactor_id: ReactorID, cmd_sender: CmdSender) -> None: ...

class DefaultTcpListenerHandler(TcpListenerHandler):
    """One reactor per accepted connection: reactor_factory(count, param), count 1-based."""

    reactor_factory: Callable[[int, Any], Optional[Reactor]]
    param: Any
    count: int
    def __init__(
        self,
        reactor_factory: Callable[[int, Any], Optional[Reactor]],
        recv_buffer_min_size: int = 4096,
        param: Any = None,
        *,
        max_send_queue: Optional[int] = None,
        max_msg_size: Optional[int] = None,
        nodelay: bool = True,
        backlog: int = 1024,
        reuse_port: bool = False,
        dual_stack: bool = False,
        ssl: Optional[SSLContext] = None,
        ssl_handshake_timeout: Optional[float] = None,
    ) -> None: ...
