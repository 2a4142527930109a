"""Issue 5, item 1: 10,000 concurrent connections to one runtime, each echoing one framed
message, every byte checked on both sides.

The runtime (server) runs in the test process; the clients run in a subprocess
(tests/helpers/scale_client.py, plain sockets + epoll) because both ends of 10,000 connections
in one process would need more than the usual hard RLIMIT_NOFILE of 20,000.  The test raises
its own soft limit as far as the hard limit allows and records what it got.
REACTIO_STRESS_CONNS (default 10000) and REACTIO_STRESS_CONNS_V6 (default 10000) size it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from reactio import ReactRuntime

from stress_util import env_int, raise_nofile, report, restore_nofile

import resource  # noqa: E402  (after stress_util, which skips this module on Windows)

from helpers.scale_client import scale_body  # noqa: E402  (POSIX only, as resource)
from support.env import HAS_IPV6
from support.fds import open_fds
from support.reactors import FrameEcho
from support.runtime import listen_factory
from support.subproc import HELPERS
from support.wire import frame

pytestmark = [pytest.mark.stress, pytest.mark.timeout(300)]

SEED = 20240605


class ScaleEcho(FrameEcho):
    """Checks the one frame its client sends against scale_body(index) and echoes it."""
    __slots__ = ()
    frames = 0
    bad = 0
    closed = 0
    close_errors = []

    def on_frame(self, msg, ctx):
        body = bytes(msg[10:])
        i = int.from_bytes(body[:4], "little")
        if body != scale_body(i, SEED) or int.from_bytes(msg[2:10], "little") != i:
            ScaleEcho.bad += 1
        ScaleEcho.frames += 1
        super().on_frame(msg, ctx)

    def on_close(self, reactor_id, cmd_sender):
        ScaleEcho.closed += 1
        if self.close_error is not None:
            ScaleEcho.close_errors.append(self.close_error)


def _reader(proc, lines):
    for line in proc.stdout:
        lines.append(line)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_concurrent_connections_each_echo_one_frame(request, host):
    if host == "::1" and not HAS_IPV6:
        pytest.skip("no IPv6 loopback")
    count = env_int("REACTIO_STRESS_CONNS" if host == "127.0.0.1" else "REACTIO_STRESS_CONNS_V6",
                    10_000)
    previous = raise_nofile(count + 1000)
    got_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    if got_limit[0] < count + 100:
        count = got_limit[0] - 100
    ScaleEcho.frames = ScaleEcho.bad = ScaleEcho.closed = 0
    ScaleEcho.close_errors = []
    fds_before = open_fds()
    rt = ReactRuntime()
    proc = None
    try:
        lid, port = listen_factory(rt, ScaleEcho, 1024, addr=(host, 0), backlog=4096)
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, os.path.join(HELPERS, "scale_client.py"), host,
                                 str(port), str(count), str(SEED)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        lines = []
        threading.Thread(target=_reader, args=(proc, lines), daemon=True).start()
        peak = 0
        deadline = time.monotonic() + 240
        while not lines:
            assert proc.poll() is None, f"client exited with {proc.returncode}"
            assert time.monotonic() < deadline, "clients did not finish"
            rt.process_events(0.01)
            peak = max(peak, rt.count_streams())
        result = json.loads(lines[0])
        echo_seconds = time.monotonic() - t0
        # every connection is still open on both sides here
        peak = max(peak, rt.count_streams())
        fds_peak = open_fds()
        assert result["n_errors"] == 0, result["errors"]
        assert result["n_bad"] == 0, result["bad"]
        assert result["echoed_ok"] == count
        assert ScaleEcho.frames == count and ScaleEcho.bad == 0
        assert rt.count_streams() == count, "connections were not concurrent"
        assert fds_peak - fds_before >= count
        proc.stdin.write("close\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while rt.count_streams():
            assert time.monotonic() < deadline, f"{rt.count_streams()} streams still open"
            rt.process_events(0.01)
        assert proc.wait(30) == 0
        assert ScaleEcho.closed == count
        assert ScaleEcho.close_errors == []        # orderly FIN from every client
        rt.cmd_sender.send_close(lid)
        rt.run(0.01)
        assert rt.count_reactors() == 0
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdin.close()
            proc.stdout.close()
        rt.close()
        restore_nofile(previous)
    assert open_fds() == fds_before
    wire_bytes = sum(len(frame(scale_body(i, SEED))) for i in range(count))
    report(request, host=host, connections=count, peak_streams=peak, fds_at_peak=fds_peak,
           nofile_soft_hard=list(got_limit), echoed_bytes_each_way=wire_bytes,
           seconds_to_echo_all=round(echo_seconds, 2),
           client_nofile=result["nofile"])
