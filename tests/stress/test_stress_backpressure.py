"""Issue 5, item 3: slow consumers.  Producers that honour on_pause_writing/on_resume_writing
stream REACTIO_STRESS_STREAM_MIB (default 64) MiB each to peers that keep stopping to read;
a producer that ignores backpressure overflows max_send_queue; echo connections keep working
throughout.  Checked: the send queue never exceeds max_send_queue, pause and resume alternate
and both fire at every stall, every byte arrives in order, the overflowing connection alone is
closed with SendQueueOverflowError (its peer sees a reset), the others never notice."""
from __future__ import annotations

import socket
import time

import pytest

import reactio
from reactio import DropMsgSize, ReactRuntime, Reactor

from stress_util import Deadline, env_int, report
from support.fds import open_fds
from support.reactors import EchoReactor
from support.runtime import listen_factory
from support.sockets import raw_client
from support.wire import frame

pytestmark = [pytest.mark.stress, pytest.mark.timeout(240)]

MIB = 1 << 20
STREAM = env_int("REACTIO_STRESS_STREAM_MIB", 64) * MIB
PRODUCERS = 4
MAX_SEND_QUEUE = 1 * MIB
CHUNK = 64 * 1024
STALL_EVERY = 4 * MIB           # the peer stops reading after each STALL_EVERY bytes ...
STALL_SECONDS = 0.15            # ... for this long
PERIOD = 251                    # the stream is PAT[offset % 251], so any slice can be checked
PAT = bytes(range(PERIOD)) * ((4 * MIB) // PERIOD + 2)


class Producer(Reactor):
    """Streams STREAM bytes, sending only while not paused."""

    def __init__(self):
        self.sent = 0
        self.paused = False
        self.events = []
        self.max_queue = 0
        self.ctx = None
        self.closed_with = "open"

    def on_connected(self, ctx, listener_id):
        self.ctx = ctx
        self.pump(ctx)

    def pump(self, ctx):
        while not self.paused and self.sent < STREAM:
            n = min(CHUNK, STREAM - self.sent)
            o = self.sent % PERIOD
            ctx.send_or_que(PAT[o:o + n])
            self.sent += n
            self.max_queue = max(self.max_queue, ctx.send_queue_size)

    def on_pause_writing(self, ctx):
        self.events.append(("pause", ctx.send_queue_size))
        self.paused = True

    def on_resume_writing(self, ctx):
        self.events.append(("resume", ctx.send_queue_size))
        self.paused = False
        self.pump(ctx)

    def on_inbound_message(self, buf, new_bytes, decoded, ctx):
        return DropMsgSize(len(buf))

    def on_close(self, reactor_id, cmd_sender):
        self.closed_with = self.close_error


class Flooder(Producer):
    """Ignores backpressure: keeps queueing until max_send_queue stops it."""

    def on_connected(self, ctx, listener_id):
        self.ctx = ctx
        while True:                      # SendQueueOverflowError ends this (and the stream)
            ctx.send_or_que(PAT[:CHUNK])
            self.sent += CHUNK
            self.max_queue = max(self.max_queue, ctx.send_queue_size)

    def on_pause_writing(self, ctx):
        self.events.append(("pause", ctx.send_queue_size))


class SlowPeer:
    def __init__(self, sock):
        self.sock = sock
        self.sock.setblocking(False)
        self.got = 0
        self.stall_until = 0.0
        self.next_stall = STALL_EVERY
        self.stalls = 0
        self.bad_at = None

    def step(self, now):
        if now < self.stall_until or self.got >= STREAM:
            return
        for _ in range(8):
            try:
                chunk = self.sock.recv(256 * 1024)
            except BlockingIOError:
                return
            if not chunk:
                raise AssertionError(f"producer closed after {self.got} bytes")
            o = self.got % PERIOD
            if chunk != PAT[o:o + len(chunk)] and self.bad_at is None:
                self.bad_at = self.got
            self.got += len(chunk)
            if self.got >= self.next_stall:
                self.next_stall += STALL_EVERY
                self.stall_until = now + STALL_SECONDS
                self.stalls += 1
                return


def test_slow_consumers_backpressure_and_overflow(request, expected_errors):
    fds_before = open_fds()
    rt = ReactRuntime()
    producers, flooders, echoes = [], [], []

    def factory():
        if len(producers) < PRODUCERS:
            producers.append(Producer())
            return producers[-1]
        if not flooders:
            flooders.append(Flooder())
            return flooders[-1]
        echoes.append(EchoReactor())
        return echoes[-1]

    try:
        lid, port = listen_factory(rt, factory, max_send_queue=MAX_SEND_QUEUE)
        peers = []
        for _ in range(PRODUCERS):
            peers.append(SlowPeer(raw_client(port)))
            while len(producers) < len(peers):
                rt.process_events(0.01)
        flood_peer = raw_client(port)                      # never reads
        flood_peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        echo_peers = [raw_client(port) for _ in range(4)]
        for p in echo_peers:
            p.setblocking(False)
        deadline = Deadline(180, "streams")
        echo_rounds = 0
        pending = {}
        t0 = time.monotonic()
        while any(p.got < STREAM for p in peers):
            deadline.check()
            rt.process_events(0.001)
            now = time.monotonic()
            for p in peers:
                p.step(now)
            for k, ep in enumerate(echo_peers):             # the bystanders keep echoing
                if k not in pending:
                    pending[k] = frame(bytes([echo_rounds & 0xFF]) * (k * 100 + 1), echo_rounds)
                    ep.sendall(pending[k])
                    pending[k] = [pending[k], b""]
                try:
                    pending[k][1] += ep.recv(65536)
                except BlockingIOError:
                    continue
                if len(pending[k][1]) >= len(pending[k][0]):
                    assert pending[k][1] == pending[k][0]
                    del pending[k]
                    echo_rounds += 1
        seconds = time.monotonic() - t0
        rt.process_events(0.01)
        # the well-behaved streams
        for prod, peer in zip(producers, peers):
            assert peer.bad_at is None, f"stream corrupt at byte {peer.bad_at}"
            assert peer.got == STREAM and prod.sent == STREAM
            assert prod.max_queue <= MAX_SEND_QUEUE
            kinds = [e[0] for e in prod.events]
            assert kinds == ["pause", "resume"] * (len(kinds) // 2), kinds
            assert len(kinds) // 2 >= peer.stalls >= STREAM // STALL_EVERY - 1
            assert all(q > rt.high_water for k, q in prod.events if k == "pause")
            assert all(q <= rt.low_water for k, q in prod.events if k == "resume")
            assert prod.closed_with == "open"
        # the flooder alone was closed, with the error that says why
        flood = flooders[0]
        assert isinstance(flood.closed_with, reactio.SendQueueOverflowError), flood.closed_with
        # a broken limit is logged at ERROR, once, for that stream only
        assert len(expected_errors.matching("over max_send_queue")) == 1, expected_errors.messages
        assert len(expected_errors.messages) == 1, expected_errors.messages
        assert f"max_send_queue={MAX_SEND_QUEUE}" in str(flood.closed_with)
        assert flood.max_queue <= MAX_SEND_QUEUE
        assert [e[0] for e in flood.events] == ["pause"]
        flood_peer.settimeout(5)
        flood_got = 0
        with pytest.raises(ConnectionResetError):
            while True:
                chunk = flood_peer.recv(1 << 20)
                if not chunk:
                    break
                flood_got += len(chunk)
        assert echo_rounds > 100 and all(e.closed == [] for e in echoes)
        assert rt.count_streams() == PRODUCERS + len(echo_peers)
        for s in [p.sock for p in peers] + echo_peers + [flood_peer]:
            s.close()
        deadline = Deadline(10, "closing")
        while rt.count_streams():
            deadline.check()
            rt.process_events(0.01)
    finally:
        rt.close()
    assert open_fds() == fds_before
    report(request, producers=PRODUCERS, bytes_per_stream=STREAM, max_send_queue=MAX_SEND_QUEUE,
           max_queue_seen=max(p.max_queue for p in producers),
           pauses=[len(p.events) // 2 for p in producers], stalls=[p.stalls for p in peers],
           flooder_queued_before_overflow=flood.sent, echo_rounds_meanwhile=echo_rounds,
           seconds=round(seconds, 2))
