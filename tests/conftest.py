"""Shared test machinery.

Every test runs with a guard on the ``reactio`` logger: an ERROR record the test did not ask
for (through the ``expected_errors`` fixture) fails the test, so a reactor that dies quietly
cannot pass.  Network tests use loopback only and are bounded by pytest-timeout.
"""
from __future__ import annotations

import contextlib
import logging
import socket
import time

import pytest

import reactio
from reactio import DefaultTcpListenerHandler, Deferred, ReactRuntime
from reactio.examples import pingpong as examples
from reactio.examples.pingpong import encode_message, parse_frame  # noqa: F401 (tests use it)

HAS_IPV6 = socket.has_ipv6
try:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as _s:
        _s.bind(("::1", 0))
except OSError:
    HAS_IPV6 = False


class _Collector(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


class ExpectedErrors:
    """The ERROR records of the ``reactio`` logger during a test that expects some."""

    def __init__(self, collector: _Collector):
        self._collector = collector

    @property
    def messages(self) -> list[str]:
        return [r.getMessage() for r in self._collector.records]

    def matching(self, text: str) -> list[logging.LogRecord]:
        return [r for r in self._collector.records if text in r.getMessage()]


@pytest.fixture(autouse=True)
def reactio_error_guard(request):
    collector = _Collector()
    logger = logging.getLogger("reactio")
    logger.addHandler(collector)
    request.node._reactio_errors = collector
    yield collector
    logger.removeHandler(collector)
    records, collector.records = collector.records, []   # (they hold tracebacks: let go)
    request.node._reactio_errors = None
    if "expected_errors" not in request.fixturenames and records:
        lines = "\n".join(f"  {r.getMessage()}" for r in records)
        pytest.fail(f"unexpected errors on the reactio logger:\n{lines}")


@pytest.fixture
def expected_errors(request, reactio_error_guard):
    return ExpectedErrors(reactio_error_guard)


@pytest.fixture
def rt():
    runtime = ReactRuntime()
    yield runtime
    runtime.close()


class Completion:
    """A completion callback that records its single result (and fails if called twice)."""

    def __init__(self):
        self.results = []

    def __call__(self, result):
        self.results.append(result)

    @property
    def done(self) -> bool:
        return bool(self.results)

    @property
    def result(self):
        assert len(self.results) == 1, f"completion called {len(self.results)} times"
        return self.results[0]


def pump_until(rt: ReactRuntime, predicate, timeout: float = 5.0, step: float = 0.005):
    """Run the runtime until predicate() is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        rt.process_events(step)


def listen(rt: ReactRuntime, handler, addr="127.0.0.1:0"):
    """Start a listener; returns (listener_id, port)."""
    done = Completion()
    rt.cmd_sender.send_listen(addr, handler, Deferred.IMMEDIATE, done)
    pump_until(rt, lambda: done.done)
    lid = done.result
    assert isinstance(lid, reactio.ReactorID), lid
    return lid, rt.local_address(lid)[1]


def listen_factory(rt: ReactRuntime, factory, recv_buffer_min_size=4096, addr="127.0.0.1:0",
                   **options):
    return listen(rt, DefaultTcpListenerHandler(lambda count, param: factory(), recv_buffer_min_size,
                                                None, **options), addr)


def connect(rt: ReactRuntime, port: int, reactor, recv_buffer_min_size=4096, host="127.0.0.1",
            **options):
    done = Completion()
    rt.cmd_sender.send_connect((host, port), recv_buffer_min_size, reactor, Deferred.IMMEDIATE,
                               done, **options)
    pump_until(rt, lambda: done.done)
    return done.result


def frame(body: bytes, stamp: int = 0) -> bytes:
    """reactio's wire format (u16 LE body length, i64 LE timestamp, body), as the examples
    encode it."""
    return encode_message(body, stamp)


class EchoReactor(examples.EchoReactor):
    """Echoes every reactio frame back; records what it saw."""

    def __init__(self):
        self.frames = []
        self.closed = []
        self.connected_from = "never"

    def on_connected(self, ctx, listener_id):
        self.connected_from = listener_id

    def on_frame(self, msg, ctx):
        self.frames.append(bytes(msg))
        super().on_frame(msg, ctx)

    def on_close(self, reactor_id, cmd_sender):
        self.closed.append((reactor_id, self.close_error))


class SinkReactor(reactio.Reactor):
    """Reads and discards every byte; keeps its close error as ``err`` when it closes."""

    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        return reactio.DropMsgSize(len(buf))

    def on_close(self, reactor_id, cmd_sender):
        self.err = self.close_error


def raw_client(port: int, host="127.0.0.1") -> socket.socket:
    s = socket.create_connection((host, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact_nb(rt: ReactRuntime, sock: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    """Read n bytes from a peer socket while pumping the runtime (no deadlock)."""
    sock.setblocking(False)
    out = bytearray()

    def got():
        try:
            chunk = sock.recv(n - len(out))
        except BlockingIOError:
            return False
        if not chunk:
            raise AssertionError(f"peer closed after {len(out)} of {n} bytes")
        out.extend(chunk)
        return len(out) >= n

    pump_until(rt, got, timeout)
    return bytes(out)


@contextlib.contextmanager
def full_backlog_port():
    """The port of a listener that never accepts and whose backlog is full: the kernel drops
    SYNs to it, so a connect can only end by its timeout."""
    srv = socket.socket()
    fillers = []
    try:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        for _ in range(8):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", port))
            fillers.append(f)
        time.sleep(0.1)
        yield port
    finally:
        for f in fillers:
            f.close()
        srv.close()
