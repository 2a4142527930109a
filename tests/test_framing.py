"""MsgReader semantics: partial and coalesced frames, ExpectMsgSize / DropMsgSize rules,
new_bytes, read strategies, receive-buffer limits, and bad MessageResults; a few examples of
the framing fuzz (tests/stress/test_stress_fuzz.py runs many)."""
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reactio
from reactio import DropMsgSize, ExpectMsgSize, Reactor

from helpers import framing_fuzz as ff
from support.reactors import EchoReactor
from support.runtime import listen_factory, pump_until
from support.sockets import raw_client, recv_exact_nb
from support.wire import frame, parse_frame

pytestmark = pytest.mark.timeout(30)


def test_message_result_values_are_cached_and_validated():
    assert ExpectMsgSize(10) is ExpectMsgSize(10)
    assert DropMsgSize(1034) is DropMsgSize(1034)
    assert DropMsgSize(5).is_drop and not ExpectMsgSize(5).is_drop
    assert DropMsgSize(5).size == 5
    assert repr(ExpectMsgSize(3)) == "ExpectMsgSize(3)"
    assert DropMsgSize(10**9).size == 10**9
    with pytest.raises(reactio.MessageResultError):
        DropMsgSize(-1)


def test_partial_and_coalesced_frames(rt, stream_addr):
    server = EchoReactor()
    lid, port = listen_factory(rt, lambda: server, recv_buffer_min_size=16, addr=stream_addr)
    peer = raw_client(port)
    frames = [frame(bytes([65 + i]) * (i * 37 % 300)) for i in range(40)]
    wire = b"".join(frames)
    # one byte at a time for the first frames, then the rest in one write (coalesced)
    split = len(frames[0]) + len(frames[1]) + 3
    for i in range(split):
        peer.sendall(wire[i:i + 1])
        rt.process_events(0.001)
    peer.sendall(wire[split:])
    echoed = recv_exact_nb(rt, peer, len(wire))
    assert echoed == wire
    assert server.frames == frames
    peer.close()


class Recorder(Reactor):
    """Records every call's (len(buf), new_bytes, decoded_msg_size) and answers from a script."""

    def __init__(self, script):
        self.calls = []
        self.script = script
        self.closed_with = "open"

    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        self.calls.append((len(buf), new_bytes, decoded_msg_size, bytes(buf)))
        return self.script(buf, new_bytes, decoded_msg_size)

    def on_close(self, reactor_id, cmd_sender):
        self.closed_with = self.close_error


def test_expect_size_withholds_calls_until_complete(rt):
    def script(buf, new_bytes, decoded):
        if len(buf) < 4:
            return ExpectMsgSize(0)
        size = int.from_bytes(buf[:4], "little")
        if size > len(buf):
            return ExpectMsgSize(size)
        return DropMsgSize(size)

    server = Recorder(script)
    lid, port = listen_factory(rt, lambda: server, recv_buffer_min_size=8)
    peer = raw_client(port)
    msg = (100).to_bytes(4, "little") + bytes(96)
    peer.sendall(msg[:2])
    pump_until(rt, lambda: len(server.calls) == 1)
    peer.sendall(msg[2:10])
    pump_until(rt, lambda: len(server.calls) == 2)
    assert server.calls[1][:3] == (10, 8, 0)
    # ExpectMsgSize(100) was returned: no call until all 100 bytes are in
    for i in range(10, 99, 10):
        peer.sendall(msg[i:min(i + 10, 99)])
        time.sleep(0.002)
        rt.process_events(0.002)
    rt.process_events(0.01)
    assert len(server.calls) == 2
    peer.sendall(msg[99:] + b"\x05\x00\x00\x00")          # completes it; 4 bytes of the next
    pump_until(rt, lambda: len(server.calls) == 4)
    assert server.calls[2][:3] == (104, 94, 100)
    assert server.calls[3][:3] == (4, 4, 0)                # after a drop: the rest counts as new
    assert server.closed_with == "open"
    peer.close()
    pump_until(rt, lambda: server.closed_with != "open")
    assert server.closed_with is None


@pytest.mark.parametrize("result, rule", [
    (lambda n: DropMsgSize(0), "DropMsgSize(0)"),
    (lambda n: DropMsgSize(n + 1), "must be in 1.."),
    (lambda n: ExpectMsgSize(n), "already buffered"),
    (lambda n: None, "returned None"),
    (lambda n: 5, "must return ExpectMsgSize(n) or DropMsgSize(n)"),
])
def test_bad_message_result_closes_only_that_reactor(rt, expected_errors, result, rule):
    bad = Recorder(lambda buf, nb, d: result(len(buf)))
    good = EchoReactor()
    reactors = [bad, good]
    lid, port = listen_factory(rt, lambda: reactors.pop(0))
    p1 = raw_client(port)
    p2 = raw_client(port)
    pump_until(rt, lambda: rt.count_streams() == 2)
    p1.sendall(b"0123456789")
    pump_until(rt, lambda: bad.closed_with != "open")
    assert isinstance(bad.closed_with, reactio.MessageResultError)
    assert rule in str(bad.closed_with)
    assert any(rule in m for m in expected_errors.messages)
    p2.sendall(frame(b"still alive"))
    assert recv_exact_nb(rt, p2, 21) == frame(b"still alive")
    p1.close()
    p2.close()


def test_buf_is_writable_and_zero_copy(rt):
    class Upper(Reactor):
        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            assert not buf.readonly
            for i in range(len(buf)):
                if 97 <= buf[i] <= 122:
                    buf[i] -= 32
            ctx.send_or_que(buf)
            return DropMsgSize(len(buf))

    lid, port = listen_factory(rt, Upper)
    peer = raw_client(port)
    peer.sendall(b"hello reactor")
    assert recv_exact_nb(rt, peer, 13) == b"HELLO REACTOR"
    peer.close()


def test_kept_memoryview_stays_safe_after_buffer_growth(rt):
    """A view kept past its callback (against the contract) must never see freed memory."""
    kept = []

    class Keeper(Reactor):
        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            kept.append(buf)
            if len(buf) < 200_000:
                return ExpectMsgSize(200_000)
            return DropMsgSize(len(buf))

    lid, port = listen_factory(rt, Keeper, recv_buffer_min_size=64)
    peer = raw_client(port)
    peer.sendall(b"a" * 64)
    pump_until(rt, lambda: kept)
    peer.sendall(b"b" * 300_000)            # grows the buffer while kept[0] is alive
    pump_until(rt, lambda: len(kept) >= 2)
    assert bytes(kept[0][:1]) in (b"a", b"b")
    assert sum(len(k) for k in kept) > 0
    peer.close()


def test_max_msg_size_closes_with_clear_error(rt, expected_errors):
    class Big(Reactor):
        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            return ExpectMsgSize(0)         # never finds the end of a message

        def on_close(self, reactor_id, cmd_sender):
            self.err = self.close_error

    big = Big()
    other = EchoReactor()
    reactors = [big, other]
    lid, port = listen_factory(rt, lambda: reactors.pop(0), recv_buffer_min_size=1024,
                               max_msg_size=64 * 1024)
    p1 = raw_client(port)
    p2 = raw_client(port)
    pump_until(rt, lambda: rt.count_streams() == 2)
    p1.setblocking(False)
    sent = 0

    def pushed():
        nonlocal sent
        try:
            sent += p1.send(b"z" * 65536)
        except (BlockingIOError, ConnectionError):
            pass
        return hasattr(big, "err")

    pump_until(rt, pushed)
    assert isinstance(big.err, reactio.MessageTooLargeError)
    assert "max_msg_size=65536" in str(big.err)
    assert expected_errors.matching("max_msg_size")
    p2.sendall(frame(b"ok"))
    assert recv_exact_nb(rt, p2, 12) == frame(b"ok")


def test_expect_more_than_max_msg_size_is_refused_at_once(rt, expected_errors):
    server = Recorder(lambda buf, nb, d: ExpectMsgSize(1 << 30))
    lid, port = listen_factory(rt, lambda: server, max_msg_size=1 << 20)
    peer = raw_client(port)
    peer.sendall(b"x")
    pump_until(rt, lambda: server.closed_with != "open")
    assert isinstance(server.closed_with, reactio.MessageTooLargeError)
    peer.close()


class DispatchEach(EchoReactor):
    """Uses the per-chunk read strategy."""

    def on_readable(self, ctx):
        ctx.reader.try_read_fast_dispatch(ctx)


def test_fast_dispatch_strategy(rt):
    server = DispatchEach()
    lid, port = listen_factory(rt, lambda: server, recv_buffer_min_size=32)
    peer = raw_client(port)
    wire = b"".join(frame(bytes([i % 256]) * (i % 90)) for i in range(500))
    peer.sendall(wire)
    assert recv_exact_nb(rt, peer, len(wire)) == wire
    assert len(server.frames) == 500
    peer.close()


def test_bytes_before_eof_are_dispatched_then_reply_flushed(rt, stream_addr):
    """Half-close: the peer sends frames then shutdown(SHUT_WR); every frame is dispatched and
    every reply reaches the peer before the connection closes."""
    server = EchoReactor()
    lid, port = listen_factory(rt, lambda: server, addr=stream_addr)
    peer = raw_client(port)
    wire = b"".join(frame(b"q" * 1000) for _ in range(200))
    peer.sendall(wire)
    peer.shutdown(socket.SHUT_WR)
    echoed = recv_exact_nb(rt, peer, len(wire))
    assert echoed == wire
    pump_until(rt, lambda: server.closed)
    assert server.closed[0][1] is None
    peer.setblocking(True)
    peer.settimeout(5)
    assert peer.recv(1) == b""          # orderly FIN after the replies
    peer.close()


def test_receive_view_reuse_never_hands_out_a_kept_or_released_view(rt):
    """The runtime reuses the memoryview of the previous message when nobody holds it; a view
    the reactor kept, or released, must never come back."""
    seen = []

    class Keeper(Reactor):
        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            res, n = parse_frame(buf)
            if res is not None:
                return res
            assert bytes(buf[:n]) == frame(bytes([len(seen)]) * 5)
            if len(seen) % 3 == 0:
                seen.append(buf)            # kept past the call
            elif len(seen) % 3 == 1:
                seen.append(id(buf))
                view = buf[:n]
                ctx.send_or_que(view)
                buf.release()               # released inside the call
                return DropMsgSize(n)
            else:
                seen.append(id(buf))
            ctx.send_or_que(buf[:n])
            return DropMsgSize(n)

    lid, port = listen_factory(rt, Keeper)
    peer = raw_client(port)
    for i in range(30):
        msg = frame(bytes([i]) * 5)
        peer.sendall(msg)
        assert recv_exact_nb(rt, peer, len(msg)) == msg     # one at a time: same place, size
    kept_ids = {id(v) for v in seen if isinstance(v, memoryview)}
    assert len(kept_ids) == 10                               # every kept view was a new object
    peer.close()


def test_whole_message_over_max_msg_size_in_one_read_is_refused(rt, expected_errors):
    """The limit holds even when the oversized message fits the receive buffer at once: it is
    refused before dispatch when ExpectMsgSize announces it or it fills the buffer, else at its
    DropMsgSize, which closes the connection."""
    server = EchoReactor()
    lid, port = listen_factory(rt, lambda: server, recv_buffer_min_size=8192, max_msg_size=1024)
    peer = raw_client(port)
    peer.sendall(frame(b"x" * 4000))
    pump_until(rt, lambda: server.closed)
    assert isinstance(server.closed[0][1], reactio.MessageTooLargeError)
    assert expected_errors.matching("max_msg_size=1024")
    peer.close()


# --------------------------------------------------------------------------- fuzz (light)

LIGHT_FUZZ = settings(max_examples=12, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))


@LIGHT_FUZZ
@given(data=st.data())
def test_fuzz_frames_in_random_writes_light(data):
    """A few examples of tests/stress/test_stress_fuzz.py: the frames a reactor dispatches
    are exactly those a reference parser finds, whatever the write boundaries."""
    wire = data.draw(ff.wires(max_total=100_000))
    chunks = data.draw(ff.cuts(len(wire)))
    frames, ref, violations, closed = ff.run_framing_example(
        wire, chunks, data.draw(st.sampled_from(ff.STYLES)), data.draw(st.booleans()),
        data.draw(st.sampled_from([1, 10, 4096])))
    assert violations == [] and frames == ref and closed == ("closed", None)


@LIGHT_FUZZ
@given(data=st.data())
def test_fuzz_message_result_misuse_light(expected_errors, data):
    chunks = data.draw(st.lists(st.binary(min_size=1, max_size=2000), min_size=1, max_size=6))
    reactor, echoed = ff.run_misuse_example(data, chunks)
    assert echoed == b"ping" and reactor.closed is not None
    assert reactor.violations == [] and reactor.close_violations() == []

