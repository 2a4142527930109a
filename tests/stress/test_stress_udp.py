"""Issue 14, UDP: 1,000,000 datagrams (REACTIO_STRESS_DATAGRAMS) from another process, as fast
as it can send them, to a reactio endpoint; loss is counted and reported, not required to be 0
(UDP drops what the receive buffer cannot hold).  What is required: every datagram received is
intact (its sequence number and its filler agree), none twice, in order (loopback keeps it),
and the endpoint's counters agree with what the reactor saw."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from reactio import DatagramReactor, Deferred, ReactRuntime

from stress_util import env_int, report
from support.runtime import Completion, pump_until

pytestmark = [pytest.mark.stress, pytest.mark.timeout(300)]

SENDER = """
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", port))
send = s.send
for i in range(n):
    b = i.to_bytes(4, "little")
    try:
        send(b + b * 7)
    except OSError:
        pass                      # ENOBUFS: counted as lost by the receiver
for _ in range(200):              # the end marker, repeated: it may be dropped too
    send(b"end")
"""


class Counter(DatagramReactor):
    def __init__(self):
        self.received = 0
        self.last = -1
        self.bad = 0
        self.out_of_order = 0
        self.ended = False

    def on_datagram(self, buf, addr, ctx):
        if len(buf) == 3:
            self.ended = True
            return
        b = bytes(buf)
        seq = int.from_bytes(b[:4], "little")
        if len(b) != 32 or b[4:] != b[:4] * 7:
            self.bad += 1
        if seq <= self.last:
            self.out_of_order += 1
        self.last = seq
        self.received += 1


def test_a_million_datagrams_with_loss_counted(request):
    n = env_int("REACTIO_STRESS_DATAGRAMS", 1_000_000)
    rt = ReactRuntime()
    counter = Counter()
    ctxs = []
    counter.on_bound = ctxs.append
    done = Completion()
    rt.cmd_sender.send_bind_udp("127.0.0.1:0", counter, Deferred.IMMEDIATE, done,
                                recv_buffer_size=4 * 1024 * 1024)
    pump_until(rt, lambda: done.done)
    port = rt.local_address(done.result)[1]
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", SENDER, str(port), str(n)])
    try:
        pump_until(rt, lambda: counter.ended or not ctxs[0].is_open, timeout=240, step=0.05)
        elapsed = time.monotonic() - t0
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ctx = ctxs[0]
    assert ctx.is_open, counter.close_error
    lost = n - counter.received
    report(request, datagrams=n, received=counter.received, lost=lost,
           loss_pct=round(100.0 * lost / n, 3), seconds=round(elapsed, 2),
           recv_calls=ctx.recv_calls,
           datagrams_per_recv_call=round(ctx.datagrams_received / max(ctx.recv_calls, 1), 2))
    assert counter.bad == 0 and counter.out_of_order == 0
    assert 0 < counter.received <= n
    assert ctx.datagrams_received >= counter.received + 1     # + at least one end marker
    assert ctx.truncated == 0
    rt.close()
