"""The seed's single-runtime examples, ported: the ping-pong listener + client that ends with
0 reactors and 0 deferred commands, and the reactor command example."""
import time

import pytest

import reactio
from reactio import Deferred, DropMsgSize, Reactor

from support.runtime import Completion, listen_factory, pump_until
from support.wire import frame, parse_frame

pytestmark = pytest.mark.timeout(30)


class Pingpong(Reactor):
    """reactio's PingpongReactor: echo until max_echo, measuring round trips."""

    def __init__(self, max_echo, is_client, close_listener=False):
        self.max_echo = max_echo
        self.is_client = is_client
        self.close_listener = close_listener
        self.count_echo = 0
        self.last_sent = 0
        self.rtts = []
        self.closed = False

    def on_connected(self, ctx, listener_id):
        if self.close_listener and listener_id is not None:
            ctx.cmd_sender.send_close(listener_id)     # one connection per listener, as in reactio
        if self.is_client:
            self.last_sent = reactio.monotonic_ns()
            ctx.send_or_que(frame(b"test msg000", self.last_sent))

    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        res, n = parse_frame(buf)
        if res is not None:
            return res
        now = reactio.monotonic_ns()
        if self.last_sent:
            self.rtts.append(now - self.last_sent)
        if self.count_echo >= self.max_echo:
            ctx.close()
            return DropMsgSize(n)
        buf[2:10] = now.to_bytes(8, "little")       # rewrite the stamp in place, echo zero-copy
        self.last_sent = now
        ctx.send_or_que(buf[:n])
        self.count_echo += 1
        return DropMsgSize(n)

    def on_close(self, reactor_id, cmd_sender):
        self.closed = True


def test_ping_pong_reactor_ends_idle(rt):
    servers = []

    def factory():
        servers.append(Pingpong(1 << 30, False, close_listener=True))
        return servers[-1]

    lid, port = listen_factory(rt, factory, 1024)
    client = Pingpong(2, True)
    done = Completion()
    rt.cmd_sender.send_connect(f"127.0.0.1:{port}", 1024, client, Deferred.IMMEDIATE, done)
    deadline = time.monotonic() + 5
    while rt.process_events(0.01):
        assert time.monotonic() < deadline, "ping-pong did not finish"
    assert isinstance(done.result, reactio.ReactorID)
    assert rt.count_reactors() == 0
    assert rt.count_deferred_queue() == 0
    assert client.closed and servers[0].closed
    assert client.count_echo == 2 and len(client.rtts) == 3   # every reply is timed
    assert all(r > 0 for r in client.rtts)


def test_ping_pong_many_round_trips(rt):
    lid, port = listen_factory(rt, lambda: Pingpong(1 << 30, False), 1024)
    client = Pingpong(5000, True)
    rt.cmd_sender.send_connect(("127.0.0.1", port), 1024, client)
    pump_until(rt, lambda: client.closed, timeout=20)
    assert client.count_echo == 5000
    assert len(client.rtts) == 5001
    rt.cmd_sender.send_close(lid)
    pump_until(rt, lambda: rt.count_reactors() == 0)


class CommandReactor(Reactor):
    """The seed's command example: a reactor sends itself a deferred command, then commands
    arrive from the runtime's sender; each is handled in on_command."""

    def __init__(self):
        self.commands = []

    def on_connected(self, ctx, listener_id):
        if listener_id is None:
            ctx.cmd_sender.send_user_cmd(ctx.reactor_id, "StartSending", Deferred.after(0.01))

    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        return DropMsgSize(len(buf))

    def on_command(self, cmd, ctx):
        self.commands.append((cmd, reactio.monotonic_ns()))
        if cmd == "StartSending":
            ctx.send_or_que(frame(b"hello world"))


def test_reactor_command_example(rt):
    server = CommandReactor()
    lid, port = listen_factory(rt, lambda: server)
    client = CommandReactor()
    done = Completion()
    t0 = reactio.monotonic_ns()
    rt.cmd_sender.send_connect(("127.0.0.1", port), 1024, client, Deferred.IMMEDIATE, done)
    pump_until(rt, lambda: client.commands)
    cid = done.result
    assert client.commands[0][0] == "StartSending"
    assert client.commands[0][1] - t0 >= 10_000_000          # deferred, never early
    completed = Completion()
    rt.cmd_sender.send_user_cmd(cid, "TestCmdFromOutside", Deferred.IMMEDIATE, completed)
    pump_until(rt, lambda: completed.done)
    assert completed.result == cid
    assert [c for c, _ in client.commands] == ["StartSending", "TestCmdFromOutside"]
    assert rt.count_received_commands() >= 3
