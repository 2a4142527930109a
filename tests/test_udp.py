"""UDP endpoints: DatagramReactor / send_bind_udp on loopback (IPv4 and IPv6), batched receive
and send, the errors a datagram socket reports, hostile input, multicast in a private network
namespace.  The same file runs on every backend (IOCP: under wine, in tools/windows-test.sh)."""
from __future__ import annotations

import errno
import socket

import pytest

import reactio
from reactio import (DatagramReactor, Deferred, MessageTooLargeError, ReactorClosedError,
                     ReactorID, ReactRuntime)

from support.env import BACKEND, HAS_IPV6
from support.runtime import Completion, pump_until
from support.subproc import run_helper_in_netns



class Echo(DatagramReactor):
    """Replies to every datagram with its bytes; records what it saw."""

    def __init__(self):
        self.got = []
        self.addrs = []
        self.errors = []
        self.closed = []
        self.bound = 0

    def on_bound(self, ctx):
        self.bound += 1

    def on_datagram(self, buf, addr, ctx):
        self.got.append(bytes(buf))
        self.addrs.append(addr)
        ctx.send_to(buf, addr)

    def on_error(self, exc, ctx):
        self.errors.append(exc)

    def on_close(self, reactor_id, cmd_sender):
        self.closed.append(reactor_id)


class Sink(Echo):
    def on_datagram(self, buf, addr, ctx):
        self.got.append(bytes(buf))
        self.addrs.append(addr)


def bind(rt, reactor, addr="127.0.0.1:0", **kw):
    done = Completion()
    rt.cmd_sender.send_bind_udp(addr, reactor, Deferred.IMMEDIATE, done, **kw)
    pump_until(rt, lambda: done.done)
    rid = done.result
    if isinstance(rid, BaseException):
        raise rid
    return rid, rt.local_address(rid)


def peer_socket(family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(5)
    return s


def recv_nb(rt, sock, n=1, timeout=5.0):
    """n datagrams from a plain socket while the runtime runs."""
    sock.setblocking(False)
    out = []

    def more():
        try:
            while len(out) < n:
                out.append(sock.recvfrom(70000)[0])
        except BlockingIOError:
            pass
        return len(out) >= n
    pump_until(rt, more, timeout)
    return out


@pytest.mark.parametrize("family,host", [
    (socket.AF_INET, "127.0.0.1"),
    pytest.param(socket.AF_INET6, "::1", marks=pytest.mark.skipif(not HAS_IPV6,
                                                                  reason="no IPv6 loopback")),
])
def test_echo(rt, family, host):
    """An echo endpoint answers a plain socket; the addr it gets is recvfrom()'s, and the same
    tuple object for every datagram of one sender."""
    echo = Echo()
    rid, local = bind(rt, echo, (host, 0))
    assert isinstance(rid, ReactorID) and echo.bound == 1 and local[0] == host
    peer = peer_socket(family, host)
    msgs = [bytes([i]) * (i + 1) for i in range(20)]
    for m in msgs:
        peer.sendto(m, local[:2])
    assert recv_nb(rt, peer, len(msgs)) == msgs
    assert echo.got == msgs
    assert echo.addrs[0][:2] == peer.getsockname()[:2]
    assert all(a is echo.addrs[0] for a in echo.addrs)
    assert rt.count_streams() == 1 and rt.count_reactors() == 1
    peer.close()


def test_connected_endpoints_talk_with_send(rt):
    """Two endpoints of one runtime, each connected to the other: send() and ctx.peer."""
    a = Sink()
    rid_a, addr_a = bind(rt, a)
    ctxs = {}

    class Starter(Sink):
        def on_bound(self, ctx):
            ctxs["b"] = ctx
            ctx.send(b"hello")

    b = Starter()
    rid_b, addr_b = bind(rt, b, connect_to=addr_a)
    pump_until(rt, lambda: a.got)
    assert a.got == [b"hello"] and a.addrs == [addr_b]
    assert ctxs["b"].peer == addr_a


def _echo_64(rt, batch):
    """64 datagrams sent to an Echo endpoint before the loop runs; their 64 replies are
    checked; returns the endpoint's context (closed)."""
    echo = Echo()
    contexts = []
    echo.on_bound = contexts.append
    rid, local = bind(rt, echo, recv_batch=batch)
    peer = peer_socket()
    for i in range(64):
        peer.sendto(i.to_bytes(2, "big"), local)
    got = recv_nb(rt, peer, 64)
    assert sorted(got) == [i.to_bytes(2, "big") for i in range(64)]
    peer.close()
    contexts[0].close()
    return contexts[0]


@pytest.mark.skipif(BACKEND == "iocp", reason="IOCP takes one datagram per WSARecvFrom "
                    "completion and has no sendmmsg: test_iocp_receives_one_datagram_per_call")
def test_replies_of_one_batch_leave_in_one_sendmmsg(rt):
    """64 datagrams waiting before the loop runs are read by a few recvmmsg calls and the 64
    replies leave in a few sendmmsg calls; recv_batch=1 takes one call per datagram."""
    counters = {}
    for batch in (32, 1):
        ctx = _echo_64(rt, batch)
        counters[batch] = (ctx.recv_calls, ctx.datagrams_received, ctx.send_calls,
                           ctx.datagrams_sent)
    calls, received, sends, sent = counters[32]
    assert received == sent == 64
    assert calls <= 4 and sends <= 4, counters
    calls, received, sends, sent = counters[1]
    assert received == sent == 64 and calls >= 64, counters


def _dead_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()
    s.close()
    return dead


@pytest.mark.skipif(BACKEND == "iocp", reason="IOCP reports ICMP port unreachable by failing "
                    "the next WSARecvFrom with WSAECONNRESET, and wine never does: its pending "
                    "overlapped WSARecvFrom (and a blocking recv) just waits; wine gives the "
                    "error to the next send instead (test_port_unreachable_reaches_a_connected_"
                    "endpoint_on_every_backend), so the IOCP receive-side path is untested here")
def test_port_unreachable_reaches_a_connected_endpoint_without_closing_it(rt):
    """ICMP port unreachable: a connected endpoint's on_error gets ConnectionRefusedError and
    it stays open."""
    dead = _dead_port()
    ctxs = []
    conn = Sink()
    conn.on_bound = ctxs.append
    bind(rt, conn, connect_to=dead)
    ctxs[0].send(b"x")
    pump_until(rt, lambda: conn.errors)
    assert isinstance(conn.errors[0], ConnectionRefusedError)
    assert ctxs[0].is_open and not conn.closed


def test_port_unreachable_reaches_a_connected_endpoint_on_every_backend(rt):
    """ICMP port unreachable reaches a connected endpoint as ConnectionRefusedError, in on_error
    or raised by the send() that meets it (under wine only the latter: its host socket reports
    the pending error to the next sendto), and never closes it."""
    dead = _dead_port()
    ctxs = []
    conn = Sink()
    conn.on_bound = ctxs.append
    bind(rt, conn, connect_to=dead)
    raised = []
    for _ in range(20):
        try:
            ctxs[0].send(b"x")
        except OSError as exc:
            raised.append(exc)
        for _ in range(5):
            rt.process_events(0.01)
        if raised or conn.errors:
            break
    seen = raised + conn.errors
    assert seen and all(isinstance(e, ConnectionRefusedError) for e in seen), seen
    assert ctxs[0].is_open and not conn.closed and rt.count_streams() == 1


def test_port_unreachable_leaves_an_unconnected_endpoint_alone(rt):
    """An unconnected endpoint sending to a closed port gets no error and keeps receiving."""
    dead = _dead_port()
    ctxs = []
    free = Sink()
    free.on_bound = ctxs.append
    rid, local = bind(rt, free)
    for _ in range(3):
        ctxs[0].send_to(b"y", dead)
        rt.process_events(0.01)
    peer = peer_socket()
    peer.sendto(b"still here", local)
    pump_until(rt, lambda: free.got)
    assert free.got == [b"still here"] and free.errors == [] and ctxs[0].is_open
    peer.close()


def test_oversize_send_raises_emsgsize_and_truncation_is_reported(rt):
    ctxs = []
    small = Sink()
    small.on_bound = ctxs.append
    rid, local = bind(rt, small, max_datagram_size=100)
    ctx = ctxs[0]
    assert ctx.max_datagram_size == 100
    with pytest.raises(OSError) as ei:
        ctx.send_to(bytes(70000), local)
    assert ei.value.errno == errno.EMSGSIZE
    peer = peer_socket()
    peer.sendto(bytes(101), local)
    peer.sendto(bytes(100), local)
    pump_until(rt, lambda: small.got)
    assert small.got == [bytes(100)]
    assert len(small.errors) == 1 and isinstance(small.errors[0], MessageTooLargeError)
    assert ctx.truncated == 1 and ctx.is_open
    peer.close()


def test_bad_options_are_refused_at_the_call(rt):
    send = rt.cmd_sender.send_bind_udp
    r = Sink()
    for kw, exc in [({"max_datagram_size": 0}, ValueError), ({"max_datagram_size": 10**9}, ValueError),
                    ({"recv_batch": 0}, ValueError), ({"recv_batch": 10**6}, ValueError),
                    ({"multicast_ttl": 256}, ValueError), ({"recv_buffer_size": -1}, ValueError),
                    ({"multicast_groups": "239.1.1.1"}, TypeError),
                    ({"multicast_groups": ["10.0.0.1"]}, ValueError),
                    ({"connect_to": "[::1]:5"}, ValueError), ({"recv_batch": 1.5}, TypeError)]:
        with pytest.raises(exc):
            send("127.0.0.1:0", r, **kw)
    with pytest.raises(ValueError, match="numeric"):
        send("localhost:0", r)
    with pytest.raises(TypeError, match="DatagramReactor"):
        send("127.0.0.1:0", object())
    assert rt.count_streams() == 0


def test_bind_failure_reaches_the_completion(rt):
    rid, local = bind(rt, Sink())
    with pytest.raises(OSError) as ei:
        bind(rt, Sink(), local)
    assert ei.value.errno == errno.EADDRINUSE
    assert rt.count_streams() == 1


def test_send_to_a_bad_address_raises_and_keeps_the_endpoint(rt):
    ctxs = []
    r = Sink()
    r.on_bound = ctxs.append
    rid, local = bind(rt, r)
    ctx = ctxs[0]
    for bad in [("no.such.host", 5), ("::1", 5), "garbage", ("127.0.0.1", 70000), 42]:
        with pytest.raises((ValueError, TypeError)):
            ctx.send_to(b"x", bad)
    with pytest.raises(ValueError, match="connect_to"):
        ctx.send(b"x")
    assert ctx.is_open
    ctx.send_to(b"ok", local)
    pump_until(rt, lambda: r.got)
    assert r.got == [b"ok"]


def test_a_raising_callback_closes_only_its_endpoint(rt, expected_errors):
    class Boom(Sink):
        def on_datagram(self, buf, addr, ctx):
            raise RuntimeError("boom")
    boom, other = Boom(), Sink()
    rid_b, addr_b = bind(rt, boom)
    rid_o, addr_o = bind(rt, other)
    peer = peer_socket()
    peer.sendto(b"1", addr_b)
    peer.sendto(b"2", addr_o)
    pump_until(rt, lambda: boom.closed and other.got)
    assert boom.closed == [rid_b] and isinstance(boom.close_error, RuntimeError)
    assert expected_errors.matching("callback raised RuntimeError")
    assert rt.count_streams() == 1 and other.got == [b"2"]
    peer.close()


def test_close_during_dispatch_drops_the_rest_of_the_batch(rt):
    class Closer(Sink):
        def on_datagram(self, buf, addr, ctx):
            self.got.append(bytes(buf))
            ctx.close()
            ctx.close()
            with pytest.raises(ReactorClosedError):
                ctx.send_to(b"late", addr)
    c = Closer()
    rid, local = bind(rt, c)
    peer = peer_socket()
    for i in range(10):
        peer.sendto(bytes([i]), local)
    pump_until(rt, lambda: c.closed)
    rt.process_events(0.01)
    assert c.got == [b"\x00"] and c.closed == [rid] and c.close_error is None
    assert rt.count_streams() == 0
    peer.close()


def test_commands_close_and_runtime_close():
    rt = ReactRuntime()
    class Cmd(Sink):
        def on_command(self, cmd, ctx):
            self.got.append(cmd)
    a, b = Cmd(), Cmd()
    rid_a, _ = bind(rt, a)
    rid_b, _ = bind(rt, b)
    done, closed = Completion(), Completion()
    rt.cmd_sender.send_user_cmd(rid_a, "hi", None, done)
    rt.cmd_sender.send_close(rid_a, None, closed)
    pump_until(rt, lambda: closed.done)
    assert done.result == rid_a and a.got == ["hi"] and a.closed == [rid_a]
    stale = Completion()
    rt.cmd_sender.send_user_cmd(rid_a, "again", None, stale)
    pump_until(rt, lambda: stale.done)
    assert isinstance(stale.result, reactio.ReactorNotFoundError)
    rt.close()
    assert b.closed == [rid_b] and rt.count_streams() == 0


@pytest.mark.skipif(BACKEND == "iocp", reason="needs a private Linux network namespace "
                    "(unshare --net); wine has none to give to the Windows process")
def test_multicast_join_and_leave_in_a_private_network_namespace():
    """Runs tests/helpers/udp_multicast.py in a network namespace of its own (unshare --net,
    loopback up with multicast on): a member of 239.1.2.3 gets the group's datagrams, stops
    after leave_group, gets them again after join_group."""
    proc = run_helper_in_netns("udp_multicast.py", "{ip} link set lo up multicast on && "
                               "{ip} route add 224.0.0.0/4 dev lo")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "joined=5 left=0 rejoined=5", proc.stdout


@pytest.mark.skipif(BACKEND != "iocp", reason="the IOCP receive path; epoll batches with "
                    "recvmmsg (test_replies_of_one_batch_leave_in_one_sendmmsg)")
@pytest.mark.parametrize("batch", [32, 1])
def test_iocp_receives_one_datagram_per_call(rt, batch):
    """Each WSARecvFrom completion carries one datagram, whatever recv_batch says: 64
    datagrams waiting before the loop runs take 64 receives and get 64 replies."""
    ctx = _echo_64(rt, batch)
    assert ctx.datagrams_received == ctx.datagrams_sent == 64
    assert ctx.recv_calls >= 64 and ctx.send_dropped == 0 and ctx.truncated == 0


def test_shutdown_closes_endpoints_and_refuses_new_binds():
    rt = ReactRuntime()
    a = Sink()
    rid, _ = bind(rt, a)
    late = Completion()

    def bind_late(rid):
        rt.cmd_sender.send_bind_udp("127.0.0.1:0", Sink(), None, late)
    a.on_close = lambda reactor_id, cmd_sender: (a.closed.append(reactor_id),
                                                 bind_late(reactor_id))
    assert rt.shutdown(5.0) == 0
    assert a.closed == [rid] and rt.count_streams() == 0
    assert late.done and isinstance(late.result, (ReactorClosedError, reactio.RuntimeClosedError))


def test_empty_datagrams_and_views_kept_past_the_call(rt):
    """A 0-byte datagram is dispatched (empty buf); a view kept after its call stays readable
    memory (it may show later bytes: the receive buffer is reused), also after the endpoint
    closed."""
    kept = []

    class Keeper(Sink):
        def on_datagram(self, buf, addr, ctx):
            self.got.append(bytes(buf))
            kept.append(buf)
    k = Keeper()
    rid, local = bind(rt, k)
    peer = peer_socket()
    peer.sendto(b"", local)
    peer.sendto(b"abc", local)
    pump_until(rt, lambda: len(k.got) == 2)
    assert k.got == [b"", b"abc"]
    rt.cmd_sender.send_close(rid)
    pump_until(rt, lambda: k.closed)
    assert [len(v) for v in kept] == [0, 3] and len(bytes(kept[1])) == 3
    peer.close()


def test_each_of_many_senders_gets_its_own_address(rt):
    """300 senders (more than the endpoint's 256 cached address tuples, so entries collide and
    are replaced): every datagram reaches on_datagram with its own sender's address, and every
    reply (sent to that addr) reaches the right socket."""
    echo = Echo()
    rid, local = bind(rt, echo)
    peers = [peer_socket() for _ in range(300)]
    try:
        for i, p in enumerate(peers):
            p.sendto(i.to_bytes(2, "big"), local)
            if i % 50 == 49:        # (a default receive buffer holds ~270 small datagrams)
                pump_until(rt, lambda: len(echo.got) == i + 1)
        by_payload = {int.from_bytes(g, "big"): a for g, a in zip(echo.got, echo.addrs)}
        assert all(by_payload[i] == p.getsockname() for i, p in enumerate(peers))
        for i, p in enumerate(peers):
            assert recv_nb(rt, p, 1) == [i.to_bytes(2, "big")]
    finally:
        for p in peers:
            p.close()
