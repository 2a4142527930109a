"""Light fault tests (issue 5), callback isolation: every callback raising every kind of
exception -- a clear error on the right reactor or completion, never a crash, a hang or a leak;
KeyboardInterrupt/SystemExit propagate out of process_events() and leave a usable runtime; the
runtime keeps serving a bystander connection.

The matrix is SCENARIOS x EXCEPTIONS (13 x 9 = 117 cases).  A scenario names the callback that
raises, how the runtime is made to call it, and what follows when the error is contained (any
exception but KeyboardInterrupt/SystemExit)."""
from __future__ import annotations

import asyncio
import gc
import socket
from dataclasses import dataclass
from typing import Callable, Optional

import pytest

import reactio
from reactio import ReactRuntime

from support.fds import runtime_descriptors
from support.reactors import CustomBase, EchoReactor
from support.runtime import listen, pump_until
from support.sockets import raw_client, recv_exact_nb
from support.wire import frame

pytestmark = pytest.mark.timeout(30)

EXCEPTIONS = [ValueError, StopIteration, RecursionError, MemoryError, GeneratorExit, CustomBase,
              asyncio.CancelledError, KeyboardInterrupt, SystemExit]
PROPAGATING = (KeyboardInterrupt, SystemExit)

FLOOD = 8 << 20         # far more than the socket buffers: the write watermarks are crossed


# --------------------------------------------------------------------------- the reactors

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


# --------------------------------------------------------------------------- one case

class Case:
    """One run of the matrix: a runtime whose listener serves Abusers; its first stream (the
    bystander) never raises.  A scenario's trigger sets ``server`` (the reactor that raises),
    ``peer`` (its plain-socket peer, if any) and ``results`` (completions it caused)."""

    def __init__(self, scenario: "Scenario", exc: type, expected_errors):
        self.callback = scenario.callback
        self.reactor_class = scenario.reactor
        self.exc = exc
        self.expected_errors = expected_errors
        self.rt = ReactRuntime()
        self.servers = []
        self.propagated = []
        self.results = []
        self.server = None
        self.peer = None
        self.handler = AbuseHandler(self.callback if scenario.listener_raises else None, exc,
                                    self.factory)
        self.lid, self.port = listen(self.rt, self.handler)
        self.bystander_peer = raw_client(self.port)
        pump_until(self.rt, lambda: len(self.servers) == 1 and self.servers[0].ctx is not None)

    def factory(self):
        # the first stream is the bystander; the ones after it raise from the callback
        self.servers.append(self.reactor_class(self.callback if self.servers else None, self.exc))
        return self.servers[-1]

    def pump(self, pred, timeout=20.0):
        """pump_until, except that KeyboardInterrupt/SystemExit end it and are kept."""
        try:
            pump_until(self.rt, pred, timeout)
        except PROPAGATING as e:
            self.propagated.append(e)

    def close(self):
        for s in (self.peer, self.bystander_peer):
            if s is not None:
                s.close()
        try:
            self.rt.close()
        except PROPAGATING:
            self.rt.close()


# --------------------------------------------------------------------------- the triggers
# Each makes the runtime call the scenario's callback, then waits until the outcome is in:
# what the scenario expects, or a propagated KeyboardInterrupt/SystemExit.

def start_a_listener(c: Case):
    """send_listen with a second handler that raises from on_start_listen."""
    bad = AbuseHandler("on_start_listen", c.exc, c.factory)
    c.rt.cmd_sender.send_listen("127.0.0.1:0", bad, None, c.results.append)
    c.pump(lambda: c.results)


def connect_a_peer_to_a_raising_handler(c: Case):
    c.handler.target = "on_new_connection"
    c.peer = raw_client(c.port)
    c.peer.settimeout(5)
    c.pump(lambda: c.expected_errors.messages or c.propagated)
    c.handler.target = None


def connect_out(c: Case):
    """send_connect to our own listener, with an Abuser as the client reactor."""
    client = Abuser(c.callback, c.exc)
    c.rt.cmd_sender.send_connect(("127.0.0.1", c.port), 4096, client, None, c.results.append)
    c.pump(lambda: c.results or c.propagated)
    c.server = client


def _accept_a_second_stream(c: Case):
    c.peer = raw_client(c.port)
    c.pump(lambda: len(c.servers) == 2 or c.propagated)
    c.server = c.servers[-1] if len(c.servers) == 2 else None


def accept_a_peer(c: Case):
    """A second peer connects: its reactor raises from on_connected."""
    _accept_a_second_stream(c)
    c.pump(lambda: (c.server is not None and c.server.closed) or c.propagated)


def on_a_stream(provoke: Callable[[Case], None], until_completed: bool = False,
                or_logged: bool = False) -> Callable[[Case], None]:
    """A second peer connects, then ``provoke`` makes its reactor (or a completion of a command
    to it) raise.  Waits until that reactor closed -- or, ``until_completed``, until the
    command's completion ran; ``or_logged``, until an error was logged."""

    def trigger(c: Case):
        _accept_a_second_stream(c)
        c.server.target = c.callback
        provoke(c)
        c.pump(lambda: (until_completed and c.results) or c.server.closed or c.propagated
               or (or_logged and c.expected_errors.messages))

    trigger.__name__ = f"on_a_stream({provoke.__name__})"
    return trigger


def send_a_frame(c: Case):
    c.peer.sendall(frame(b"abuse"))


def command_it(c: Case):
    c.rt.cmd_sender.send_user_cmd(c.server.ctx.reactor_id, "raise", None, c.results.append)


def flood_then_end_the_peer(c: Case):
    """Crosses the high watermark.  The failed reactor closes gracefully: what it queued is
    flushed first; then the peer ends its side too (a graceful close may wait for the peer's
    EOF)."""
    c.rt.cmd_sender.send_user_cmd(c.server.ctx.reactor_id, "flood", None, c.results.append)
    c.pump(lambda: c.results)
    _drain_peer(c.pump, c.peer, FLOOD)
    c.peer.shutdown(socket.SHUT_WR)


def flood_and_drain(c: Case):
    """Crosses the high watermark, then the low one as the peer reads everything."""
    c.rt.cmd_sender.send_user_cmd(c.server.ctx.reactor_id, "flood", None, c.results.append)
    c.pump(lambda: c.results)
    _drain_peer(c.pump, c.peer, FLOOD)


def close_the_peer(c: Case):
    c.peer.close()


def command_with_a_raising_completion(c: Case):
    def bad_completion(result):
        c.results.append(result)
        raise c.exc("from completion")
    c.rt.cmd_sender.send_user_cmd(c.server.ctx.reactor_id, "noop", None, bad_completion)


def send_with_a_raising_on_sent(c: Case):
    c.rt.cmd_sender.send_user_cmd(c.server.ctx.reactor_id, "on_sent", None, c.results.append)


def close_the_listener(c: Case):
    c.rt.cmd_sender.send_close(c.lid, None, c.results.append)


# --------------------------------------------------------------------------- the table

RAISED = "the exception"        # Scenario.completion: the completion got the raised exception


@dataclass(frozen=True)
class Scenario:
    callback: str                               # the callback that raises
    trigger: Callable[[Case], None]             # makes the runtime call it (above)
    # what follows when the exception is contained (not KeyboardInterrupt/SystemExit); in
    # every scenario the error is logged, naming the exception, with its traceback:
    closes_its_reactor: bool = False            # that reactor closes; on_close sees the error
    completion: Optional[object] = None         # the trigger's completion got: RAISED or a type
    logged_as: str = ""                         # text the logged error holds
    stream_stays_open: bool = False             # the stream concerned is not closed
    reactor: type = Abuser                      # the class the listener serves with
    listener_raises: bool = False               # the listener's handler raises from the start

    def __str__(self):
        return self.callback


SCENARIOS = [
    Scenario("on_connected", accept_a_peer, closes_its_reactor=True),
    Scenario("on_connected_outbound", connect_out, closes_its_reactor=True, completion=RAISED),
    Scenario("on_inbound_message", on_a_stream(send_a_frame), closes_its_reactor=True),
    Scenario("on_readable", on_a_stream(send_a_frame), closes_its_reactor=True,
             reactor=ReadableAbuser),
    Scenario("on_command", on_a_stream(command_it, until_completed=True),
             closes_its_reactor=True, completion=RAISED),
    # the watermark callback's error closes its own stream; the on_command that sent the
    # bytes returned normally, so its completion has the ReactorID
    Scenario("on_pause_writing", on_a_stream(flood_then_end_the_peer, until_completed=True),
             closes_its_reactor=True, completion=reactio.ReactorID),
    Scenario("on_resume_writing", on_a_stream(flood_and_drain), closes_its_reactor=True),
    Scenario("on_close", on_a_stream(close_the_peer)),
    # a bad completion does not close the stream
    Scenario("completion", on_a_stream(command_with_a_raising_completion, until_completed=True,
                                       or_logged=True), stream_stays_open=True),
    Scenario("on_sent", on_a_stream(send_with_a_raising_on_sent, until_completed=True,
                                    or_logged=True), stream_stays_open=True),
    Scenario("on_new_connection", connect_a_peer_to_a_raising_handler),
    Scenario("on_start_listen", start_a_listener, completion=RAISED,
             logged_as="on_start_listen raised"),
    Scenario("on_close_listen", on_a_stream(close_the_listener, until_completed=True),
             listener_raises=True),
]


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=lambda e: e.__name__)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
def test_every_callback_raising_every_exception(expected_errors, scenario, exc):
    """A clear error on the right reactor or completion, never a crash or a hang; the runtime
    keeps serving a bystander connection; KeyboardInterrupt/SystemExit propagate out of
    process_events() and leave a usable runtime."""
    gc.collect()
    base = runtime_descriptors()
    c = Case(scenario, exc, expected_errors)
    scenario.trigger(c)
    server, results = c.server, c.results

    if exc in PROPAGATING:
        assert c.propagated and isinstance(c.propagated[0], exc), (scenario, c.propagated,
                                                                   results)
        assert not expected_errors.messages
        # Ctrl-C handled: the callbacks behave from now on (a level-triggered socket that the
        # interrupted on_readable did not read would otherwise interrupt again)
        for r in c.servers + ([server] if server is not None else []):
            r.target = None
    else:
        assert not c.propagated
        if scenario.closes_its_reactor:
            pump_until(c.rt, lambda: server.closed)
            assert isinstance(server.closed[0][1], exc), server.closed
        names = [m for m in expected_errors.messages if exc.__name__ in m]
        assert names, expected_errors.messages
        if scenario.completion is RAISED:
            assert len(results) == 1 and isinstance(results[0], exc), results
        elif scenario.completion is not None:
            assert len(results) == 1 and isinstance(results[0], scenario.completion), results
        if scenario.logged_as:
            assert any(scenario.logged_as in m for m in names), names
        if scenario.stream_stays_open:
            assert server.closed == []
        records = [r for r in expected_errors.records if exc.__name__ in r.getMessage()]
        assert all(r.exc_info is not None for r in records)     # with the traceback

    # the runtime still serves the bystander, whatever happened
    c.bystander_peer.sendall(frame(b"still here"))
    assert recv_exact_nb(c.rt, c.bystander_peer, 20) == frame(b"still here")
    assert c.servers[0].closed == []
    c.close()
    del c, server, results
    gc.collect()
    assert runtime_descriptors() == base
