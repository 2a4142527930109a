"""Plain-socket peers of a runtime under test, and addresses that refuse or never answer."""
from __future__ import annotations

import contextlib
import socket
import struct
import time

from reactio import ReactRuntime

from support.runtime import pump_until


def raw_client(port, host="127.0.0.1") -> socket.socket:
    """A blocking client socket (5 s timeout, TCP_NODELAY) connected to ``host:port``, or to
    the ``"unix:"`` address ``port`` (what support.runtime.listen returned)."""
    if isinstance(port, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(unix_sockaddr(port))
        return s
    s = socket.create_connection((host, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def unix_sockaddr(addr: str) -> str:
    """The socket module's address for reactio's ``"unix:/path"`` / ``"unix:@name"``."""
    assert addr.startswith("unix:"), addr
    path = addr[len("unix:"):]
    return "\0" + path[1:] if path.startswith("@") else path


def recv_exact_nb(rt: ReactRuntime, sock: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    """Read n bytes from a peer socket while pumping the runtime (no deadlock)."""
    sock.setblocking(False)
    out = bytearray()

    def got():
        try:
            chunk = sock.recv(n - len(out))
        except BlockingIOError:
            return False
        if not chunk:
            raise AssertionError(f"peer closed after {len(out)} of {n} bytes")
        out.extend(chunk)
        return len(out) >= n

    pump_until(rt, got, timeout)
    return bytes(out)


def send_all_nb(rt: ReactRuntime, sock: socket.socket, data: bytes, timeout: float = 10.0):
    """Write everything to a peer socket while pumping the runtime (no deadlock)."""
    sock.setblocking(False)
    view = memoryview(data)
    sent = 0

    def more():
        nonlocal sent
        try:
            sent += sock.send(view[sent:sent + (1 << 20)])
        except BlockingIOError:
            pass
        return sent >= len(data)

    pump_until(rt, more, timeout)


def read_until_eof_nb(rt: ReactRuntime, sock: socket.socket, timeout: float = 20.0) -> bytes:
    """Everything the peer receives up to the FIN, while pumping; an RST raises."""
    sock.setblocking(False)
    out = bytearray()

    def more():
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return False
        if not chunk:
            return True
        out.extend(chunk)
        return False

    pump_until(rt, more, timeout)
    return bytes(out)


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER {1, 0}: the peer gets an RST, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released): connects to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def held_closed_ports(count: int, ipv6: bool = False):
    """``count`` loopback ports bound (not listening) for as long as the block runs, on
    127.0.0.1 and, with ``ipv6``, on ::1 too: connects to them are refused, and no other
    process can start listening there meanwhile (a released port can be taken at once)."""
    held = []
    ports = []
    try:
        while len(ports) < count:
            s4 = socket.socket()
            held.append(s4)
            s4.bind(("127.0.0.1", 0))
            port = s4.getsockname()[1]
            if ipv6:
                s6 = socket.socket(socket.AF_INET6)
                held.append(s6)
                try:
                    s6.bind(("::1", port))
                except OSError:
                    continue        # taken on ::1: try another number
            ports.append(port)
        yield ports
    finally:
        for s in held:
            s.close()


@contextlib.contextmanager
def full_backlog_port():
    """The port of a listener that never accepts and whose backlog is full: the kernel drops
    SYNs to it, so a connect can only end by its timeout."""
    srv = socket.socket()
    fillers = []
    try:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        for _ in range(8):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", port))
            fillers.append(f)
        time.sleep(0.1)
        yield port
    finally:
        for f in fillers:
            f.close()
        srv.close()
