"""SimpleIoReactor / SimpleIoListener / SimpleIoService / SimpleIoRuntime.

Ported from reactio's tests/test_io_reactor.rs (test_io_reactor, and test_io_service with real
assertions), plus the semantics reactio gets wrong: a handler returning 0 waits for more bytes,
a user command without a handler completes with an error, and a service never mixes the bytes
of two sockets.
"""
from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

import reactio
from reactio import (CommandNotHandledError, Deferred, ExpectMsgSize, MessageResultError,
                     ReactorID, SimpleIoListener, SimpleIoReactor, SimpleIoRuntime,
                     SimpleIoService, ThreadedReactorMgr)

pytestmark = pytest.mark.timeout(20)


# ----------------------------------------------------------------------------- helpers

def run_until_idle(rt, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while rt.process_events(0.01):
        assert time.monotonic() < deadline, "runtime did not become idle"


def pump_until(rt, predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        rt.process_events(0.005)


def start_listener(rt, handler) -> tuple[ReactorID, int]:
    results = []
    rt.cmd_sender.send_listen("127.0.0.1:0", handler, Deferred.IMMEDIATE, results.append)
    pump_until(rt, lambda: results)
    lid = results[0]
    assert isinstance(lid, ReactorID), lid
    return lid, rt.local_address(lid)[1]


@contextlib.contextmanager
def one_client(on_sock_msg):
    """A SimpleIoRuntime (run on this thread) whose listener serves ``on_sock_msg``, and one
    plain client socket connected to it: yields (runtime, socket)."""
    with SimpleIoRuntime() as rt:
        lid, port = start_listener(rt, SimpleIoListener(64, lambda n: SimpleIoReactor(
            on_sock_msg=on_sock_msg)))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            yield rt, s


def line_echo(buf, ctx, app_data) -> int:
    """Echo one complete line; 0 (wait for more bytes) while the line is incomplete."""
    end = bytes(buf).find(b"\n")
    if end < 0:
        return 0
    ctx.send_or_que(buf[:end + 1])
    return end + 1


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Blocking read of n bytes (the runtime must run on another thread)."""
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, f"peer closed after {len(out)} of {n} bytes"
        out += chunk
    return bytes(out)


def recv_pumping(rt, sock: socket.socket, n: int) -> bytes:
    """Read n bytes while running ``rt`` on this thread."""
    sock.setblocking(False)
    out = bytearray()

    def got_all():
        try:
            chunk = sock.recv(n - len(out))
        except BlockingIOError:
            return False
        assert chunk, f"peer closed after {len(out)} of {n} bytes"
        out.extend(chunk)
        return len(out) >= n
    pump_until(rt, got_all)
    return bytes(out)


# ----------------------------------------------------------------------------- reactio's tests

def test_io_reactor(expected_errors):
    """reactio's test_io_reactor: the server closes its listener on connect and echoes once;
    the client writes "test msgsend" through acquire_send() and fails on the echo."""
    rt = SimpleIoRuntime()
    assert SimpleIoRuntime is reactio.ReactRuntime
    log = {"server_got": [], "client_got": [], "closed": []}

    def on_server_connected(ctx, listener_id, app_data):
        ctx.cmd_sender.send_close(listener_id)     # one connection per listener

    def make_server_sock_msg():
        count_echos = 0

        def on_sock_msg(buf, ctx, app_data):
            nonlocal count_echos
            if count_echos >= 1:
                raise ConnectionAbortedError("Reached max echo: 1")
            app_data["server_got"].append(bytes(buf))
            ctx.send_or_que(buf)                    # echo
            count_echos += 1
            return len(buf)
        return on_sock_msg

    def on_closed(reactor_id, cmd_sender, app_data):
        app_data["closed"].append(reactor_id)

    def on_client_connected(ctx, listener_id, app_data):
        assert listener_id is None
        with ctx.acquire_send() as sender:         # sends on leaving the block
            sender.write(b"test ")
            sender.write(b"msgsend")
            assert sender.count_written() == 12
            assert sender.get_written() == b"test msgsend"

    def on_client_sock_msg(buf, ctx, app_data):
        app_data["client_got"].append(bytes(buf))
        raise ConnectionAbortedError("Client disconnect on recv response.")

    listener = SimpleIoListener(
        1024, lambda count: SimpleIoReactor(log, on_server_connected, on_closed,
                                            make_server_sock_msg()))
    lid, port = start_listener(rt, listener)
    assert rt.count_reactors() == 1
    client = SimpleIoReactor(log, on_client_connected, on_closed, on_client_sock_msg)
    done = []
    rt.cmd_sender.send_connect(f"127.0.0.1:{port}", 1024, client, Deferred.IMMEDIATE, done.append)
    run_until_idle(rt)

    assert isinstance(done[0], ReactorID)
    assert log["server_got"] == [b"test msgsend"]
    assert log["client_got"] == [b"test msgsend"]
    assert len(log["closed"]) == 2 and done[0] in log["closed"]
    assert isinstance(client.close_error, ConnectionAbortedError)
    assert rt.count_reactors() == 0
    assert rt.count_deferred_queue() == 0
    assert listener.count == 1
    assert "Client disconnect on recv response" in str(client.close_error)
    assert expected_errors.matching("ConnectionAbortedError")     # the core logs the failure
    rt.close()


def test_io_service():
    """reactio's test_io_service, with the assertions it lacked: three clients each send 12
    bytes and close on the echo; one service counts connections, bytes and disconnections."""
    class ServiceData:
        count_recv = 0
        new_connections = 0
        disconnections = 0

    def on_connected(ctx, listener_id, data):
        data.new_connections += 1

    def on_closed(reactor_id, cmd_sender, data):
        data.disconnections += 1

    def on_sock_msg(buf, ctx, data):
        data.count_recv += len(buf)
        ctx.send_or_que(buf)
        return len(buf)

    service = SimpleIoService(1024, ServiceData(), on_connected, on_closed, on_sock_msg)
    client_got = []

    def on_client_connected(ctx, listener_id, app_data):
        ctx.send_or_que(b"test msgsend")

    def on_client_sock_msg(buf, ctx, app_data):
        if len(buf) < 12:
            return 0                            # wait for the whole echo
        client_got.append(bytes(buf))
        ctx.close()
        return len(buf)

    with SimpleIoRuntime() as rt:
        lid, port = start_listener(rt, SimpleIoListener.with_io_service(service))
        for _ in range(3):
            rt.cmd_sender.send_connect(("127.0.0.1", port), 1024,
                                       SimpleIoReactor(None, on_client_connected, None,
                                                       on_client_sock_msg))
        pump_until(rt, lambda: service.apply_app_data(lambda d: d.disconnections) == 3)
        data = service.apply_app_data(lambda d: (d.count_recv, d.new_connections,
                                                 d.disconnections))
        assert data == (36, 3, 3)
        assert client_got == [b"test msgsend"] * 3
        assert service.count_streams() == 0
        rt.cmd_sender.send_close(lid)           # reactio's test never closed its listener
        run_until_idle(rt)
        assert rt.count_reactors() == 0


# ----------------------------------------------------------------------------- on_sock_msg results

def test_returning_zero_waits_for_more_bytes():
    """reactio asserts (panics) on 0; here 0 means "call me again when more bytes arrive"."""
    calls = []

    def on_sock_msg(buf, ctx, app_data):
        calls.append(bytes(buf))
        return line_echo(buf, ctx, app_data)

    with one_client(on_sock_msg) as (rt, s):
        s.sendall(b"hel")
        pump_until(rt, lambda: calls == [b"hel"])
        s.sendall(b"lo\nwor")
        pump_until(rt, lambda: len(calls) >= 3)
        s.sendall(b"ld\n")
        assert recv_pumping(rt, s, 12) == b"hello\nworld\n"
        # "hel" (wait), "hello\nwor" (line 1), "wor" (rest at once: wait), "world\n" (line 2)
        assert calls == [b"hel", b"hello\nwor", b"wor", b"world\n"]


def test_partial_consume_is_called_again_with_the_rest():
    seen = []

    def one_byte_at_a_time(buf, ctx, app_data):
        seen.append(bytes(buf))
        return 1

    with one_client(one_byte_at_a_time) as (rt, s):
        s.sendall(b"abc")
        pump_until(rt, lambda: seen and seen[-1] == b"c")
        assert seen == [b"abc", b"bc", b"c"]


def test_handler_may_return_a_message_result():
    calls = []

    def fixed_8(buf, ctx, app_data):
        calls.append(len(buf))
        if len(buf) < 8:
            return ExpectMsgSize(8)             # not called again before 8 bytes are in
        return 8

    with one_client(fixed_8) as (rt, s):
        s.sendall(b"1234")
        pump_until(rt, lambda: calls == [4])
        s.sendall(b"56")
        events = rt.count_sock_events()
        pump_until(rt, lambda: rt.count_sock_events() > events)   # the 2 bytes were read
        assert calls == [4]
        s.sendall(b"78")
        pump_until(rt, lambda: len(calls) == 2)
        assert calls == [4, 8]


@pytest.mark.parametrize("bad, error", [(None, TypeError), (True, TypeError),
                                        (99, MessageResultError), (-1, MessageResultError)])
def test_bad_handler_result_closes_only_that_stream(bad, error, expected_errors):
    closed = []
    reactors = []

    def make(n):
        returns_bad = n == 1

        def on_sock_msg(buf, ctx, app_data):
            if returns_bad:
                return bad
            return line_echo(buf, ctx, app_data)
        reactors.append(SimpleIoReactor(n, None, lambda rid, cs, app: closed.append(app),
                                        on_sock_msg))
        return reactors[-1]

    with SimpleIoRuntime() as rt:
        lid, port = start_listener(rt, SimpleIoListener(64, make))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as bad_client, \
                socket.create_connection(("127.0.0.1", port), timeout=5) as good_client:
            pump_until(rt, lambda: rt.count_streams() == 2)
            bad_client.sendall(b"oops\n")
            pump_until(rt, lambda: closed == [1])
            assert isinstance(reactors[0].close_error, error), reactors[0].close_error
            good_client.sendall(b"fine\n")
            assert recv_pumping(rt, good_client, 5) == b"fine\n"
            assert rt.count_streams() == 1
    assert expected_errors.messages


# ----------------------------------------------------------------------------- commands

def test_user_command_without_handler_completes_with_error():
    """reactio's SimpleIoReactor panics on a user command; ours completes it with
    CommandNotHandledError and the stream stays open."""
    server_ids = []
    handled = []

    def on_connected(ctx, listener_id, app_data):
        server_ids.append(ctx.reactor_id)

    with SimpleIoRuntime() as rt:
        lid, port = start_listener(rt, SimpleIoListener(64, lambda n: SimpleIoReactor(
            None, on_connected, None, line_echo) if n == 1 else SimpleIoReactor(
            "app", on_connected, None, line_echo,
            on_command=lambda cmd, ctx, app: handled.append((cmd, ctx.reactor_id, app)))))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s1, \
                socket.create_connection(("127.0.0.1", port), timeout=5) as s2:
            pump_until(rt, lambda: len(server_ids) == 2)
            results = []
            rt.cmd_sender.send_user_cmd(server_ids[0], "ping", None, results.append)
            rt.cmd_sender.send_user_cmd(server_ids[1], "ping", None, results.append)
            pump_until(rt, lambda: len(results) == 2)
            assert isinstance(results[0], CommandNotHandledError)
            assert "no on_command handler" in str(results[0])
            assert results[1] == server_ids[1]
            assert handled == [("ping", server_ids[1], "app")]
            assert rt.count_streams() == 2      # the unhandled command closed nothing
            for s in (s1, s2):
                s.sendall(b"still open\n")
                assert recv_pumping(rt, s, 11) == b"still open\n"


# ----------------------------------------------------------------------------- SimpleIoService

def test_service_50_clients_each_get_only_their_own_echoes():
    """One service, 50 sockets sending interleaved fragments of lines: each line reaches the
    handler whole and with its own socket's ctx, and each client reads back exactly its bytes."""
    nclients, nlines = 50, 6

    class Data:
        def __init__(self):
            self.owner = {}         # reactor_id -> client tag (from its first line)
            self.mixed = []         # lines that reached the handler of another socket
            self.lines = 0
            self.connected = 0
            self.closed = 0

    def on_connected(ctx, listener_id, data):
        data.connected += 1

    def on_closed(reactor_id, cmd_sender, data):
        data.closed += 1

    def on_sock_msg(buf, ctx, data):
        end = bytes(buf).find(b"\n")
        if end < 0:
            return 0
        line = bytes(buf[:end])
        tag = line.split(b" ")[0]
        owner = data.owner.setdefault(ctx.reactor_id, tag)
        if owner != tag:
            data.mixed.append((owner, line))
        data.lines += 1
        ctx.send_or_que(buf[:end + 1])
        return end + 1

    service = SimpleIoService(16, Data(), on_connected, on_closed, on_sock_msg)
    streams = {i: b"".join(b"c%02d line-%d %s\n" % (i, k, b"x" * (i % 7)) for k in range(nlines))
               for i in range(nclients)}
    with ThreadedReactorMgr(1) as mgr:
        ready = []
        mgr.get_cmd_sender(0).send_listen("127.0.0.1:0", SimpleIoListener.with_io_service(service),
                                          None, ready.append)
        deadline = time.monotonic() + 5
        while not ready:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        lid = ready[0]
        assert isinstance(lid, ReactorID), lid
        # local_address only reads the socket: safe enough from the test thread
        port = mgr.get_runtime(0).local_address(lid)[1]
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10)
                 for _ in range(nclients)]
        try:
            for s in socks:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # round-robin fragments of 5 bytes: partial lines of all sockets are in flight
            offsets = [0] * nclients
            while any(offsets[i] < len(streams[i]) for i in range(nclients)):
                for i, s in enumerate(socks):
                    chunk = streams[i][offsets[i]:offsets[i] + 5]
                    if chunk:
                        s.sendall(chunk)
                        offsets[i] += len(chunk)
            for i, s in enumerate(socks):
                assert recv_exactly(s, len(streams[i])) == streams[i], f"client {i}"
        finally:
            for s in socks:
                s.close()
        deadline = time.monotonic() + 5
        while service.apply_app_data(lambda d: d.closed) < nclients:
            assert time.monotonic() < deadline, "not every stream closed"
            time.sleep(0.005)
        data = service.apply_app_data(lambda d: (d.connected, d.closed, d.lines, list(d.mixed),
                                                 sorted(d.owner.values())))
        assert data[:4] == (nclients, nclients, nclients * nlines, [])
        assert data[4] == sorted(b"c%02d" % i for i in range(nclients))
        assert service.count_streams() == 0


def test_service_reactor_for_outbound_connections():
    got = []

    def on_sock_msg(buf, ctx, data):
        data.append((ctx.reactor_id, bytes(buf)))
        ctx.close()
        return len(buf)

    service = SimpleIoService(64, got, lambda ctx, lid, data: ctx.send_or_que(b"hi"), None,
                              on_sock_msg)
    with SimpleIoRuntime() as rt:
        lid, port = start_listener(rt, SimpleIoListener(64, lambda n: SimpleIoReactor(
            on_sock_msg=lambda buf, ctx, app: (ctx.send_or_que(buf), len(buf))[1])))
        ids = []
        for _ in range(2):
            rt.cmd_sender.send_connect(("127.0.0.1", port), 64, service.new_reactor(), None,
                                       ids.append)
        pump_until(rt, lambda: len(got) == 2)
        assert sorted(got, key=str) == sorted(((i, b"hi") for i in ids), key=str)
        rt.cmd_sender.send_close(lid)
        run_until_idle(rt)


def test_apply_app_data_from_another_thread_is_serialized():
    """Handlers and apply_app_data run under the service's lock: a reader on another thread
    never sees a half-done update."""
    class Pair:
        a = 0
        b = 0

    def on_sock_msg(buf, ctx, data):
        for _ in range(len(buf)):
            data.a += 1
            time.sleep(0)           # invite a thread switch between the two updates
            data.b += 1
        return len(buf)

    service = SimpleIoService(64, Pair(), None, None, on_sock_msg)
    torn = []
    with ThreadedReactorMgr(1) as mgr:
        ready = []
        mgr.get_cmd_sender(0).send_listen("127.0.0.1:0", SimpleIoListener.with_io_service(service),
                                          None, ready.append)
        while not ready:
            time.sleep(0.001)
        port = mgr.get_runtime(0).local_address(ready[0])[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"x" * 2000)
            deadline = time.monotonic() + 10
            while True:
                a, b = service.apply_app_data(lambda d: (d.a, d.b))
                if a != b:
                    torn.append((a, b))
                if b == 2000:
                    break
                assert time.monotonic() < deadline
    assert torn == []


def test_constructors_validate():
    with pytest.raises(TypeError):
        SimpleIoReactor(None)
    with pytest.raises(TypeError):
        SimpleIoService(64, None)
    with pytest.raises(ValueError):
        SimpleIoService(0, None, on_sock_msg=line_echo)
    rejected = threading.Event()

    def creator(count):
        rejected.set()
        return None                             # refuse the connection

    with SimpleIoRuntime() as rt:
        lid, port = start_listener(rt, SimpleIoListener(64, creator))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            pump_until(rt, rejected.is_set)
            s.settimeout(5)
            assert s.recv(10) == b""            # closed by the runtime
        assert rt.count_streams() == 0


def test_service_counts_streams_of_two_runtimes_apart():
    """Issue 16: a ReactorID is unique within one runtime only.  One service serving a stream
    on each of two runtimes (both streams get the same id: the runtimes allocate alike) must
    count two streams, and still one after either of them closes."""
    connected, closed = [], []
    service = SimpleIoService(
        64, None, lambda ctx, listener_id, data: connected.append(ctx.reactor_id),
        lambda reactor_id, cmd_sender, data: closed.append(reactor_id),
        lambda buf, ctx, data: len(buf))
    with SimpleIoRuntime() as rt_a, SimpleIoRuntime() as rt_b:
        _, port_a = start_listener(rt_a, SimpleIoListener.with_io_service(service))
        _, port_b = start_listener(rt_b, SimpleIoListener.with_io_service(service))
        client_a = socket.create_connection(("127.0.0.1", port_a), timeout=5)
        with socket.create_connection(("127.0.0.1", port_b), timeout=5):
            def pump_both(predicate):
                def step():
                    rt_b.process_events(0.005)
                    return predicate()
                pump_until(rt_a, step)
            pump_both(lambda: len(connected) == 2)
            assert connected[0] == connected[1]         # the premise: equal ids
            assert service.count_streams() == 2
            client_a.close()
            pump_both(lambda: closed)
            assert service.count_streams() == 1         # the stream on rt_b is still open
