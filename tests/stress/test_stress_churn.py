"""Issue 5, item 2: connection churn.  REACTIO_STRESS_CHURN (default 100,000) connect / echo /
close cycles through one runtime that holds both ends, 64 in flight, spread over four IPv4
listeners (127.0.0.1-4) and one IPv6 listener, with three ways to end a cycle: the client closes (FIN), the server closes after
its reply (FIN the other way) and the client aborts (RST).  Frames of 0..5,000 bytes make the
1 KiB receive buffers grow.

The run is cut into phases that each end with no connection in flight; after the warm-up phase
open file descriptors (/proc/self/fd) must come back to exactly the same count, and
sys.getallocatedblocks() and RSS must stay within the bounds below for the rest of the run.
"""
from __future__ import annotations

import time

import pytest

import reactio
from reactio import Deferred, DropMsgSize, ReactRuntime, Reactor

from stress_util import allocated_blocks, env_int, report, rss_bytes
from support.env import HAS_IPV6
from support.fds import open_fds
from support.runtime import listen_factory
from support.wire import parse_frame

pytestmark = [pytest.mark.stress, pytest.mark.timeout(300)]

CYCLES = env_int("REACTIO_STRESS_CHURN", 100_000)
INFLIGHT = 64
PHASES = 10
# Leak bounds, from the warm-up phase to the end.  A leak of one Python object per cycle would
# be ~90,000 blocks at the default size; one 1 KiB receive buffer per cycle ~90 MiB of RSS.
BLOCK_BOUND = 2_000
RSS_BOUND = 8 << 20
SIZES = (0, 16, 200, 1400, 5000)
# Several listening addresses: each TCP 4-tuple spends a minute in TIME_WAIT, and one
# destination has only ~28,000 ephemeral ports; all of 127.0.0.0/8 is loopback on Linux.
V4_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")

CLIENT_CLOSES, SERVER_CLOSES, CLIENT_ABORTS = 0, 1, 2


PATTERN = bytes(range(256)) * (SIZES[-1] // 256 + 2)


def kind_of(i: int) -> int:
    return CLIENT_ABORTS if i % 10 == 9 else SERVER_CLOSES if i % 10 >= 7 else CLIENT_CLOSES


def body_for(i: int) -> bytes:
    size = SIZES[i % len(SIZES)]
    return bytes([kind_of(i)]) + i.to_bytes(4, "little") + PATTERN[i & 0xFF:(i & 0xFF) + size]


def frame_of(i: int) -> bytes:
    b = body_for(i)
    return len(b).to_bytes(2, "little") + i.to_bytes(8, "little") + b


class Stats:
    def __init__(self):
        self.started = self.finished = self.connect_failed = 0
        self.bad = []
        self.server_close = {}
        self.client_close = {}


class ChurnServer(Reactor):
    def __init__(self, stats):
        self.stats = stats
        self.kind = None

    def on_inbound_message(self, buf, new_bytes, decoded, ctx):
        res, n = parse_frame(buf)
        if res is not None:
            return res
        i = int.from_bytes(buf[2:10], "little")
        if bytes(buf[:n]) != frame_of(i):
            self.stats.bad.append(("server", i))
        self.kind = buf[10]
        ctx.send_or_que(buf[:n])
        if self.kind == SERVER_CLOSES:
            ctx.close()
        return DropMsgSize(n)

    def on_close(self, reactor_id, cmd_sender):
        key = (self.kind, type(self.close_error).__name__)
        self.stats.server_close[key] = self.stats.server_close.get(key, 0) + 1


class ChurnClient(Reactor):
    def __init__(self, driver, i):
        self.driver = driver
        self.i = i
        self.wire = frame_of(i)

    def on_connected(self, ctx, listener_id):
        ctx.send_or_que(self.wire)

    def on_inbound_message(self, buf, new_bytes, decoded, ctx):
        res, n = parse_frame(buf)
        if res is not None:
            return res
        if bytes(buf[:n]) != self.wire:
            self.driver.stats.bad.append(("client", self.i))
        kind = self.wire[10]
        if kind == CLIENT_CLOSES:
            ctx.close()
        elif kind == CLIENT_ABORTS:
            ctx.close(abort=True)
        return DropMsgSize(n)

    def on_close(self, reactor_id, cmd_sender):
        key = (self.wire[10], type(self.close_error).__name__)
        st = self.driver.stats
        st.client_close[key] = st.client_close.get(key, 0) + 1
        st.finished += 1
        self.driver.next_cycle()


class Driver:
    def __init__(self, rt, ports, limit):
        self.rt = rt
        self.ports = ports
        self.limit = limit
        self.stats = Stats()

    def next_cycle(self):
        st = self.stats
        if st.started >= self.limit:
            return
        i = st.started
        st.started += 1
        host, port = self.ports[i % len(self.ports)]
        self.rt.cmd_sender.send_connect((host, port), 1024, ChurnClient(self, i),
                                        Deferred.IMMEDIATE, self.connected)

    def connected(self, result):
        if not isinstance(result, reactio.ReactorID):
            self.stats.connect_failed += 1
            self.stats.bad.append(("connect", repr(result)))


def test_churn_connect_echo_close_does_not_leak(request):
    fds_start = open_fds()
    rt = ReactRuntime()
    stats = None
    try:
        driver = Driver(rt, [], 0)
        ports = []
        for host in V4_HOSTS:
            lid4, p4 = listen_factory(rt, lambda: ChurnServer(driver.stats), 1024,
                                      addr=(host, 0), backlog=1024)
            ports.append((host, p4))
        if HAS_IPV6:
            lid6, p6 = listen_factory(rt, lambda: ChurnServer(driver.stats), 1024,
                                      addr="[::1]:0", backlog=1024)
            ports.append(("::1", p6))
        driver.ports = ports
        stats = driver.stats
        per_phase = max(CYCLES // PHASES, INFLIGHT)
        samples = []
        t0 = time.monotonic()
        for phase in range(PHASES):
            driver.limit = min(CYCLES, (phase + 1) * per_phase)
            for _ in range(INFLIGHT):
                driver.next_cycle()
            deadline = time.monotonic() + 120
            while stats.finished < driver.limit or rt.count_streams():
                assert time.monotonic() < deadline, (phase, stats.finished, rt.count_streams())
                rt.process_events(0.05)
            assert not stats.bad, stats.bad[:10]
            samples.append((stats.finished, open_fds(), allocated_blocks(), rss_bytes()))
        seconds = time.monotonic() - t0
    finally:
        rt.close()
    warm = samples[0]
    assert stats.finished == stats.started == min(CYCLES, PHASES * per_phase)
    assert stats.connect_failed == 0
    # every phase ends with exactly the warm-up phase's descriptors (listeners, epoll, eventfd)
    assert [s[1] for s in samples] == [warm[1]] * len(samples), samples
    block_growth = max(s[2] for s in samples[1:]) - warm[2] if len(samples) > 1 else 0
    rss_growth = max(s[3] for s in samples[1:]) - warm[3] if len(samples) > 1 else 0
    assert block_growth <= BLOCK_BOUND, samples
    assert rss_growth <= RSS_BOUND, samples
    # how each side saw each kind of ending
    n = stats.finished
    kinds = {k: sum(1 for i in range(n) if kind_of(i) == k) for k in range(3)}
    assert stats.client_close == {
        (CLIENT_CLOSES, "NoneType"): kinds[CLIENT_CLOSES],
        (SERVER_CLOSES, "NoneType"): kinds[SERVER_CLOSES],
        (CLIENT_ABORTS, "NoneType"): kinds[CLIENT_ABORTS]}
    server_resets = stats.server_close.get((CLIENT_ABORTS, "ConnectionResetError"), 0)
    assert stats.server_close.get((CLIENT_CLOSES, "NoneType")) == kinds[CLIENT_CLOSES]
    assert stats.server_close.get((SERVER_CLOSES, "NoneType")) == kinds[SERVER_CLOSES]
    # an abort is a RST; the server may have read the EOF-less reset or (rarely) nothing else
    assert server_resets + stats.server_close.get((CLIENT_ABORTS, "NoneType"), 0) == \
        kinds[CLIENT_ABORTS]
    assert server_resets >= kinds[CLIENT_ABORTS] * 0.9
    assert open_fds() == fds_start
    report(request, cycles=n, inflight=INFLIGHT, listeners=len(ports),
           seconds=round(seconds, 1), cycles_per_second=round(n / seconds),
           fds_after_each_phase=warm[1], block_growth_after_warmup=block_growth,
           block_bound=BLOCK_BOUND, rss_growth_after_warmup_kib=rss_growth >> 10,
           rss_bound_kib=RSS_BOUND >> 10, blocks_per_phase=[s[2] for s in samples],
           rss_kib_per_phase=[s[3] >> 10 for s in samples],
           server_close_kinds={f"{k[0]}:{k[1]}": v for k, v in stats.server_close.items()})
