"""Light fault tests (issue 5), re-entrancy: a reactor closing itself inside its callback,
process_events()/close()/run() called from a callback, on_close re-entering the runtime during
close(), a nested callback closing the reactor that is running, one stream's reader used with
another stream."""
from __future__ import annotations

import gc

import pytest

import reactio
from reactio import ReactRuntime, Reactor

from support.fds import runtime_descriptors
from support.reactors import EchoReactor
from support.runtime import listen_factory, pump_until
from support.sockets import raw_client, recv_exact_nb
from support.wire import frame

pytestmark = pytest.mark.timeout(30)


def test_closing_yourself_inside_on_inbound_message(rt):
    """Frames after the one that closes are not dispatched, replies queued before the close
    are flushed, on_close runs once and only after the callback returned."""
    log = []

    class SelfCloser(EchoReactor):
        in_cb = False

        def on_inbound_message(self, buf, new_bytes, decoded, ctx):
            self.in_cb = True
            try:
                res = super().on_inbound_message(buf, new_bytes, decoded, ctx)
                if len(self.frames) == 2 and res.is_drop:
                    ctx.close()
                    ctx.close()                          # twice: a no-op
                    assert not ctx.is_open
                    with pytest.raises(reactio.ReactorClosedError):
                        ctx.send_or_que(b"late")
                return res
            finally:
                self.in_cb = False

        def on_close(self, reactor_id, cmd_sender):
            log.append(("close", self.in_cb, len(self.frames)))

    server = SelfCloser()
    lid, port = listen_factory(rt, lambda: server)
    peer = raw_client(port)
    frames = [frame(bytes([i]) * 50) for i in range(5)]
    peer.sendall(b"".join(frames))
    assert recv_exact_nb(rt, peer, 2 * 60) == frames[0] + frames[1]
    peer.settimeout(5)
    peer.setblocking(True)
    assert peer.recv(100) == b""                         # FIN, nothing after the close
    peer.close()
    pump_until(rt, lambda: log)
    assert log == [("close", False, 2)]
    assert server.frames == frames[:2]


@pytest.mark.parametrize("where", ["on_connected", "on_inbound_message", "on_command",
                                   "on_close", "completion", "on_sent"])
def test_process_events_and_close_from_a_callback_are_refused(rt, where):
    errors = []

    def reenter():
        for call in (lambda: rt.process_events(0), rt.close, rt.run):
            try:
                call()
            except RuntimeError as exc:
                errors.append(str(exc))

    class Reenter(EchoReactor):
        def on_connected(self, ctx, listener_id):
            self.ctx = ctx
            if where == "on_connected":
                reenter()

        def on_inbound_message(self, buf, new_bytes, decoded, ctx):
            if where == "on_inbound_message":
                reenter()
            return super().on_inbound_message(buf, new_bytes, decoded, ctx)

        def on_command(self, cmd, ctx):
            if where == "on_command":
                reenter()
            elif where == "on_sent":
                ctx.send_or_que(frame(b"x"), lambda r: reenter())

        def on_close(self, reactor_id, cmd_sender):
            super().on_close(reactor_id, cmd_sender)
            if where == "on_close":
                reenter()

    server = Reenter()
    lid, port = listen_factory(rt, lambda: server)
    peer = raw_client(port)
    pump_until(rt, lambda: rt.count_streams() == 1)
    if where == "on_inbound_message":
        peer.sendall(frame(b"x"))
    elif where in ("on_command", "on_sent"):
        rt.cmd_sender.send_user_cmd(server.ctx.reactor_id, "go")
    elif where == "completion":
        rt.cmd_sender.send_user_cmd(server.ctx.reactor_id, "go", None, lambda r: reenter())
    elif where == "on_close":
        peer.close()
    pump_until(rt, lambda: len(errors) == 3)
    assert "re-entrantly" in errors[0] and "from a callback" in errors[1]
    assert "re-entrantly" in errors[2]
    assert not rt.closed
    if where != "on_close":
        assert server.closed == []
        if where in ("on_inbound_message", "on_sent"):
            assert recv_exact_nb(rt, peer, 11) == frame(b"x")
        peer.sendall(frame(b"ok"))
        assert recv_exact_nb(rt, peer, 12) == frame(b"ok")
        peer.close()


def test_on_close_reentering_the_runtime_during_close():
    """rt.close() runs every on_close; one that calls process_events(), close() or sends a
    command gets a clear error, and close() still completes."""
    seen = []

    class Nasty(EchoReactor):
        def on_close(self, reactor_id, cmd_sender):
            for call in (lambda: rt.process_events(0), rt.close,
                         lambda: cmd_sender.send_user_cmd(reactor_id, "x")):
                try:
                    call()
                    seen.append("no error")
                except (RuntimeError, reactio.RuntimeClosedError) as exc:
                    seen.append(type(exc).__name__)

    gc.collect()
    base = runtime_descriptors()
    rt = ReactRuntime()
    lid, port = listen_factory(rt, Nasty)
    peers = [raw_client(port) for _ in range(3)]
    pump_until(rt, lambda: rt.count_streams() == 3)
    rt.close()
    assert rt.closed
    assert len(seen) == 9 and "no error" not in seen, seen
    for p in peers:
        p.close()
    del rt
    gc.collect()
    assert runtime_descriptors() == base


def test_nested_callback_closes_the_reactor_that_is_running(rt):
    """B's on_inbound_message sends to A; A's on_pause_writing (called inside B's callback)
    aborts B and closes A.  Both close once, B only after its callback returned, and no
    callback of either runs after its on_close."""
    order = []
    ctxs = {}

    class Node(Reactor):
        def __init__(self, name):
            self.name = name
            self.in_cb = 0
            self.closed = False

        def on_connected(self, ctx, listener_id):
            ctxs[self.name] = ctx

        def on_inbound_message(self, buf, new_bytes, decoded, ctx):
            assert not self.closed, f"{self.name}: callback after on_close"
            self.in_cb += 1
            try:
                order.append(f"{self.name}:msg")
                if self.name == "B":
                    ctxs["A"].send_or_que(b"\x00" * (4 << 20))    # A's peer does not read
                    with pytest.raises(reactio.ReactorClosedError):
                        ctxs["A"].send_or_que(b"more")               # A closed meanwhile
                return reactio.DropMsgSize(len(buf))
            finally:
                self.in_cb -= 1

        def on_pause_writing(self, ctx):
            order.append(f"{self.name}:pause")
            ctxs["B"].close(abort=True)
            ctx.close(abort=True)

        def on_close(self, reactor_id, cmd_sender):
            order.append(f"{self.name}:close(in_cb={self.in_cb})")
            self.closed = True

    nodes = [Node("A"), Node("B")]
    lid, port = listen_factory(rt, lambda: nodes.pop(0))
    pa = raw_client(port)
    pump_until(rt, lambda: "A" in ctxs)
    pb = raw_client(port)
    pump_until(rt, lambda: "B" in ctxs)
    pb.sendall(b"go" * 1000)
    pa.sendall(b"x")
    pump_until(rt, lambda: rt.count_streams() == 0)
    assert order[:4] == ["B:msg", "A:pause", "A:close(in_cb=0)", "B:close(in_cb=0)"], order
    assert order.count("B:close(in_cb=0)") == 1 and order.count("A:close(in_cb=0)") == 1
    pa.close()
    pb.close()


def test_reader_of_another_stream_is_refused(rt):
    """ctx_a.reader used with ctx_b (or a free-standing MsgReader): a clear error, never bytes
    of one stream shown through another stream's buffer."""
    ctxs = []
    errors = []

    class Mixer(EchoReactor):
        def on_connected(self, ctx, listener_id):
            ctxs.append(ctx)

        def on_readable(self, ctx):
            other = [c for c in ctxs if c is not ctx][0]
            with pytest.deprecated_call():
                loose = reactio.MsgReader(64, 1024)
            for reader in (other.reader, loose):
                try:
                    reader.try_read_fast_read(ctx)
                except (ValueError, RuntimeError) as exc:
                    errors.append(exc)
            ctx.reader.try_read_fast_read(ctx)

    lid, port = listen_factory(rt, Mixer)
    p1, p2 = raw_client(port), raw_client(port)
    pump_until(rt, lambda: len(ctxs) == 2)
    p1.sendall(frame(b"one"))
    assert recv_exact_nb(rt, p1, 13) == frame(b"one")
    assert len(errors) == 2, errors
    p1.close()
    p2.close()

