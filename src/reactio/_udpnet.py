"""Cold code of datagram endpoints: the options of send_bind_udp checked in the caller's thread,
the socket made (bind, connect, multicast, buffer sizes) on the runtime's thread, multicast
group changes, and the raw sockaddr of a send_to address.  Addresses are numeric: a bind (or a
send) is never delayed by a name lookup; resolve names first (socket.getaddrinfo)."""
from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any, Dict, List, Optional, Union

from reactio import _net

# The largest UDP payload: 65535 - 8 (UDP header) - 20 (IPv4 header); IPv6's header is outside
# its payload length, so 65535 - 8.
MAX_PAYLOAD: Dict[int, int] = {socket.AF_INET: 65507, socket.AF_INET6: 65527}
MAX_RECV_BATCH = 1024


class UdpSpec:
    """The checked options of one send_bind_udp."""
    __slots__ = ("family", "bind", "peer", "reuse_port", "broadcast", "groups", "interface",
                 "mloop", "ttl", "rcvbuf", "max_datagram_size", "recv_batch")
    family: int
    bind: Any                   # the sockaddr tuple to bind
    peer: Any                   # connect_to's sockaddr tuple, or None
    reuse_port: bool
    broadcast: bool
    groups: List[str]
    interface: Union[str, int, None]
    mloop: bool
    ttl: int
    rcvbuf: Optional[int]
    max_datagram_size: int
    recv_batch: int


def _numeric(addr, what: str):
    host, port = _net.parse_address(addr)
    if host in ("", "*"):
        raise ValueError(f"{what}: give the wildcard as '0.0.0.0' or '::': {addr!r}")
    infos = _net.resolve_numeric(host, port)
    if infos is None:
        raise ValueError(f"{what} must be a numeric IPv4/IPv6 address (resolve names first, "
                         f"e.g. with socket.getaddrinfo): {addr!r}")
    return infos[0]


def _int_option(value, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}: {value}")
    return value


def check_options(addr, connect_to, reuse_port, broadcast, multicast_groups,
                  multicast_interface, multicast_loop, multicast_ttl, recv_buffer_size,
                  max_datagram_size, recv_batch) -> UdpSpec:
    """Validate everything send_bind_udp takes; ValueError / TypeError with the reason."""
    s = UdpSpec()
    s.family, s.bind = _numeric(addr, "bind address")
    s.peer = None
    if connect_to is not None:
        fam, s.peer = _numeric(connect_to, "connect_to")
        if fam != s.family:
            raise ValueError(f"connect_to {connect_to!r} is not of the bind address's family "
                             f"({addr!r})")
    s.reuse_port = bool(reuse_port)
    if s.reuse_port and not _net.HAS_REUSE_PORT:
        raise ValueError("reuse_port=True: this platform has no SO_REUSEPORT")
    s.broadcast = bool(broadcast)
    if isinstance(multicast_groups, (str, bytes)):
        raise TypeError("multicast_groups is a sequence of group addresses, not one string")
    s.groups = []
    for g in multicast_groups:
        ip = ipaddress.ip_address(g)
        if not ip.is_multicast:
            raise ValueError(f"{g!r} is not a multicast address")
        if (ip.version == 6) != (s.family == socket.AF_INET6):
            raise ValueError(f"multicast group {g!r} is not of the bind address's family")
        s.groups.append(str(ip))
    s.interface = None
    if multicast_interface is not None:
        s.interface = _interface(s.family, multicast_interface)
    s.mloop = bool(multicast_loop)
    s.ttl = _int_option(multicast_ttl, "multicast_ttl", 0, 255)
    s.rcvbuf = None if recv_buffer_size is None else _int_option(
        recv_buffer_size, "recv_buffer_size", 1, 2**31 - 1)
    s.max_datagram_size = _int_option(max_datagram_size, "max_datagram_size", 1,
                                      MAX_PAYLOAD[s.family])
    s.recv_batch = _int_option(recv_batch, "recv_batch", 1, MAX_RECV_BATCH)
    return s


def _interface(family: int, iface):
    """IPv4: the interface's address (str); IPv6: its index (an int, or a name)."""
    if family == socket.AF_INET:
        ip = ipaddress.ip_address(iface)
        if ip.version != 4:
            raise ValueError(f"multicast_interface of an IPv4 socket is an IPv4 address: {iface!r}")
        return str(ip)
    if isinstance(iface, str):
        return socket.if_nametoindex(iface)
    return _int_option(iface, "multicast_interface", 0, 2**32 - 1)


def _membership(s: socket.socket, family: int, group: str, interface, join: bool) -> None:
    if family == socket.AF_INET:
        mreq = socket.inet_aton(group) + socket.inet_aton(interface or "0.0.0.0")
        s.setsockopt(socket.IPPROTO_IP,
                     socket.IP_ADD_MEMBERSHIP if join else socket.IP_DROP_MEMBERSHIP, mreq)
    else:
        mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", interface or 0)
        s.setsockopt(socket.IPPROTO_IPV6,
                     socket.IPV6_JOIN_GROUP if join else socket.IPV6_LEAVE_GROUP, mreq)


def open_udp(spec: UdpSpec) -> int:
    """A bound (and, with connect_to, connected) non-blocking UDP socket; returns its fd."""
    s = socket.socket(spec.family, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        if spec.reuse_port:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if spec.groups:      # several receivers of one group on one host share the port
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if spec.broadcast:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if spec.rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, spec.rcvbuf)
        if spec.family == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(spec.mloop))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, spec.ttl)
            if spec.interface is not None:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                             socket.inet_aton(str(spec.interface)))
        else:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(spec.mloop))
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, spec.ttl)
            if spec.interface is not None:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, int(spec.interface))
        s.bind(spec.bind)
        for g in spec.groups:
            _membership(s, spec.family, g, spec.interface, True)
        if spec.peer is not None:
            s.connect(spec.peer)
        return s.detach()
    except BaseException:
        s.close()
        raise


def change_membership(fd: int, family: int, group, interface, join: bool) -> None:
    """ctx.join_group / ctx.leave_group on the endpoint's socket (borrowed, not closed)."""
    ip = ipaddress.ip_address(group)
    if not ip.is_multicast or (ip.version == 6) != (family == socket.AF_INET6):
        raise ValueError(f"{group!r} is not a multicast address of this socket's family")
    iface = None if interface is None else _interface(family, interface)
    s = socket.socket(family, socket.SOCK_DGRAM, 0, fd)
    try:
        _membership(s, family, str(ip), iface, join)
    finally:
        s.detach()


def sockaddr_bytes(family: int, addr) -> bytes:
    """The raw sockaddr of a numeric (host, port) for send_to (an IPv4 host on an IPv6 socket
    is sent to its IPv4-mapped address)."""
    host, port = _net.parse_address(addr)
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise ValueError(f"send_to needs a numeric address (resolve names first): {addr!r}") \
            from None
    if family == socket.AF_INET:
        if ip.version != 4:
            raise ValueError(f"an IPv4 socket cannot send to {addr!r}")
        return struct.pack("=H", family) + struct.pack("!H", port) + ip.packed + bytes(8)
    if ip.version == 4:
        ip = ipaddress.IPv6Address("::ffff:" + str(ip))
    scope = 0
    if isinstance(addr, (tuple, list)) and len(addr) == 4:
        scope = int(addr[3])
    elif "%" in host:
        scope = socket.if_nametoindex(host.split("%", 1)[1])
    return (struct.pack("=H", family) + struct.pack("!HI", port, 0) + ip.packed
            + struct.pack("=I", scope))
