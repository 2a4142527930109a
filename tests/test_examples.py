"""The examples: latency statistics, PingpongReactor in-process, and every example run as a
module in a subprocess (bounded timeouts, loopback, port 0) with its output checked."""
from __future__ import annotations

import math
import re
import signal
import socket
import subprocess
import sys
import threading
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reactio.examples.pingpong import (HEADER, HEADER_SIZE, LatencyStats, encode_message,
                                       format_stats_row, run_pingpong)

from conftest import HAS_IPV6

pytestmark = pytest.mark.timeout(30)

ROW = re.compile(r"^(\S+)\s+(\S+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$")


def run_module(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=timeout)


def rows(output: str) -> list[tuple[str, str, int, list[float]]]:
    """The latency rows of a report: (side, batch, samples, [min, p50, p99, p99.9, max])."""
    out = []
    for line in output.splitlines():
        m = ROW.match(line.strip())
        if m:
            out.append((m.group(1), m.group(2), int(m.group(3)),
                        [float(m.group(i)) for i in range(4, 9)]))
    return out


def assert_ordered(values: list[float]) -> None:
    assert values == sorted(values), f"min <= p50 <= p99 <= p99.9 <= max violated: {values}"
    assert values[0] > 0


def free_port() -> int:
    """A port nobody listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_line_with_timeout(proc: subprocess.Popen, timeout: float) -> str:
    """A line of the child's stdout, read on a helper thread (select() cannot wait on pipes
    on Windows)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines:
        raise AssertionError(f"no output from {proc.args} within {timeout} s")
    return lines[0]


def _interactive_sigint() -> None:
    """In the child: SIGINT as in a terminal.  A test run started in the background (nohup,
    ``cmd &``) ignores SIGINT, the child would inherit that, and Python then installs no
    KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# Windows has no preexec_fn (and no inherited SIG_IGN to undo)
POSIX_SIGINT = {} if sys.platform == "win32" else {"preexec_fn": _interactive_sigint}


def start_server_banner(*extra: str, addr: str = "127.0.0.1:0") -> tuple[subprocess.Popen, str]:
    """The echo server listening on ``addr``, and the address its banner names (what a script
    connects to)."""
    proc = subprocess.Popen([sys.executable, "-u", "-m", "reactio.examples.echo_server",
                             "--addr", addr, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **POSIX_SIGINT)
    try:
        line = read_line_with_timeout(proc, 15)
        m = re.fullmatch(r"listening on (\S+)\n", line)
        assert m, f"unexpected first line {line!r}"
        return proc, m.group(1)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise


def start_server(*extra: str) -> tuple[subprocess.Popen, int]:
    proc, banner_addr = start_server_banner(*extra)
    m = re.fullmatch(r"127\.0\.0\.1:(\d+)", banner_addr)
    if not m:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"unexpected banner address {banner_addr!r}")
    return proc, int(m.group(1))


# ----------------------------------------------------------------------------- statistics

def test_latency_stats_percentiles_and_true_max():
    stats = LatencyStats.from_samples(list(range(1000, 0, -1)))     # 1..1000, unsorted
    assert (stats.count, stats.min, stats.p50, stats.p99, stats.p999, stats.max) == \
        (1000, 1, 500, 990, 999, 1000)
    # reactio printed the second-largest sample as "max"; ours is the largest
    assert LatencyStats.from_samples([5, 1, 9, 3]).max == 9


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=3000))
@settings(max_examples=200, deadline=None)
def test_latency_stats_match_exact_nearest_rank(samples):
    d = sorted(samples)

    def exact(p: Fraction) -> int:        # nearest rank with exact arithmetic
        k = math.ceil(p * len(d))
        return d[max(1, k) - 1]

    stats = LatencyStats.from_samples(samples)
    assert (stats.min, stats.max, stats.count) == (d[0], d[-1], len(d))
    assert stats.p50 == exact(Fraction(1, 2))
    assert stats.p99 == exact(Fraction(99, 100))
    assert stats.p999 == exact(Fraction(999, 1000))


def test_latency_stats_small_batches():
    one = LatencyStats.from_samples([42])            # reactio panicked on a batch of 1
    assert (one.min, one.p50, one.p99, one.p999, one.max) == (42, 42, 42, 42, 42)
    two = LatencyStats.from_samples([10, 20])
    assert (two.min, two.p50, two.p99, two.max) == (10, 10, 20, 20)
    with pytest.raises(ValueError):
        LatencyStats.from_samples([])
    assert ROW.match(format_stats_row("client", 1, one).strip())


def test_wire_format():
    msg = encode_message(b"test msg000", -5)
    assert len(msg) == HEADER_SIZE + 11 == 21
    assert msg[:2] == (11).to_bytes(2, "little")
    assert msg[2:10] == (-5).to_bytes(8, "little", signed=True)
    assert HEADER.unpack_from(msg) == (11, -5) and msg[10:] == b"test msg000"
    with pytest.raises(ValueError):
        encode_message(b"x" * 65536, 0)


@pytest.mark.parametrize("count, batch", [(1, 1), (7, 1), (10, 4), (300, 100)])
def test_pingpong_in_process(count, batch):
    reports = []
    client, server = run_pingpong(count, batch, on_report=lambda r, n, s: reports.append(
        (r.name, n, s.count)), timeout=10)
    assert client.count_received == count and client.closed
    assert server.count_sent == count and server.closed
    client_batches = [c for name, _, c in reports if name == "client"]
    server_batches = [c for name, _, c in reports if name == "server-1"]
    assert sum(client_batches) == count                # every reply is timed
    assert sum(server_batches) == count - 1            # the first message has no prior send
    assert all(c <= batch for c in client_batches + server_batches)
    assert [n for name, n, _ in reports if name == "client"] == \
        list(range(1, len(client_batches) + 1))
    assert len(client.all_samples) == count and min(client.all_samples) > 0


# ----------------------------------------------------------------------------- as modules

def test_pingpong_module():
    proc = run_module("reactio.examples.pingpong", "--count", "3000", "--batch", "1000")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "3000 round trips of 21-byte messages" in out
    assert re.search(r"done: client 3000/3000 round trips, server echoed 3000; .* round trips/s",
                     out), out
    table = rows(out)
    client = [r for r in table if r[0] == "client" and r[1] != "all"]
    server = [r for r in table if r[0] == "server-1"]
    assert [r[2] for r in client] == [1000, 1000, 1000]
    assert sum(r[2] for r in server) == 2999
    for r in table:
        assert_ordered(r[3])
    assert "min(us)" in out and "p99.9(us)" in out and "max(us)" in out
    assert re.search(r"client all\s+-\s+3000\s", out), out


def test_pingpong_module_batch_of_one():
    proc = run_module("reactio.examples.pingpong", "--count", "3", "--batch", "1")
    assert proc.returncode == 0, proc.stderr
    table = rows(proc.stdout)
    assert [r[2] for r in table if r[0] == "client"] == [1, 1, 1]
    for r in table:
        assert r[3][0] == r[3][-1]                    # one sample: min == max


def test_pingpong_module_rejects_bad_arguments():
    proc = run_module("reactio.examples.pingpong", "--count", "0")
    assert proc.returncode == 2 and "must be positive" in proc.stderr


def test_threaded_pingpong_module():
    proc = run_module("reactio.examples.threaded_pingpong", "--count", "200", "--batch", "100")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "client myclient: 200/200 round trips; found 'server-1'" in out
    assert "cross-thread command completed with ReactorID(" in out
    assert "commands received ['TestCmdFromClient']" in out
    assert "names left registered: 0" in out
    assert [r[2] for r in rows(out) if r[0] == "myclient"] == [100, 100]


def test_echo_server_and_client_modules():
    server, port = start_server("--once", "--batch", "500")
    try:
        client = run_module("reactio.examples.echo_client", "--addr", f"127.0.0.1:{port}",
                            "--count", "2000", "--batch", "1000")
        server_out, server_err = server.communicate(timeout=15)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert client.returncode == 0, client.stderr
    assert f"connected to 127.0.0.1:{port}: 2000 round trips" in client.stdout
    assert re.search(r"done: 2000/2000 round trips in [\d.]+ s", client.stdout)
    assert [r[2] for r in rows(client.stdout) if r[0] == "client"] == [1000, 1000]
    assert server.returncode == 0, server_err
    assert "server-1: connection closed after 2000 echoes" in server_out
    assert "echo server stopped after 1 connection(s)" in server_out
    assert sum(r[2] for r in rows(server_out) if r[0] == "server-1") == 1999


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback on this machine")
def test_echo_server_banner_for_ipv6_is_an_address_its_client_accepts():
    """Issue 16: the banner is how a script learns the address; for IPv6 it must be
    ``[::1]:PORT`` (``::1:PORT`` is refused by the client: IPv6 addresses need brackets)."""
    server, banner_addr = start_server_banner("--once", "--quiet", addr="[::1]:0")
    try:
        client = run_module("reactio.examples.echo_client", "--addr", banner_addr,
                            "--count", "20", "--batch", "10")
        assert client.returncode == 0, client.stderr
        server_out, server_err = server.communicate(timeout=15)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert re.fullmatch(r"\[::1\]:\d+", banner_addr), banner_addr
    assert re.search(r"done: 20/20 round trips", client.stdout)
    assert server.returncode == 0, server_err
    assert "echo server stopped after 1 connection(s)" in server_out


@pytest.mark.skipif(sys.platform == "win32",
                    reason="Windows delivers no SIGTERM/SIGINT to a child: send_signal terminates it")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_echo_server_exits_cleanly_on_signal(sig):
    server, port = start_server("--quiet")
    try:
        # it serves until signalled: a client can connect and ping-pong
        client = run_module("reactio.examples.echo_client", "--addr", f"127.0.0.1:{port}",
                            "--count", "10", "--batch", "10")
        assert client.returncode == 0, client.stderr
        server.send_signal(sig)
        out, err = server.communicate(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, err
    assert "echo server stopped after 1 connection(s)" in out
    assert "Traceback" not in err


def test_echo_client_reports_connection_failure():
    proc = run_module("reactio.examples.echo_client", "--addr", f"127.0.0.1:{free_port()}",
                      "--count", "5")
    assert proc.returncode == 1
    assert "error: cannot connect to" in proc.stderr and "ConnectionRefusedError" in proc.stderr
    proc = run_module("reactio.examples.echo_client", "--addr", "no-port", "--count", "5")
    assert proc.returncode == 1 and "error: cannot connect to no-port" in proc.stderr


def test_echo_server_reports_listen_failure():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_module("reactio.examples.echo_server", "--addr", f"127.0.0.1:{port}")
    assert proc.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}" in proc.stderr
