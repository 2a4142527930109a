"""Graceful close, done right: a second close request keeps draining, input that arrives while
draining is read and dropped (it would otherwise turn close() into a reset that destroys the
bytes in flight), the stream half-closes and waits for the peer's EOF, and nothing of a closed
stream is kept alive by timers."""
import gc

import pytest

import reactio
from reactio import DropMsgSize, Reactor

from support.reactors import SinkReactor
from support.runtime import listen_factory, pump_until
from support.sockets import raw_client, recv_exact_nb

pytestmark = pytest.mark.timeout(60)

BIG = 8 * 1024 * 1024


def payload(n=BIG):
    return bytes(range(256)) * (n // 256)


class BigThenClose(SinkReactor):
    """Queues BIG bytes in on_connected, then closes (gracefully) in the way it is told."""

    def __init__(self, how):
        self.how = how
        self.sent = []
        self.err = "open"

    def on_connected(self, ctx, listener_id):
        ctx.send_or_que(payload(), self.sent.append)
        ctx.close()
        if self.how == "close twice":
            ctx.close()
        elif self.how == "close then send_close":
            ctx.cmd_sender.send_close(ctx.reactor_id)


@pytest.mark.parametrize("how", ["close once", "close twice", "close then send_close"])
def test_every_queued_byte_arrives_however_often_close_is_asked(rt, how, stream_addr):
    server = BigThenClose(how)
    lid, port = listen_factory(rt, lambda: server, addr=stream_addr)
    peer = raw_client(port)
    data = recv_exact_nb(rt, peer, BIG, timeout=30)
    assert data == payload()
    pump_until(rt, lambda: server.err != "open")
    assert server.err is None
    assert len(server.sent) == 1 and isinstance(server.sent[0], reactio.ReactorID)
    peer.settimeout(5)
    assert peer.recv(1) == b""
    peer.close()


def test_peer_input_while_draining_does_not_reset_the_flush(rt, stream_addr):
    """The peer writes before it reads: reactio-rs would close() with that input unread and
    the kernel would reset the connection, losing the tail of the reply."""
    server = BigThenClose("close once")
    lid, port = listen_factory(rt, lambda: server, addr=stream_addr)
    peer = raw_client(port)
    pump_until(rt, lambda: rt.count_streams() == 1)
    peer.sendall(b"bye" * 1000)
    data = recv_exact_nb(rt, peer, BIG, timeout=30)
    assert data == payload()
    peer.setblocking(True)
    peer.settimeout(5)
    assert peer.recv(1) == b""                # FIN, not a reset
    peer.close()
    pump_until(rt, lambda: server.err != "open")
    assert server.err is None


def test_close_waits_for_the_peer_eof_after_half_close(rt, stream_addr):
    server = BigThenClose("close once")
    lid, port = listen_factory(rt, lambda: server, addr=stream_addr)
    peer = raw_client(port)
    assert recv_exact_nb(rt, peer, BIG, timeout=30) == payload()
    peer.setblocking(True)
    peer.settimeout(5)
    assert peer.recv(1) == b""                # our half-close arrived ...
    for _ in range(5):
        rt.process_events(0.01)
    assert server.err == "open"               # ... and we linger for the peer's EOF
    peer.close()
    pump_until(rt, lambda: server.err != "open", timeout=5)
    assert server.err is None


def test_closed_streams_are_not_kept_alive_by_drain_timers(rt):
    servers = []
    lid, port = listen_factory(rt, lambda: servers.append(BigThenClose("close once")) or
                               servers[-1])
    for _ in range(5):
        peer = raw_client(port)
        recv_exact_nb(rt, peer, BIG, timeout=30)
        peer.close()
    pump_until(rt, lambda: len(servers) == 5 and all(s.err != "open" for s in servers))
    for _ in range(5):      # IOCP: the packets of cancelled operations release their streams
        rt.process_events(0.01)
    gc.collect()
    alive = [o for o in gc.get_objects()
             if type(o) is reactio.DispatchContext and o.reactor in servers]
    assert alive == []


def test_send_completions_keep_order_when_a_completion_sends(rt):
    order = []

    class Chain(Reactor):
        def on_connected(self, ctx, listener_id):
            def a(result):
                order.append("A")
                ctx.send_or_que(b"c", lambda r: order.append("C"))

            ctx.send_or_que(payload(4 << 20), a)
            ctx.send_or_que(b"b", lambda r: order.append("B"))

        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            return DropMsgSize(len(buf))

    lid, port = listen_factory(rt, Chain)
    peer = raw_client(port)
    recv_exact_nb(rt, peer, (4 << 20) + 2, timeout=30)
    pump_until(rt, lambda: len(order) == 3)
    assert order == ["A", "B", "C"]
    peer.close()


def test_empty_auto_send_completes_in_order_and_fails_on_a_closed_stream(rt):
    events = []

    class Auto(Reactor):
        def on_connected(self, ctx, listener_id):
            ctx.send_or_que(payload(4 << 20), lambda r: events.append(("big", r)))
            ctx.acquire_send().send(lambda r: events.append(("empty", r)))
            ctx.close(abort=True)
            try:
                ctx.acquire_send().send(lambda r: events.append(("after close", r)))
            except reactio.ReactorClosedError:
                events.append(("after close", "raised"))

        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            return DropMsgSize(len(buf))

    lid, port = listen_factory(rt, Auto)
    peer = raw_client(port)
    pump_until(rt, lambda: len(events) == 3)
    # the send after close raises at once; the abort then fails the owed completions in order
    assert [e[0] for e in events] == ["after close", "big", "empty"]
    assert isinstance(dict(events)["big"], reactio.ReactorClosedError)
    assert isinstance(dict(events)["empty"], reactio.ReactorClosedError)
    assert dict(events)["after close"] == "raised"
    peer.close()


def test_reader_clear_during_dispatch_is_refused(rt, expected_errors):
    class Clearer(SinkReactor):
        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            ctx.reader.clear()
            return DropMsgSize(len(buf))

    c = Clearer()
    lid, port = listen_factory(rt, lambda: c)
    peer = raw_client(port)
    peer.sendall(b"x" * 100)
    pump_until(rt, lambda: hasattr(c, "err"))
    assert isinstance(c.err, RuntimeError) and "clear()" in str(c.err)
    peer.close()


def test_listener_with_bad_option_is_refused_before_anything_is_registered(rt):
    done = []
    with pytest.raises(ValueError, match="recv_buffer_min_size"):
        rt.cmd_sender.send_listen("127.0.0.1:0", reactio.DefaultTcpListenerHandler(
            lambda c, p: None, recv_buffer_min_size=0), None, done.append)
    assert rt.process_events(0) is False        # no socket, no pending listen, no command
    assert done == [] and rt.count_reactors() == 0
