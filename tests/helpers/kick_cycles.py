"""Issue 10, defect 1 ("double finalize"), run as a subprocess: the bug ends in a SIGSEGV.

    python kick_cycles.py MODE CYCLES

One runtime, one listener, plain TCP clients.  Each cycle connects a victim A (and, for the
on_close mode, a closer C), resets A's peer (SO_LINGER {1, 0} + close: an RST the server's
socket has received but the runtime has not read yet), and then closes A's stream from
OUTSIDE A's own callbacks, by MODE:

  main_close       the main program calls ctx_A.close() between two process_events calls
  main_send_close  the main program's send_close(A) runs as a command (the RST comes from the
                   command queued just before it)
  user_cmd         the kicker B's on_command calls ctx_A.close()
  message          the kicker B's on_inbound_message (its peer sent "kick") calls ctx_A.close()
  on_close         C's on_close (its peer closed) calls ctx_A.close()

Invariants checked after every cycle, and after the runtime's close(): on_close exactly once
per reactor, count_streams() == the streams connected and not closed, no two live streams with
the same ReactorID, every completion exactly once; the long-lived kicker and a bystander still
echo.  Prints one JSON line {"ok": bool, "cycles": n, "violations": [...]} and exits 0 only
when nothing was violated (1 otherwise; a crash shows as a signal).
"""
import json
import os
import select
import socket
import struct
import sys
import time

import reactio
from reactio import DefaultTcpListenerHandler, DropMsgSize, ExpectMsgSize, ReactRuntime


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # see crash_exit.py
from crash_exit import die_on_crash  # noqa: E402

MODES = ["main_close", "main_send_close", "user_cmd", "message", "on_close"]

violations = []
live = {}               # ReactorID -> Node, for streams between on_connected and on_close
nodes = []


def violation(text):
    violations.append(text)


def frame(body):
    return struct.pack("<Hq", len(body), 0) + body


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def reset_and_wait(sock, ctx):
    """RST the peer and wait until the server's socket has it (readable), without letting the
    runtime read it."""
    fd = ctx.fileno()
    reset(sock)
    if sys.platform != "win32" and fd >= 0:
        select.select([fd], [], [], 2.0)
    else:
        time.sleep(0.02)


class Node(reactio.Reactor):
    """Echoes frames; a kicker also runs the kick actions it is told about."""

    def __init__(self):
        self.ctx = None
        self.rid = None
        self.closes = 0
        self.on_close_action = None
        nodes.append(self)

    def on_connected(self, ctx, listener_id):
        self.ctx = ctx
        self.rid = ctx.reactor_id
        if self.rid in live:
            violation(f"ReactorID {self.rid} given to a new stream while still live")
        live[self.rid] = self

    def on_inbound_message(self, buf, new_bytes, decoded, ctx):
        if len(buf) < 10:
            return ExpectMsgSize(0)
        n = 10 + (buf[0] | (buf[1] << 8))
        if n > len(buf):
            return ExpectMsgSize(n)
        body = bytes(buf[10:n])
        if body == b"kick":
            kick_action()
        else:
            ctx.send_or_que(buf[:n])
        return DropMsgSize(n)

    def on_command(self, cmd, ctx):
        if cmd == "kick":
            kick_action()
        elif cmd == "reset-victim":
            reset_and_wait(state["peer_a"], state["victim"].ctx)

    def on_close(self, reactor_id, cmd_sender):
        self.closes += 1
        if self.closes > 1:
            violation(f"on_close called {self.closes} times for {reactor_id}")
        if live.get(reactor_id) is self:
            del live[reactor_id]
        elif self.closes == 1:
            violation(f"on_close for {reactor_id}, which is not a live stream")
        if self.on_close_action is not None:
            action, self.on_close_action = self.on_close_action, None
            action()


state = {}


def kick_action():
    """Reset the victim's peer, then close the victim's stream from here."""
    victim = state["victim"]
    reset_and_wait(state["peer_a"], victim.ctx)
    victim.ctx.close()


def pump(rt, pred, timeout=5.0):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        rt.process_events(0.005)


def recv_exact(rt, sock, n):
    sock.setblocking(False)
    out = bytearray()

    def got():
        try:
            chunk = sock.recv(n - len(out))
        except BlockingIOError:
            return False
        if not chunk:
            raise AssertionError("peer closed")
        out.extend(chunk)
        return len(out) >= n

    pump(rt, got)
    return bytes(out)


def check_counts(rt, where):
    if rt.count_streams() != len(live):
        violation(f"{where}: count_streams() == {rt.count_streams()}, live streams: {len(live)}")
    for n in nodes:
        if n.closes > 1:
            violation(f"{where}: {n.rid} closed {n.closes} times")


def main():
    die_on_crash()
    mode, cycles = sys.argv[1], int(sys.argv[2])
    assert mode in MODES, mode
    rt = ReactRuntime()
    done = []
    rt.cmd_sender.send_listen("127.0.0.1:0", DefaultTcpListenerHandler(lambda c, p: Node()),
                              None, done.append)
    pump(rt, lambda: done)
    port = rt.local_address(done[0])[1]
    bystander = socket.create_connection(("127.0.0.1", port), timeout=5)
    kicker_peer = socket.create_connection(("127.0.0.1", port), timeout=5)
    pump(rt, lambda: len(live) == 2)
    kicker = nodes[1]
    completions = []
    done_cycles = 0
    try:
        for i in range(cycles):
            peer_a = socket.create_connection(("127.0.0.1", port), timeout=5)
            peer_a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            n_before = len(nodes)
            pump(rt, lambda: len(nodes) == n_before + 1 and nodes[-1].ctx is not None)
            victim = nodes[-1]
            state["victim"] = victim
            state["peer_a"] = peer_a
            results = []
            if mode == "main_close":
                reset_and_wait(peer_a, victim.ctx)
                victim.ctx.close()
            elif mode == "main_send_close":
                rt.cmd_sender.send_user_cmd(kicker.rid, "reset-victim", None, results.append)
                rt.cmd_sender.send_close(victim.rid, None, results.append)
            elif mode == "user_cmd":
                rt.cmd_sender.send_user_cmd(kicker.rid, "kick", None, results.append)
            elif mode == "message":
                kicker_peer.sendall(frame(b"kick"))
            elif mode == "on_close":
                peer_c = socket.create_connection(("127.0.0.1", port), timeout=5)
                pump(rt, lambda: len(nodes) == n_before + 2 and nodes[-1].ctx is not None)
                nodes[-1].on_close_action = kick_action
                peer_c.close()
            pump(rt, lambda: victim.closes >= 1 and (mode != "on_close" or nodes[-1].closes))
            want = {"main_send_close": 2, "user_cmd": 1}.get(mode, 0)
            pump(rt, lambda: len(results) >= want)
            for _ in range(3):
                rt.process_events(0)
            if len(results) != want:
                violation(f"cycle {i}: {len(results)} completions, expected {want}")
            completions.extend(results)
            check_counts(rt, f"cycle {i} ({mode})")
            done_cycles = i + 1
            if violations:
                break
        if not violations:
            for sock in (bystander, kicker_peer):
                sock.sendall(frame(b"alive"))
                if recv_exact(rt, sock, 15) != frame(b"alive"):
                    violation("a long-lived stream no longer echoes")
    except Exception as exc:                    # a hang or a broken runtime is a violation too
        violation(f"cycle {done_cycles}: {type(exc).__name__}: {exc}")
    try:
        rt.close()
    except Exception as exc:
        violation(f"rt.close(): {type(exc).__name__}: {exc}")
    if not violations:
        check_counts(rt, "after close()")
        not_closed = [n.rid for n in nodes if n.closes != 1 and n.rid is not None]
        if not_closed:
            violation(f"after close(): streams without exactly one on_close: {not_closed[:5]}")
    bystander.close()
    kicker_peer.close()
    print(json.dumps({"ok": not violations, "cycles": done_cycles,
                      "violations": violations[:10]}), flush=True)
    os._exit(0 if not violations else 1)


if __name__ == "__main__":
    main()
