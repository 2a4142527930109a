"""The stateful layer of issue 10: a hypothesis RuleBasedStateMachine drives one runtime (a
listener whose reactors echo and record everything, outbound reactio clients to that same
listener) and raw-socket peers through random interleavings of hostile and ordinary events.
Run as a subprocess (a broken core can crash the interpreter):

    python stateful_machine.py EXAMPLES STEPS [SHRINK_SECONDS]

exits 0 when every example held every invariant; otherwise hypothesis prints the (shrunk)
falsifying example and the script exits 1.  tests/test_stateful.py (default suite) and
tests/stress/test_stress_stateful.py (marker ``stress``) run it with different sizes.

Rules: connect a raw client; connect an outbound reactio client to the runtime's own listener;
connect to a port that never answers (full backlog); peer sends (random valid frames, random
chunking, the runtime pumped between chunks); peer sends a "kick" frame (its server reactor
then closes another reactor's stream from its own on_inbound_message); peer half-close
(SHUT_WR); peer RST (SO_LINGER {1, 0} + close); peer stops reading while its server reactor
queues megabytes; peer resumes reading; ctx.close() from another reactor's on_command; arm an
on_close that closes another stream; ctx.close() from the main program; send_close (graceful
and abort, immediate and deferred) from the main program to live, stale and connecting ids;
user commands (immediate and deferred) to live and stale ids; an outbound client sends;
pumping process_events a few times.  Teardown: settle, check that a quiet runtime does not
spin, check the echoes, then the runtime's close().

Invariants after every step: on_close at most once per reactor and no callback after it;
count_streams() == reactors connected and not closed (tracked through callbacks); no ReactorID
shared by two live streams; every completion called at most once, and a command to an id that
was already closed completes with ReactorNotFoundError; the bytes each peer (raw or outbound
client) receives from its echo are a prefix of what it sent, in order; no ERROR record on the
reactio logger.  At teardown, additionally: every completion exactly once after close(), every
connected reactor closed exactly once, a send_close that succeeded on a connecting stream
completed that connect with ReactorClosedError, echoes complete for well-behaved peers, and
(Linux) no descriptor left open.
"""
from __future__ import annotations

import gc
import logging
import os
import socket
import struct
import sys
import time

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule,
                                 run_state_machine_as_test)

import reactio
from reactio import (DefaultTcpListenerHandler, Deferred, DropMsgSize, ExpectMsgSize,
                     ReactRuntime, ReactorID)
from reactio.errors import ReactorClosedError, ReactorNotFoundError


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # see crash_exit.py
from crash_exit import die_on_crash  # noqa: E402

LINUX = sys.platform.startswith("linux")
HEADER = struct.Struct("<Hq")
BULK_BODY = b"B" * 60000
BULK_FRAMES = 100                   # 6 MB per bulk command: more than the socket buffers hold
MAX_BULKS = 2                       # per stream: stays far below max_send_queue (16 MiB)


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body), 0) + body


def split_frames(buf: bytearray):
    """Whole frames at the front of buf (removed from it)."""
    out = []
    while len(buf) >= 10:
        n = 10 + (buf[0] | (buf[1] << 8))
        if n > len(buf):
            break
        out.append(bytes(buf[:n]))
        del buf[:n]
    return out


def open_fds() -> int:
    gc.collect()
    return len(os.listdir("/proc/self/fd")) if LINUX else 0


class _Unreachable:
    """A listener that never accepts, with a full backlog: a connect to it never completes
    (the kernel drops the SYNs).  One for the whole run: making one costs 0.1 s."""
    port = None
    socks = []

    @classmethod
    def get(cls) -> int:
        if cls.port is None:
            srv = socket.socket()
            srv.bind(("127.0.0.1", 0))
            srv.listen(0)
            cls.port = srv.getsockname()[1]
            cls.socks.append(srv)
            for _ in range(8):
                f = socket.socket()
                f.setblocking(False)
                f.connect_ex(("127.0.0.1", cls.port))
                cls.socks.append(f)
            time.sleep(0.1)
        return cls.port


class ErrorLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


class Done:
    """A completion that records every call."""

    def __init__(self, machine, label, stale=False, kind="cmd", target=None):
        self.machine = machine
        self.label = label
        self.stale = stale          # the target was already closed when the command was sent
        self.kind = kind
        self.target = target
        self.results = []
        machine.completions.append(self)

    def __call__(self, result):
        self.results.append(result)
        m = self.machine
        if len(self.results) > 1:
            m.violation(f"{self.label}: completion called {len(self.results)} times "
                        f"({self.results!r})")
        if not isinstance(result, (ReactorID, BaseException)):
            m.violation(f"{self.label}: completion got {result!r}")
        if self.stale and not m.closing and not isinstance(result, ReactorNotFoundError):
            m.violation(f"{self.label}: a command to an already closed id completed with "
                        f"{result!r}, not ReactorNotFoundError")
        if self.kind == "close" and isinstance(result, ReactorID):
            if result not in m.ever_rids and result != m.lid:
                m.unknown_close_ok += 1     # only a connecting stream can be that
        if self.kind == "connect" and isinstance(result, ReactorClosedError):
            m.connects_closed += 1
        if self.kind == "connect" and isinstance(result, ReactorID):
            if self.target.rid != result:
                m.violation(f"{self.label}: connect completed with {result}, but the reactor's "
                            f"on_connected saw {self.target.rid}")


class Rec(reactio.Reactor):
    """A server reactor (echoes every frame; a KICK frame then closes another reactor's
    stream; bulk on command) or an outbound client (records the echoes of what it sent)."""

    def __init__(self, machine, role):
        self.m = machine
        self.role = role
        self.serial = len(machine.recs)
        machine.recs.append(self)
        self.ctx = None
        self.rid = None
        self.peer_port = None
        self.closes = 0
        self.close_err = None
        self.close_requested = False
        self.on_close_kick = None
        self.bulks = 0
        self.sent = bytearray()         # client: bytes it sent
        self.rbuf = bytearray()         # client: received, not yet parsed
        self.echoed = bytearray()       # client: echo frames received

    def _alive(self, what):
        if self.closes:
            self.m.violation(f"rec {self.serial} ({self.rid}): {what} after on_close")

    def on_connected(self, ctx, listener_id):
        self._alive("on_connected")
        m = self.m
        rid = ctx.reactor_id
        if rid in m.live:
            m.violation(f"ReactorID {rid} given to rec {self.serial} while rec "
                        f"{m.live[rid].serial} still has it")
        m.live[rid] = self
        m.ever_rids.add(rid)
        self.ctx = ctx
        self.rid = rid
        if self.role == "server":
            try:
                self.peer_port = ctx.peer_address[1]
            except OSError:             # the peer is already gone (reset before the accept)
                self.peer_port = None

    def on_inbound_message(self, buf, new_bytes, decoded, ctx):
        self._alive("on_inbound_message")
        if len(buf) < 10:
            return ExpectMsgSize(0)
        n = 10 + (buf[0] | (buf[1] << 8))
        if n > len(buf):
            return ExpectMsgSize(n)
        body = bytes(buf[10:n])
        if self.role == "server":
            ctx.send_or_que(buf[:n])
            if body.startswith(b"KICK"):
                target = self.m.recs[int.from_bytes(body[4:6], "little")]
                if target.ctx is not None:
                    target.close_requested = True
                    target.ctx.close()
        elif not body.startswith(b"B"):
            self.echoed += buf[:n]
        return DropMsgSize(n)

    def on_command(self, cmd, ctx):
        self._alive("on_command")
        what = cmd[0]
        if what == "close":
            target, abort = cmd[1], cmd[2]
            target.close_requested = True
            target.ctx.close(abort=abort)
        elif what == "bulk":
            for _ in range(BULK_FRAMES):
                ctx.send_or_que(frame(BULK_BODY))
        elif what == "send":
            ctx.send_or_que(cmd[1])
            self.sent += cmd[1]

    def on_close(self, reactor_id, cmd_sender):
        self.closes += 1
        m = self.m
        if self.closes > 1:
            m.violation(f"rec {self.serial}: on_close called {self.closes} times for "
                        f"{reactor_id}")
        if reactor_id != self.rid:
            m.violation(f"rec {self.serial}: on_close({reactor_id}), connected as {self.rid}")
        if m.live.get(reactor_id) is self:
            del m.live[reactor_id]
        m.closed_rids.add(reactor_id)
        self.close_err = self.close_error
        if self.on_close_kick is not None:
            target, self.on_close_kick = self.on_close_kick, None
            if target.ctx is not None:
                target.close_requested = True
                target.ctx.close()


class Peer:
    """A raw-socket client of the listener."""

    def __init__(self, port, small_window):
        self.sock = socket.socket()
        if small_window:                # a queue towards this peer gets stuck at once
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.sent = bytearray()
        self.rbuf = bytearray()
        self.echoed = bytearray()
        self.small_window = small_window
        self.reading = True
        self.half_closed = False
        self.reset = False
        self.eof = False
        self.error = None

    @property
    def usable(self):
        return not (self.reset or self.half_closed or self.error is not None)

    def drain(self):
        if not self.reading or self.reset or self.eof or self.error is not None:
            return
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError as exc:
                self.error = exc
                break
            if not chunk:
                self.eof = True
                break
            self.rbuf += chunk
        for f in split_frames(self.rbuf):
            if not f[10:11] == b"B":
                self.echoed += f


class ReactioMachine(RuleBasedStateMachine):

    def __init__(self):
        super().__init__()
        self.broken = False
        self.unreachable = _Unreachable.get()
        self.base_fds = open_fds()
        self.rt = ReactRuntime()
        self.errors = ErrorLog()
        logging.getLogger("reactio").addHandler(self.errors)
        self.violations = []
        self.recs = []
        self.live = {}                  # ReactorID -> Rec, between on_connected and on_close
        self.ever_rids = set()
        self.closed_rids = set()
        self.completions = []
        self.peers = []
        self.clients = []
        self.closing = False
        self.unknown_close_ok = 0
        self.connects_closed = 0
        done = []
        handler = DefaultTcpListenerHandler(lambda count, param: Rec(self, "server"))
        self.rt.cmd_sender.send_listen("127.0.0.1:0", handler, None, done.append)
        self.pump_until(lambda: done)
        self.lid = done[0]
        self.port = self.rt.local_address(self.lid)[1]

    # ------------------------------------------------------------------ helpers

    def violation(self, text):
        self.violations.append(text)

    def pump_until(self, pred, timeout=5.0):
        end = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < end, "condition not reached within 5 s"
            self.rt.process_events(0.002)
            self.drain_peers()

    def drain_peers(self):
        for p in self.peers:
            p.drain()

    def live_recs(self):
        return list(self.live.values())

    def kick_targets(self):
        """Live reactors, those whose peer misbehaved (reset, half-closed, not reading)
        first: closing them from outside their own callbacks is where the trouble was."""
        bad = {p.port for p in self.peers if p.reset or p.half_closed or not p.reading}
        return sorted(self.live.values(), key=lambda r: (r.peer_port not in bad, r.serial))

    def pick(self, items, i):
        return items[i % len(items)] if items else None

    def server_of(self, peer):
        for r in self.recs:
            if r.role == "server" and r.peer_port == peer.port and r.rid is not None:
                return r
        return None

    def target_id(self, i, guess):
        """A live id, a stale one, or a guessed (slot, generation); never the listener."""
        known = sorted(self.ever_rids, key=lambda r: (r.slot, r.generation))
        if guess is not None:
            rid = ReactorID(*guess)
        elif known:
            rid = known[i % len(known)]
        else:
            return None
        return None if rid == self.lid else rid

    def connecting_ids(self):
        """Ids that answer local_address() but belong to no listener or connected stream:
        streams still connecting."""
        found = []
        for slot in range(12):
            for gen in range(1, 6):
                rid = ReactorID(slot, gen)
                if rid == self.lid or rid in self.ever_rids:
                    continue
                try:
                    self.rt.local_address(rid)
                except Exception:
                    continue
                found.append(rid)
        return found

    # ------------------------------------------------------------------ rules

    @precondition(lambda self: len(self.peers) < 10)
    @rule(small_window=st.booleans())
    def connect_raw(self, small_window):
        self.broken = True
        self.peers.append(Peer(self.port, small_window))
        self.broken = False

    @precondition(lambda self: len(self.clients) < 5)
    @rule()
    def connect_outbound(self):
        self.broken = True
        client = Rec(self, "client")
        self.clients.append(client)
        self.rt.cmd_sender.send_connect(("127.0.0.1", self.port), 4096, client, None,
                                        Done(self, f"connect rec {client.serial}",
                                             kind="connect", target=client))
        self.broken = False

    @precondition(lambda self: sum(1 for r in self.recs if r.role == "nowhere") < 2)
    @rule()
    def connect_unreachable(self):
        self.broken = True
        r = Rec(self, "nowhere")
        self.rt.cmd_sender.send_connect(("127.0.0.1", self.unreachable), 1024, r, None,
                                        Done(self, f"connect rec {r.serial} (never answers)",
                                             kind="connect", target=r))
        self.broken = False

    @precondition(lambda self: any(p.usable for p in self.peers))
    @rule(i=st.integers(0, 63),
          bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
          cuts=st.lists(st.integers(1, 400), max_size=4),
          pump_between=st.booleans())
    def peer_sends(self, i, bodies, cuts, pump_between):
        self.broken = True
        peer = self.pick([p for p in self.peers if p.usable], i)
        wire = b"".join(frame(b"E" + b) for b in bodies)
        pos = 0
        for c in cuts + [len(wire)]:
            chunk = wire[pos:pos + c]
            if not chunk:
                break
            if not self._send(peer, chunk):
                break
            pos += len(chunk)
            if pump_between:
                self.rt.process_events(0)
        self.broken = False

    def _send(self, peer, data):
        view = memoryview(data)
        end = time.monotonic() + 5
        while view:
            try:
                n = peer.sock.send(view)
            except BlockingIOError:
                assert time.monotonic() < end, "a peer could not send for 5 s"
                self.rt.process_events(0.002)
                continue
            except OSError as exc:              # the server side is gone
                peer.error = exc
                return False
            peer.sent += view[:n]
            view = view[n:]
        return True

    @precondition(lambda self: any(p.usable for p in self.peers) and self.live)
    @rule(i=st.integers(0, 63), j=st.integers(0, 63))
    def peer_sends_kick(self, i, j):
        self.broken = True
        peer = self.pick([p for p in self.peers if p.usable], i)
        target = self.pick(self.kick_targets(), j)
        self._send(peer, frame(b"KICK" + target.serial.to_bytes(2, "little")))
        self.broken = False

    @precondition(lambda self: any(p.usable for p in self.peers))
    @rule(i=st.integers(0, 63))
    def peer_half_closes(self, i):
        self.broken = True
        # peers that stopped reading first: a half-close with a stuck queue is where it spun
        peer = self.pick(sorted((p for p in self.peers if p.usable), key=lambda p: p.reading), i)
        try:
            peer.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            peer.error = exc
        peer.half_closed = True
        self.broken = False

    @precondition(lambda self: any(not p.reset for p in self.peers))
    @rule(i=st.integers(0, 63))
    def peer_resets(self, i):
        self.broken = True
        peer = self.pick([p for p in self.peers if not p.reset], i)
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.sock.close()
        peer.reset = True
        self.broken = False

    @precondition(lambda self: any(p.reading and not p.reset for p in self.peers))
    @rule(i=st.integers(0, 63))
    def peer_stops_reading_while_server_queues(self, i):
        self.broken = True
        peer = self.pick(sorted((p for p in self.peers if p.reading and not p.reset),
                                key=lambda p: not p.small_window), i)
        peer.drain()
        peer.reading = False
        self.pump_until(lambda: self.server_of(peer) is not None)      # accepted
        server = self.server_of(peer)
        if server is not None and server.closes == 0 and server.bulks < MAX_BULKS:
            server.bulks += 1
            self._user_cmd(server.rid, ("bulk",), None)
        self.broken = False

    @precondition(lambda self: any(not p.reading and not p.reset for p in self.peers))
    @rule(i=st.integers(0, 63))
    def peer_resumes_reading(self, i):
        peer = self.pick([p for p in self.peers if not p.reading and not p.reset], i)
        peer.reading = True

    @precondition(lambda self: len(self.live) >= 1)
    @rule(i=st.integers(0, 63), j=st.integers(0, 63), abort=st.booleans())
    def close_from_another_reactors_command(self, i, j, abort):
        self.broken = True
        a, b = self.pick(self.live_recs(), i), self.pick(self.kick_targets(), j)
        self._user_cmd(a.rid, ("close", b, abort), None)
        self.broken = False

    @precondition(lambda self: len(self.live) >= 2)
    @rule(i=st.integers(0, 63), j=st.integers(0, 63))
    def arm_on_close_kick(self, i, j):
        a, b = self.pick(self.live_recs(), i), self.pick(self.kick_targets(), j)
        if a is not b:
            a.on_close_kick = b

    @precondition(lambda self: len(self.live) >= 1)
    @rule(i=st.integers(0, 63), abort=st.booleans())
    def ctx_close_from_main_program(self, i, abort):
        self.broken = True
        r = self.pick(self.kick_targets(), i)
        r.close_requested = True
        r.ctx.close(abort=abort)
        self.broken = False

    @rule(i=st.integers(0, 63),
          guess=st.none() | st.tuples(st.integers(0, 6), st.integers(1, 3)),
          abort=st.booleans(), delay=st.sampled_from([None, 0.0, 0.01, 0.03]))
    def send_close(self, i, guess, abort, delay):
        self.broken = True
        rid = self.target_id(i, guess)
        if rid is not None:
            self._send_close(rid, abort, delay)
        self.broken = False

    def _send_close(self, rid, abort, delay):
        rec = self.live.get(rid)
        if rec is not None:
            rec.close_requested = True
        done = Done(self, f"send_close({rid}, abort={abort}, delay={delay})",
                    stale=rid in self.closed_rids, kind="close")
        self.rt.cmd_sender.send_close(rid, None if delay is None else Deferred.after(delay),
                                      done, abort=abort)

    @rule(i=st.integers(0, 63), abort=st.booleans(), delay=st.sampled_from([None, 0.01]))
    def send_close_to_a_connecting_stream(self, i, abort, delay):
        self.broken = True
        ids = self.connecting_ids()
        if ids:
            self._send_close(self.pick(ids, i), abort, delay)
        self.broken = False

    @rule(i=st.integers(0, 63),
          guess=st.none() | st.tuples(st.integers(0, 6), st.integers(1, 3)),
          delay=st.sampled_from([None, 0.0, 0.01, 0.03]))
    def user_command(self, i, guess, delay):
        self.broken = True
        rid = self.target_id(i, guess)
        if rid is not None:
            self._user_cmd(rid, ("noop",), delay)
        self.broken = False

    def _user_cmd(self, rid, cmd, delay):
        done = Done(self, f"user_cmd({rid}, {cmd[0]!r}, delay={delay})",
                    stale=rid in self.closed_rids)
        self.rt.cmd_sender.send_user_cmd(rid, cmd, None if delay is None else
                                         Deferred.after(delay), done)

    @precondition(lambda self: any(c.closes == 0 and c.rid is not None for c in self.clients))
    @rule(i=st.integers(0, 63), bodies=st.lists(st.binary(max_size=200), min_size=1,
                                                 max_size=4))
    def outbound_client_sends(self, i, bodies):
        self.broken = True
        c = self.pick([c for c in self.clients if c.closes == 0 and c.rid is not None], i)
        self._user_cmd(c.rid, ("send", b"".join(frame(b"E" + b) for b in bodies)), None)
        self.broken = False

    @rule(n=st.integers(1, 4), timeout=st.sampled_from([0.0, 0.002, 0.01]))
    def pump(self, n, timeout):
        self.broken = True
        for _ in range(n):
            self.rt.process_events(timeout)
            self.drain_peers()
        self.broken = False

    # ------------------------------------------------------------------ invariants

    @invariant()
    def holds(self):
        self.broken = True
        self.drain_peers()
        if self.errors.messages:
            self.violation(f"ERROR records on the reactio logger: {self.errors.messages[:3]}")
        n = self.rt.count_streams()
        if n != len(self.live):
            self.violation(f"count_streams() == {n}, but {len(self.live)} streams are live "
                           f"(connected, not closed)")
        for p in self.peers:
            if bytes(p.echoed) != bytes(p.sent[:len(p.echoed)]):
                self.violation(f"peer {p.port}: its echo is not a prefix of what it sent")
        for c in self.clients:
            if bytes(c.echoed) != bytes(c.sent[:len(c.echoed)]):
                self.violation(f"rec {c.serial}: its echo is not a prefix of what it sent")
        assert not self.violations, "\n".join(self.violations[:8])
        self.broken = False

    # ------------------------------------------------------------------ teardown

    def events_over(self, seconds):
        """Socket events handled in ``seconds`` of process_events (peers reading meanwhile)."""
        before = self.rt.count_sock_events()
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return self.rt.count_sock_events() - before
            self.rt.process_events(min(left, 0.01))
            self.drain_peers()

    def settle(self, limit=1.5):
        """Pump until 20 ms pass without a socket event (everything that can move moved)."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if self.events_over(0.02) == 0:
                return True
        return False

    def final_checks(self):
        self.settle()
        spin = self.events_over(0.1)
        if spin >= 25:
            self.violation(f"busy loop: {spin} socket events in 0.1 s of a settled runtime")
        for p in self.peers:
            server = self.server_of(p)
            if (server is None or not p.reading or p.reset or p.error is not None
                    or server.close_requested or server.close_err is not None):
                continue
            if (server.closes == 0 or p.half_closed) and bytes(p.echoed) != bytes(p.sent):
                self.violation(f"peer {p.port}: {len(p.echoed)} of {len(p.sent)} bytes "
                               f"echoed by a settled runtime")
        if self.unknown_close_ok > self.connects_closed:
            self.violation(f"{self.unknown_close_ok} send_close succeeded on a connecting "
                           f"stream, but {self.connects_closed} connects completed with "
                           f"ReactorClosedError")
        self.closing = True
        self.rt.close()
        for d in self.completions:
            if len(d.results) != 1:
                self.violation(f"{d.label}: completion called {len(d.results)} times after "
                               f"close()")
        for r in self.recs:
            if r.rid is not None and r.closes != 1:
                self.violation(f"rec {r.serial} ({r.rid}): {r.closes} on_close calls")
            if r.rid is None and r.closes:
                self.violation(f"rec {r.serial}: on_close without on_connected")
        if self.rt.count_streams() != 0:
            self.violation(f"count_streams() == {self.rt.count_streams()} after close()")

    def teardown(self):
        try:
            if not self.broken and not self.violations:
                self.final_checks()
        finally:
            logging.getLogger("reactio").removeHandler(self.errors)
            try:
                self.rt.close()
            except Exception as exc:
                self.violation(f"rt.close(): {type(exc).__name__}: {exc}")
            for p in self.peers:
                if not p.reset:
                    p.sock.close()
            self.peers = []
            del self.rt
            self.recs = self.live = self.completions = self.clients = None
        if LINUX and not self.violations and not self.broken:
            leaked = open_fds() - self.base_fds
            if leaked:
                self.violation(f"{leaked} descriptors left open after close()")
        assert not self.violations, "\n".join(self.violations[:8])


def run(examples: int, steps: int, shrink_seconds: int = 30) -> None:
    try:        # bound the shrinking of a failure (hypothesis' default is 300 s)
        from hypothesis.internal.conjecture import engine
        engine.MAX_SHRINKING_SECONDS = shrink_seconds
    except (ImportError, AttributeError):
        pass
    run_state_machine_as_test(ReactioMachine, settings=settings(
        max_examples=examples, stateful_step_count=steps, derandomize=True, deadline=None,
        database=None, suppress_health_check=list(HealthCheck), print_blob=False))


if __name__ == "__main__":
    die_on_crash()
    t0 = time.monotonic()
    run(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 30)
    print(f"OK: {sys.argv[1]} examples of up to {sys.argv[2]} steps in "
          f"{time.monotonic() - t0:.1f} s", flush=True)
