"""Coverage-guided fuzz target for the framing reader (issue 10), with atheris.

    pip install -e .[fuzz]    (or: pip install atheris hypothesis; the extension built in place)
    PYTHONPATH=src python tests/fuzz/fuzz_framing.py -max_total_time=60
    tools/fuzz-native.sh -max_total_time=60      # coverage of the Cython core as well

Each input is one stream through a real runtime over loopback TCP: the runtime connects (with
the input's recv_buffer_min_size, max_msg_size and read strategy) to a plain socket of this
process, which writes the input's byte stream in the input's chunks, waiting after each chunk
until the runtime has buffered it, then ends the stream with a FIN or a reset.  The reactor
(framing_fuzz.RandomResults, shared with the hypothesis fuzz of tests/stress/test_stress_fuzz.py)
returns the results the rest of the input picks: valid and invalid ExpectMsgSize/DropMsgSize
sizes, non-results, exceptions, a close from the callback.

Checked on every input (any failure is an AssertionError: atheris reports it as a crash and
writes the input to crash-*):
- every call shows exactly the unconsumed bytes sent, in order: none lost or duplicated;
- new_bytes and decoded_msg_size as docs/framing.md documents them (framing_fuzz.CallContract);
- after each chunk, once the runtime has buffered it, no call is owed (a drop is followed by a
  call at once, ExpectMsgSize(0) by a call on any new byte, ExpectMsgSize(n) once n are there);
- an invalid result closes the stream with MessageResultError / MessageTooLargeError (a raising
  callback: with its exception), at once (no call after it), on_close exactly once; a FIN with
  no invalid result closes it cleanly after the last dispatch; a reset with ConnectionResetError;
- the runtime stays usable and only that stream is closed: a bystander stream on the same
  runtime echoes after every input, and the runtime has no other stream left.

Coverage: atheris instruments the Python code of the harness and its helpers.  The extension's
C code is covered only when it is built with clang's -fsanitize=fuzzer-no-link, which
tools/fuzz-native.sh does into a scratch directory.  Such a build needs libFuzzer's symbols
when it is loaded; atheris's wheel has them in the libFuzzer it loads when Fuzz() starts, so
this target imports reactio only then (on the first input), with RTLD_GLOBAL set before.
"""
from __future__ import annotations

import logging
import os
import socket
import struct
import sys
import time

import atheris

HELPERS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers")
sys.path.insert(0, HELPERS)

MAX_CHUNKS = 24
MAX_CHUNK = 2048
SETTLE_TIMEOUT = 5.0            # seconds for the runtime to buffer a chunk or close the stream

reactio = None                  # imported on the first input (see the module docstring)
ff = None
fuzz_env = None


class FdpChoices:
    """RandomResults' choices taken from the rest of the fuzz input; once it is used up,
    every choice is the first valid one ("drop_ok" of 1 byte, ...), so a stream still ends."""

    def __init__(self, fdp):
        self.fdp = fdp

    def kind(self, kinds):
        return kinds[self.fdp.ConsumeIntInRange(0, len(kinds) - 1)]

    def integer(self, lo, hi, label):
        return self.fdp.ConsumeIntInRange(lo, hi)

    def boolean(self, label):
        return self.fdp.ConsumeBool()


class FuzzEnv:
    """What lives across inputs: the runtime, the socket its streams connect to, and a
    bystander stream that must keep working whatever happens to the fuzzed ones."""

    def __init__(self):
        # the runtime logs the error that closes a stream at ERROR: expected here, not shown
        logger = logging.getLogger("reactio")
        logger.propagate = False
        logger.addHandler(logging.NullHandler())
        self.rt = reactio.ReactRuntime()
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.server.settimeout(SETTLE_TIMEOUT)
        self.port = self.server.getsockname()[1]
        self.inputs = 0
        echo = _echo_reactor_class()()
        self.bystander_id, self.bystander = self.connect(echo, 64, 4096, False)

    def pump_until(self, predicate, what):
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {SETTLE_TIMEOUT} s")
            self.rt.process_events(0.002)

    def connect(self, reactor, recv_min, max_msg_size, fast_dispatch):
        """The runtime connects ``reactor``; returns (its ReactorID, our end of the stream)."""
        done = []
        self.rt.cmd_sender.send_connect(("127.0.0.1", self.port), recv_min, reactor, None,
                                        done.append, max_msg_size=max_msg_size)
        self.pump_until(lambda: done, "connect completion")
        assert isinstance(done[0], reactio.ReactorID), f"connect failed: {done[0]!r}"
        peer, _ = self.server.accept()
        peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer.settimeout(SETTLE_TIMEOUT)
        return done[0], peer

    def check_bystander(self):
        """The runtime still serves its other stream: an echo round trip."""
        msg = b"ping %d" % self.inputs
        self.bystander.sendall(msg)
        self.bystander.setblocking(False)
        got = bytearray()

        def echoed():
            try:
                got.extend(self.bystander.recv(len(msg) - len(got)))
            except BlockingIOError:
                pass
            return len(got) >= len(msg)

        self.pump_until(echoed, "bystander echo")
        self.bystander.settimeout(SETTLE_TIMEOUT)
        assert got == msg, f"bystander echoed {bytes(got)!r}, not {msg!r}"


def _echo_reactor_class():
    class Echo(reactio.Reactor):
        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            ctx.send_or_que(buf)
            return reactio.DropMsgSize(len(buf))
    return Echo


def _load():
    global reactio, ff, fuzz_env
    with atheris.instrument_imports(include=["framing_fuzz"]):
        import framing_fuzz
    import reactio as reactio_module
    reactio, ff = reactio_module, framing_fuzz
    fuzz_env = FuzzEnv()


@atheris.instrument_func
def settle(env, reactor, rid, outstanding):
    """Run the runtime until it buffered every byte sent, or closed the stream; then no call
    may be owed.  Returns False when the stream is closed."""
    def buffered_all_or_closed():
        if reactor.closed is not None:
            return True
        ctx = env.rt.get_context(rid)
        return ctx is None or ctx.reader.bytes_in_buffer() == outstanding()

    env.pump_until(buffered_all_or_closed, f"{outstanding()} bytes reaching the runtime")
    if reactor.closed is not None or reactor.first_invalid is not None or reactor.closed_itself:
        return False
    owed = reactor.contract.check_settled(outstanding())
    assert owed is None, f"{owed} (violations so far: {reactor.violations})"
    return True


@atheris.instrument_func
def test_one_input(data: bytes) -> None:
    if fuzz_env is None:
        _load()
    env = fuzz_env
    env.inputs += 1
    fdp = atheris.FuzzedDataProvider(data)
    max_msg_size = fdp.ConsumeIntInRange(1, 4096)
    recv_min = fdp.ConsumeIntInRange(1, 1024)
    fast_dispatch = fdp.ConsumeBool()
    peer_reset = fdp.ConsumeIntInRange(0, 7) == 7    # 1 in 8; not the exhausted input's 0
    chunks = []
    for _ in range(fdp.ConsumeIntInRange(1, MAX_CHUNKS)):
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, MAX_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
    sent = bytearray()
    reactor = ff.RandomResults(FdpChoices(fdp), max_msg_size, sent, fast_dispatch)
    rid, peer = env.connect(reactor, recv_min, max_msg_size, fast_dispatch)
    try:
        for chunk in chunks:
            sent += chunk
            try:
                peer.sendall(chunk)
            except OSError:
                break               # the stream was closed (reset) by an invalid result
            if not settle(env, reactor, rid, lambda: len(sent) - reactor.consumed):
                break
        if peer_reset:
            # linger on, 0 s: close() sends a reset
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()
        else:
            try:
                peer.shutdown(socket.SHUT_WR)
            except OSError:
                pass                # already reset by the runtime's close
        env.pump_until(lambda: reactor.closed is not None, "the stream closing")
    finally:
        peer.close()
    assert reactor.violations == [], reactor.violations
    assert reactor.close_violations(peer_reset) == [], (reactor.close_violations(peer_reset),
                                                        reactor.kinds)
    assert env.rt.get_context(rid) is None, "closed stream still has a context"
    assert env.rt.count_streams() == 1, f"{env.rt.count_streams()} streams, expected 1"
    env.check_bystander()


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    # a -fsanitize=fuzzer-no-link build of reactio._core resolves its coverage hooks against
    # the libFuzzer that Fuzz() loads: make that library's symbols global (harmless otherwise)
    sys.setdlopenflags(sys.getdlopenflags() | os.RTLD_GLOBAL)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
