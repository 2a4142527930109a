"""Issue 5, item 4 at scale: REACTIO_STRESS_FAULT_CONNS (default 5,000) concurrent
connections to one runtime, each peer misbehaving in its own way at the same moment:
RST in the middle of a frame, RST with megabytes queued towards it, half-close
(shutdown(SHUT_WR)) with frames still to dispatch and replies to flush, orderly close, close
without a byte.  Each server reactor must see exactly the whole frames its peer sent (in
order) and the close reason its fault implies; the half-closing peers get every reply and
then FIN; nothing is left open afterwards.  Connect failures at scale: refused connects and
connect timeouts in bulk."""
from __future__ import annotations

import contextlib
import random
import socket

import pytest

import reactio
from reactio import ReactRuntime

from stress_util import Deadline, env_int, raise_nofile, report, restore_nofile
from support.fds import open_fds
from support.reactors import FrameEcho
from support.runtime import listen_factory
from support.sockets import closed_port, full_backlog_port, reset
from support.wire import frame

pytestmark = [pytest.mark.stress, pytest.mark.timeout(240)]

CONNS = env_int("REACTIO_STRESS_FAULT_CONNS", 5_000)
FAULTS = ["rst_mid_frame", "rst_with_queue", "half_close", "orderly", "silent"]
BIG_REPLY = 2 << 20


class FaultServer(FrameEcho):
    registry = []

    def __init__(self):
        self.frames = []
        self.index = None
        self.closed = None
        FaultServer.registry.append(self)

    def on_frame(self, msg, ctx):
        f = bytes(msg)
        if self.index is None:
            self.index = int.from_bytes(f[2:10], "little")
        self.frames.append(f)
        if f[10:11] == b"B":
            ctx.send_or_que(b"\x42" * BIG_REPLY)        # the peer will reset instead of reading
        else:
            ctx.send_or_que(f)

    def on_close(self, reactor_id, cmd_sender):
        self.closed = self.close_error


def frames_for(i, fault, rng):
    count = rng.randrange(1, 6)
    out = [frame(b"F" + bytes([i & 0xFF]) * rng.randrange(0, 3000), i) for _ in range(count)]
    if fault == "rst_with_queue":
        out.append(frame(b"B", i))
    return out


def test_peer_fault_storm(request):
    previous = raise_nofile(2 * CONNS + 500)
    FaultServer.registry = []
    fds0 = open_fds()
    rt = ReactRuntime()
    rng = random.Random(7)
    peers = []
    try:
        lid, port = listen_factory(rt, FaultServer, 1024, backlog=4096)
        plan = []
        for i in range(CONNS):
            fault = FAULTS[i % len(FAULTS)]
            plan.append((fault, [] if fault == "silent" else frames_for(i, fault, rng)))
        # connect in batches, every peer sends its whole frames (+ half a frame for
        # rst_mid_frame)
        for start in range(0, CONNS, 250):
            for i in range(start, min(CONNS, start + 250)):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                peers.append(s)
            deadline = Deadline(30, "connects")
            while len(FaultServer.registry) < len(peers):
                deadline.check()
                rt.process_events(0.005)
        for i, s in enumerate(peers):
            fault, frames = plan[i]
            s.setblocking(True)
            s.settimeout(10)
            wire = b"".join(frames)
            if fault == "rst_mid_frame":
                wire += frame(b"P" * 500, i)[:200]
            if wire:
                s.sendall(wire)
            s.setblocking(False)
        # wait until every server reactor dispatched its whole frames
        deadline = Deadline(60, "dispatch")
        by_index = {}
        while True:
            deadline.check()
            rt.process_events(0.005)
            by_index = {r.index: r for r in FaultServer.registry if r.index is not None}
            if all(len(by_index[i].frames) == len(plan[i][1])
                   for i in range(CONNS) if plan[i][1] and i in by_index) and \
                    len(by_index) == sum(1 for f, fr in plan if fr):
                break
        # now every fault at once
        for i, s in enumerate(peers):
            fault = plan[i][0]
            if fault in ("rst_mid_frame", "rst_with_queue"):
                reset(s)
            elif fault == "half_close":
                s.shutdown(socket.SHUT_WR)
            elif fault == "silent":
                s.close()
        # the half-closing peers read their replies, then FIN; the orderly ones read their
        # replies and close (closing with unread bytes would send a RST)
        replies = {i: bytearray() for i in range(CONNS) if plan[i][0] in ("half_close",
                                                                          "orderly")}
        eof = set()
        deadline = Deadline(60, "closing")
        while rt.count_streams() or len(eof) < len(replies):
            deadline.check()
            rt.process_events(0.005)
            for i in replies:
                if i in eof:
                    continue
                try:
                    chunk = peers[i].recv(65536)
                except BlockingIOError:
                    continue
                replies[i] += chunk
                if not chunk:
                    eof.add(i)
                elif plan[i][0] == "orderly" and len(replies[i]) == len(b"".join(plan[i][1])):
                    peers[i].close()
                    eof.add(i)
        outcomes = {}
        for i in range(CONNS):
            fault, frames = plan[i]
            if fault == "silent":
                continue
            r = by_index[i]
            assert r.frames == frames, (i, fault)
            err = r.closed
            if fault == "rst_mid_frame":
                assert isinstance(err, ConnectionResetError), (i, err)
            elif fault == "rst_with_queue":
                assert isinstance(err, (ConnectionResetError, BrokenPipeError)), (i, err)
            else:
                assert err is None, (i, fault, err)
            if fault in ("half_close", "orderly"):
                assert bytes(replies[i]) == b"".join(frames), i
            outcomes[f"{fault}:{type(err).__name__}"] = \
                outcomes.get(f"{fault}:{type(err).__name__}", 0) + 1
        silent = [r for r in FaultServer.registry if r.index is None]
        assert len(silent) == sum(1 for f, _ in plan if f == "silent")
        assert all(r.closed is None and r.frames == [] for r in silent)
        assert len(FaultServer.registry) == CONNS
        outcomes["silent:NoneType"] = len(silent)
    finally:
        for s in peers:
            s.close()
        rt.close()
        restore_nofile(previous)
    assert open_fds() == fds0
    report(request, connections=CONNS, outcomes=outcomes,
           frames=sum(len(fr) for _, fr in plan))


def test_refused_and_timed_out_connects_in_bulk(request):
    """1,000 refused connects (IPv4) and 200 connect timeouts (a listener with a full
    backlog) on one runtime: every completion once, with the right error, reactor ids never
    shared afterwards, no descriptor left."""
    fds0 = open_fds()
    rt = ReactRuntime()
    stack = contextlib.ExitStack()
    try:
        results = {}
        ports = []
        for _ in range(100):
            ports.append(closed_port())
        for i in range(1000):
            rt.cmd_sender.send_connect(("127.0.0.1", ports[i % 100]), 512, FaultServer(), None,
                                       lambda r, i=i: results.setdefault(("refused", i), [])
                                       .append(r))
        full = stack.enter_context(full_backlog_port())
        for i in range(200):
            rt.cmd_sender.send_connect(("127.0.0.1", full), 512, FaultServer(), None,
                                       lambda r, i=i: results.setdefault(("timeout", i), [])
                                       .append(r), timeout=0.5)
        deadline = Deadline(60, "connect outcomes")
        while len(results) < 1200:
            deadline.check()
            rt.process_events(0.01)
        rt.process_events(0.05)
        assert all(len(v) == 1 for v in results.values())
        refused = [v[0] for k, v in results.items() if k[0] == "refused"]
        assert all(isinstance(r, ConnectionRefusedError) for r in refused)
        timed = [v[0] for k, v in results.items() if k[0] == "timeout"]
        n_timeout = sum(isinstance(r, TimeoutError) for r in timed)
        # a full backlog drops SYNs; the kernel may still complete a few handshakes
        assert n_timeout + sum(isinstance(r, reactio.ReactorID) for r in timed) == 200
        assert n_timeout >= 150, f"only {n_timeout} of 200 connects timed out"
        live = [r for r in timed if isinstance(r, reactio.ReactorID)]
        assert len(set(live)) == len(live)
        for rid in live:
            rt.cmd_sender.send_close(rid)
        deadline = Deadline(10, "close")
        while rt.count_reactors():
            deadline.check()
            rt.process_events(0.01)
    finally:
        rt.close()
        stack.close()
    assert open_fds() == fds0
    report(request, refused=len(refused), timed_out=n_timeout,
           completed_despite_full_backlog=200 - n_timeout)
