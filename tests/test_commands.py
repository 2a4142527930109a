"""Commands and deferred commands: ordering, never early, wake-ups from other threads, unique
ReactorIDs, completions exactly once, close() failing what is pending."""
import random
import threading
import time

import pytest

import reactio
from reactio import Deferred, ReactRuntime, ReactorID

from support.reactors import EchoReactor
from support.runtime import Completion, connect, listen_factory, pump_until, stream_ids
from support.sockets import raw_client

pytestmark = pytest.mark.timeout(30)


class CmdLog(EchoReactor):
    def __init__(self):
        super().__init__()
        self.commands = []

    def on_command(self, cmd, ctx):
        self.commands.append((cmd, reactio.monotonic_ns()))


def open_stream(rt, reactor):
    """A server-side stream for ``reactor`` (the peer is a plain socket); returns (id, peer)."""
    lid, port = listen_factory(rt, lambda: reactor)
    peer = raw_client(port)
    pump_until(rt, lambda: reactor.connected_from != "never")
    ctx_ids = [rid for rid in stream_ids(rt)]
    return ctx_ids[-1], peer, lid


def test_the_runtime_clock_is_time_perf_counter_ns():
    """reactio.monotonic_ns() is CPython's time.perf_counter_ns() clock to the nanosecond (on
    Windows both convert QueryPerformanceCounter ticks the same exact integer way), so a
    caller timing a deadline with it never sees the deadline fire early."""
    for _ in range(10_000):
        before = time.perf_counter_ns()
        ours = reactio.monotonic_ns()
        after = time.perf_counter_ns()
        assert before <= ours <= after, (before, ours, after)


def test_deferred_commands_run_in_due_order_never_early(rt):
    target = CmdLog()
    rid, peer, lid = open_stream(rt, target)
    rng = random.Random(7)
    now = reactio.monotonic_ns()
    dues = [now + rng.randrange(0, 300_000_000) for _ in range(2000)]
    for i, due in enumerate(dues):
        rt.cmd_sender.send_user_cmd(rid, (i, due), Deferred.until(due))
    rt.process_events(0)
    assert rt.count_deferred_queue() > 1500      # any number may be pending at once
    pump_until(rt, lambda: len(target.commands) == len(dues))
    assert rt.count_deferred_queue() == 0
    for (i, due), ran_at in target.commands:
        assert ran_at >= due, "a deferred command ran early"
    order = [(due, i) for (i, due), _ in target.commands]
    assert order == sorted(order), "deferred commands ran out of due order"
    peer.close()


def test_deferred_after_and_immediate(rt):
    target = CmdLog()
    rid, peer, lid = open_stream(rt, target)
    t0 = reactio.monotonic_ns()
    rt.cmd_sender.send_user_cmd(rid, "late", Deferred.after(0.05))
    rt.cmd_sender.send_user_cmd(rid, "now")
    rt.cmd_sender.send_user_cmd(rid, "past", Deferred.until(t0 - 1))
    pump_until(rt, lambda: len(target.commands) == 3)
    assert [c for c, _ in target.commands] == ["now", "past", "late"]
    assert target.commands[2][1] - t0 >= 50_000_000
    peer.close()


def test_process_events_sleeps_until_next_deferred(rt):
    target = CmdLog()
    rid, peer, lid = open_stream(rt, target)
    rt.cmd_sender.send_user_cmd(rid, "x", Deferred.after(0.03))
    t0 = time.monotonic()
    while not target.commands:
        rt.process_events(10.0)         # must wake for the timer, not sleep 10 s
    assert time.monotonic() - t0 < 5
    peer.close()


def test_command_from_other_thread_wakes_blocked_loop(rt):
    target = CmdLog()
    rid, peer, lid = open_stream(rt, target)
    rt.process_events(0)
    sent_at = []

    def sender():
        time.sleep(0.2)
        sent_at.append(time.monotonic())
        rt.cmd_sender.send_user_cmd(rid, "wake")

    t = threading.Thread(target=sender)
    t.start()
    t0 = time.monotonic()
    rt.process_events(20.0)             # blocked in epoll_wait with the GIL released
    woke = time.monotonic()
    t.join()
    if not target.commands:
        rt.process_events(0)
    assert [c for c, _ in target.commands] == ["wake"]
    assert woke - t0 < 10, "the eventfd did not wake the loop"
    assert woke >= sent_at[0]
    peer.close()


def test_stop_wakes_run_forever_from_other_thread(rt):
    target = CmdLog()
    rid, peer, lid = open_stream(rt, target)
    threading.Timer(0.1, rt.stop).start()
    t0 = time.monotonic()
    rt.run_forever(timeout=30.0)
    assert time.monotonic() - t0 < 10
    peer.close()


def test_reactor_ids_are_never_reused_and_stale_ids_are_refused(rt):
    a = CmdLog()
    lid, port = listen_factory(rt, lambda: a)
    rid_a, peer_a, _ = None, raw_client(port), None
    pump_until(rt, lambda: a.connected_from != "never")
    rid_a = [r for r in stream_ids(rt)][-1]
    rt.cmd_sender.send_close(rid_a)
    pump_until(rt, lambda: a.closed)
    b = CmdLog()
    rid_b = connect(rt, port, b)        # reuses a's slot (LIFO free list) ...
    assert isinstance(rid_b, ReactorID)
    assert rid_b != rid_a               # ... with a new generation
    slots = {r.slot for r in stream_ids(rt)}
    assert rid_a.slot in slots
    stale = Completion()
    rt.cmd_sender.send_user_cmd(rid_a, "for a", Deferred.IMMEDIATE, stale)
    closing = Completion()
    rt.cmd_sender.send_close(rid_a, Deferred.IMMEDIATE, closing)
    pump_until(rt, lambda: stale.done and closing.done)
    assert isinstance(stale.result, reactio.ReactorNotFoundError)
    assert isinstance(closing.result, reactio.ReactorNotFoundError)
    assert b.commands == [] and not b.closed
    assert rt.count_streams() >= 1
    peer_a.close()


def test_reactor_id_value_semantics():
    a, b = ReactorID(3, 7), ReactorID(3, 7)
    assert a == b and hash(a) == hash(b) and a != ReactorID(3, 8)
    assert str(a) == "3:7" and ReactorID.from_int(a.to_int()) == a
    assert {a: 1}[b] == 1


class RaisesOnCommand(EchoReactor):
    def on_command(self, cmd, ctx):
        raise ValueError("bad command " + cmd)


def test_user_command_errors_reach_the_completion(rt):
    class NoHandler(EchoReactor):
        pass

    plain = NoHandler()
    rid, peer, lid = open_stream(rt, plain)
    done = Completion()
    rt.cmd_sender.send_user_cmd(rid, "x", Deferred.IMMEDIATE, done)
    pump_until(rt, lambda: done.done)
    assert isinstance(done.result, reactio.CommandNotHandledError)
    assert not plain.closed                      # an unhandled command does not close it
    listener_cmd = Completion()
    rt.cmd_sender.send_user_cmd(lid, "x", Deferred.IMMEDIATE, listener_cmd)
    pump_until(rt, lambda: listener_cmd.done)
    assert isinstance(listener_cmd.result, reactio.ReactorNotFoundError)
    peer.close()


def test_raising_on_command_closes_reactor_and_reports(rt, expected_errors):
    r = RaisesOnCommand()
    rid, peer, lid = open_stream(rt, r)
    done = Completion()
    rt.cmd_sender.send_user_cmd(rid, "x", Deferred.IMMEDIATE, done)
    pump_until(rt, lambda: done.done)
    assert isinstance(done.result, ValueError)
    assert r.closed and r.closed[0][1] is done.result
    assert expected_errors.matching("callback raised ValueError")
    peer.close()


def test_completion_that_raises_is_logged_not_fatal(rt, expected_errors):
    target = CmdLog()
    rid, peer, lid = open_stream(rt, target)

    def bad(result):
        raise RuntimeError("completion bug")

    rt.cmd_sender.send_user_cmd(rid, "a", Deferred.IMMEDIATE, bad)
    rt.cmd_sender.send_user_cmd(rid, "b")
    pump_until(rt, lambda: len(target.commands) == 2)
    assert expected_errors.matching("raised RuntimeError")
    assert not target.closed
    peer.close()


def test_close_runs_every_on_close_and_fails_pending_completions():
    rt = ReactRuntime()
    servers = []
    lid, port = listen_factory(rt, lambda: servers.append(CmdLog()) or servers[-1])
    peers = [raw_client(port) for _ in range(3)]
    pump_until(rt, lambda: rt.count_streams() == 3)
    rid = stream_ids(rt)[-1]
    deferred = [Completion() for _ in range(5)]
    for c in deferred:
        rt.cmd_sender.send_user_cmd(rid, "later", Deferred.after(60), c)
    rt.process_events(0)
    connecting = Completion()
    rt.cmd_sender.send_connect(("localhost", port), 1024, CmdLog(), Deferred.after(60), connecting)

    class L(reactio.DefaultTcpListenerHandler):
        closed = False

        def on_close_listen(self, reactor_id, cmd_sender):
            L.closed = True

    l2 = Completion()
    rt.cmd_sender.send_listen("127.0.0.1:0", L(lambda c, p: CmdLog()), Deferred.IMMEDIATE, l2)
    pump_until(rt, lambda: l2.done)
    queued = [Completion() for _ in range(5)]
    for c in queued:
        rt.cmd_sender.send_user_cmd(rid, "queued", Deferred.IMMEDIATE, c)
    rt.close()
    rt.close()                                   # idempotent
    assert len(servers) == 3 and all(s.closed for s in servers)
    assert L.closed
    for c in deferred + queued + [connecting]:
        assert isinstance(c.result, reactio.RuntimeClosedError)
    with pytest.raises(reactio.RuntimeClosedError):
        rt.cmd_sender.send_user_cmd(rid, "after close")
    with pytest.raises(reactio.RuntimeClosedError):
        rt.process_events(0)
    for p in peers:
        p.close()


def test_reentrant_process_events_and_close_are_refused(rt, expected_errors):
    errors = []

    class Reenter(EchoReactor):
        def on_command(self, cmd, ctx):
            try:
                rt.process_events(0)
            except RuntimeError as exc:
                errors.append(exc)
            try:
                rt.close()
            except RuntimeError as exc:
                errors.append(exc)

    r = Reenter()
    rid, peer, lid = open_stream(rt, r)
    rt.cmd_sender.send_user_cmd(rid, "go")
    pump_until(rt, lambda: len(errors) == 2)
    assert "re-entrantly" in str(errors[0]) and "from a callback" in str(errors[1])
    assert not r.closed
    peer.close()


def test_commands_from_many_threads_each_complete_once(rt):
    target = CmdLog()
    rid, peer, lid = open_stream(rt, target)
    n_threads, per_thread = 4, 2000
    completions = [[] for _ in range(n_threads)]

    def sender(k):
        for i in range(per_thread):
            rt.cmd_sender.send_user_cmd(rid, (k, i), None, completions[k].append)

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    pump_until(rt, lambda: len(target.commands) == n_threads * per_thread, timeout=20)
    for t in threads:
        t.join()
    for k in range(n_threads):
        seq = [i for (kk, i), _ in target.commands if kk == k]
        assert seq == list(range(per_thread))        # in order per sender, exactly once
        assert completions[k] == [rid] * per_thread
    peer.close()


def test_stop_before_run_forever_is_not_lost(rt):
    rt.stop()
    t0 = time.monotonic()
    rt.run_forever(timeout=5.0)
    assert time.monotonic() - t0 < 2


def test_completion_runs_when_on_command_raises_system_exit(rt):
    class Exits(EchoReactor):
        def on_command(self, cmd, ctx):
            raise SystemExit(3)

    r = Exits()
    rid, peer, lid = open_stream(rt, r)
    done = Completion()
    rt.cmd_sender.send_user_cmd(rid, "x", Deferred.IMMEDIATE, done)
    with pytest.raises(SystemExit):
        pump_until(rt, lambda: False)
    assert isinstance(done.result, SystemExit)
    peer.close()


def test_bad_command_arguments_raise_at_once(rt):
    rid = ReactorID(0, 1)
    with pytest.raises(TypeError, match="deferred must be a Deferred"):
        rt.cmd_sender.send_user_cmd(rid, "x", 0.5)
    with pytest.raises(TypeError, match="on_completion must be callable"):
        rt.cmd_sender.send_user_cmd(rid, "x", None, "not callable")
    with pytest.raises(TypeError):
        rt.cmd_sender.send_user_cmd("0:1", "x")
    with pytest.raises(ValueError, match="recv_buffer_min_size"):
        rt.cmd_sender.send_connect("127.0.0.1:1", 0, EchoReactor())
    with pytest.raises(ValueError, match="NaN"):
        rt.process_events(float("nan"))
    assert rt.process_events(float("inf")) is False         # idle: returns at once
