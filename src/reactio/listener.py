"""Listener handlers: what a listening socket does with each accepted connection."""
from __future__ import annotations

import socket
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

from reactio._core import Reactor

if TYPE_CHECKING:
    from ssl import SSLContext


class TcpListenerHandler:
    """Base class of listener handlers (reactio's ``TcpListenerHandler``).

    The runtime reads these attributes when the listener starts: ``recv_buffer_min_size``
    (receive buffer / minimum read size of each accepted stream), ``max_send_queue`` and
    ``max_msg_size`` (None: the runtime's defaults), ``nodelay`` (TCP_NODELAY on accepted
    streams), ``backlog``, ``reuse_port`` and ``dual_stack``.

    ``reuse_port`` (SO_REUSEPORT): several listeners, in one process or several, share one
    address and the kernel spreads connections over them; refused with ValueError here where
    the platform has no SO_REUSEPORT, i.e. Windows.

    ``dual_stack``: an IPv6 listener (e.g. on ``"[::]:port"``) is IPv6-only by default
    (IPV6_V6ONLY=1, whatever the system default); ``dual_stack=True`` sets IPV6_V6ONLY=0, so it
    also accepts IPv4 clients, whose peer address is then the IPv4-mapped form
    (``"::ffff:127.0.0.1"``).  It is ignored on an IPv4 listener.

    ``ssl``: an ``ssl.SSLContext`` with the server's certificate makes every accepted stream
    a TLS stream (docs/tls.md); ``ssl_handshake_timeout`` (seconds, default 60) bounds its
    handshake.  A failed handshake is logged and closes that connection only.
    """

    def __init__(self, recv_buffer_min_size: int = 4096, *, max_send_queue: Optional[int] = None,
                 max_msg_size: Optional[int] = None, nodelay: bool = True, backlog: int = 1024,
                 reuse_port: bool = False, dual_stack: bool = False,
                 ssl: Optional[SSLContext] = None,
                 ssl_handshake_timeout: Optional[float] = None) -> None:
        if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
            raise ValueError(
                "reuse_port=True: SO_REUSEPORT does not exist on this platform "
                f"({sys.platform}): Windows cannot spread one port's connections over several "
                "listeners (docs/listeners.md); serve from one process, with "
                "ThreadedReactorMgr for several runtimes")
        self.recv_buffer_min_size = recv_buffer_min_size
        self.max_send_queue = max_send_queue
        self.max_msg_size = max_msg_size
        self.nodelay = nodelay
        self.backlog = backlog
        self.reuse_port = reuse_port
        self.dual_stack = dual_stack
        self.ssl = ssl
        self.ssl_handshake_timeout = ssl_handshake_timeout
        self.reactor_id = None

    def on_start_listen(self, reactor_id, cmd_sender) -> None:
        """The listener is bound and registered; runs before the listen completion."""
        self.reactor_id = reactor_id

    def on_new_connection(self, peer_address) -> Optional[Reactor]:
        """Return the Reactor for a connection accepted from ``peer_address``, or None to
        refuse it (the socket is closed)."""
        raise NotImplementedError

    def on_close_listen(self, reactor_id, cmd_sender) -> None:
        """The listener was closed."""


class DefaultTcpListenerHandler(TcpListenerHandler):
    """Creates one reactor per accepted connection: ``reactor_factory(count, param)`` with the
    1-based count of connections this listener accepted (reactio's ``NewServerReactor``)."""

    def __init__(self, reactor_factory: Callable[[int, Any], Reactor],
                 recv_buffer_min_size: int = 4096, param: Any = None, **options: Any) -> None:
        super().__init__(recv_buffer_min_size, **options)
        self.reactor_factory = reactor_factory
        self.param = param
        self.count = 0
        # One handler may listen on several runtimes (reuse_port), whose threads accept at
        # the same time: without the GIL ``count += 1`` could give a count twice.
        self._count_lock = threading.Lock()

    def on_new_connection(self, peer_address) -> Optional[Reactor]:
        with self._count_lock:
            self.count += 1
            count = self.count
        return self.reactor_factory(count, self.param)
