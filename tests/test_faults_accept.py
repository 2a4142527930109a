"""Light fault tests (issue 5), accept faults: accept() failing with EMFILE is survived --
a warning, no busy loop, every connection served once descriptors are free again."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from support.subproc import HELPERS
from support.wire import frame

pytestmark = pytest.mark.timeout(30)


@pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_NOFILE/EMFILE on Windows")
def test_accept_under_emfile_is_survived():
    """A server whose soft RLIMIT_NOFILE leaves room for ~10 streams gets 40 connections:
    accept fails with EMFILE, which is a WARNING (accepts pause for a moment), not an ERROR and
    not a busy loop; each connection is served once others close; the server ends clean."""
    proc = subprocess.Popen([sys.executable, os.path.join(HELPERS, "emfile_server.py"), "10"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    clients = []
    try:
        first = json.loads(proc.stdout.readline())
        port = first["port"]

        def ask():
            proc.stdin.write("stats\n")
            proc.stdin.flush()
            return json.loads(proc.stdout.readline())

        n = 40
        pending = {}
        for i in range(n):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.sendall(frame(i.to_bytes(4, "little"), i))
            c.setblocking(False)
            pending[i] = (c, bytearray())
            clients.append(c)
        served = []

        def collect(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for i, (c, buf) in list(pending.items()):
                    try:
                        buf += c.recv(100)
                    except BlockingIOError:
                        continue
                    if len(buf) >= 14:
                        assert bytes(buf) == frame(i.to_bytes(4, "little"), i)
                        served.append(i)
                        del pending[i]
                time.sleep(0.005)

        collect(0.5)
        s1 = ask()
        first_round = len(served)
        assert 0 < first_round < n, s1
        assert s1["log_levels"].get("WARNING", 0) >= 1, s1
        assert any("Too many open files" in m for m in s1["log"]), s1["log"]
        time.sleep(1.0)                                     # EMFILE persists meanwhile
        s2 = ask()
        assert s2["cpu_seconds"] - s1["cpu_seconds"] < 0.5, "the loop spins under EMFILE"
        rounds = 0
        while pending:
            rounds += 1
            assert rounds < 60, f"{len(pending)} connections never served"
            for i in list(served):
                clients[i].close()                          # free server descriptors
            collect(0.3)
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        final = json.loads(proc.stdout.readline())
        assert proc.wait(10) == 0
        assert final["served"] == n
        assert final["peak_streams"] <= 10
        assert final["log_levels"].get("ERROR", 0) == 0, final["log"]
        assert final["close_errors"] == [], final
    finally:
        for c in clients:
            c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()

