"""Framing fuzz machinery shared by tests/test_faults.py (a few examples) and
tests/stress/test_stress_fuzz.py (many): hypothesis draws a frame sequence, the way it is cut
into writes (1 byte .. 64 KiB, with random delays), the reactor's framing style, the read
strategy and the receive buffer size; the frames the reactor dispatches must be exactly those
a reference parser finds in the byte stream, and every call must show new_bytes /
decoded_msg_size as documented.  A second machine makes the reactor return random, often
invalid, MessageResults: the stream must close with the error the rules name, at the first
invalid result, and never crash the runtime.
"""
from __future__ import annotations

import socket
import threading
import time

from hypothesis import strategies as st

import reactio
from reactio import DefaultTcpListenerHandler, Deferred, DropMsgSize, ExpectMsgSize, Reactor

HEADER = 10


def frame(body: bytes, stamp: int = 0) -> bytes:
    return len(body).to_bytes(2, "little") + stamp.to_bytes(8, "little", signed=True) + body


def reference_frames(wire: bytes) -> tuple[list[bytes], int]:
    """The frames a straightforward parser finds, and the length of the trailing partial."""
    out, i = [], 0
    while len(wire) - i >= HEADER:
        n = HEADER + int.from_bytes(wire[i:i + 2], "little")
        if len(wire) - i < n:
            break
        out.append(wire[i:i + n])
        i += n
    return out, len(wire) - i


# --------------------------------------------------------------------------- strategies

body_sizes = st.one_of(st.integers(0, 40), st.integers(41, 3000), st.integers(3001, 65535))


@st.composite
def wires(draw, max_total=400_000):
    """A byte stream of whole frames (sometimes followed by a partial one)."""
    frames, total = [], 0
    for k in range(draw(st.integers(1, 40))):
        size = draw(body_sizes)
        if total + size > max_total:
            break
        seed = draw(st.integers(0, 255))
        body = bytes((seed + j * 7) & 0xFF for j in range(min(size, 64))) * (size // 64 + 1)
        frames.append(frame(body[:size], k))
        total += size + HEADER
    wire = b"".join(frames)
    if draw(st.booleans()):
        extra = frame(b"\xAB" * draw(st.integers(0, 5000)))
        wire += extra[:draw(st.integers(1, len(extra) - 1))]
    return wire


@st.composite
def cuts(draw, length):
    """Chunk sizes covering ``length`` bytes: 1 byte to 64 KiB, and a delay before each."""
    out, done = [], 0
    small = draw(st.booleans())
    while done < length:
        size = draw(st.integers(1, 64 if small else 65536))
        size = min(size, length - done)
        delay = draw(st.sampled_from([0, 0, 0, 0.0002, 0.001, 0.003]))
        out.append((size, delay))
        done += size
        if len(out) > 400:                       # bound the example's duration
            out.append((length - done, 0))
            break
    return [c for c in out if c[0] > 0]


STYLES = ["expect_exact", "expect_unknown", "header_then_body", "one_call_per_frame"]


# --------------------------------------------------------------------------- reactors

class FuzzFramer(Reactor):
    """Dispatches reactio frames in one of several legitimate styles and checks, on every
    call, the documented meaning of new_bytes and decoded_msg_size."""

    def __init__(self, style, fast_dispatch, max_msg_size):
        self.style = style
        self.max_msg_size = max_msg_size      # one DropMsgSize may not consume more
        self.fast_dispatch = fast_dispatch
        self.frames = []
        self.violations = []
        self.prev_len = None          # len(buf) of the last call, None after a drop
        self.last_expect = 0
        self.body_left = None         # header_then_body: body bytes still expected
        self.header = b""
        self.closed = None

    def on_readable(self, ctx):
        if self.fast_dispatch:
            ctx.reader.try_read_fast_dispatch(ctx)
        else:
            ctx.reader.try_read_fast_read(ctx)

    def _check(self, buf, new_bytes, decoded):
        n = len(buf)
        want_new = n if self.prev_len is None else n - self.prev_len
        if new_bytes != want_new:
            self.violations.append(f"new_bytes={new_bytes}, expected {want_new} (len {n})")
        if decoded != self.last_expect:
            self.violations.append(f"decoded_msg_size={decoded}, expected {self.last_expect}")
        if self.last_expect and n < self.last_expect:
            self.violations.append(f"called with {n} bytes before the {self.last_expect} expected")

    def _expect(self, n, buf_len):
        self.prev_len = buf_len
        self.last_expect = n
        return ExpectMsgSize(n)

    def _drop(self, n):
        self.prev_len = None
        self.last_expect = 0
        return DropMsgSize(n)

    def on_inbound_message(self, buf, new_bytes, decoded, ctx):
        self._check(buf, new_bytes, decoded)
        n = len(buf)
        if self.style == "header_then_body":
            if self.body_left is None:
                if n < HEADER:
                    return self._expect(HEADER, n)
                self.header = bytes(buf[:HEADER])
                self.body_left = int.from_bytes(self.header[:2], "little")
                if self.body_left == 0:
                    self.frames.append(self.header)
                    self.body_left = None
                return self._drop(HEADER)
            if n < self.body_left:
                return self._expect(self.body_left, n)
            self.frames.append(self.header + bytes(buf[:self.body_left]))
            size, self.body_left = self.body_left, None
            return self._drop(size)
        if n < HEADER:
            return self._expect(0 if self.style == "expect_unknown" else HEADER, n)
        size = HEADER + int.from_bytes(buf[:2], "little")
        if n < size:
            return self._expect(0 if self.style == "expect_unknown" else size, n)
        if self.style == "one_call_per_frame" or n == size:
            self.frames.append(bytes(buf[:size]))
            return self._drop(size)
        # several frames buffered: consume them in this call (up to max_msg_size bytes, the
        # most one DropMsgSize may consume)
        off = 0
        while n - off >= HEADER:
            size = HEADER + int.from_bytes(buf[off:off + 2], "little")
            if n - off < size or off + size > self.max_msg_size:
                break
            self.frames.append(bytes(buf[off:off + size]))
            off += size
        return self._drop(off)

    def on_close(self, reactor_id, cmd_sender):
        self.closed = ("closed", self.close_error)


def _writer(sock, wire, chunks, errors):
    try:
        off = 0
        for size, delay in chunks:
            if delay:
                time.sleep(delay)
            sock.sendall(wire[off:off + size])
            off += size
        sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        errors.append(exc)


def run_framing_example(wire, chunks, style, fast_dispatch, recv_min, timeout=30.0):
    """Returns (frames dispatched, reference frames, violations, close)."""
    rt = reactio.ReactRuntime(max_msg_size=70_000)
    try:
        reactor = FuzzFramer(style, fast_dispatch, 70_000)
        got = []
        rt.cmd_sender.send_listen("127.0.0.1:0", DefaultTcpListenerHandler(
            lambda c, p: reactor, recv_min), Deferred.IMMEDIATE, got.append)
        while not got:
            rt.process_events(0.01)
        port = rt.local_address(got[0])[1]
        peer = socket.create_connection(("127.0.0.1", port), timeout=10)
        errors = []
        t = threading.Thread(target=_writer, args=(peer, wire, chunks, errors))
        t.start()
        deadline = time.monotonic() + timeout
        while reactor.closed is None and time.monotonic() < deadline:
            rt.process_events(0.005)
        t.join(10)
        peer.close()
        ref, partial = reference_frames(wire)
        assert not errors, errors
        assert reactor.closed is not None, "the stream did not close after the peer's FIN"
        return reactor.frames, ref, reactor.violations, reactor.closed
    finally:
        rt.close()


# --------------------------------------------------------------------------- misuse

class RandomResults(Reactor):
    """Returns results drawn by hypothesis; knows which of them break the rules."""

    def __init__(self, data, max_msg_size):
        self.data = data
        self.max_msg_size = max_msg_size
        self.first_invalid = None         # (description, expected exception type)
        self.calls_after_invalid = 0
        self.calls = 0
        self.closed = None

    def on_inbound_message(self, buf, new_bytes, decoded, ctx):
        if self.first_invalid is not None:
            self.calls_after_invalid += 1
        self.calls += 1
        avail = len(buf)
        kind = self.data.draw(st.sampled_from([
            "drop_ok", "drop_ok", "expect_ok", "expect_zero", "drop_zero", "drop_too_many",
            "drop_over_max", "expect_not_more", "expect_too_large", "none", "int", "tuple",
            "raise_negative", "raise_other"]), label="result kind")
        bad = None
        top = min(avail, self.max_msg_size)
        if kind == "drop_over_max" and avail <= self.max_msg_size:
            kind = "drop_ok"
        elif avail > self.max_msg_size and self.data.draw(st.booleans(), label="over max"):
            kind = "drop_over_max"          # rare otherwise: the buffer seldom gets this full
        if kind == "drop_ok":
            r = DropMsgSize(self.data.draw(st.integers(1, top), label="drop"))
        elif kind == "drop_over_max":
            r, bad = DropMsgSize(self.data.draw(st.integers(self.max_msg_size + 1, avail))), \
                reactio.MessageTooLargeError
        elif kind == "expect_ok":
            if avail + 1 > self.max_msg_size:
                r = DropMsgSize(top)
            else:
                r = ExpectMsgSize(self.data.draw(st.integers(avail + 1, self.max_msg_size),
                                                 label="expect"))
        elif kind == "expect_zero":
            r = ExpectMsgSize(0)
        elif kind == "drop_zero":
            r, bad = DropMsgSize(0), reactio.MessageResultError
        elif kind == "drop_too_many":
            r, bad = DropMsgSize(avail + self.data.draw(st.integers(1, 10**6))), \
                reactio.MessageResultError
        elif kind == "expect_not_more":
            r, bad = ExpectMsgSize(self.data.draw(st.integers(1, avail))), \
                reactio.MessageResultError
        elif kind == "expect_too_large":
            r, bad = ExpectMsgSize(self.max_msg_size + self.data.draw(st.integers(1, 10**9))), \
                reactio.MessageTooLargeError
        elif kind == "none":
            r, bad = None, reactio.MessageResultError
        elif kind == "int":
            r, bad = avail, reactio.MessageResultError
        elif kind == "tuple":
            r, bad = (True, avail), reactio.MessageResultError
        elif kind == "raise_negative":
            self.first_invalid = (kind, reactio.MessageResultError)
            return DropMsgSize(-self.data.draw(st.integers(1, 10**6)))     # raises
        else:
            self.first_invalid = (kind, LookupError)
            raise LookupError("the reactor's own bug")
        if bad is not None and self.first_invalid is None:
            self.first_invalid = (kind, bad)
        return r

    def on_close(self, reactor_id, cmd_sender):
        self.closed = ("closed", self.close_error)


def run_misuse_example(data, chunks_bytes, max_msg_size=2000):
    rt = reactio.ReactRuntime(max_msg_size=max_msg_size)
    try:
        reactor = RandomResults(data, max_msg_size)
        got = []
        rt.cmd_sender.send_listen("127.0.0.1:0", DefaultTcpListenerHandler(
            lambda c, p: reactor, 256), Deferred.IMMEDIATE, got.append)
        while not got:
            rt.process_events(0.01)
        port = rt.local_address(got[0])[1]
        peer = socket.create_connection(("127.0.0.1", port), timeout=10)
        peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for chunk in chunks_bytes:
            try:
                peer.sendall(chunk)
            except OSError:
                break                           # the reactor closed already (reset)
            for _ in range(3):
                rt.process_events(0.001)
            if reactor.closed is not None:
                break
        try:
            peer.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        deadline = time.monotonic() + 10
        while reactor.closed is None and time.monotonic() < deadline:
            rt.process_events(0.005)
        peer.close()
        # the runtime is fine: a fresh stream on the same runtime still works
        ok = []

        class Echo(Reactor):
            def on_inbound_message(self, buf, new_bytes, decoded, ctx):
                ctx.send_or_que(buf)
                return DropMsgSize(len(buf))

        rt.cmd_sender.send_listen("127.0.0.1:0", DefaultTcpListenerHandler(
            lambda c, p: Echo()), Deferred.IMMEDIATE, ok.append)
        while not ok:
            rt.process_events(0.01)
        probe = socket.create_connection(("127.0.0.1", rt.local_address(ok[0])[1]), timeout=10)
        probe.sendall(b"ping")
        probe.setblocking(False)
        echoed = b""
        deadline = time.monotonic() + 10
        while echoed != b"ping" and time.monotonic() < deadline:
            rt.process_events(0.005)
            try:
                echoed += probe.recv(4)
            except BlockingIOError:
                pass
        probe.close()
        return reactor, echoed
    finally:
        rt.close()
