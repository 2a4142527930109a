"""rt.shutdown(timeout): the graceful stop.  Listeners close, connects in progress fail, every
stream is closed the graceful way (queued bytes delivered, then EOF) and the loop runs until
they are gone or the deadline passes; then the runtime is closed."""
from __future__ import annotations

import logging
import socket
import threading

import pytest

import reactio
from reactio import ReactorClosedError, RuntimeClosedError

from support.reactors import EchoReactor
from support.runtime import Completion, listen_factory, pump_until
from support.sockets import raw_client

pytestmark = pytest.mark.timeout(60)

PAYLOAD = bytes(range(256)) * (4 * 4096)        # 4 MiB: far more than the socket buffers hold


class Flood(EchoReactor):
    """Queues PAYLOAD as soon as it connects."""

    def on_connected(self, ctx, listener_id):
        super().on_connected(ctx, listener_id)
        ctx.send_or_que(PAYLOAD)
        self.ctx = ctx


def _serve_flood(rt):
    made = []

    def factory():
        made.append(Flood())
        return made[-1]

    lid, port = listen_factory(rt, factory)
    return made, port


def test_shutdown_delivers_every_queued_byte_then_eof_and_closes_the_listener(rt):
    made, port = _serve_flood(rt)
    client = raw_client(port)
    pump_until(rt, lambda: made and made[0].connected_from != "never")
    assert made[0].ctx.send_queue_size > 0, "the test needs bytes still queued at shutdown"
    go, received = threading.Event(), bytearray()

    def read_all():                 # a peer that starts reading once the shutdown began
        go.wait(10)
        client.settimeout(20)
        while chunk := client.recv(1 << 20):
            received.extend(chunk)
        client.close()

    reader = threading.Thread(target=read_all)
    reader.start()
    go.set()
    assert rt.shutdown(timeout=30) == 0
    reader.join(30)
    assert bytes(received) == PAYLOAD
    assert rt.closed
    assert made[0].closed == [(made[0].ctx.reactor_id, None)]   # an orderly close
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_shutdown_cuts_a_peer_that_never_reads_at_the_deadline(rt, caplog):
    made, port = _serve_flood(rt)
    client = raw_client(port)
    pump_until(rt, lambda: made and made[0].connected_from != "never")
    with caplog.at_level(logging.WARNING, logger="reactio"):
        assert rt.shutdown(timeout=0.3) == 1
    assert rt.closed
    assert "still closing after 0.3 s" in caplog.text
    assert len(made[0].closed) == 1
    client.close()


def test_connects_and_listens_in_progress_fail_with_reactor_closed(rt):
    listening, port = listen_factory(rt, EchoReactor)
    connect_done, listen_done = Completion(), Completion()
    # "localhost" goes through the resolver thread, so both are still pending when the
    # shutdown's first pass runs right after them in the same batch of commands
    rt.cmd_sender.send_connect(f"localhost:{port}", 4096, EchoReactor(), None, connect_done)
    rt.cmd_sender.send_listen("localhost:0", reactio.DefaultTcpListenerHandler(
        lambda count, param: EchoReactor(), 4096, None), None, listen_done)
    assert rt.shutdown(timeout=10) == 0
    assert isinstance(connect_done.result, ReactorClosedError)
    assert isinstance(listen_done.result, ReactorClosedError)
    assert "shutting down" in str(connect_done.result)


def test_a_connect_sent_from_another_thread_during_shutdown_is_refused(rt):
    made, port = _serve_flood(rt)
    client = raw_client(port)
    pump_until(rt, lambda: made and made[0].connected_from != "never")
    late = Completion()
    stop_reading = threading.Event()

    def slow_reader_then_connect():
        client.settimeout(20)
        client.recv(65536)                      # the shutdown is under way: bytes flow
        try:
            rt.cmd_sender.send_connect(("127.0.0.1", port), 4096, EchoReactor(), None, late)
        except RuntimeClosedError as exc:       # the shutdown already ended: refused too
            late(exc)
        while client.recv(1 << 20):
            pass
        client.close()
        stop_reading.set()

    t = threading.Thread(target=slow_reader_then_connect)
    t.start()
    assert rt.shutdown(timeout=30) == 0
    t.join(30)
    assert stop_reading.is_set()
    assert isinstance(late.result, (ReactorClosedError, RuntimeClosedError)), late.result


def test_shutdown_of_an_idle_or_closed_runtime_returns_at_once():
    rt = reactio.ReactRuntime()
    assert rt.shutdown() == 0 and rt.closed
    assert rt.shutdown() == 0               # idempotent, like close()
    with pytest.raises(RuntimeClosedError):
        rt.cmd_sender.send_call(print)


@pytest.mark.parametrize("timeout, error", [(-1, ValueError), (float("nan"), ValueError),
                                            ("1", TypeError), (True, TypeError)])
def test_a_bad_timeout_is_refused_and_leaves_the_runtime_running(rt, timeout, error):
    lid, port = listen_factory(rt, EchoReactor)
    with pytest.raises(error):
        rt.shutdown(timeout)
    assert not rt.closed and rt.count_reactors() == 1


def test_shutdown_from_a_callback_is_refused(rt):
    done = Completion()
    rt.cmd_sender.send_call(lambda: rt.shutdown(), None, done)
    pump_until(rt, lambda: done.done)
    assert isinstance(done.result, RuntimeError)
    assert "re-entrantly" in str(done.result)
    assert not rt.closed
