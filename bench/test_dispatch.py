"""Micro-benchmarks of reactio's dispatch path (pytest-benchmark).

    pip install '.[bench,test]' && python -m pytest bench/ --benchmark-only

Each benchmark drives one runtime on this thread against a plain loopback socket peer, so
the figures include the system calls of one message in and out; compare the rows with each
other (Python vs Cython reactor, many frames per read), not with the ping-pong harness
(python -m reactio.bench), which measures whole round trips between two processes.
"""
import socket

import pytest

import reactio
from reactio import DefaultTcpListenerHandler, Deferred, DropMsgSize, ExpectMsgSize, Reactor
from reactio.bench._pyecho import PyEchoServer
from reactio.examples.pingpong import encode_message

pytest.importorskip("pytest_benchmark")


def frame(body: bytes) -> bytes:
    return encode_message(body, 0)


class PyCount(Reactor):
    """Frames many small messages out of one read; answers once per batch.  The framing is
    written out in the method on purpose: the per-frame cost of that code is what this
    benchmark measures, and a call to a shared parser would add to it."""

    def __init__(self):
        self.count = 0

    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        if len(buf) < 10:
            return ExpectMsgSize(0)
        n = 10 + (buf[0] | (buf[1] << 8))
        if n > len(buf):
            return ExpectMsgSize(n)
        self.count += 1
        if buf[2] == 1:                  # the batch's last frame: acknowledge it
            ctx.send_or_que(b"!")
        return DropMsgSize(n)


class _AcceptState:
    def on_accept(self, ctx, listener_id):
        pass


def _pair(factory):
    rt = reactio.ReactRuntime()
    done = []
    rt.cmd_sender.send_listen("127.0.0.1:0", DefaultTcpListenerHandler(lambda c, p: factory()),
                              Deferred.IMMEDIATE, done.append)
    while not done:
        rt.process_events(0.01)
    port = rt.local_address(done[0])[1]
    peer = socket.create_connection(("127.0.0.1", port))
    peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while rt.count_streams() == 0:
        rt.process_events(0.01)
    return rt, peer


def _echo_once(rt, peer, msg):
    peer.send(msg)
    got = 0
    while got < len(msg):
        rt.process_events(0.0)
        try:
            got += len(peer.recv(65536, socket.MSG_DONTWAIT))
        except BlockingIOError:
            pass


def _echo_pair(server_cls):
    """A runtime serving one of the bench harness's echo servers, and its peer socket."""
    state = _AcceptState()
    rt, peer = _pair(lambda: server_cls(state))
    yield rt, peer
    peer.close()
    rt.close()


@pytest.fixture
def py_echo():
    yield from _echo_pair(PyEchoServer)


@pytest.fixture
def cy_echo():
    yield from _echo_pair(pytest.importorskip("reactio.bench._cyecho").CyEchoServer)


def test_one_message_python_reactor(benchmark, py_echo):
    rt, peer = py_echo
    benchmark(_echo_once, rt, peer, frame(b"x" * 54))


def test_one_message_cython_reactor(benchmark, cy_echo):
    rt, peer = cy_echo
    benchmark(_echo_once, rt, peer, frame(b"x" * 54))


def test_framing_1000_small_messages_in_one_read(benchmark):
    counter = PyCount()
    rt, peer = _pair(lambda: counter)
    blob = b"".join(frame(b"\x00" * 20) for _ in range(999)) + \
        (20).to_bytes(2, "little") + b"\x01" + bytes(7) + b"\x00" * 20

    def batch():
        before = counter.count
        peer.sendall(blob)
        while True:
            rt.process_events(0.0)
            try:
                if peer.recv(16, socket.MSG_DONTWAIT):
                    break
            except BlockingIOError:
                pass
        assert counter.count - before == 1000

    try:
        benchmark(batch)
    finally:
        peer.close()
        rt.close()
