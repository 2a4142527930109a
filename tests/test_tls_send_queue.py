"""A TLS stream's send queue counts the plaintext the user sent, as a plain stream's counts its
bytes (docs/tls.md): ctx.send_queue_size, the watermarks, max_send_queue and the completions,
against a blocking Python ssl peer that does not read until it is told to.

The sends are small (SMALL bytes): each record of them would cost 22 more bytes on the wire,
so an accounting in ciphertext shows at once (send_queue_size + bytes_sent would exceed what
the user sent)."""
from __future__ import annotations

import threading

import pytest

import reactio
from reactio import DropMsgSize, ReactRuntime, SendOrQueResult, SendQueueOverflowError

from support.runtime import connect, pump_until
from support.tls import BlockingTlsServer, ca, client_ctx, recv_to_end, server_ctx  # noqa: F401

pytestmark = pytest.mark.timeout(60)

FILL = 16 * 1024        # the messages that fill the socket buffers
SMALL = 100             # then the messages whose queueing is checked
PEER_RCVBUF = 64 * 1024


def fill_msg(i):
    return (b"%016d" % i) * (FILL // 16)


def small_msg(i):
    return (b"%010d" % i) * (SMALL // 10)


def gated_reader(gate):
    """A peer that reads nothing until ``gate`` is set, then everything up to a clean TLS end
    (close_notify: recv() gives b""; a bare EOF raises SSLEOFError)."""
    def serve(conn):
        assert gate.wait(20)
        return recv_to_end(conn)
    return serve


class Queuer(reactio.Reactor):
    """Fills the socket buffers of a peer that does not read, then queues small messages,
    checking after each that the queue grew by exactly the plaintext sent (when no write
    happened meanwhile) and that queue + written == accepted, in plaintext bytes."""

    def __init__(self):
        self.sent = bytearray()         # every byte send_or_que accepted, in order
        self.before = 0                 # send_queue_size before the last send
        self.exact_steps = 0            # small sends checked for an exact +SMALL
        self.pauses, self.resumes = [], []
        self.ctx = None

    def on_connected(self, ctx, listener_id):
        self.ctx = ctx
        i = 0
        while ctx.send_or_que(fill_msg(i)) == SendOrQueResult.COMPLETE:
            self.sent += fill_msg(i)
            i += 1
        self.sent += fill_msg(i)
        assert 0 < ctx.send_queue_size <= FILL, ctx.send_queue_size
        self.check()

    def check(self):
        ctx = self.ctx
        assert ctx.send_queue_size + ctx.sender.bytes_sent == len(self.sent), (
            ctx.send_queue_size, ctx.sender.bytes_sent, len(self.sent))

    def send_small(self, i, on_sent=None):
        ctx = self.ctx
        self.before, written = ctx.send_queue_size, ctx.sender.bytes_sent
        assert ctx.send_or_que(small_msg(i), on_sent) == SendOrQueResult.IN_QUEUE
        self.sent += small_msg(i)
        if ctx.sender.bytes_sent == written:        # (IOCP may write in between)
            assert ctx.send_queue_size == self.before + SMALL
            self.exact_steps += 1
        self.check()

    def on_pause_writing(self, ctx):
        self.pauses.append((self.before, ctx.send_queue_size))

    def on_resume_writing(self, ctx):
        self.check()
        self.resumes.append(ctx.send_queue_size)

    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        return DropMsgSize(len(buf))


def test_watermarks_count_plaintext(server_ctx, client_ctx):
    """on_pause_writing fires on the small send that takes the plaintext queued over
    high_water, on_resume_writing once the peer read it down to low_water; everything arrives
    in order."""
    high, low = 96 * 1024, 24 * 1024
    gate = threading.Event()
    server = BlockingTlsServer(server_ctx, gated_reader(gate), rcvbuf=PEER_RCVBUF)
    q = Queuer()
    with ReactRuntime(high_water=high, low_water=low) as rt:
        assert isinstance(connect(rt, server.port, q, ssl=client_ctx), reactio.ReactorID)
        i = 0
        while not q.pauses:
            q.send_small(i)
            i += 1
            assert i < 2 * high // SMALL, "no on_pause_writing"
        before, at_pause = q.pauses[0]
        assert before <= high < at_pause, q.pauses
        assert q.exact_steps > high // SMALL // 2
        gate.set()
        pump_until(rt, lambda: q.resumes, timeout=20)
        assert q.resumes[0] <= low
        assert len(q.pauses) == 1
        q.ctx.close()
        pump_until(rt, lambda: not server.thread.is_alive(), timeout=20)
        assert q.ctx.send_queue_size == 0
    result = server.join()
    assert not isinstance(result, BaseException), result
    assert result == bytes(q.sent)


def test_max_send_queue_refuses_at_the_plaintext_limit(server_ctx, client_ctx, expected_errors):
    """The send that would take the plaintext queued over max_send_queue is refused (and the
    stream reset), not one that only its records would take over."""
    limit = 64 * 1024
    gate = threading.Event()
    server = BlockingTlsServer(server_ctx, gated_reader(gate), rcvbuf=PEER_RCVBUF)
    q = Queuer()
    with ReactRuntime() as rt:
        assert isinstance(connect(rt, server.port, q, ssl=client_ctx, max_send_queue=limit),
                          reactio.ReactorID)
        i = 0
        with pytest.raises(SendQueueOverflowError):
            while True:
                q.send_small(i)
                i += 1
                assert i < 2 * limit // SMALL, "no SendQueueOverflowError"
        before = q.before
        assert before <= limit < before + SMALL
        assert before + q.ctx.sender.bytes_sent == len(q.sent)
        assert q.exact_steps > limit // SMALL // 2
        gate.set()
        pump_until(rt, lambda: not q.ctx.is_open)
    assert isinstance(q.close_error, SendQueueOverflowError)
    result = server.join()      # a reset (or a TLS stream cut short), no clean end
    assert isinstance(result, OSError) and not isinstance(result, TimeoutError), result
    assert expected_errors.matching("max_send_queue")


def test_close_after_a_large_queue_sends_it_all_then_close_notify(server_ctx, client_ctx):
    """close() with ~1 MiB of plaintext queued (the peer not reading): the stream drains it,
    every completion succeeds in order, then close_notify ends the stream cleanly."""
    gate = threading.Event()
    server = BlockingTlsServer(server_ctx, gated_reader(gate), rcvbuf=PEER_RCVBUF)
    done, closed = [], []

    class Closer(Queuer):
        def on_close(self, reactor_id, cmd_sender):
            closed.append((self.close_error, list(done)))

    q = Closer()
    n = (1 << 20) // SMALL
    with ReactRuntime(max_send_queue=4 << 20) as rt:
        rid = connect(rt, server.port, q, ssl=client_ctx)
        for i in range(n):
            q.send_small(i, (lambda r, i=i: done.append((i, r))) if i % 1000 == 999 else None)
        queued = q.ctx.send_queue_size
        assert queued >= n * SMALL
        q.ctx.close()
        assert q.ctx.send_queue_size == queued      # closing drops nothing
        gate.set()
        pump_until(rt, lambda: closed, timeout=30)
    result = server.join()
    assert not isinstance(result, BaseException), result
    assert result == bytes(q.sent)
    err, completions = closed[0]
    assert err is None
    assert completions == [(i, rid) for i in range(999, n, 1000)]


def test_abort_drops_the_queue_without_close_notify(server_ctx, client_ctx):
    """close(abort=True) with plaintext queued: nothing more is written, no close_notify; the
    peer sees a reset or a TLS stream cut short, never a clean end."""
    gate = threading.Event()
    server = BlockingTlsServer(server_ctx, gated_reader(gate), rcvbuf=PEER_RCVBUF)
    q = Queuer()
    with ReactRuntime() as rt:
        connect(rt, server.port, q, ssl=client_ctx)
        for i in range(100):
            q.send_small(i)
        q.ctx.close(abort=True)
        gate.set()
        pump_until(rt, lambda: not server.thread.is_alive(), timeout=20)
    result = server.join()      # (ssl.SSLEOFError is an OSError)
    assert isinstance(result, OSError) and not isinstance(result, TimeoutError), result


def test_replies_held_in_one_dispatch_then_close(server_ctx, client_ctx):
    """Three lines in one record: the replies after the first are held (plaintext, counted in
    send_queue_size) until the dispatch ends; close() from the last one still sends them all,
    then close_notify."""
    def serve(conn):
        conn.sendall(b"one\ntwo\nend\n")
        return recv_to_end(conn)

    server = BlockingTlsServer(server_ctx, serve)
    held, closed = [], []

    class Replier(reactio.Reactor):
        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            end = bytes(buf).find(b"\n")
            if end < 0:
                return reactio.ExpectMsgSize(0)
            line = bytes(buf[:end + 1])
            before = ctx.send_queue_size
            if ctx.send_or_que(line.upper()) == SendOrQueResult.IN_QUEUE:
                held.append(ctx.send_queue_size - before)
            if line == b"end\n":
                ctx.close()
            return DropMsgSize(end + 1)

        def on_close(self, reactor_id, cmd_sender):
            closed.append(self.close_error)

    with ReactRuntime() as rt:
        connect(rt, server.port, Replier(), ssl=client_ctx)
        pump_until(rt, lambda: closed and not server.thread.is_alive(), timeout=20)
    assert server.join() == b"ONE\nTWO\nEND\n"
    assert closed == [None]
    assert held == [4, 4]       # "TWO\n", "END\n": held in plaintext while the dispatch ran
