"""Outbound connects and listeners: non-blocking connect, timeouts, names resolved off the loop
thread, errors of the matching built-in type, IPv6, on_connected failures."""
import errno
import socket
import threading
import time

import pytest

import reactio
from reactio import Deferred

from support.env import HAS_IPV6
from support.reactors import EchoReactor
from support.runtime import Completion, connect, listen, listen_factory, pump_until
from support.sockets import closed_port, full_backlog_port, raw_client, recv_exact_nb
from support.wire import frame

pytestmark = pytest.mark.timeout(30)


def test_connect_refused_reaches_completion(rt):
    client = EchoReactor()
    result = connect(rt, closed_port(), client)
    assert isinstance(result, ConnectionRefusedError)
    assert client.connected_from == "never" and client.closed == []
    assert rt.count_reactors() == 0 and not rt.process_events(0)


@pytest.mark.parametrize("addr, exc", [
    ("127.0.0.1", ValueError),            # no port
    ("127.0.0.1:notaport", ValueError),
    ("127.0.0.1:70000", ValueError),
    ("::1:80", ValueError),               # IPv6 needs brackets
    (("127.0.0.1",), ValueError),
    (12345, TypeError),
])
def test_invalid_address_reaches_completion(rt, addr, exc):
    done = Completion()
    rt.cmd_sender.send_connect(addr, 1024, EchoReactor(), Deferred.IMMEDIATE, done)
    pump_until(rt, lambda: done.done)
    assert isinstance(done.result, exc), done.result
    listened = Completion()
    rt.cmd_sender.send_listen(addr, reactio.DefaultTcpListenerHandler(lambda c, p: EchoReactor()),
                              Deferred.IMMEDIATE, listened)
    pump_until(rt, lambda: listened.done)
    assert isinstance(listened.result, exc)


def test_unknown_host_is_a_gaierror(rt):
    result = connect(rt, 80, EchoReactor(), host="no-such-host.invalid")
    assert isinstance(result, socket.gaierror)


def test_address_in_use(rt):
    lid, port = listen_factory(rt, EchoReactor)
    done = Completion()
    rt.cmd_sender.send_listen(("127.0.0.1", port),
                              reactio.DefaultTcpListenerHandler(lambda c, p: EchoReactor()),
                              Deferred.IMMEDIATE, done)
    pump_until(rt, lambda: done.done)
    assert isinstance(done.result, OSError) and done.result.errno == errno.EADDRINUSE


class OneFrameClient(EchoReactor):
    """Sends one frame when connected, keeps the bytes of the first read and closes."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def on_connected(self, ctx, listener_id):
        super().on_connected(ctx, listener_id)
        ctx.send_or_que(frame(self.body))

    def on_inbound_message(self, buf, new_bytes, decoded, ctx):
        self.frames.append(bytes(buf))
        ctx.close()
        return reactio.DropMsgSize(len(buf))


def test_connect_and_echo_over_a_name(rt):
    lid, port = listen_factory(rt, EchoReactor)
    client = OneFrameClient(b"via name")
    rid = connect(rt, port, client, host="localhost")
    if isinstance(rid, OSError):
        pytest.skip(f"localhost does not resolve to 127.0.0.1 here: {rid}")
    pump_until(rt, lambda: client.closed)
    assert client.connected_from is None          # outbound: no listener
    assert client.frames == [frame(b"via name")]


def test_name_resolution_runs_off_the_loop_thread(rt, monkeypatch):
    lid, port = listen_factory(rt, EchoReactor)
    real = socket.getaddrinfo
    threads = []

    def slow_getaddrinfo(host, *args, **kw):
        if host == "slow.example.test":
            threads.append(threading.current_thread())
            time.sleep(0.3)
            return real("127.0.0.1", *args[:1], socket.AF_INET, *args[2:], **kw)
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    ticks = []

    class Ticker(EchoReactor):
        def on_command(self, cmd, ctx):
            ticks.append(time.monotonic())

    ticker = Ticker()
    lid2, port2 = listen_factory(rt, lambda: ticker)
    peer = raw_client(port2)
    pump_until(rt, lambda: ticker.connected_from != "never")
    tid = [r for r in (rt.get_context(reactio.ReactorID(s, 1)) for s in range(8)) if r is not None
           and r.reactor is ticker][0].reactor_id
    done = Completion()
    rt.cmd_sender.send_connect(("slow.example.test", port), 1024, EchoReactor(),
                               Deferred.IMMEDIATE, done)
    for k in range(5):
        rt.cmd_sender.send_user_cmd(tid, k, Deferred.after(0.04 * (k + 1)))
    t0 = time.monotonic()
    pump_until(rt, lambda: done.done)
    assert isinstance(done.result, reactio.ReactorID)
    assert threads and threads[0] is not threading.main_thread()
    assert len(ticks) >= 4, "the loop was blocked during name resolution"
    assert ticks[0] - t0 < 0.25
    peer.close()


def test_connect_timeout_to_full_backlog(rt):
    """A listener that never accepts, with its backlog full: SYNs are dropped and the connect
    can only end by our timeout, while the loop keeps running."""
    with full_backlog_port() as port:
        client = EchoReactor()
        done = Completion()
        # The runtime's clock (test_commands.py::test_the_runtime_clock_is_time_perf_counter_ns),
        # in integers: no float rounding.  (time.monotonic is GetTickCount64 on Windows < 3.13.)
        t0 = time.perf_counter_ns()
        rt.cmd_sender.send_connect(("127.0.0.1", port), 1024, client, Deferred.IMMEDIATE, done,
                                   timeout=0.3)
        pump_until(rt, lambda: done.done, timeout=10)
        elapsed = time.perf_counter_ns() - t0
        if isinstance(done.result, reactio.ReactorID):
            pytest.skip("the kernel accepted into a full backlog; cannot provoke a timeout")
        assert isinstance(done.result, TimeoutError), done.result
        assert 300_000_000 <= elapsed < 5_000_000_000, elapsed
        assert rt.count_reactors() == 0 and not rt.process_events(0)


def test_on_connected_raising_closes_and_reports(rt, expected_errors):
    lid, port = listen_factory(rt, EchoReactor)

    class Fails(EchoReactor):
        def on_connected(self, ctx, listener_id):
            raise RuntimeError("refuse")

    client = Fails()
    result = connect(rt, port, client)
    assert isinstance(result, RuntimeError)
    assert client.closed and client.closed[0][1] is result
    assert expected_errors.matching("callback raised RuntimeError")


def test_listener_handler_options_and_rejection(rt):
    accepted = []

    class Picky(reactio.TcpListenerHandler):
        def on_new_connection(self, peer_address):
            accepted.append(peer_address)
            return EchoReactor() if len(accepted) % 2 else None

    lid, port = listen(rt, Picky(recv_buffer_min_size=512))
    p1 = raw_client(port)
    pump_until(rt, lambda: rt.count_streams() == 1)
    p2 = raw_client(port)
    pump_until(rt, lambda: len(accepted) == 2)
    p2.settimeout(5)
    assert p2.recv(1) == b""               # refused: closed at once
    assert accepted[0][0] == "127.0.0.1" and accepted[0][1] == p1.getsockname()[1]
    p1.sendall(frame(b"x"))
    assert recv_exact_nb(rt, p1, 11) == frame(b"x")
    ctx = [rt.get_context(reactio.ReactorID(s, 1)) for s in range(4)]
    ctx = [c for c in ctx if c is not None][0]
    assert ctx.nodelay is True
    assert ctx.peer_address == p1.getsockname()
    assert ctx.local_address == ("127.0.0.1", port)
    p1.close()


def test_on_new_connection_raising_is_logged_and_listener_survives(rt, expected_errors):
    calls = []

    class Flaky(reactio.TcpListenerHandler):
        def on_new_connection(self, peer_address):
            calls.append(1)
            if len(calls) == 1:
                raise KeyError("boom")
            return EchoReactor()

    lid, port = listen(rt, Flaky())
    p1 = raw_client(port)
    pump_until(rt, lambda: calls)
    p2 = raw_client(port)
    p2.sendall(frame(b"y"))
    assert recv_exact_nb(rt, p2, 11) == frame(b"y")
    assert expected_errors.matching("on_new_connection raised KeyError")
    p1.close()
    p2.close()


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback on this machine")
def test_ipv6_listen_and_connect(rt):
    lid, port = listen_factory(rt, EchoReactor, addr="[::1]:0")
    assert rt.local_address(lid)[0] == "::1"
    c = OneFrameClient(b"six")
    assert isinstance(connect(rt, port, c, host="::1"), reactio.ReactorID)
    pump_until(rt, lambda: c.closed)
    assert c.frames == [frame(b"six")]


class PeerRecorder(reactio.DefaultTcpListenerHandler):
    """Accepts with EchoReactor; records each peer address the listener is shown."""

    def __init__(self, **options):
        super().__init__(lambda count, param: EchoReactor(), **options)
        self.peers = []

    def on_new_connection(self, peer_address):
        self.peers.append(peer_address)
        return super().on_new_connection(peer_address)


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 on this machine")
def test_dual_stack_listener_accepts_ipv4_clients_as_mapped_addresses(rt):
    handler = PeerRecorder(dual_stack=True)
    _, port = listen(rt, handler, addr="[::]:0")
    with raw_client(port, host="127.0.0.1") as client:
        client.sendall(frame(b"v4"))
        assert recv_exact_nb(rt, client, len(frame(b"v4"))) == frame(b"v4")
        assert handler.peers[0][:2] == ("::ffff:127.0.0.1", client.getsockname()[1])


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 on this machine")
def test_ipv6_wildcard_listener_is_ipv6_only_by_default(rt):
    handler = PeerRecorder()
    assert handler.dual_stack is False
    _, port = listen(rt, handler, addr="[::]:0")
    with pytest.raises(ConnectionRefusedError):
        raw_client(port, host="127.0.0.1").close()
    with raw_client(port, host="::1") as client:          # IPv6 clients are served
        client.sendall(frame(b"v6"))
        assert recv_exact_nb(rt, client, len(frame(b"v6"))) == frame(b"v6")
    assert handler.peers[0][0] == "::1"


def test_dual_stack_is_ignored_on_an_ipv4_listener(rt):
    handler = PeerRecorder(dual_stack=True)
    _, port = listen(rt, handler, addr="127.0.0.1:0")
    with raw_client(port) as client:
        client.sendall(frame(b"v4"))
        assert recv_exact_nb(rt, client, len(frame(b"v4"))) == frame(b"v4")
    assert handler.peers[0][0] == "127.0.0.1"

def test_listener_close_and_on_close_listen(rt):
    events = []

    class H(reactio.DefaultTcpListenerHandler):
        def on_start_listen(self, reactor_id, cmd_sender):
            events.append(("start", reactor_id))

        def on_close_listen(self, reactor_id, cmd_sender):
            events.append(("close", reactor_id))

    lid, port = listen(rt, H(lambda c, p: EchoReactor()))
    done = Completion()
    rt.cmd_sender.send_close(lid, Deferred.IMMEDIATE, done)
    pump_until(rt, lambda: done.done)
    assert done.result == lid
    assert events == [("start", lid), ("close", lid)]
    assert rt.count_reactors() == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
