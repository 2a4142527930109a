"""Cold networking helpers for the runtime: address parsing, name resolution off the loop
thread, and creating listening / connecting sockets.  Everything here runs once per
connection or listener, never per message; the returned file descriptors are owned by the
runtime from then on.
"""
from __future__ import annotations

import concurrent.futures
import errno
import ipaddress
import os
import socket
import threading

__all__ = ["parse_address", "resolve_numeric", "resolve_async", "open_listener",
           "start_connect"]


def parse_address(addr) -> tuple[str, int]:
    """``"host:port"``, ``"[v6addr]:port"``, ``(host, port)`` or ``(host, port, flow, scope)``
    -> (host, port).  Raises ValueError (TypeError for a wrong type) with the reason."""
    if isinstance(addr, (tuple, list)):
        if len(addr) not in (2, 4):
            raise ValueError(f"address tuple must be (host, port): {addr!r}")
        host, port = addr[0], addr[1]
        if not isinstance(host, str):
            raise TypeError(f"host must be a str: {addr!r}")
    elif isinstance(addr, str):
        if addr.startswith("["):
            host, sep, rest = addr[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ValueError(f"bad IPv6 address, expected '[addr]:port': {addr!r}")
            port = rest[1:]
        else:
            host, sep, port = addr.rpartition(":")
            if not sep:
                raise ValueError(f"address needs a port, expected 'host:port': {addr!r}")
            if ":" in host:
                raise ValueError(f"IPv6 addresses need brackets, '[addr]:port': {addr!r}")
    else:
        raise TypeError(f"address must be 'host:port' or (host, port), not {type(addr).__name__}")
    if isinstance(port, str):
        if not port.isdigit():
            raise ValueError(f"port must be a number: {addr!r}")
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in 0..65535: {addr!r}")
    if host == "":
        raise ValueError(f"empty host: {addr!r}")
    return host, port


def resolve_numeric(host: str, port: int):
    """[(family, sockaddr)] for a numeric host, None when a name lookup is needed."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, socket.IPPROTO_TCP,
                               socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)
    return [(fam, sa) for fam, _, _, _, sa in infos]


HAS_REUSE_PORT = hasattr(socket, "SO_REUSEPORT")

_resolver = None
_resolver_lock = threading.Lock()


def _forget_resolver_in_child() -> None:
    """After fork() the child has the parent's pool object but none of its threads: work
    submitted to it would never run.  Start from scratch."""
    global _resolver, _resolver_lock
    _resolver = None
    _resolver_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_resolver_in_child)


def resolve_async(host: str, port: int, passive: bool, done) -> None:
    """Resolve on a small thread pool; ``done(result)`` runs on that thread with a list of
    (family, sockaddr) or the exception (socket.gaierror for an unknown name)."""
    global _resolver
    with _resolver_lock:
        # the pool is read once, under the lock: every runtime thread may get here at once
        pool = _resolver
        if pool is None:
            pool = _resolver = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="reactio-resolver")

    def work():
        try:
            flags = socket.AI_PASSIVE if passive else 0
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP,
                                       flags | socket.AI_ADDRCONFIG)
            result = [(fam, sa) for fam, _, _, _, sa in infos]
            if not result:
                result = socket.gaierror(socket.EAI_NONAME, f"no address for {host!r}")
        except Exception as exc:  # reported to the completion, never lost
            result = exc
        done(result)

    pool.submit(work)


def open_listener(family: int, sockaddr, backlog: int, reuse_port: bool = False,
                  dual_stack: bool = False) -> int:
    """A bound, listening, non-blocking socket; returns its fd (the caller owns it).  An
    AF_INET6 socket is IPv6-only unless ``dual_stack`` (then IPv4 clients are accepted too, as
    IPv4-mapped addresses); ``dual_stack`` means nothing to an AF_INET socket."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # set either way: the system default differs (Linux sysctl bindv6only, Windows)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock.detach()


def start_connect(family: int, sockaddr, nodelay: bool) -> tuple[int, int]:
    """Start a non-blocking connect: (fd, 0) if connected at once, (fd, EINPROGRESS) while in
    progress.  Any other failure raises OSError of the matching type."""
    fd = new_socket(family, nodelay)
    sock = socket.socket(fileno=fd)
    try:
        err = sock.connect_ex(sockaddr)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, getattr(errno, "WSAEWOULDBLOCK", -1)):
            raise OSError(err, f"{os.strerror(err)} (connect to {sockaddr!r})")
    except BaseException:
        sock.close()
        raise
    return sock.detach(), err


def os_error(err: int, what: str) -> OSError:
    """An OSError of the subclass Python maps ``err`` to (ConnectionRefusedError, ...)."""
    return OSError(err, f"{os.strerror(err)} ({what})")


def new_socket(family: int, nodelay: bool) -> int:
    """A fresh non-blocking (overlapped, on Windows) TCP socket; returns its fd/handle."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock.detach()
