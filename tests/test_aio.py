"""reactio.aio: a runtime driven by an asyncio loop (the default loop and uvloop), and the
awaitable commands.

Every test runs on both loops (uvloop is skipped, with the reason, where it is not installed)
and, on Linux, in both ways of attaching: the runtime's descriptor watched by the loop
("fd"), and a helper thread in run_forever() ("thread": what Windows always uses).  Nothing
here measures time: a wake-up that does not happen shows as a test that never finishes, which
asyncio.wait_for turns into a failure (and pytest-timeout bounds every test anyway).
"""
from __future__ import annotations

import asyncio
import gc
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Coroutine, List, Optional

import pytest

import reactio
from reactio import (CommandNotHandledError, DefaultTcpListenerHandler, Deferred, DropMsgSize,
                     ReactorID, ReactorNotFoundError, ReactRuntime, Reactor, ThreadedReactorMgr,
                     aio, monotonic_ns)

from support.reactors import EchoReactor
from support.runtime import pump_until
from support.sockets import closed_port
from support.wire import frame

pytestmark = pytest.mark.timeout(60)

IOCP = reactio.BACKEND == "iocp"

try:
    import uvloop
except ImportError:             # not on Windows, or not installed (pip install '.[test]')
    uvloop = None


def _uvloop_factory() -> asyncio.AbstractEventLoop:
    assert uvloop is not None
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


LOOPS = [
    pytest.param(asyncio.new_event_loop, id="asyncio"),
    pytest.param(_uvloop_factory, id="uvloop", marks=pytest.mark.skipif(
        uvloop is None, reason="uvloop is not installed (pip install uvloop; not on Windows)")),
]
# thread=None: the descriptor on epoll, the thread on IOCP; thread=True: always the thread
MODES = [pytest.param(None, id="fd" if not IOCP else "auto"),
         pytest.param(True, id="thread", marks=pytest.mark.skipif(
             IOCP, reason="IOCP always attaches with a thread: the 'auto' case covers it"))]


@pytest.fixture(params=LOOPS)
def run(request) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """run(coro): run a coroutine to completion on a new loop of the parametrized kind,
    failing it (instead of hanging) after 30 s."""
    factory = request.param

    def runner(coro):
        loop = factory()
        try:
            return loop.run_until_complete(asyncio.wait_for(coro, 30))
        finally:
            loop.close()

    return runner


@pytest.fixture(params=MODES)
def thread(request) -> Optional[bool]:
    return request.param


async def until(predicate: Callable[[], bool]) -> None:
    """Let the loop run until predicate() holds (bounded by the runner's wait_for)."""
    while not predicate():
        await asyncio.sleep(0.001)


class Counter(EchoReactor):
    """An echo reactor that keeps what it saw, with its commands and the thread of each
    callback."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: List[Any] = []
        self.threads: List[str] = []

    def on_command(self, cmd, ctx):
        self.threads.append(threading.current_thread().name)
        if cmd == "fail":
            raise ValueError("on_command failed on purpose")
        self.commands.append(cmd)


class Collector(Reactor):
    """A client: collects what it receives."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.connected = 0
        self.closed = 0

    def on_connected(self, ctx, listener_id):
        self.connected += 1

    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        self.data += buf
        return DropMsgSize(len(buf))

    def on_close(self, reactor_id, cmd_sender):
        self.closed += 1


# ----------------------------------------------------------------------------- attach

def test_attach_detach_while_bytes_flow(run, thread):
    """One stream served before attach (process_events), while attached (the loop), after
    detach (process_events again), and again after a second attach: no byte is lost or
    duplicated, in the order sent."""
    servers: List[Counter] = []
    rt = ReactRuntime()
    peer: Optional[socket.socket] = None
    try:
        done: List[Any] = []
        rt.cmd_sender.send_listen("127.0.0.1:0", DefaultTcpListenerHandler(
            lambda n, p: servers.append(Counter()) or servers[-1]), None, done.append)
        pump_until(rt, lambda: bool(done))
        port = rt.local_address(done[0])[1]
        peer = socket.create_connection(("127.0.0.1", port), timeout=5)
        peer.setblocking(False)
        got = bytearray()
        sent = bytearray()

        def exchange_pumped(i: int) -> None:
            msg = frame(b"before/after %d" % i, i)
            sent.extend(msg)
            peer.send(msg)

            def echoed() -> bool:
                try:
                    got.extend(peer.recv(65536))
                except BlockingIOError:
                    pass
                return len(got) == len(sent)

            pump_until(rt, echoed)

        async def exchange_attached(first: int) -> None:
            # (the peer socket is polled, not handed to the loop: on Windows a socket joins
            # one proactor for good, and this test uses two loops)
            with aio.attach(rt, thread=thread) as handle:
                assert handle.attached and handle.threaded == bool(thread or IOCP)
                for i in range(first, first + 50):
                    msg = frame(b"attached %d" % i, i)
                    sent.extend(msg)
                    peer.send(msg)
                    while len(got) < len(sent):
                        try:
                            got.extend(peer.recv(65536))
                        except BlockingIOError:
                            await asyncio.sleep(0.0005)
            assert not handle.attached

        for i in range(5):
            exchange_pumped(i)
        run(exchange_attached(100))
        for i in range(5, 10):
            exchange_pumped(i)
        run(exchange_attached(200))     # attach again, on a new loop
        exchange_pumped(10)
        assert bytes(got) == bytes(sent)
        assert len(servers) == 1 and len(servers[0].frames) == 5 + 50 + 5 + 50 + 1
        assert rt.count_streams() == 1
    finally:
        if peer is not None:
            peer.close()
        rt.close()


def test_reactio_client_and_server_in_one_attached_runtime(run, thread):
    """aio.listen + aio.connect + the reactors' own traffic, all driven by the loop."""
    payload = b"".join(frame(b"x" * (i % 50), i) for i in range(500))

    class Sender(Collector):
        def on_command(self, cmd, ctx):
            ctx.send_or_que(payload)        # a burst: 500 frames echoed back to us

    async def main() -> None:
        with ReactRuntime() as rt, aio.attach(rt, thread=thread):
            server = Counter()
            lid = await aio.listen(rt, "127.0.0.1:0", lambda n, p: server)
            assert isinstance(lid, ReactorID)
            port = rt.local_address(lid)[1]
            client = Sender()
            rid = await aio.connect(rt, ("127.0.0.1", port), client)
            assert client.connected == 1            # on_connected ran before the await returned
            await aio.user_cmd(rt, rid, "send")
            await until(lambda: len(client.data) >= len(payload))
            assert bytes(client.data) == payload
            assert len(server.frames) == 500
            await aio.close(rt, rid)
            await until(lambda: client.closed == 1 and rt.count_streams() == 0)
            await aio.close(rt, lid)
            assert rt.count_reactors() == 0

    run(main())


def test_attach_twice_is_refused_and_detach_is_idempotent(run, thread):
    async def main() -> None:
        with ReactRuntime() as rt:
            h = aio.attach(rt, thread=thread)
            with pytest.raises(RuntimeError, match="already attached"):
                aio.attach(rt, thread=thread)
            h.detach()
            h.detach()
            assert not h.attached
            h2 = aio.attach(rt, thread=thread)      # free again
            h2.detach()
            assert rt.process_events(0) is False    # usable, and idle

    run(main())
    with pytest.raises(TypeError):
        aio.attach(object())                        # type: ignore[arg-type]


def test_attach_needs_a_running_loop_or_a_loop():
    with ReactRuntime() as rt:
        with pytest.raises(RuntimeError):
            aio.attach(rt)                          # no running loop here
        rt.close()
        loop = asyncio.new_event_loop()
        try:
            with pytest.raises(reactio.RuntimeClosedError):
                aio.attach(rt, loop)
        finally:
            loop.close()


def test_commands_from_another_thread_wake_the_attached_runtime(run, thread):
    """No socket event and no timer: only the command's own wake-up can get it run.  The
    completion is awaited from the loop; it would never come if the wake-up were lost."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with ReactRuntime() as rt, aio.attach(rt, thread=thread):
            server = Counter()
            lid = await aio.listen(rt, "127.0.0.1:0", lambda n, p: server)
            rid = await aio.connect(rt, ("127.0.0.1", rt.local_address(lid)[1]), Counter())
            for round_ in range(20):
                await asyncio.sleep(0.002)          # let the loop go to sleep in its poll
                fut: asyncio.Future[Any] = loop.create_future()

                def send() -> None:
                    rt.cmd_sender.send_user_cmd(
                        rid, round_, None,
                        lambda result: loop.call_soon_threadsafe(fut.set_result, result))

                t = threading.Thread(target=send)
                t.start()
                assert await fut == rid
                t.join()
            await aio.close(rt, lid)

    run(main())


def test_idle_attached_runtime_leaves_no_wakeup_pending(run):
    """An idle runtime returns from process_events() without polling; a wake-up left on its
    descriptor (stop(), or a command run before its wake-up was read) must still be read, or
    the loop would spin on a descriptor that stays readable."""
    if IOCP:
        pytest.skip("IOCP has no pollable descriptor (thread mode)")

    async def main() -> None:
        with ReactRuntime() as rt, aio.attach(rt) as h:
            assert not h.threaded
            for _ in range(5):
                await asyncio.sleep(0)
            rt.stop()                               # wakes the descriptor of an idle runtime
            for _ in range(20):
                await asyncio.sleep(0)
            assert select.select([rt.fileno()], [], [], 0)[0] == []
            # a command from another thread, then idle again
            done = threading.Event()
            threading.Thread(target=lambda: rt.cmd_sender.send_user_cmd(
                ReactorID(1, 1), None, None, lambda r: done.set())).start()
            await until(done.is_set)
            for _ in range(20):
                await asyncio.sleep(0)
            assert select.select([rt.fileno()], [], [], 0)[0] == []

    run(main())


def test_deferred_commands_run_in_order_and_never_early(run, thread):
    """Timers of the runtime are the loop's timers while attached."""

    async def main() -> None:
        with ReactRuntime() as rt, aio.attach(rt, thread=thread):
            server = Counter()
            lid = await aio.listen(rt, "127.0.0.1:0", lambda n, p: server)
            client = Counter()
            rid = await aio.connect(rt, ("127.0.0.1", rt.local_address(lid)[1]), client)
            fired: List[tuple] = []
            t0 = monotonic_ns()
            for i, delay in enumerate((0.03, 0.01, 0.02, 0.0, 0.01)):
                due = t0 + int(delay * 1e9)
                rt.cmd_sender.send_user_cmd(rid, (i, due), Deferred.until(due),
                                            lambda r, i=i: fired.append((i, monotonic_ns())))
            await until(lambda: len(fired) == 5)
            assert [i for i, _ in fired] == [3, 1, 4, 2, 0]
            assert [c[0] for c in client.commands] == [3, 1, 4, 2, 0]
            by_index = dict(fired)
            for i, due in client.commands:
                assert by_index[i] >= due, f"command {i} ran early"
            await aio.close(rt, lid)

    run(main())


def test_runtime_closed_while_attached_detaches_with_an_error(run, expected_errors):
    """close() before detach() is the wrong order; the attachment notices at its next timer,
    says so on the reactio logger, and lets go of the runtime (no spinning, no crash)."""
    if IOCP:
        pytest.skip("thread mode: close() from another thread is refused by the runtime")

    async def main() -> None:
        rt = ReactRuntime()
        h = aio.attach(rt)
        lost: List[Any] = []
        rt.cmd_sender.send_user_cmd(ReactorID(1, 1), None, Deferred.after(0.02), lost.append)
        await asyncio.sleep(0.005)      # the loop has a timer for the deferred command now
        rt.close()
        assert isinstance(lost[0], reactio.RuntimeClosedError)
        await until(lambda: not h.attached)
        h.detach()
        assert id(rt) not in aio._attached

    run(main())
    assert expected_errors.matching("closed while attached")


# ----------------------------------------------------------------------------- commands

def test_connect_to_a_dead_port_raises_connection_refused(run, thread):
    async def main() -> None:
        with ReactRuntime() as rt, aio.attach(rt, thread=thread):
            client = Collector()
            with pytest.raises(ConnectionRefusedError):
                await aio.connect(rt, ("127.0.0.1", closed_port()), client)
            assert client.connected == 0 and rt.count_streams() == 0
            with pytest.raises(ValueError):             # refused at the call
                await aio.connect(rt, "127.0.0.1:1", client, recv_buffer_min_size=-1)

    run(main())


def test_listen_errors_are_raised(run, thread):
    async def main() -> None:
        with ReactRuntime() as rt, aio.attach(rt, thread=thread):
            lid = await aio.listen(rt, "127.0.0.1:0", lambda n, p: Counter())
            port = rt.local_address(lid)[1]
            with pytest.raises(OSError):                 # EADDRINUSE (WSAEADDRINUSE)
                await aio.listen(rt, ("127.0.0.1", port), lambda n, p: Counter())
            with pytest.raises(TypeError, match="no options"):
                await aio.listen(rt, "127.0.0.1:0", DefaultTcpListenerHandler(
                    lambda n, p: Counter()), backlog=5)
            await aio.close(rt, lid)
            assert rt.count_reactors() == 0

    run(main())


def test_user_cmd_and_close_raise_what_the_completion_gets(run, thread, expected_errors):
    async def main() -> None:
        with ReactRuntime() as rt, aio.attach(rt, thread=thread):
            server = Counter()
            lid = await aio.listen(rt, "127.0.0.1:0", lambda n, p: server)
            port = rt.local_address(lid)[1]
            client = Counter()
            rid = await aio.connect(rt, ("127.0.0.1", port), client)
            await aio.user_cmd(rt, rid, "hello")
            assert client.commands == ["hello"]
            with pytest.raises(ValueError, match="on purpose"):
                await aio.user_cmd(rt, rid, "fail")       # ... and that closed the reactor
            with pytest.raises(ReactorNotFoundError):
                await aio.user_cmd(rt, rid, "late")
            with pytest.raises(ReactorNotFoundError):
                await aio.close(rt, rid)
            other = await aio.connect(rt, ("127.0.0.1", port), Collector())
            with pytest.raises(CommandNotHandledError):
                await aio.user_cmd(rt, other, "x")
            await aio.close(rt, other, abort=True)
            await aio.close(rt, lid)
            await until(lambda: rt.count_reactors() == 0)

    run(main())
    # the failing on_command closed its reactor, which the runtime logs
    assert expected_errors.matching("callback raised ValueError")


def test_cancelled_awaiters_leave_nothing_orphaned(run, thread):
    """A connect and a listen whose awaiting tasks are cancelled still complete inside the
    runtime, and are then closed; a cancelled user_cmd still reaches on_command."""

    async def main() -> None:
        with ReactRuntime() as rt, aio.attach(rt, thread=thread):
            server = Counter()
            accepted: List[Counter] = []

            def factory(n: int, p: Any) -> Counter:
                accepted.append(Counter())
                return accepted[-1]

            lid = await aio.listen(rt, "127.0.0.1:0", factory)
            port = rt.local_address(lid)[1]
            # deferred, so that the cancellation surely comes before the completion
            client = Counter()
            task = asyncio.ensure_future(aio.connect(
                rt, ("127.0.0.1", port), client, deferred=Deferred.after(0.05)))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: client.connected_from is None)    # it did connect ...
            await until(lambda: len(client.closed) == 1)          # ... and was closed
            await until(lambda: len(accepted) == 1 and len(accepted[0].closed) == 1)
            assert rt.count_streams() == 0

            closed_listens: List[ReactorID] = []

            class Handler(DefaultTcpListenerHandler):
                def on_close_listen(self, reactor_id, cmd_sender):
                    closed_listens.append(reactor_id)

            task2 = asyncio.ensure_future(aio.listen(
                rt, "127.0.0.1:0", Handler(lambda n, p: Counter()),
                deferred=Deferred.after(0.05)))
            await asyncio.sleep(0)
            task2.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task2
            await until(lambda: len(closed_listens) == 1)
            assert rt.count_reactors() == 1                      # only the first listener

            rid = await aio.connect(rt, ("127.0.0.1", port), server)
            task3 = asyncio.ensure_future(aio.user_cmd(rt, rid, "still delivered",
                                                       deferred=Deferred.after(0.02)))
            await asyncio.sleep(0)
            task3.cancel()
            await until(lambda: server.commands == ["still delivered"])
            await aio.close(rt, rid)
            await aio.close(rt, lid)
            await until(lambda: rt.count_reactors() == 0)

    run(main())


def test_a_connect_completing_after_its_loop_closed_is_closed():
    """The awaiting loop is gone (closed) when the connect completes: the stream is closed
    by the completion itself, on the runtime's thread."""
    mgr = ThreadedReactorMgr(1)
    try:
        sender = mgr.get_cmd_sender(0)
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        client = Counter()
        loop = asyncio.new_event_loop()
        task = loop.create_task(aio.connect(sender, ("127.0.0.1", port), client,
                                            deferred=Deferred.after(0.1)))
        loop.run_until_complete(asyncio.sleep(0))       # the command is sent
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()
        deadline = time.monotonic() + 10
        while len(client.closed) < 1:
            assert time.monotonic() < deadline, "the orphaned stream was not closed"
            time.sleep(0.005)
        assert client.connected_from is None
        srv.close()
    finally:
        mgr.stop()
        mgr.join()


def test_awaitables_work_with_a_runtime_on_another_thread(run):
    """A CmdSender instead of a runtime: results come back with call_soon_threadsafe."""

    async def main() -> None:
        with ThreadedReactorMgr(1) as mgr:
            sender = mgr.get_cmd_sender(0)
            server = Counter()
            lid = await aio.listen(sender, "127.0.0.1:0", lambda n, p: server)
            port = await aio.call(sender, lambda: mgr.get_runtime(0).local_address(lid)[1])
            client = Counter()
            rid = await aio.connect(sender, ("127.0.0.1", port), client)
            await aio.user_cmd(sender, rid, "over there")
            assert client.commands == ["over there"]
            assert client.threads == ["reactio-runtime-0"]
            await aio.close(sender, rid)
            await aio.close(sender, lid)

    run(main())
    with pytest.raises(TypeError):
        asyncio.run(aio.close(object(), ReactorID(0, 0)))   # type: ignore[arg-type]


def test_call_runs_on_the_runtimes_thread(run, thread):
    async def main() -> None:
        with ReactRuntime() as rt, aio.attach(rt, thread=thread):
            lid = await aio.listen(rt, "127.0.0.1:0", lambda n, p: Counter())
            where = await aio.call(rt, lambda: threading.current_thread().name)
            expected = "reactio-aio" if thread or IOCP else threading.current_thread().name
            assert where == expected
            port = await aio.call(rt, rt.local_address, lid)
            assert port[0] == "127.0.0.1" and port[1] > 0
            with pytest.raises(ReactorNotFoundError):
                await aio.call(rt, rt.local_address, ReactorID(7, 7))
            await aio.close(rt, lid)

    run(main())


def test_callbacks_run_on_the_loop_thread_when_attached_by_descriptor(run):
    if IOCP:
        pytest.skip("IOCP attaches with a thread")

    async def main() -> None:
        with ReactRuntime() as rt, aio.attach(rt):
            lid = await aio.listen(rt, "127.0.0.1:0", lambda n, p: Counter())
            client = Counter()
            rid = await aio.connect(rt, ("127.0.0.1", rt.local_address(lid)[1]), client)
            await aio.user_cmd(rt, rid, "where")
            assert client.threads == [threading.current_thread().name]
            await aio.close(rt, lid)

    run(main())


def test_no_runtime_leaks_after_attach(run):
    """The module's registry lets go of detached runtimes."""

    async def main() -> None:
        with ReactRuntime() as rt:
            aio.attach(rt).detach()
            assert id(rt) not in aio._attached

    run(main())
    gc.collect()
    assert not aio._attached


# ----------------------------------------------------------------------------- the example

def test_aio_status_example(tmp_path):
    """python -m reactio.examples.aio_status: a reactio echo server and an asyncio HTTP status
    page in one process; echo through it, then read the counters on the page."""
    proc = subprocess.Popen([sys.executable, "-m", "reactio.examples.aio_status",
                             "--echo-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ports = {}
        while len(ports) < 2:
            line = proc.stdout.readline()
            assert line, f"the example exited early: {proc.stderr.read()}"
            if line.startswith("echo server on "):
                ports["echo"] = int(line.rsplit(":", 1)[1])
            elif line.startswith("status page on http://"):
                ports["http"] = int(line.strip().rstrip("/").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", ports["echo"]), timeout=10) as c:
            c.sendall(b"hello\nworld\nthree\n")
            got = b""
            while got.count(b"\n") < 3:
                chunk = c.recv(4096)
                assert chunk
                got += chunk
            assert got == b"hello\nworld\nthree\n"
            page = http_get(ports["http"], "/")
        assert page.startswith(b"HTTP/1.0 200 OK\r\n")
        head, body = page.split(b"\r\n\r\n", 1)
        assert b"Content-Length: %d" % len(body) in head
        fields = dict(line.split(": ", 1) for line in body.decode().splitlines() if ": " in line)
        assert fields["streams"] == "1"
        assert fields["messages echoed"] == "3"
        assert fields["bytes echoed"] == "18"
        assert http_get(ports["http"], "/nothing").startswith(b"HTTP/1.0 404")
    finally:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    if sys.platform != "win32":
        assert proc.returncode == 0, err
        assert "stopped" in out


def http_get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
