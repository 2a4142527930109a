"""Failures stay with the reactor they belong to: callback exceptions (logged with their
traceback), peer resets mid-frame, BaseException subclasses; EINTR is retried and Ctrl-C
interrupts a blocked process_events()."""
import os
import signal
import sys
import threading
import time

import pytest

from support.reactors import CustomBase, EchoReactor, SinkReactor
from support.runtime import listen_factory, pump_until
from support.sockets import raw_client, recv_exact_nb, reset
from support.wire import frame

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("exc_type", [ValueError, ZeroDivisionError, MemoryError, CustomBase,
                                      GeneratorExit])
def test_callback_exception_closes_only_its_reactor(rt, expected_errors, exc_type):
    class Bad(EchoReactor):
        def on_inbound_message(self, buf, new_bytes, decoded, ctx):
            raise exc_type("from the callback")

    bad, good = Bad(), EchoReactor()
    reactors = [bad, good]
    lid, port = listen_factory(rt, lambda: reactors.pop(0))
    p1, p2 = raw_client(port), raw_client(port)
    pump_until(rt, lambda: rt.count_streams() == 2)
    p1.sendall(frame(b"boom"))
    pump_until(rt, lambda: bad.closed)
    assert isinstance(bad.closed[0][1], exc_type)
    records = expected_errors.matching(f"callback raised {exc_type.__name__}")
    assert records and records[0].exc_info is not None        # traceback logged
    p2.sendall(frame(b"alive"))
    assert recv_exact_nb(rt, p2, 15) == frame(b"alive")
    assert rt.count_streams() == 1
    p1.close()
    p2.close()


def test_on_close_raising_is_logged(rt, expected_errors):
    class BadClose(EchoReactor):
        def on_close(self, reactor_id, cmd_sender):
            raise RuntimeError("close bug")

    lid, port = listen_factory(rt, BadClose)
    peer = raw_client(port)
    pump_until(rt, lambda: rt.count_streams() == 1)
    peer.close()
    pump_until(rt, lambda: rt.count_streams() == 0)
    assert expected_errors.matching("on_close raised RuntimeError")


def test_keyboard_interrupt_from_callback_propagates(rt):
    class Interrupt(EchoReactor):
        def on_inbound_message(self, buf, new_bytes, decoded, ctx):
            raise KeyboardInterrupt

    lid, port = listen_factory(rt, Interrupt)
    peer = raw_client(port)
    peer.sendall(b"x")
    with pytest.raises(KeyboardInterrupt):
        pump_until(rt, lambda: False)
    # the runtime is still usable afterwards
    rt.process_events(0)
    peer.close()


def test_reset_in_the_middle_of_a_frame(rt):
    server = EchoReactor()
    lid, port = listen_factory(rt, lambda: server)
    peer = raw_client(port)
    peer.sendall(frame(b"z" * 100)[:50])             # half a frame
    pump_until(rt, lambda: rt.count_streams() == 1)
    rt.process_events(0.01)
    reset(peer)                                      # RST
    pump_until(rt, lambda: server.closed)
    err = server.closed[0][1]
    assert isinstance(err, ConnectionResetError), err
    assert server.frames == []
    assert rt.count_streams() == 0


def test_peer_reset_while_we_send(rt):
    class Streamer(SinkReactor):
        def on_connected(self, ctx, listener_id):
            ctx.send_or_que(b"\x00" * (8 << 20))

    s = Streamer()
    lid, port = listen_factory(rt, lambda: s)
    peer = raw_client(port)
    pump_until(rt, lambda: rt.count_streams() == 1)
    reset(peer)
    pump_until(rt, lambda: hasattr(s, "err"))
    assert isinstance(s.err, (ConnectionResetError, BrokenPipeError))


@pytest.mark.skipif(not hasattr(signal, "setitimer"),
                    reason="no interval timer signals (Windows): IOCP waits have no EINTR")
def test_eintr_is_retried_under_a_signal_storm(rt):
    hits = []
    old = signal.signal(signal.SIGALRM, lambda *a: hits.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
        server = EchoReactor()
        lid, port = listen_factory(rt, lambda: server)
        peer = raw_client(port)
        wire = b"".join(frame(bytes([i % 250]) * 500) for i in range(2000))
        peer.sendall(wire[:len(wire) // 2])
        first = recv_exact_nb(rt, peer, len(wire) // 2, timeout=20)
        peer.setblocking(True)
        peer.sendall(wire[len(wire) // 2:])
        second = recv_exact_nb(rt, peer, len(wire) - len(wire) // 2, timeout=20)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.05:
            rt.process_events(0.01)          # blocked waits interrupted by SIGALRM
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
    assert first + second == wire
    assert len(hits) > 10
    peer.close()


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread")
def test_ctrl_c_interrupts_blocked_process_events(rt):
    server = EchoReactor()
    lid, port = listen_factory(rt, lambda: server)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    if sys.platform == "win32":
        # os.kill(pid, SIGINT) terminates the process on Windows; raise() runs Python's
        # handler, which flags the signal for the main thread (the IOCP wait polls for it)
        timer = threading.Timer(0.2, signal.raise_signal, (signal.SIGINT,))
    else:
        # process-directed: the kernel interrupts the main thread's epoll_wait (EINTR)
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            rt.process_events(20.0)
        assert time.monotonic() - t0 < 10
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)
    rt.process_events(0)                     # still usable


def test_completions_survive_keyboard_interrupt_from_callbacks(rt):
    """on_connected / on_close unwinding with Ctrl-C still completes the connect and the close
    command (exactly once), and leaves no stream half-finalized."""
    lid, port = listen_factory(rt, EchoReactor)

    class InterruptConnected(EchoReactor):
        def on_connected(self, ctx, listener_id):
            raise KeyboardInterrupt

    connected = []
    rt.cmd_sender.send_connect(("127.0.0.1", port), 1024, InterruptConnected(), None,
                               connected.append)
    with pytest.raises(KeyboardInterrupt):
        pump_until(rt, lambda: False)
    assert len(connected) == 1 and isinstance(connected[0], KeyboardInterrupt)

    class InterruptClose(EchoReactor):
        def on_close(self, reactor_id, cmd_sender):
            raise KeyboardInterrupt

    done = []
    rid = []
    rt.cmd_sender.send_connect(("127.0.0.1", port), 1024, InterruptClose(), None, rid.append)
    pump_until(rt, lambda: rid)
    rt.cmd_sender.send_close(rid[0], None, done.append)
    with pytest.raises(KeyboardInterrupt):
        pump_until(rt, lambda: False)
    assert done == [rid[0]]
    assert rt.get_context(rid[0]) is None
