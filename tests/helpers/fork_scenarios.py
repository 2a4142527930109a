"""Issue 10, defect 9 (fork), run as a subprocess so that forking never involves pytest's own
process:

    python fork_scenarios.py resolver | close_inherited

resolver         the parent resolves "localhost:PORT" (a connect by name), forks; the child
                 makes a NEW runtime and connects to "localhost:PORT".  A child that has not
                 finished after 5 s reports {"connect": "hang"}; one that does not even report
                 is killed after 10 s.
close_inherited  the parent runs a listener and an echo stream, forks; the child calls
                 process_events() on the inherited runtime (expected: RuntimeError naming
                 fork), then close() (expected: allowed, no callback runs), and exits; the
                 parent then checks that its old stream still echoes and its listener still
                 accepts a stream that echoes.

Prints one JSON line with what each side saw; exits 0 (the test judges the report).
"""
import json
import os
import select
import signal
import socket
import struct
import sys
import time

from reactio import DefaultTcpListenerHandler, ReactRuntime
from reactio.examples.pingpong import EchoReactor

callbacks = []


class Echo(EchoReactor):
    def on_close(self, reactor_id, cmd_sender):
        callbacks.append(f"on_close {reactor_id}")


class Handler(DefaultTcpListenerHandler):
    def on_close_listen(self, reactor_id, cmd_sender):
        callbacks.append(f"on_close_listen {reactor_id}")


def frame(body):
    return struct.pack("<Hq", len(body), 0) + body


def pump(rt, pred, timeout=5.0):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        rt.process_events(0.005)
    return True


def echoes(rt, sock, body):
    sock.setblocking(False)
    sock.sendall(frame(body))
    want = frame(body)
    got = bytearray()

    def more():
        try:
            chunk = sock.recv(len(want) - len(got))
        except BlockingIOError:
            return False
        if not chunk:
            raise EOFError
        got.extend(chunk)
        return len(got) >= len(want)

    try:
        return pump(rt, more, 3.0) and bytes(got) == want
    except (EOFError, OSError):
        return False


def start(rt):
    done = []
    rt.cmd_sender.send_listen("127.0.0.1:0", Handler(lambda c, p: Echo()), None, done.append)
    pump(rt, lambda: done)
    return rt.local_address(done[0])[1]


def fork_child(body):
    """Run body() in a forked child, which writes a JSON report to a pipe; returns it (or a
    description of how the child ended without one)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            report = body()
        except BaseException as exc:
            report = {"child_error": f"{type(exc).__name__}: {exc}"}
            code = 2
        try:
            os.write(w, json.dumps(report).encode())
        finally:
            os._exit(code)
    os.close(w)
    end = time.monotonic() + 10
    status = None
    while time.monotonic() < end:
        wpid, st = os.waitpid(pid, os.WNOHANG)
        if wpid:
            status = st
            break
        time.sleep(0.02)
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        return {"child_killed": "no report within 10 s"}
    data = b""
    while select.select([r], [], [], 0)[0]:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    if os.WIFSIGNALED(status):
        return {"child_signal": os.WTERMSIG(status)}
    return json.loads(data.decode()) if data else {"child_exit": os.WEXITSTATUS(status)}


def resolver():
    rt = ReactRuntime()
    port = start(rt)
    res = []
    rt.cmd_sender.send_connect(f"localhost:{port}", 4096, Echo(), None, res.append)
    pump(rt, lambda: res)
    out = {"parent_connect": type(res[0]).__name__ if res else "hang"}

    def child():
        rt2 = ReactRuntime()
        got = []
        rt2.cmd_sender.send_connect(f"localhost:{port}", 4096, Echo(), None, got.append)
        pump(rt2, lambda: got, 5.0)
        return {"connect": type(got[0]).__name__ if got else "hang"}

    out["child"] = fork_child(child)
    rt.close()
    return out


def close_inherited():
    rt = ReactRuntime()
    port = start(rt)
    old = socket.create_connection(("127.0.0.1", port), timeout=5)
    pump(rt, lambda: rt.count_streams() == 1)
    out = {"before_fork_echoes": echoes(rt, old, b"before")}

    def child():
        del callbacks[:]
        seen = {}
        try:
            rt.process_events(0)
            seen["process_events"] = ["no error", ""]
        except Exception as exc:
            seen["process_events"] = [type(exc).__name__, str(exc)]
        try:
            rt.close()
            seen["close"] = "ok"
        except Exception as exc:
            seen["close"] = f"{type(exc).__name__}: {exc}"
        seen["callbacks"] = list(callbacks)
        return seen

    out["child"] = fork_child(child)
    out["old_stream_echoes"] = echoes(rt, old, b"after the child")
    new = socket.create_connection(("127.0.0.1", port), timeout=5)
    out["new_connection_accepted"] = pump(rt, lambda: rt.count_streams() == 2, 3.0)
    out["new_stream_echoes"] = out["new_connection_accepted"] and echoes(rt, new, b"new")
    old.close()
    new.close()
    rt.close()
    return out


if __name__ == "__main__":
    result = {"resolver": resolver, "close_inherited": close_inherited}[sys.argv[1]]()
    print(json.dumps(result), flush=True)
