"""Idle connections hold no receive buffer (issue 12): with more than PARK_ABOVE_STREAMS (64)
streams, a read that leaves nothing buffered parks the stream's buffer on the runtime for the
next stream that reads.  What must hold: every stream still gets exactly its own bytes, a
partial message keeps its stream's buffer, and bytes a reactor kept a view of are never handed
to another stream."""
import sys

import pytest

import reactio
from reactio import DropMsgSize

from support.reactors import EchoReactor, FrameEcho
from support.runtime import listen_factory, pump_until, stream_ids
from support.sockets import raw_client, recv_exact_nb
from support.wire import frame, parse_frame

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(reactio.BACKEND != "epoll",
                       reason="IOCP keeps a receive posted into each stream's buffer"),
]

STREAMS = 80        # more than PARK_ABOVE_STREAMS


def _serve(rt, factory, n=STREAMS):
    reactors = []

    def make():
        r = factory()
        reactors.append(r)
        return r

    lid, port = listen_factory(rt, make)
    peers = [raw_client(port) for _ in range(n)]
    pump_until(rt, lambda: rt.count_streams() == n)
    return reactors, peers


def _buffered_readers(rt):
    """How many streams hold a receive buffer (sys.getsizeof of a reader counts it)."""
    contexts = [rt.get_context(rid) for rid in stream_ids(rt, slots=STREAMS + 8)]
    assert len(contexts) == rt.count_streams()
    bare = min(sys.getsizeof(c.reader) for c in contexts)
    return sum(sys.getsizeof(c.reader) > bare for c in contexts)


def test_idle_streams_hold_no_receive_buffer_and_each_gets_its_own_bytes(rt):
    reactors, peers = _serve(rt, EchoReactor)
    for rnd in range(3):
        for i, p in enumerate(peers):
            p.sendall(frame(b"stream %d round %d" % (i, rnd)))
        for i, p in enumerate(peers):
            expected = frame(b"stream %d round %d" % (i, rnd))
            assert recv_exact_nb(rt, p, len(expected)) == expected
    assert _buffered_readers(rt) == 0
    assert sorted(r.frames for r in reactors) == sorted(
        [frame(b"stream %d round %d" % (i, rnd)) for rnd in range(3)] for i in range(STREAMS))
    for p in peers:
        p.close()


def test_a_partial_message_keeps_its_buffer(rt):
    reactors, peers = _serve(rt, EchoReactor)
    whole = frame(b"x" * 100)
    peers[0].sendall(whole[:30])           # half a message: stream 0 must keep its bytes
    for p in peers[1:]:
        p.sendall(frame(b"other"))
    for p in peers[1:]:
        assert recv_exact_nb(rt, p, len(frame(b"other"))) == frame(b"other")
    assert _buffered_readers(rt) == 1
    peers[0].sendall(whole[30:])
    assert recv_exact_nb(rt, peers[0], len(whole)) == whole
    assert _buffered_readers(rt) == 0
    for p in peers:
        p.close()


class Keeper(FrameEcho):
    """Keeps a view of the first message it gets (bytes it does not own after the call: they
    may show later bytes of this stream, never another stream's)."""

    def __init__(self):
        self.kept = None

    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        res, n = parse_frame(buf)
        if res is not None:
            return res
        if self.kept is None:
            self.kept = buf[:n]
        ctx.send_or_que(buf[:n])
        return DropMsgSize(n)


def test_bytes_under_a_kept_view_are_never_given_to_another_stream(rt):
    reactors, peers = _serve(rt, Keeper)
    peers[0].sendall(frame(b"A" * 40))
    assert recv_exact_nb(rt, peers[0], len(frame(b"A" * 40))) == frame(b"A" * 40)
    keeper = next(r for r in reactors if r.kept is not None)
    before = bytes(keeper.kept)
    for rnd in range(3):
        for p in peers[1:]:
            p.sendall(frame(b"B" * 40))
        for p in peers[1:]:
            assert recv_exact_nb(rt, p, len(frame(b"B" * 40))) == frame(b"B" * 40)
    assert bytes(keeper.kept) == before
    for p in peers:
        p.close()
