"""Issue 14 (TLS): slow TLS consumers.  Producers on a reactio TLS server stream
REACTIO_STRESS_TLS_MIB (default 16) MiB each in messages of random sizes (1 B .. 64 KiB, so
records are cut anywhere), honouring on_pause_writing / on_resume_writing, to blocking Python
ssl clients that read in random pieces and keep stalling; then close().  Checked after every
send and callback: the send queue counts plaintext (send_queue_size + bytes_sent == the bytes
send_or_que accepted), never exceeds max_send_queue, pause fires only above high_water and resume
only at low_water or below, completions run in send order; every byte arrives in order, then a
clean close_notify."""
from __future__ import annotations

import random
import socket
import threading
import time

import pytest

from reactio import ReactRuntime

from stress_util import Deadline, env_int, report
from support.reactors import SinkReactor
from support.runtime import listen_factory
from support.tls import ca, client_ctx, server_ctx  # noqa: F401

pytestmark = [pytest.mark.stress, pytest.mark.timeout(240)]

MIB = 1 << 20
STREAM = env_int("REACTIO_STRESS_TLS_MIB", 16) * MIB
PRODUCERS = 2
HIGH, LOW = 256 * 1024, 64 * 1024
MAX_SEND_QUEUE = HIGH + 64 * 1024       # a producer stops at HIGH: one more message fits
PERIOD = 251                            # the stream is PAT[offset % 251]
PAT = bytes(range(PERIOD)) * ((64 * 1024) // PERIOD + 2)


class Producer(SinkReactor):
    """Streams STREAM bytes in random-sized messages while not paused, then closes (its close
    error in ``err``)."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.accepted = 0
        self.paused = False
        self.pauses = self.resumes = 0
        self.done, self.owed = [], 0
        self.max_queue = 0
        self.ctx = None
        self.err = "open"

    def check(self, ctx):
        q = ctx.send_queue_size
        assert q + ctx.sender.bytes_sent == self.accepted, (q, ctx.sender.bytes_sent,
                                                             self.accepted)
        assert q <= MAX_SEND_QUEUE
        self.max_queue = max(self.max_queue, q)

    def on_connected(self, ctx, listener_id):
        self.ctx = ctx
        self.pump(ctx)

    def pump(self, ctx):
        while not self.paused and self.accepted < STREAM:
            n = min(self.rng.randint(1, 64 * 1024), STREAM - self.accepted)
            o = self.accepted % PERIOD
            on_sent = None
            if self.rng.random() < 0.05:
                k = self.owed
                self.owed += 1
                on_sent = lambda r, k=k: self.done.append(k)    # noqa: E731
            self.accepted += n      # (before: on_pause_writing runs inside send_or_que)
            ctx.send_or_que(PAT[o:o + n], on_sent)
            self.check(ctx)
        if self.accepted >= STREAM and ctx.is_open:
            ctx.close()

    def on_pause_writing(self, ctx):
        assert ctx.send_queue_size > HIGH
        self.check(ctx)
        self.pauses += 1
        self.paused = True

    def on_resume_writing(self, ctx):
        assert ctx.send_queue_size <= LOW
        self.check(ctx)
        self.resumes += 1
        self.paused = False
        self.pump(ctx)


class StallingReader:
    """A blocking TLS client on a thread: reads random pieces, stalls now and then, checks the
    pattern, ends at the producer's close_notify (a bare EOF would raise SSLEOFError)."""

    def __init__(self, port, ctx, seed):
        self.port, self.ctx, self.rng = port, ctx, random.Random(seed)
        self.got, self.stalls, self.bad_at, self.result = 0, 0, None, None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            raw = socket.create_connection(("127.0.0.1", self.port), timeout=60)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            with self.ctx.wrap_socket(raw, server_hostname="localhost",
                                      suppress_ragged_eofs=False) as conn:
                while True:
                    chunk = conn.recv(self.rng.randint(1, 96 * 1024))
                    if not chunk:
                        break
                    o = self.got % PERIOD
                    if chunk != PAT[o:o + len(chunk)] and self.bad_at is None:
                        self.bad_at = self.got
                    self.got += len(chunk)
                    if self.rng.random() < 0.02:
                        self.stalls += 1
                        time.sleep(0.02)
            self.result = "clean end"
        except BaseException as exc:
            self.result = exc


def test_tls_slow_consumers_count_plaintext(request, server_ctx, client_ctx):
    producers = []

    def factory():
        producers.append(Producer(seed=len(producers)))
        return producers[-1]

    with ReactRuntime(high_water=HIGH, low_water=LOW) as rt:
        _, port = listen_factory(rt, factory, ssl=server_ctx, max_send_queue=MAX_SEND_QUEUE)
        readers = [StallingReader(port, client_ctx, seed=100 + i) for i in range(PRODUCERS)]
        deadline = Deadline(200, "TLS producers streaming to stalling readers")
        while any(r.thread.is_alive() for r in readers):
            deadline.check()
            rt.process_events(0.01)
        deadline = Deadline(10, "the producers' streams closing")
        while any(p.err == "open" for p in producers):
            deadline.check()
            rt.process_events(0.01)
    for r in readers:
        assert r.result == "clean end", r.result
        assert r.bad_at is None, f"stream corrupted at byte {r.bad_at}"
        assert r.got == STREAM
    for p in producers:
        assert p.err is None
        assert p.done == list(range(p.owed))
        assert p.pauses >= 1 and p.resumes >= 1
    report(request, stream_mib=STREAM // MIB,
           pauses=[p.pauses for p in producers], stalls=[r.stalls for r in readers],
           max_queue=[p.max_queue for p in producers])
