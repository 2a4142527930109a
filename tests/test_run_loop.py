"""run() / run_forever(): the loop that stays in C between events, its busy-poll mode, and the
GIL it keeps for short waits when no other thread exists.  Functional only: what the loops
deliver and when they return, never how fast."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import reactio
from reactio import DropMsgSize, ExpectMsgSize, Reactor

from support.reactors import EchoReactor
from support.runtime import listen_factory
from support.subproc import HELPERS, TESTS, child_env
from support.wire import frame, parse_frame

pytestmark = pytest.mark.timeout(60)

ROUNDS = 200


class PingClient(Reactor):
    """Sends a frame, waits for its echo, ROUNDS times, then closes (the runtime goes idle)."""

    def __init__(self):
        self.echoes = []

    def _send(self, ctx):
        ctx.send_or_que(frame(b"ping %d" % len(self.echoes)))

    def on_connected(self, ctx, listener_id):
        self._send(ctx)

    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        res, n = parse_frame(buf)
        if res is not None:
            return res
        self.echoes.append(bytes(buf[:n]))
        if len(self.echoes) < ROUNDS:
            self._send(ctx)
        else:
            ctx.close()
        return DropMsgSize(n)


def echo_pair(rt):
    """A listener that stops after one connection, and a PingClient connecting to it."""
    server = EchoReactor()
    lid, port = listen_factory(rt, lambda: server)
    client = PingClient()

    def connected(result):
        assert isinstance(result, reactio.ReactorID), result
        rt.cmd_sender.send_close(lid)   # the listener goes: run() returns once the pair is done

    rt.cmd_sender.send_connect(("127.0.0.1", port), 4096, client, reactio.Deferred.IMMEDIATE,
                               connected)
    return server, client


@pytest.mark.parametrize("busy_poll", [False, True])
def test_run_serves_until_idle(rt, busy_poll):
    server, client = echo_pair(rt)
    rt.run(5.0, busy_poll=busy_poll)
    assert client.echoes == [frame(b"ping %d" % i) for i in range(ROUNDS)]
    assert server.frames == client.echoes
    assert rt.count_reactors() == 0
    assert rt.process_events(0) is False


@pytest.mark.parametrize("busy_poll", [False, True])
def test_run_forever_returns_at_stop_from_a_timer(rt, busy_poll):
    fired = []

    def stop():
        fired.append(True)
        rt.stop()

    rt.call_later(0.05, stop)
    rt.run_forever(30.0, busy_poll=busy_poll)
    assert fired == [True]
    # the runtime stays usable: a second run serves traffic
    server, client = echo_pair(rt)
    rt.run(5.0, busy_poll=busy_poll)
    assert len(client.echoes) == ROUNDS


def test_busy_poll_lets_other_threads_run(rt):
    """A busy loop holds the GIL between polls; a thread that needs it (to compute, then to
    send the command that stops the loop) must still get it.  Without the hand-over this test
    hangs until its timeout."""
    results = []

    def worker():
        results.append(sum(range(200_000)))     # Python code: needs the GIL throughout
        rt.cmd_sender.send_call(lambda: rt.stop())

    t = threading.Thread(target=worker)
    t.start()
    rt.run_forever(busy_poll=True)
    t.join(10)
    assert results == [sum(range(200_000))]


def test_blocking_wait_without_other_threads_still_sees_commands_and_timers(rt):
    """With no other thread the first 20 ms of a wait keep the GIL; a wait of seconds
    must still end at its timer, and a thread started later must get the GIL and be heard."""
    ticks = []

    def tick():
        ticks.append(len(ticks))
        if len(ticks) < 3:
            rt.call_later(0.01, tick)
        else:
            threading.Thread(target=lambda: rt.cmd_sender.send_call(rt.stop)).start()

    rt.call_later(0.01, tick)
    rt.run_forever(60.0)
    assert ticks == [0, 1, 2]


def test_run_refuses_a_nan_timeout_and_reentry(rt):
    with pytest.raises(ValueError):
        rt.run(float("nan"))
    errors = []

    def reenter():
        try:
            rt.run(busy_poll=True)
        except RuntimeError as e:
            errors.append(e)
        rt.stop()

    rt.call_later(0, reenter)
    rt.run_forever(5.0)
    assert len(errors) == 1 and "re-entrantly" in str(errors[0])


class _Stop(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="no pthread_kill here")
def test_a_signal_handler_runs_in_a_busy_loop(rt):
    """A signal that arrives while the loop is not in epoll_wait gets no EINTR; the loop must
    still run its Python handler (Ctrl-C's KeyboardInterrupt).  A busy loop with a helper
    thread runs no Python code at all, so without the per-turn check this hangs."""
    def handler(signum, frame):
        raise _Stop()

    def kill_main():
        time.sleep(0.05)
        signal.pthread_kill(main, signal.SIGUSR1)

    main = threading.main_thread().ident
    if threading.get_ident() != main:
        pytest.skip("signal handlers run in the main thread only")
    old = signal.signal(signal.SIGUSR1, handler)
    t = threading.Thread(target=kill_main)
    try:
        t.start()
        with pytest.raises(_Stop):
            rt.run_forever(busy_poll=True)
    finally:
        t.join(10)
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
@pytest.mark.skipif(reactio.BACKEND != "epoll", reason="fork() is tested on the epoll backend")
def test_a_child_forked_from_a_callback_does_not_go_on_with_the_loop(rt):
    """run() makes its checks once, not per turn -- except the fork check: a child forked
    inside a callback must not keep polling the parent's epoll set."""
    outcome = []

    def fork_now():
        pid = os.fork()
        if pid == 0:        # the child: its run() must raise at the next turn
            return
        outcome.append(os.waitpid(pid, 0)[1])
        rt.stop()

    rt.call_later(0, fork_now)
    try:
        rt.run_forever(5.0)
    except RuntimeError as e:
        if "fork" in str(e) and os.getpid() != PARENT:
            os._exit(7)     # the child was refused, as it must be
        raise
    except BaseException:
        if os.getpid() != PARENT:
            os._exit(1)
        raise
    if os.getpid() != PARENT:
        os._exit(1)         # the child returned from run_forever: wrong
    assert outcome and os.waitstatus_to_exitcode(outcome[0]) == 7


PARENT = os.getpid()


def test_expect_and_drop_results_are_cached_and_checked():
    """The result caches (C arrays since 0.2): the same object for the same size, distinct
    kinds, and a negative size still refused."""
    assert DropMsgSize(5) is DropMsgSize(5)
    assert ExpectMsgSize(5) is ExpectMsgSize(5)
    assert DropMsgSize(5) is not ExpectMsgSize(5)
    assert (DropMsgSize(5).size, DropMsgSize(5).is_drop) == (5, True)
    assert (ExpectMsgSize(0).size, ExpectMsgSize(0).is_drop) == (0, False)
    big = DropMsgSize(1 << 40)
    assert big.size == 1 << 40 and big == DropMsgSize(1 << 40)
    with pytest.raises(reactio.MessageResultError):
        DropMsgSize(-1)
    with pytest.raises(reactio.MessageResultError):
        ExpectMsgSize(-3)


@pytest.mark.skipif(reactio.BACKEND != "epoll", reason="reads epoll_wait's timeouts")
@pytest.mark.skipif(shutil.which("strace") is None,
                    reason="strace is not installed (bash bench/install-tools.sh)")
@pytest.mark.timeout(120)
def test_no_wait_arms_a_timer_due_before_a_kernel_tick(tmp_path):
    """A server in run(-1) waits for a peer that pauses between messages.  Its epoll_wait
    timeouts, read by strace: 0 (a poll), -1 (no limit) or the held wait's bound, never a few
    ms -- a timer due before the next kernel tick (4 ms at HZ=250, 10 at HZ=100) reprograms
    the CPU's timer device when armed and when cancelled, which made same-core ping-pong 1.5x
    slower on a VM with a 1 ms held wait (BENCHMARKS.md)."""
    trace = str(tmp_path / "strace.out")
    child = subprocess.Popen(
        ["strace", "-f", "-qq", "-e", "trace=epoll_wait,epoll_pwait,write", "-o", trace,
         sys.executable, os.path.join(HELPERS, "echo_until_closed.py")],
        stdout=subprocess.PIPE, text=True, env=child_env(TESTS))
    try:
        port = int(child.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as peer:
            for i in range(50):
                peer.sendall(b"ping %03d" % i)
                assert peer.recv(64) == b"ping %03d" % i
                time.sleep(0.002)           # the server blocks in a wait before each ping
        assert child.wait(30) == 0
    finally:
        child.kill()
    with open(trace, errors="replace") as f:     # (strace escapes, but be safe)
        text = f.read()
    text = text[text.index('"serving'):]     # the waits of run(), not of the set-up
    timeouts = [int(m.group(1)) for m in
                re.finditer(r"epoll_p?wait\(\d+, .*?, \d+, (-?\d+)", text)]
    assert len(timeouts) >= 50, timeouts
    short = [t for t in timeouts if 0 < t < 10]
    assert not short, f"waits with a timeout of a few ms: {sorted(set(short))}"
