"""Issue 10, defect 3 (starvation): one peer flooding small valid frames must not delay a
bystander on the same runtime by more than one bounded read per loop iteration.  This is the
one timed assertion issue 10 asks for: the bystander's echo round-trip p99 stays under 20 ms
while the flood runs.

Three processes, so that no two of them share an interpreter lock: the echo server (one
runtime, tests/helpers/fair_echo_server.py), the flooder (tests/helpers/flooder.py, writing
as fast as it can, at the lowest CPU priority, and discarding the echoes) and the bystander
(this test, plain blocking socket).  Skipped under wine (timings there mean nothing)."""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time

import pytest

from support.env import UNDER_WINE
from support.subproc import HELPERS, child_env


pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(UNDER_WINE, reason="a timed assertion: wine is not Windows, its "
                       "timings mean nothing (tools/windows-test.sh); runs on real Windows"),
]

ROUND_TRIPS = 200
P99_BOUND_NS = 20_000_000
MEASURE_DEADLINE = 4.0          # seconds: a starving server fails here instead of hanging
MIN_FLOOD_SECONDS = 1.0         # echoes go on at least this long: the flooder (nice 19) gets
                                # CPU for a real flood even on a loaded machine
ATTEMPTS = 4


def _spawn(script, *args):
    return subprocess.Popen([sys.executable, os.path.join(HELPERS, script), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=child_env())


def _read_json(proc):
    line = proc.stdout.readline()
    assert line, f"{proc.args[1]} ended without a report (exit code {proc.poll()})"
    return json.loads(line)


def _finish(proc):
    """Close its stdin (the stop signal), collect its last report."""
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    out = proc.stdout.read()
    proc.stdout.close()
    lines = [line for line in out.strip().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def _round_trip(sock, msg):
    t0 = time.perf_counter_ns()
    sock.sendall(msg)
    got = b""
    while len(got) < len(msg):
        chunk = sock.recv(len(msg) - len(got))
        assert chunk, "the server closed the bystander"
        got += chunk
    t1 = time.perf_counter_ns()
    assert got == msg
    return t1 - t0


def _measure_under_flood(port, bystander, msg):
    """One flood and at least ROUND_TRIPS bystander echoes over at least MIN_FLOOD_SECONDS
    during it: (p99 within bound and a real flood, summary)."""
    flooder = _spawn("flooder.py", str(port), "10")
    try:
        assert _read_json(flooder) == {"flooding": True}
        samples = []
        starved = None
        start = time.monotonic()
        end = start + MEASURE_DEADLINE
        while ((len(samples) < ROUND_TRIPS or time.monotonic() < start + MIN_FLOOD_SECONDS)
               and time.monotonic() < end):
            bystander.settimeout(max(0.05, end - time.monotonic()))
            try:
                samples.append(_round_trip(bystander, msg))
            except socket.timeout:
                starved = (f"round trip {len(samples) + 1} not answered by the end of the "
                           f"{MEASURE_DEADLINE} s measurement")
                break
    finally:
        flood = _finish(flooder)
    assert not flood.get("peer_closed"), f"the flood was cut short: {flood}"
    if flood.get("sent", 0) < 2 << 20:
        # the scheduler starved the flooder (not the server's fault): measure again
        return False, f"no flood to speak of: {flood}; {len(samples)} round trips"
    if starved is not None:
        return False, f"{starved}; {len(samples)} answered; flood {flood}"
    ordered = sorted(samples)
    p99 = ordered[-(-99 * len(ordered) // 100) - 1]
    summary = (f"{len(samples)} round trips under flood; p50 {ordered[len(ordered) // 2] / 1e6:.2f}"
               f" ms, p99 {p99 / 1e6:.2f} ms, max {ordered[-1] / 1e6:.2f} ms; flood {flood}")
    return len(samples) >= ROUND_TRIPS and p99 < P99_BOUND_NS, summary


def test_flood_does_not_starve_a_bystander():
    """Defect 3: a peer writing small valid frames as fast as it can made the server read
    everything the kernel held, then dispatch it all, before serving anyone else: the
    bystander waited for whole megabytes of someone else's frames (p50 1.7 s on 0.1.0).  Its
    p99 round trip over at least 200 echoes and 1 s, measured while the flood runs, stays under
    20 ms.

    The bound is a time on a shared 2-core machine where the server, the flooder's two
    threads and this process compete for the cores, so a measurement disturbed by the
    scheduler is repeated, up to ATTEMPTS floods; a starving server fails every one of them by
    orders of magnitude."""
    server = _spawn("fair_echo_server.py")
    bystander = None
    summaries = []
    try:
        port = _read_json(server)["port"]
        bystander = socket.create_connection(("127.0.0.1", port), timeout=2)
        bystander.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = struct.pack("<Hq", 16, 0) + b"b" * 16
        for _ in range(20):                          # warm-up, unmeasured
            _round_trip(bystander, msg)
        for _ in range(ATTEMPTS):
            ok, summary = _measure_under_flood(port, bystander, msg)
            summaries.append(summary)
            print(summary)
            if ok:
                break
        assert ok, "\n".join(summaries)
    finally:
        if bystander is not None:
            bystander.close()
        report = _finish(server)
    # The flooder closes its socket with our echoes unread, so its stream may end with a reset
    # (ECONNRESET / EPIPE on send); any other error (a send queue overflow, a message limit)
    # would mean the server silenced the flood instead of serving it fairly.
    unexpected = [e for e in report["closed_with_error"]
                  if not e.startswith(("ConnectionResetError", "BrokenPipeError"))]
    assert unexpected == [], report
