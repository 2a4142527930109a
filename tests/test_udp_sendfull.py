"""UDP endpoints whose socket refuses a send (EAGAIN / ENOBUFS, IOCP: WSAEWOULDBLOCK): the
datagram waits in the out batch and leaves later (epoll: write interest + sendmmsg; IOCP: an
overlapped WSASendTo), in order, once; when the out batch is full too it is dropped, counted in
send_dropped, and send_to returns False (docs/udp.md).

Loopback never refuses a UDP send (the kernel frees the datagram's send-buffer charge as it
hands it over, whatever SO_SNDBUF says; wine relays to that kernel), so two ways in:
- ``ctx._refuse_sends(n)`` makes the backend treat its next n direct sends as refused: the
  backend's own refusal path runs, on both backends (IOCP: under wine);
- on Linux, a private network namespace whose loopback has a slow tbf qdisc: the real kernel
  refuses (EAGAIN), the out batch fills and datagrams are dropped (tests/helpers/udp_sendfull.py).
"""
from __future__ import annotations

import pytest

import reactio
from reactio import DatagramReactor, Deferred

from support.env import BACKEND
from support.runtime import Completion, pump_until
from support.subproc import run_helper_in_netns

pytestmark = pytest.mark.timeout(60)


class Echo(DatagramReactor):
    def __init__(self, refuse=0):
        self.refuse = refuse
        self.ctx = None
        self.errors = []

    def on_bound(self, ctx):
        self.ctx = ctx
        ctx._refuse_sends(self.refuse)

    def on_datagram(self, buf, addr, ctx):
        assert ctx.send_to(buf, addr) is True

    def on_error(self, exc, ctx):
        self.errors.append(exc)


def bind(rt, reactor, **kw):
    done = Completion()
    rt.cmd_sender.send_bind_udp("127.0.0.1:0", reactor, Deferred.IMMEDIATE, done, **kw)
    pump_until(rt, lambda: done.done)
    assert isinstance(done.result, reactio.ReactorID), done.result
    return rt.local_address(done.result)


def plain_socket():
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def receive(rt, sock, n, timeout=10.0):
    """n datagrams (and no more, after a short extra wait) from a plain socket while the
    runtime runs."""
    got = []

    def more():
        try:
            while True:
                got.append(sock.recv(70000))
        except BlockingIOError:
            pass
        return len(got) >= n
    pump_until(rt, more, timeout)
    for _ in range(5):
        rt.process_events(0.01)
        more()
    return got


def numbered(i):
    return b"%06d" % i + b"." * (i % 50)


@pytest.mark.parametrize("batch", [1, 32])
def test_replies_the_socket_refused_leave_later_in_order_and_once(rt, batch):
    """The first 10 replies of an echo endpoint are refused by its socket: they wait in the out
    batch with the replies made after them, which leave behind them (IOCP: each by an
    overlapped WSASendTo), so the peer gets all 60 replies, in order, once."""
    echo = Echo(refuse=10)
    local = bind(rt, echo, recv_batch=batch)
    peer = plain_socket()
    msgs = [numbered(i) for i in range(60)]
    for m in msgs[:30]:
        peer.sendto(m, local)
    got = receive(rt, peer, 30)
    for m in msgs[30:]:
        peer.sendto(m, local)
    got += receive(rt, peer, 30)
    assert got == msgs
    ctx = echo.ctx
    assert ctx.datagrams_received == 60 and ctx.datagrams_sent == 60
    assert ctx.send_dropped == 0 and echo.errors == []
    peer.close()


def test_a_flood_of_sends_in_one_callback_after_a_refusal_keeps_its_order(rt):
    """One callback sends 200 datagrams after its socket refused the first: everything after
    it waits behind it (the out batch is flushed when full: 64 datagrams), and the peer gets
    the 200 datagrams in order, once; send_to said True for each.  (200 small datagrams fit in
    the peer's default receive buffer, which holds ~270.)"""
    peer = plain_socket()
    dest = peer.getsockname()
    results = []

    class Flood(Echo):
        def on_command(self, cmd, ctx):
            ctx._refuse_sends(1)
            results.extend(ctx.send_to(b"%06d" % i, dest) for i in range(200))
    flood = Flood()
    bind(rt, flood)
    rt.cmd_sender.send_user_cmd(flood.ctx.reactor_id, "go")
    got = receive(rt, peer, 200)
    assert got == [b"%06d" % i for i in range(200)]
    assert results == [True] * 200
    assert flood.ctx.datagrams_sent == 200 and flood.ctx.send_dropped == 0
    peer.close()


def test_close_sends_what_the_socket_refused(rt):
    """Datagrams queued behind a refusal get one last send when the endpoint closes."""
    peer = plain_socket()
    dest = peer.getsockname()

    class Closer(Echo):
        def on_command(self, cmd, ctx):
            ctx._refuse_sends(3)
            for i in range(8):
                assert ctx.send_to(numbered(i), dest)
            ctx.close()
    c = Closer()
    bind(rt, c)
    rt.cmd_sender.send_user_cmd(c.ctx.reactor_id, "go")
    assert receive(rt, peer, 8) == [numbered(i) for i in range(8)]
    assert not c.ctx.is_open and c.ctx.datagrams_sent == 8
    peer.close()


def test_refuse_sends_checks_its_argument(rt):
    echo = Echo()
    bind(rt, echo)
    with pytest.raises(ValueError):
        echo.ctx._refuse_sends(-1)


@pytest.mark.skipif(BACKEND == "iocp", reason="needs a private Linux network namespace with a "
                    "tc qdisc on its loopback (unshare --net, tc); wine has none to give to the "
                    "Windows process, and its loopback never refuses a UDP send")
@pytest.mark.timeout(90)
def test_a_full_socket_queues_then_drops_with_the_real_kernel():
    """Runs tests/helpers/udp_sendfull.py in a network namespace of its own whose loopback sends
    at 20 Mbit/s (tbf): one callback sends 1500 datagrams of 1000 bytes; the kernel takes what
    its send buffer holds, refuses the rest (EAGAIN), the out batch keeps 64 and the others are
    dropped (send_to False, send_dropped); the peer gets exactly the accepted ones, in order."""
    proc = run_helper_in_netns(
        "udp_sendfull.py", "{ip} link set lo up && {tc} qdisc add dev lo root tbf rate 20mbit "
        "burst 4000 limit 10000000", tools=("ip", "tc"), timeout=80)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    fields = dict(kv.split("=") for kv in last.split())
    accepted, dropped, received = (int(fields[k]) for k in ("accepted", "dropped", "received"))
    assert accepted + dropped == 1500 and dropped > 0 and accepted >= 64, last
    assert received == accepted and fields["order"] == "ok", last
