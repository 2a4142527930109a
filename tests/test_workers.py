"""Many cores: reuse_port=True listeners, and reactio.workers.run (pre-forked workers).

The workers tests run a small server script in its own process group (session): the test
kills the whole group in a finally, so no worker outlives a test, whatever happens.  They are
Linux-only (fork + SO_REUSEPORT + /proc); the reuse_port refusal runs everywhere.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from reactio import DefaultTcpListenerHandler, workers

from support.env import LINUX
from support.reactors import EchoReactor
from support.runtime import listen, pump_until
from support.sockets import raw_client, recv_exact_nb
from support.subproc import child_env
from support.wire import frame

pytestmark = pytest.mark.timeout(120)

linux_only = pytest.mark.skipif(not LINUX, reason="reactio.workers needs fork() and "
                                "SO_REUSEPORT, and these tests read /proc: Linux only")


# ----------------------------------------------------------------------------- reuse_port

def test_reuse_port_is_refused_where_the_platform_lacks_it(monkeypatch):
    """On Windows (no SO_REUSEPORT) the handler refuses reuse_port=True when it is made, not
    later on the runtime's thread."""
    if hasattr(socket, "SO_REUSEPORT"):
        monkeypatch.delattr(socket, "SO_REUSEPORT")     # what Windows looks like
    with pytest.raises(ValueError, match="SO_REUSEPORT"):
        DefaultTcpListenerHandler(lambda n, p: EchoReactor(), reuse_port=True)
    DefaultTcpListenerHandler(lambda n, p: EchoReactor(), reuse_port=False)   # fine
    with pytest.raises(NotImplementedError, match="fork"):
        workers.run(lambda rt: None, workers=1)


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
def test_reuse_port_listeners_share_an_address(rt):
    """Two reuse_port listeners bind one port (one without reuse_port cannot), and both
    serve connections."""
    served: Dict[int, int] = {0: 0, 1: 0}

    def factory(which: int):
        def make(count, param):
            served[which] += 1
            return EchoReactor()
        return make

    lid0, port = listen(rt, DefaultTcpListenerHandler(factory(0), reuse_port=True))
    lid1, port1 = listen(rt, DefaultTcpListenerHandler(factory(1), reuse_port=True),
                         ("127.0.0.1", port))
    assert port1 == port and lid1 != lid0
    failed: List[object] = []
    rt.cmd_sender.send_listen(("127.0.0.1", port), DefaultTcpListenerHandler(factory(0)),
                              None, failed.append)
    pump_until(rt, lambda: bool(failed))
    assert isinstance(failed[0], OSError), failed      # EADDRINUSE: it did not ask to share
    clients = []
    try:
        for i in range(40):     # the kernel hashes each connection's 4-tuple onto a listener
            c = raw_client(port)
            clients.append(c)
            c.sendall(frame(b"hi", i))
            assert recv_exact_nb(rt, c, len(frame(b"hi", i))) == frame(b"hi", i)
        assert served[0] + served[1] == 40
        assert served[0] > 0 and served[1] > 0, served  # all 40 on one: p = 2**-39
    finally:
        for c in clients:
            c.close()


def test_workers_run_checks_its_arguments():
    with pytest.raises(TypeError):
        workers.run("setup", workers=1)                 # type: ignore[arg-type]
    if not (hasattr(os, "fork") and hasattr(socket, "SO_REUSEPORT")):
        return
    with pytest.raises(ValueError):
        workers.run(lambda rt: None, workers=0)
    with pytest.raises(ValueError):
        workers.run(lambda rt: None, workers=1, backoff=2, max_backoff=1)
    errors: List[BaseException] = []

    def in_thread() -> None:
        try:
            workers.run(lambda rt: None, workers=1)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert isinstance(errors[0], RuntimeError) and "main thread" in str(errors[0])
    assert workers.current_worker() is None


# ----------------------------------------------------------------------------- workers

SERVER = textwrap.dedent('''
    import os, sys, logging
    from reactio import (DefaultTcpListenerHandler, DropMsgSize, ExpectMsgSize, Reactor,
                        ReactorID, workers)

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    PORT = int(sys.argv[1])
    NWORKERS = int(sys.argv[2])
    OPTIONS = eval(sys.argv[3]) if len(sys.argv) > 3 else {}
    CRASH_AT_SETUP = os.environ.get("CRASH_AT_SETUP") == "1"


    class Lines(Reactor):
        """Echoes lines; 'pid' answers with who serves; 'crash' exits hard; 'end' says
        that everything before it was read (the echoes are queued)."""

        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            data = buf.tobytes()
            n = data.rfind(b"\\n") + 1
            if n == 0:
                return ExpectMsgSize(0)
            for line in data[:n].splitlines():
                if line == b"crash":
                    os._exit(3)
                elif line == b"pid":
                    w = workers.current_worker()
                    ctx.send_or_que(b"%d %d %d\\n" % (os.getpid(), w.index, w.restarts))
                elif line == b"end":
                    os.write(1, b"got end, queued %d\\n" % ctx.send_queue_size)
                else:
                    ctx.send_or_que(line + b"\\n")
            return DropMsgSize(n)


    def setup(rt):
        if CRASH_AT_SETUP:
            os._exit(1)
        w = workers.current_worker()

        def listening(result):
            if not isinstance(result, ReactorID):
                print("listen failed", result, flush=True)
                os._exit(2)
            # one write(2) per line: the workers share the parent's stdout pipe
            os.write(1, b"ready %d %d %d\\n" % (w.index, w.restarts, os.getpid()))

        handler = DefaultTcpListenerHandler(lambda n, p: Lines(), 4096, reuse_port=True)
        rt.cmd_sender.send_listen(("127.0.0.1", PORT), handler, None, listening)


    try:
        workers.run(setup, workers=NWORKERS, **OPTIONS)
    except workers.WorkersCrashedError as exc:
        print("gave up:", exc, flush=True)
        sys.exit(7)
    print("parent: stopped", flush=True)
''')


class Server:
    """The server script in its own session, with its output read by threads."""

    def __init__(self, tmp_path: Path, nworkers: int, options: str = "{}",
                 env: Optional[Dict[str, str]] = None) -> None:
        self.reserved = workers.reserve_port()          # holds the port for the workers
        self.port = self.reserved.getsockname()[1]
        script = tmp_path / "server.py"
        script.write_text(SERVER)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(self.port), str(nworkers), options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env=dict(child_env(), **(env or {})))
        self.out: List[str] = []
        self.err: List[str] = []
        self._cond = threading.Condition()
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    def _pump(self, stream, sink: List[str]) -> None:
        for line in stream:
            with self._cond:
                sink.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            sink.append("<eof>")
            self._cond.notify_all()

    def wait_for(self, predicate, what: str, timeout: float = 60.0) -> None:
        with self._cond:
            ok = self._cond.wait_for(predicate, timeout)
        assert ok, f"{what}: not seen in {timeout} s\nstdout: {self.out}\nstderr: {self.err}"

    def ready(self) -> List[str]:
        return [line for line in self.out if line.startswith("ready ")]

    def kill_group(self) -> None:
        """SIGKILL the parent and every worker (one session, one process group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(10)
        self.reserved.close()

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def children(self) -> List[int]:
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return [int(x) for x in f.read().split()]


def ask(port: int, line: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(line + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def wait_group_gone(server: Server, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while server.group_alive():
        assert time.monotonic() < deadline, "a worker outlived its parent"
        time.sleep(0.02)


@linux_only
def test_a_crashed_worker_is_restarted_and_sigint_stops_all(tmp_path):
    """A worker that calls os._exit(3) is logged and restarted; the service keeps answering;
    both workers take connections; SIGINT to the parent stops everything, exit status 0."""
    server = Server(tmp_path, 2, "{'backoff': 0.05}")
    try:
        server.wait_for(lambda: len(server.ready()) == 2, "two workers listening")
        pids = {line.split()[3] for line in server.ready()}
        seen = set()
        for _ in range(40):
            seen.add(ask(server.port, b"pid").split()[0].decode())
        assert seen == pids, (seen, pids)           # both workers serve (p of not: 2**-39)

        try:
            crash_answer = ask(server.port, b"crash")
        except ConnectionResetError:
            crash_answer = b""
        assert crash_answer == b""                  # the worker died mid-connection
        server.wait_for(lambda: any("exited with status 3; restarting" in line
                                    for line in server.err), "the crash in the log")
        server.wait_for(lambda: len(server.ready()) == 3, "the restarted worker")
        restarted = server.ready()[2].split()
        assert restarted[2] == "1"                  # restarts of that slot: 1
        answers = {ask(server.port, b"pid").split()[0].decode() for _ in range(40)}
        assert restarted[3] in answers and len(answers) == 2
        assert len(server.children()) == 2

        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(30) == 0, server.err
        server.wait_for(lambda: "<eof>" in server.out, "the parent's output")
        assert "parent: stopped" in server.out
        wait_group_gone(server)
    finally:
        server.kill_group()


@linux_only
def test_graceful_stop_flushes_bytes_in_flight(tmp_path):
    """The client sends 8 MB of lines without reading; its worker reads them all and queues
    the echoes (more than the socket buffers hold).  SIGTERM to the parent then: the client
    still receives every echo, in order, and then EOF; every process exits 0."""
    server = Server(tmp_path, 1)
    client = None
    try:
        server.wait_for(lambda: len(server.ready()) == 1, "the worker listening")
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)   # (before connect)
        client.settimeout(30)
        client.connect(("127.0.0.1", server.port))
        # 8 MB: more than the kernel buffers take (the worker's send buffer grows up to
        # tcp_wmem's 4 MB), less than the worker's send queue limit (16 MiB)
        lines = b"".join(b"%07d %s\n" % (i, b"x" * 90) for i in range(80000))
        sender = threading.Thread(target=client.sendall, args=(lines + b"end\n",))
        sender.start()
        server.wait_for(lambda: any(line.startswith("got end") for line in server.out),
                        "the worker read everything")
        sender.join()
        queued = int([line for line in server.out if line.startswith("got end")][0].split()[-1])
        assert queued > 0                           # bytes really are in flight in the worker
        server.proc.send_signal(signal.SIGTERM)
        got = bytearray()
        while True:
            chunk = client.recv(1 << 20)
            if not chunk:
                break                               # EOF after the last echo
            got += chunk
        assert len(got) == len(lines) and bytes(got) == lines
        assert server.proc.wait(30) == 0, server.err
        assert "parent: stopped" in server.out
        wait_group_gone(server)
    finally:
        if client is not None:
            client.close()
        server.kill_group()


@linux_only
def test_no_fd_leak_across_100_worker_restarts(tmp_path):
    """Workers that crash at once, 100+ times: the parent's descriptors stay the same and at
    most `workers` children exist at any time; then it gives up when told to."""
    server = Server(tmp_path, 2, "{'backoff': 0, 'max_backoff': 0, 'max_restarts': 120, "
                                 "'restart_window': 600}", env={"CRASH_AT_SETUP": "1"})
    try:
        def restarts() -> int:
            return sum(1 for line in server.err if "restarting it in" in line)

        server.wait_for(lambda: restarts() >= 10, "10 restarts")
        fds_early = sorted(os.listdir(f"/proc/{server.proc.pid}/fd"))
        most_children = 0
        while restarts() < 110:
            try:
                most_children = max(most_children, len(server.children()))
            except FileNotFoundError:
                break                               # it already gave up (120 crashes)
            time.sleep(0.002)
        fds_late = sorted(os.listdir(f"/proc/{server.proc.pid}/fd"))
        assert fds_late == fds_early
        assert most_children <= 2
        # 121 crashes in the window: more than max_restarts, so the parent gives up
        assert server.proc.wait(60) == 7, server.err[-5:]
        assert any(line.startswith("gave up:") for line in server.out)
        assert any("giving up" in line for line in server.err)
        wait_group_gone(server)
    finally:
        server.kill_group()


@linux_only
def test_workers_that_keep_crashing_make_the_parent_raise(tmp_path):
    server = Server(tmp_path, 2, "{'backoff': 0.01, 'max_restarts': 3}",
                    env={"CRASH_AT_SETUP": "1"})
    try:
        assert server.proc.wait(60) == 7
        server.wait_for(lambda: "<eof>" in server.out, "the parent's output")
        assert sum(1 for line in server.err if "restarting it in" in line) == 3
        wait_group_gone(server)
    finally:
        server.kill_group()
