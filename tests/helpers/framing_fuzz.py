"""Framing fuzz machinery shared by tests/test_faults.py (a few examples) and
tests/stress/test_stress_fuzz.py (many): hypothesis draws a frame sequence, the way it is cut
into writes (1 byte .. 64 KiB, with random delays), the reactor's framing style, the read
strategy and the receive buffer size; the frames the reactor dispatches must be exactly those
a reference parser finds in the byte stream, and every call must show new_bytes /
decoded_msg_size as documented.  A second machine makes the reactor return random, often
invalid, MessageResults: the stream must close with the error the rules name, at the first
invalid result, and never crash the runtime.  tests/fuzz/fuzz_framing.py drives that second
machine (RandomResults, with CallContract) from atheris instead of hypothesis.
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

class CallContract:
    """The documented meaning of on_inbound_message's arguments (docs/framing.md), tracked from
    the results the reactor returned: ``new_bytes`` counts the bytes not shown before (all of
    buf after a drop), ``decoded_msg_size`` is the n of the last ExpectMsgSize(n) (0 after a
    drop), and no call comes before the n bytes are buffered.  ``check_settled`` tells whether a
    call is still owed once every byte sent has been buffered."""

    def __init__(self):
        self.prev_len = None          # len(buf) at the last ExpectMsgSize, None after a drop
        self.last_expect = 0

    def check_call(self, n, new_bytes, decoded):
        """Violations (strings) of a call with len(buf) == n."""
        out = []
        want_new = n if self.prev_len is None else n - self.prev_len
        if new_bytes != want_new:
            out.append(f"new_bytes={new_bytes}, expected {want_new} (len {n})")
        if decoded != self.last_expect:
            out.append(f"decoded_msg_size={decoded}, expected {self.last_expect}")
        if self.last_expect and n < self.last_expect:
            out.append(f"called with {n} bytes before the {self.last_expect} expected")
        if n <= 0:
            out.append(f"called with an empty buf ({n} bytes)")
        return out

    def expected(self, n, buf_len):
        """The reactor returned ExpectMsgSize(n) (a valid one) from a call with buf_len bytes."""
        self.prev_len = buf_len
        self.last_expect = n

    def dropped(self):
        """The reactor returned a valid DropMsgSize."""
        self.prev_len = None
        self.last_expect = 0

    def check_settled(self, buffered):
        """A violation (string) or None, when ``buffered`` unconsumed bytes are all in the
        receive buffer and the runtime has had its chance to dispatch them: after a drop (or
        before any call) every byte is shown at once; after ExpectMsgSize(0) any new byte is;
        after ExpectMsgSize(n) the reactor is called as soon as n bytes are there."""
        if self.prev_len is None:
            if buffered:
                return f"{buffered} bytes buffered after a drop, and no call"
        elif self.last_expect == 0:
            if buffered != self.prev_len:
                return (f"{buffered} bytes buffered, but the last call (ExpectMsgSize(0)) showed "
                        f"{self.prev_len} and none followed")
        elif not self.prev_len <= buffered < self.last_expect:
            return (f"{buffered} bytes buffered after ExpectMsgSize({self.last_expect}) from a "
                    f"call with {self.prev_len} bytes, and no call")
        return None


class FuzzFramer(Reactor):
    """Dispatches reactio frames in one of several legitimate styles and checks, on every
    call, the documented meaning of new_bytes and decoded_msg_size."""

    def __init__(self, style, fast_dispatch, max_msg_size):
        self.style = style
        self.max_msg_size = max_msg_size      # one DropMsgSize may not consume more
        self.fast_dispatch = fast_dispatch
        self.frames = []
        self.violations = []
        self.contract = CallContract()
        self.body_left = None         # header_then_body: body bytes still expected
        self.header = b""
        self.closed = None

    def on_readable(self, ctx):
        if self.fast_dispatch:
            ctx.reader.try_read_fast_dispatch(ctx)
        else:
            ctx.reader.try_read_fast_read(ctx)

    def _check(self, buf, new_bytes, decoded):
        self.violations += self.contract.check_call(len(buf), new_bytes, decoded)

    def _expect(self, n, buf_len):
        self.contract.expected(n, buf_len)
        return ExpectMsgSize(n)

    def _drop(self, n):
        self.contract.dropped()
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

class HypothesisChoices:
    """RandomResults' choices drawn by hypothesis (``st.data()``)."""

    def __init__(self, data):
        self.data = data

    def kind(self, kinds):
        return self.data.draw(st.sampled_from(kinds), label="result kind")

    def integer(self, lo, hi, label):
        return self.data.draw(st.integers(lo, hi), label=label)

    def boolean(self, label):
        return self.data.draw(st.booleans(), label=label)


# What RandomResults may return; repeats weight the valid kinds.  The invalid ones, and what
# the stream must close with: drop_zero, drop_too_many, expect_not_more, none, int, tuple ->
# MessageResultError; drop_over_max, expect_too_large -> MessageTooLargeError; raise_negative
# (DropMsgSize(-n) raises MessageResultError in the callback), raise_overflow (a size past
# ssize_t: OverflowError), raise_other (the reactor's own bug) -> that very exception.
# close_then_drop closes the stream from the callback: no error, and no call after it.
RESULT_KINDS = [
    "drop_ok", "drop_ok", "drop_ok", "drop_all", "expect_ok", "expect_ok", "expect_zero",
    "expect_zero", "drop_zero", "drop_too_many", "drop_over_max", "expect_not_more",
    "expect_too_large", "none", "int", "tuple", "raise_negative", "raise_overflow",
    "raise_other", "close_then_drop"]


class RandomResults(Reactor):
    """Returns results picked by ``choices`` (HypothesisChoices, or the atheris target's);
    knows which of them break the rules and what the stream must then close with.  Every call
    is checked against CallContract, and against the bytes sent when ``sent`` (a bytearray the
    driver appends to before each write) is given: buf must be exactly the unconsumed bytes,
    in order.  Violations are collected, not raised (raising would only close the stream)."""

    def __init__(self, choices, max_msg_size, sent=None, fast_dispatch=False):
        self.choices = choices
        self.max_msg_size = max_msg_size
        self.sent = sent
        self.fast_dispatch = fast_dispatch
        self.contract = CallContract()
        self.consumed = 0                 # bytes dropped by valid DropMsgSize results
        self.first_invalid = None         # (kind, expected exception type or instance)
        self.closed_itself = False        # close_then_drop was returned
        self.calls_after_invalid = 0      # calls after an invalid result or a close
        self.calls = 0
        self.kinds = {}                   # kind -> times returned
        self.violations = []
        self.closed = None
        self.close_calls = 0

    def on_readable(self, ctx):
        if self.fast_dispatch:
            ctx.reader.try_read_fast_dispatch(ctx)
        else:
            ctx.reader.try_read_fast_read(ctx)

    def _check(self, buf, new_bytes, decoded):
        if self.closed is not None:
            self.violations.append("on_inbound_message after on_close")
        if self.first_invalid is not None or self.closed_itself:
            self.calls_after_invalid += 1
        self.violations += self.contract.check_call(len(buf), new_bytes, decoded)
        if self.sent is not None:
            want = self.sent[self.consumed:self.consumed + len(buf)]
            if len(want) != len(buf):
                self.violations.append(f"buf has {len(buf)} bytes at offset {self.consumed}, "
                                       f"but only {len(self.sent)} were sent")
            elif buf != want:
                self.violations.append(f"buf at offset {self.consumed} ({len(buf)} bytes) is "
                                       "not the bytes sent there")

    def _invalid(self, kind, expected):
        if self.first_invalid is None:
            self.first_invalid = (kind, expected)

    def on_inbound_message(self, buf, new_bytes, decoded, ctx):
        self._check(buf, new_bytes, decoded)
        self.calls += 1
        avail = len(buf)
        kind = self.choices.kind(RESULT_KINDS)
        top = min(avail, self.max_msg_size)
        if kind == "drop_over_max" and avail <= self.max_msg_size:
            kind = "drop_ok"
        elif avail > self.max_msg_size and self.choices.boolean("over max"):
            kind = "drop_over_max"          # rare otherwise: the buffer seldom gets this full
        if kind == "expect_ok" and avail + 1 > self.max_msg_size:
            kind = "drop_all"
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if kind in ("drop_ok", "drop_all", "close_then_drop"):
            n = top if kind != "drop_ok" else self.choices.integer(1, top, "drop")
            self.contract.dropped()
            self.consumed += n
            if kind == "close_then_drop":
                self.closed_itself = True
                ctx.close()
            return DropMsgSize(n)
        if kind == "expect_ok":
            n = self.choices.integer(avail + 1, self.max_msg_size, "expect")
            self.contract.expected(n, avail)
            return ExpectMsgSize(n)
        if kind == "expect_zero":
            self.contract.expected(0, avail)
            return ExpectMsgSize(0)
        if kind == "drop_over_max":
            self._invalid(kind, reactio.MessageTooLargeError)
            return DropMsgSize(self.choices.integer(self.max_msg_size + 1, avail, "drop"))
        if kind == "drop_zero":
            self._invalid(kind, reactio.MessageResultError)
            return DropMsgSize(0)
        if kind == "drop_too_many":
            self._invalid(kind, reactio.MessageResultError)
            return DropMsgSize(avail + self.choices.integer(1, 2**62 - avail, "excess"))
        if kind == "expect_not_more":
            self._invalid(kind, reactio.MessageResultError)
            return ExpectMsgSize(self.choices.integer(1, avail, "expect"))
        if kind == "expect_too_large":
            self._invalid(kind, reactio.MessageTooLargeError)
            return ExpectMsgSize(max(avail, self.max_msg_size)
                                 + self.choices.integer(1, 2**62, "excess"))
        if kind in ("none", "int", "tuple"):
            self._invalid(kind, reactio.MessageResultError)
            return {"none": None, "int": avail, "tuple": (True, avail)}[kind]
        try:
            if kind == "raise_negative":
                DropMsgSize(-self.choices.integer(1, 2**62, "negative"))
            elif kind == "raise_overflow":
                ExpectMsgSize(2**63 + self.choices.integer(0, 2**62, "past ssize_t"))
            raise LookupError("the reactor's own bug")
        except Exception as exc:
            self._invalid(kind, exc)        # the stream must close with this very exception
            raise

    def on_close(self, reactor_id, cmd_sender):
        self.close_calls += 1
        self.closed = ("closed", self.close_error)

    def close_violations(self, peer_reset=False):
        """What is wrong with the way the stream closed (call it after on_close).  The peer
        ended the stream with a FIN, or with a reset when ``peer_reset``, unless the reactor's
        result closed it first."""
        out = []
        if self.close_calls != 1:
            out.append(f"on_close ran {self.close_calls} times")
        if self.calls_after_invalid:
            out.append(f"{self.calls_after_invalid} calls after {self.first_invalid or 'close'}")
        err = self.close_error
        outstanding = None if self.sent is None else len(self.sent) - self.consumed
        if self.first_invalid is not None:
            kind, expected = self.first_invalid
            if isinstance(expected, BaseException):
                if err is not expected:
                    out.append(f"{kind}: closed with {err!r}, not the exception raised "
                               f"({expected!r})")
            elif not isinstance(err, expected):
                out.append(f"{kind}: closed with {err!r}, expected {expected.__name__}")
        elif self.closed_itself:
            if err is not None:
                out.append(f"closed from its callback, but with {err!r}")
        elif isinstance(err, reactio.MessageTooLargeError):
            # the buffer filled up while the reactor waited for more: legitimate only when
            # that many bytes were outstanding
            if "max_msg_size" not in str(err) or (outstanding is not None
                                                  and outstanding < self.max_msg_size):
                out.append(f"{err!r} with {outstanding} bytes outstanding, "
                           f"max_msg_size={self.max_msg_size}")
        elif peer_reset:
            if not isinstance(err, ConnectionResetError):
                out.append(f"the peer reset the stream, but it closed with {err!r}")
        elif err is not None:
            out.append(f"the peer closed its side (FIN), but the stream closed with {err!r}")
        elif outstanding is not None:
            # every byte sent was read before the FIN: the last dispatch must have happened
            settled = self.contract.check_settled(outstanding)
            if settled:
                out.append(f"at the FIN: {settled}")
        return out


def run_misuse_example(data, chunks_bytes, max_msg_size=2000):
    rt = reactio.ReactRuntime(max_msg_size=max_msg_size)
    try:
        sent = bytearray()
        reactor = RandomResults(HypothesisChoices(data), max_msg_size, sent)
        got = []
        rt.cmd_sender.send_listen("127.0.0.1:0", DefaultTcpListenerHandler(
            lambda c, p: reactor, 256), Deferred.IMMEDIATE, got.append)
        while not got:
            rt.process_events(0.01)
        port = rt.local_address(got[0])[1]
        peer = socket.create_connection(("127.0.0.1", port), timeout=10)
        peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for chunk in chunks_bytes:
            sent += chunk
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
