"""Light fault tests (issue 5), callback isolation: every callback raising every kind of
exception -- a clear error on the right reactor or completion, never a crash, a hang or a leak;
the runtime keeps serving a bystander."""
from __future__ import annotations

import asyncio
import gc
import socket

import pytest

import reactio
from reactio import ReactRuntime

from support.fds import open_fds
from support.reactors import CustomBase, EchoReactor
from support.runtime import listen, pump_until
from support.sockets import raw_client, recv_exact_nb
from support.wire import frame

pytestmark = pytest.mark.timeout(30)


EXCEPTIONS = [ValueError, StopIteration, RecursionError, MemoryError, GeneratorExit, CustomBase,
              asyncio.CancelledError, KeyboardInterrupt, SystemExit]


PROPAGATING = (KeyboardInterrupt, SystemExit)


CALLBACKS = ["on_connected", "on_connected_outbound", "on_inbound_message", "on_readable",
             "on_command", "on_pause_writing", "on_resume_writing", "on_close", "completion",
             "on_sent", "on_new_connection", "on_start_listen", "on_close_listen"]


FLOOD = 8 << 20


class Abuser(EchoReactor):
    """Echoes frames, handles commands; raises ``exc`` from the callback named ``target``."""

    def __init__(self, target, exc):
        super().__init__()
        self.target = target
        self.exc = exc
        self.ctx = None
        self.events = []

    def _maybe(self, name):
        if self.target == name:
            raise self.exc(f"from {name}")

    def on_connected(self, ctx, listener_id):
        self.ctx = ctx
        self._maybe("on_connected" if listener_id is not None else "on_connected_outbound")

    def on_inbound_message(self, buf, new_bytes, decoded, ctx):
        self._maybe("on_inbound_message")
        return super().on_inbound_message(buf, new_bytes, decoded, ctx)

    def on_command(self, cmd, ctx):
        if cmd == "flood":
            ctx.send_or_que(b"\x07" * FLOOD)
        elif cmd == "on_sent":
            ctx.send_or_que(b"x", self._on_sent)
        else:
            self._maybe("on_command")

    def _on_sent(self, result):
        self._maybe("on_sent")

    def on_pause_writing(self, ctx):
        self.events.append("pause")
        self._maybe("on_pause_writing")

    def on_resume_writing(self, ctx):
        self.events.append("resume")
        self._maybe("on_resume_writing")

    def on_close(self, reactor_id, cmd_sender):
        super().on_close(reactor_id, cmd_sender)
        self._maybe("on_close")


class ReadableAbuser(Abuser):
    def on_readable(self, ctx):
        self._maybe("on_readable")
        reactio.Reactor.on_readable(self, ctx)


class AbuseHandler(reactio.DefaultTcpListenerHandler):
    def __init__(self, target, exc, factory):
        super().__init__(lambda count, param: factory())
        self.target = target
        self.exc = exc

    def on_new_connection(self, peer_address):
        if self.target == "on_new_connection":
            raise self.exc("from on_new_connection")
        return super().on_new_connection(peer_address)

    def on_start_listen(self, reactor_id, cmd_sender):
        super().on_start_listen(reactor_id, cmd_sender)
        if self.target == "on_start_listen":
            raise self.exc("from on_start_listen")

    def on_close_listen(self, reactor_id, cmd_sender):
        if self.target == "on_close_listen":
            raise self.exc("from on_close_listen")


def _drain_peer(pump, peer, n):
    peer.setblocking(False)
    got = 0

    def more():
        nonlocal got
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return False
        except ConnectionError:
            return True
        got += len(chunk)
        return not chunk or got >= n

    pump(more)
    return got


def _provoke(rt, pump, target, exc, lid, server, peer):
    """Make the runtime call ``target``; return the completion results it produced."""
    results = []
    if target in ("on_inbound_message", "on_readable"):
        peer.sendall(frame(b"abuse"))
    elif target == "on_command":
        rt.cmd_sender.send_user_cmd(server.ctx.reactor_id, "raise", None, results.append)
    elif target == "on_pause_writing":
        # the failed reactor closes gracefully: what it queued is flushed first; then the peer
        # ends its side too (a graceful close may wait for the peer's EOF)
        rt.cmd_sender.send_user_cmd(server.ctx.reactor_id, "flood", None, results.append)
        pump(lambda: results)
        _drain_peer(pump, peer, FLOOD)
        peer.shutdown(socket.SHUT_WR)
    elif target == "on_resume_writing":
        rt.cmd_sender.send_user_cmd(server.ctx.reactor_id, "flood", None, results.append)
        pump(lambda: results)
        _drain_peer(pump, peer, FLOOD)
    elif target == "on_close":
        peer.close()
    elif target == "completion":
        def bad_completion(result):
            results.append(result)
            raise exc("from completion")
        rt.cmd_sender.send_user_cmd(server.ctx.reactor_id, "noop", None, bad_completion)
    elif target == "on_sent":
        rt.cmd_sender.send_user_cmd(server.ctx.reactor_id, "on_sent", None, results.append)
    elif target == "on_close_listen":
        rt.cmd_sender.send_close(lid, None, results.append)
    return results


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=lambda e: e.__name__)
@pytest.mark.parametrize("target", CALLBACKS)
def test_every_callback_raising_every_exception(expected_errors, target, exc):
    """A clear error on the right reactor or completion, never a crash or a hang; the runtime
    keeps serving a bystander connection; KeyboardInterrupt/SystemExit propagate out of
    process_events() and leave a usable runtime."""
    gc.collect()
    base = open_fds()
    rt = ReactRuntime()
    servers = []

    def factory():
        cls = ReadableAbuser if target == "on_readable" else Abuser
        servers.append(cls(target if len(servers) else None, exc))     # first: the bystander
        return servers[-1]

    handler = AbuseHandler(target if target in ("on_close_listen",) else None, exc, factory)
    lid, port = listen(rt, handler)
    bystander_peer = raw_client(port)
    pump_until(rt, lambda: len(servers) == 1 and servers[0].ctx is not None)
    propagated = []

    def pump(pred, timeout=20.0):
        try:
            pump_until(rt, pred, timeout)
        except PROPAGATING as e:
            propagated.append(e)

    peer = None
    server = None
    results = []
    if target == "on_start_listen":
        results = []
        bad = AbuseHandler("on_start_listen", exc, factory)
        rt.cmd_sender.send_listen("127.0.0.1:0", bad, None, results.append)
        pump(lambda: results)
    elif target == "on_new_connection":
        handler.target = target
        peer = raw_client(port)
        peer.settimeout(5)
        pump(lambda: expected_errors.messages or propagated)
        handler.target = None
    elif target == "on_connected_outbound":
        client = Abuser(target, exc)
        rt.cmd_sender.send_connect(("127.0.0.1", port), 4096, client, None, results.append)
        pump(lambda: results or propagated)
        server = client
    else:
        peer = raw_client(port)
        pump(lambda: len(servers) == 2 or propagated)
        server = servers[-1] if len(servers) == 2 else None
        if target != "on_connected":
            server.target = target
            results = _provoke(rt, pump, target, exc, lid, server, peer)
            pump(lambda: (results and target not in ("on_resume_writing",)) or server.closed
                 or propagated or (target == "on_close_listen" and results)
                 or (target in ("completion", "on_sent") and expected_errors.messages))
        else:
            pump(lambda: (server is not None and server.closed) or propagated)

    if exc in PROPAGATING:
        assert propagated and isinstance(propagated[0], exc), (target, propagated, results)
        assert not expected_errors.messages
        # Ctrl-C handled: the callbacks behave from now on (a level-triggered socket that the
        # interrupted on_readable did not read would otherwise interrupt again)
        for r in servers + ([server] if server is not None else []):
            r.target = None
    else:
        assert not propagated
        names = [m for m in expected_errors.messages if exc.__name__ in m]
        if target in ("on_connected", "on_inbound_message", "on_readable", "on_command",
                      "on_pause_writing", "on_resume_writing", "on_connected_outbound"):
            # that reactor is closed with the exception, on_close saw it, the log says so
            pump_until(rt, lambda: server.closed)
            assert isinstance(server.closed[0][1], exc), server.closed
            assert names, expected_errors.messages
        if target in ("on_command", "on_connected_outbound"):
            assert len(results) == 1 and isinstance(results[0], exc), results
        if target == "on_pause_writing":
            # the watermark callback's error closes its own stream (above); the on_command
            # that sent the bytes returned normally, so its completion has the ReactorID
            assert len(results) == 1 and isinstance(results[0], reactio.ReactorID), results
        if target == "on_start_listen":
            assert len(results) == 1 and isinstance(results[0], exc), results
            assert any("on_start_listen raised" in m for m in names)
        if target in ("on_close", "completion", "on_sent", "on_new_connection",
                      "on_close_listen"):
            assert names, expected_errors.messages
        if target in ("completion", "on_sent") and server is not None:
            assert server.closed == []          # a bad completion does not close the stream
        records = [r for r in expected_errors._collector.records if exc.__name__ in r.getMessage()]
        assert all(r.exc_info is not None for r in records)     # with the traceback

    # the runtime still serves the bystander, whatever happened
    if target != "on_close_listen" or exc in PROPAGATING:
        bystander_peer.sendall(frame(b"still here"))
        assert recv_exact_nb(rt, bystander_peer, 20) == frame(b"still here")
    assert servers[0].closed == []
    for s in (peer, bystander_peer):
        if s is not None:
            s.close()
    try:
        rt.close()
    except PROPAGATING:
        rt.close()
    del rt, servers, server, handler
    gc.collect()
    assert open_fds() == base

