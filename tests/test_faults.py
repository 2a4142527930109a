"""Light fault tests (issue 5): callback abuse, re-entrancy, peer faults, EMFILE under accept,
connect timeouts, runtime lifetime.  Each runs in well under a second or two; the heavy
versions are under tests/stress/ (marker ``stress``)."""
from __future__ import annotations

import asyncio
import gc
import json
import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reactio
from reactio import ReactRuntime, Reactor

from conftest import (HAS_IPV6, Completion, EchoReactor, SinkReactor, connect, frame, listen,
                      listen_factory, pump_until, raw_client, recv_exact_nb)

HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers")

pytestmark = pytest.mark.timeout(30)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --------------------------------------------------------------------------- runtime lifetime

@pytest.mark.skipif(sys.platform == "win32",
                    reason="counts /proc/self/fd; on IOCP the pending operations of a runtime "
                           "dropped without close() keep their sockets (the kernel owns them)")
def test_unclosed_runtime_collected_by_gc_closes_every_fd():
    """Regression: a runtime dropped without close() is in a reference cycle (rt -> slots ->
    DispatchContext -> rt).  The GC's tp_clear used to set its slots to None before
    __dealloc__, which raised "TypeError: 'NoneType' object is not iterable" (ignored) and
    leaked the epoll fd, the eventfd, the listener and every stream."""
    unraisable = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        gc.collect()
        base = open_fds()
        for n_streams in (0, 1, 5, 20):
            rt = ReactRuntime()
            lid, port = listen_factory(rt, EchoReactor)
            peers = [raw_client(port) for _ in range(n_streams)]
            pump_until(rt, lambda: rt.count_streams() == n_streams)
            # keep the runtime alive only through cycles, with pending commands
            rt.cmd_sender.send_user_cmd(lid, rt)
            rt.cmd_sender.send_user_cmd(lid, rt, reactio.Deferred.after(100))
            for p in peers:
                p.close()
            del rt, peers
            gc.collect()
            assert open_fds() == base, f"{open_fds() - base} fds leaked with {n_streams} streams"
    finally:
        sys.unraisablehook = old_hook
    assert unraisable == [], [u.exc_value for u in unraisable]


def test_close_finishes_even_when_an_on_close_raises_keyboard_interrupt():
    """close() runs every on_close and fails every pending completion; a KeyboardInterrupt
    from one callback still propagates, but only after that work is done (no fd leaked)."""

    class Interrupting(EchoReactor):
        def on_close(self, reactor_id, cmd_sender):
            super().on_close(reactor_id, cmd_sender)
            raise KeyboardInterrupt

    gc.collect()
    base = open_fds()
    rt = ReactRuntime()
    reactors = [EchoReactor(), Interrupting(), EchoReactor(), Interrupting(), EchoReactor()]
    made = list(reactors)
    lid, port = listen_factory(rt, lambda: reactors.pop(0))
    peers = [raw_client(port) for _ in range(len(made))]
    pump_until(rt, lambda: rt.count_streams() == len(made))
    pending = [Completion() for _ in range(3)]
    for c in pending:
        rt.cmd_sender.send_user_cmd(lid, "later", reactio.Deferred.after(60), c)
    rt.process_events(0)
    queued = Completion()
    rt.cmd_sender.send_user_cmd(lid, "queued", None, queued)
    with pytest.raises(KeyboardInterrupt):
        rt.close()
    assert all(len(r.closed) == 1 for r in made), [r.closed for r in made]
    for c in pending + [queued]:
        assert isinstance(c.result, reactio.RuntimeClosedError)
    rt.close()                                  # idempotent afterwards
    with pytest.raises(reactio.RuntimeClosedError):
        rt.process_events(0)
    for p in peers:
        p.close()
    del rt
    gc.collect()
    assert open_fds() == base


# --------------------------------------------------------------------------- callback abuse

class CustomBase(BaseException):
    """A BaseException subclass that is neither KeyboardInterrupt nor SystemExit."""


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


# --------------------------------------------------------------------------- re-entrancy

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
    base = open_fds()
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
    assert open_fds() == base


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


def _write_and_send(w):
    w.write(b"x")
    return w.send()


def test_closed_context_and_reader_are_safe_to_use(rt):
    """A DispatchContext kept after its stream closed: every method raises
    ReactorClosedError or is a no-op; its MsgReader refuses to read."""
    kept = {}

    class Keeper(EchoReactor):
        def on_connected(self, ctx, listener_id):
            kept["ctx"] = ctx

    lid, port = listen_factory(rt, Keeper)
    peer = raw_client(port)
    pump_until(rt, lambda: "ctx" in kept)
    ctx = kept["ctx"]
    peer.close()
    pump_until(rt, lambda: rt.count_streams() == 0)
    for name, call in [("send_or_que", lambda: ctx.send_or_que(b"x")),
                       ("send_no_que", lambda: ctx.send_no_que(b"x")),
                       ("peer_address", lambda: ctx.peer_address),
                       ("local_address", lambda: ctx.local_address),
                       ("nodelay", lambda: ctx.nodelay),
                       ("acquire_send", lambda: _write_and_send(ctx.acquire_send()))]:
        with pytest.raises(reactio.ReactorClosedError):
            call()
            print(name, "did not raise")
    ctx.close()
    ctx.close(abort=True)
    assert not ctx.is_open and ctx.send_queue_size == 0
    with pytest.raises((reactio.ReactorClosedError, RuntimeError, ValueError)):
        ctx.reader.try_read_fast_read(ctx)
    with pytest.raises((reactio.ReactorClosedError, RuntimeError, ValueError)):
        ctx.reader.try_read_fast_dispatch(ctx)
    assert rt.count_streams() == 0 and rt.count_reactors() == 1     # the listener


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
            for reader in (other.reader, reactio.MsgReader(64, 1024)):
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


# --------------------------------------------------------------------------- peer faults

def test_reset_mid_frame_on_an_outbound_connection(rt):
    """The peer of a connection *we* opened sends half a frame and resets: the error reaches
    that reactor's on_close (the connect completion had the ReactorID), nothing else."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    client = EchoReactor()
    rid = connect(rt, srv.getsockname()[1], client)
    assert isinstance(rid, reactio.ReactorID)
    conn, _ = srv.accept()
    conn.sendall(frame(b"y" * 300)[:123])
    pump_until(rt, lambda: rt.get_context(rid).reader.bytes_in_buffer() == 123)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    pump_until(rt, lambda: client.closed)
    assert client.closed == [(rid, client.closed[0][1])]
    assert isinstance(client.closed[0][1], ConnectionResetError)
    assert client.frames == [] and rt.count_reactors() == 0
    srv.close()


def test_reset_while_draining_fails_the_send_completion(rt):
    """Queued bytes, a send completion and a graceful close pending when the peer resets:
    the completion and on_close both get the reset error, exactly once."""
    sent = []

    class Server(SinkReactor):
        def on_connected(self, ctx, listener_id):
            ctx.send_or_que(b"\x00" * (8 << 20), sent.append)
            ctx.close()                                   # graceful: drain first

    server = Server()
    lid, port = listen_factory(rt, lambda: server)
    peer = raw_client(port)
    pump_until(rt, lambda: rt.count_streams() == 1)
    rt.process_events(0.01)
    assert sent == []
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    pump_until(rt, lambda: hasattr(server, "err"))
    assert isinstance(server.err, (ConnectionResetError, BrokenPipeError)), server.err
    assert len(sent) == 1 and sent[0] is server.err


def test_half_close_dispatches_every_whole_frame_and_flushes_big_replies(rt):
    """The peer writes 100 frames of ~60 KB and half of another, then shutdown(SHUT_WR), and
    reads only afterwards: the 100 frames are dispatched, their 6 MB of replies (far more than
    the socket buffers) arrive complete and in order, then an orderly FIN; the partial frame
    is never dispatched."""
    server = EchoReactor()
    lid, port = listen_factory(rt, lambda: server)
    peer = raw_client(port)
    frames = [frame(bytes([i]) * 60_000, i) for i in range(100)]
    wire = b"".join(frames)
    # The writer has its own socket object (same connection): recv_exact_nb makes ``peer``
    # non-blocking, and a sendall() still running on that object would then fail with
    # BlockingIOError (seen on free-threaded 3.13t, where the two threads truly overlap).
    out = peer.dup()
    writer = threading.Thread(target=lambda: (out.sendall(wire + frames[0][:30_000]),
                                              out.shutdown(socket.SHUT_WR)))
    writer.start()
    echoed = recv_exact_nb(rt, peer, len(wire), timeout=20)
    writer.join()
    out.close()
    assert echoed == wire
    pump_until(rt, lambda: server.closed)
    assert server.closed[0][1] is None
    assert server.frames == frames
    peer.settimeout(5)
    assert peer.recv(1) == b""
    peer.close()


def test_connect_to_closed_ports_many_at_once(rt):
    """100 connects to closed ports (IPv4, and IPv6 when there is a ::1) while a stream echoes:
    each completion runs once with ConnectionRefusedError; no descriptor is left."""
    server = EchoReactor()
    lid, port = listen_factory(rt, lambda: server)
    peer = raw_client(port)
    pump_until(rt, lambda: rt.count_streams() == 1)
    base = open_fds()
    ports = []
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    hosts = ["127.0.0.1"] + (["::1"] if HAS_IPV6 else [])
    results = {}
    for host in hosts:
        for p in ports:
            rt.cmd_sender.send_connect((host, p), 1024, EchoReactor(), None,
                                       lambda r, k=(host, p): results.setdefault(k, []).append(r))
    peer.sendall(frame(b"meanwhile"))
    assert recv_exact_nb(rt, peer, 19) == frame(b"meanwhile")
    pump_until(rt, lambda: len(results) == len(hosts) * len(ports))
    rt.process_events(0.01)
    assert all(len(v) == 1 and isinstance(v[0], ConnectionRefusedError)
               for v in results.values()), results
    assert open_fds() == base and rt.count_reactors() == 2
    peer.close()


def test_connect_timeout_in_a_private_network_namespace():
    """A non-routable address in a network namespace of our own (unshare --net
    --map-root-user; 192.0.2.0/24 routed into lo, where SYNs to a non-local address are
    dropped): 20 connects with timeouts each end with TimeoutError, once, no earlier than their
    timeout; an echo connection in the same runtime keeps running; close() fails a connect
    without a timeout with RuntimeClosedError; no descriptor is left."""
    unshare = shutil.which("unshare")
    ip = shutil.which("ip") or ("/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else None)
    if not unshare or not ip:
        pytest.skip("needs unshare(1) and ip(8)")
    script = os.path.join(HELPERS, "netns_connect.py")
    setup = f"{ip} link set lo up && {ip} route add 192.0.2.0/24 dev lo"
    probe = subprocess.run([unshare, "--net", "--map-root-user", "sh", "-c", setup],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"no network namespace of our own here: {probe.stderr.strip()[:200]}")
    cmd = [unshare, "--net", "--map-root-user", "sh", "-c",
           f"{setup} && exec {shlex.quote(sys.executable)} {shlex.quote(script)}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    results = out["results"]
    assert len(results) == 20
    for i, rs in results.items():
        assert len(rs) == 1, rs
        name, text, elapsed = rs[0]
        assert name == "TimeoutError", rs
        assert 0.3 + 0.01 * int(i) - 0.001 <= elapsed < 5, rs
    assert out["rounds_during_timeouts"] > 20          # the loop was never blocked
    assert out["hanging"] == ["RuntimeClosedError"]
    assert out["fds_leaked"] == 0


@pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_NOFILE/EMFILE on Windows")
def test_accept_under_emfile_is_survived():
    """A server whose soft RLIMIT_NOFILE leaves room for ~10 streams gets 40 connections:
    accept fails with EMFILE, which is a WARNING (accepts pause for a moment), not an ERROR and
    not a busy loop; each connection is served once others close; the server ends clean."""
    proc = subprocess.Popen([sys.executable, os.path.join(HELPERS, "emfile_server.py"), "10"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    clients = []
    try:
        first = json.loads(proc.stdout.readline())
        port = first["port"]

        def ask():
            proc.stdin.write("stats\n")
            proc.stdin.flush()
            return json.loads(proc.stdout.readline())

        n = 40
        pending = {}
        for i in range(n):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.sendall(frame(i.to_bytes(4, "little"), i))
            c.setblocking(False)
            pending[i] = (c, bytearray())
            clients.append(c)
        served = []

        def collect(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for i, (c, buf) in list(pending.items()):
                    try:
                        buf += c.recv(100)
                    except BlockingIOError:
                        continue
                    if len(buf) >= 14:
                        assert bytes(buf) == frame(i.to_bytes(4, "little"), i)
                        served.append(i)
                        del pending[i]
                time.sleep(0.005)

        collect(0.5)
        s1 = ask()
        first_round = len(served)
        assert 0 < first_round < n, s1
        assert s1["log_levels"].get("WARNING", 0) >= 1, s1
        assert any("Too many open files" in m for m in s1["log"]), s1["log"]
        time.sleep(1.0)                                     # EMFILE persists meanwhile
        s2 = ask()
        assert s2["cpu_seconds"] - s1["cpu_seconds"] < 0.5, "the loop spins under EMFILE"
        rounds = 0
        while pending:
            rounds += 1
            assert rounds < 60, f"{len(pending)} connections never served"
            for i in list(served):
                clients[i].close()                          # free server descriptors
            collect(0.3)
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        final = json.loads(proc.stdout.readline())
        assert proc.wait(10) == 0
        assert final["served"] == n
        assert final["peak_streams"] <= 10
        assert final["log_levels"].get("ERROR", 0) == 0, final["log"]
        assert final["close_errors"] == [], final
    finally:
        for c in clients:
            c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def test_refused_connect_frees_its_slot_once(rt):
    """Regression: a refused connect freed its slot twice (in _connect_ready and again in
    _connect_failed), so the next two reactors got the same ReactorID, and ~100 refused
    connects overflowed the free-slot array (glibc: "corrupted size vs. prev_size")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    done = Completion()
    rt.cmd_sender.send_connect(("127.0.0.1", closed_port), 1024, EchoReactor(), None, done)
    pump_until(rt, lambda: done.done)
    assert isinstance(done.result, ConnectionRefusedError)
    servers = []
    lid, port = listen_factory(rt, lambda: servers.append(EchoReactor()) or servers[-1])
    peers = [raw_client(port) for _ in range(3)]
    pump_until(rt, lambda: rt.count_streams() == 3)
    ids = _stream_ids(rt)
    assert len(set(ids)) == len(ids) == 3, ids
    assert lid not in ids
    for i, p in enumerate(peers):                 # and each id still reaches its own stream
        p.sendall(frame(bytes([i])))
    for i, p in enumerate(peers):
        assert recv_exact_nb(rt, p, 11) == frame(bytes([i]))
        p.close()


def test_close_with_many_connects_in_progress():
    """close() while 200 connects are in progress: each completion fails once with
    RuntimeClosedError, every socket is closed (the slots were freed twice before, which
    overflowed the free-slot array)."""
    gc.collect()
    base = open_fds()
    rt = ReactRuntime()
    lid, port = listen_factory(rt, EchoReactor, backlog=512)
    results = {}
    for i in range(200):
        rt.cmd_sender.send_connect(("127.0.0.1", port), 1024, EchoReactor(), None,
                                   lambda r, i=i: results.setdefault(i, []).append(r))
    rt.process_events(0)            # the connects start; their outcome is not read yet
    rt.close()
    assert len(results) == 200
    assert all(len(v) == 1 for v in results.values())
    assert all(isinstance(v[0], (reactio.RuntimeClosedError, reactio.ReactorID))
               for v in results.values())
    del rt
    gc.collect()
    assert open_fds() == base


def _stream_ids(rt):
    ids = []
    for slot in range(64):
        for gen in range(1, 8):
            rid = reactio.ReactorID(slot, gen)
            if rt.get_context(rid) is not None:
                ids.append(rid)
    return ids


# --------------------------------------------------------------------------- framing fuzz (light)

sys.path.insert(0, HELPERS)
import framing_fuzz as ff  # noqa: E402

LIGHT_FUZZ = settings(max_examples=12, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))


@LIGHT_FUZZ
@given(data=st.data())
def test_fuzz_frames_in_random_writes_light(data):
    """A few examples of tests/stress/test_stress_fuzz.py: the frames a reactor dispatches
    are exactly those a reference parser finds, whatever the write boundaries."""
    wire = data.draw(ff.wires(max_total=100_000))
    chunks = data.draw(ff.cuts(len(wire)))
    frames, ref, violations, closed = ff.run_framing_example(
        wire, chunks, data.draw(st.sampled_from(ff.STYLES)), data.draw(st.booleans()),
        data.draw(st.sampled_from([1, 10, 4096])))
    assert violations == [] and frames == ref and closed == ("closed", None)


@LIGHT_FUZZ
@given(data=st.data())
def test_fuzz_message_result_misuse_light(expected_errors, data):
    chunks = data.draw(st.lists(st.binary(min_size=1, max_size=2000), min_size=1, max_size=6))
    reactor, echoed = ff.run_misuse_example(data, chunks)
    assert echoed == b"ping" and reactor.closed is not None
    assert reactor.violations == [] and reactor.close_violations() == []
