"""Issue 16, send-path items of the core: send completions are never re-entered
synchronously, AutoSendBuffer counts bytes, on_sent is validated at the call, max_events is
bounded.  (Item 13, send_raw with a negative length, needs a Cython reactor: it is in
test_cython_subclass.py.)  Written to run on both backends."""
from __future__ import annotations

from array import array

import pytest

import reactio
from reactio import DropMsgSize, ReactRuntime, Reactor, SendOrQueResult

from support.env import BACKEND
from support.runtime import listen_factory, pump_until
from support.sockets import raw_client, recv_exact_nb

pytestmark = pytest.mark.timeout(60)


class Base(Reactor):
    """Keeps its ctx; discards input; runs ``action(ctx)`` on any user command and records
    whether it is inside one of its own callbacks."""

    def __init__(self, action=None):
        self.ctx = None
        self.action = action
        self.in_callback = False
        self.closed = []

    def on_connected(self, ctx, listener_id):
        self.ctx = ctx

    def on_inbound_message(self, buf, new_bytes, decoded, ctx):
        return DropMsgSize(len(buf))

    def on_command(self, cmd, ctx):
        self.in_callback = True
        try:
            self.action(ctx)
        finally:
            self.in_callback = False

    def on_close(self, reactor_id, cmd_sender):
        self.closed.append(self.close_error)


def _stream(rt, reactor):
    lid, port = listen_factory(rt, lambda: reactor)
    peer = raw_client(port)
    pump_until(rt, lambda: reactor.ctx is not None)
    return peer


# --------------------------------------------------------------------------- item 14

def test_on_sent_chain_of_5000_sends_is_not_recursive(rt):
    """Item 14: a sender that sends its next chunk from the previous chunk's on_sent.  on_sent
    ran inside send_or_que whenever every byte reached the kernel at once, so the chain
    recursed: ~950 chunks, then RecursionError (logged) and the rest lost.  All 5,000 chunks
    arrive, in order, and every on_sent ran outside the send_or_que that registered it."""
    total = 5000
    state = {"next": 0, "inside": False, "reentered": 0, "results": []}

    def send_next(ctx):
        i = state["next"]
        if i >= total:
            return
        state["next"] = i + 1
        state["inside"] = True
        try:
            ctx.send_or_que(i.to_bytes(4, "little") * 8, on_sent)
        finally:
            state["inside"] = False

    def on_sent(result):
        if state["inside"]:
            state["reentered"] += 1
        state["results"].append(result)
        if isinstance(result, reactio.ReactorID):
            send_next(sender.ctx)

    sender = Base(send_next)
    peer = _stream(rt, sender)
    rt.cmd_sender.send_user_cmd(sender.ctx.reactor_id, "start")
    wire = b"".join(i.to_bytes(4, "little") * 8 for i in range(total))
    got = b""
    try:
        got = recv_exact_nb(rt, peer, len(wire), timeout=10)
    finally:
        assert got == wire, (f"{state['next']} chunks sent, {len(state['results'])} on_sent "
                             f"calls, {state['reentered']} of them inside send_or_que")
    pump_until(rt, lambda: len(state["results"]) == total)
    assert state["reentered"] == 0, f"{state['reentered']} on_sent calls inside send_or_que"
    assert all(r == sender.ctx.reactor_id for r in state["results"])
    assert sender.closed == []
    peer.close()


def test_on_sent_runs_after_the_callback_returns_in_order(rt):
    """Item 14: on_sent never runs inside the call that registered it (a flag set around
    send_or_que), nor inside the callback that made that call; three sends complete in send
    order once the callback returned."""
    seen = []
    inside = {"send": False}

    def action(ctx):
        for n in (1, 2, 3):
            inside["send"] = True
            try:
                ctx.send_or_que(b"x" * n, lambda r, n=n: seen.append(
                    (n, inside["send"], sender.in_callback, r)))
            finally:
                inside["send"] = False
        assert seen == [], f"on_sent ran inside the callback: {seen}"

    sender = Base(action)
    peer = _stream(rt, sender)
    done = []
    rt.cmd_sender.send_user_cmd(sender.ctx.reactor_id, "go", None, done.append)
    pump_until(rt, lambda: done and len(seen) == 3)
    assert done == [sender.ctx.reactor_id], done        # the assertion in action() held
    rid = sender.ctx.reactor_id
    assert seen == [(1, False, False, rid), (2, False, False, rid), (3, False, False, rid)]
    assert recv_exact_nb(rt, peer, 6) == b"xxxxxx"
    peer.close()


def test_auto_send_buffer_write_inside_its_own_on_sent(rt):
    """Item 14: AutoSendBuffer.write() inside the on_sent of its own send().  on_sent ran while
    send_or_que still held the buffer's export: "BufferError: Existing exports of data" was
    logged and the write lost.  The second write (and its send) reaches the peer."""
    events = []

    def action(ctx):
        w = ctx.acquire_send()

        def on_sent(result):
            events.append(("sent", result))
            events.append(("write", w.write(b"second")))
            w.send(lambda r: events.append(("sent2", r)))

        w.write(b"first")
        w.send(on_sent)

    sender = Base(action)
    peer = _stream(rt, sender)
    rt.cmd_sender.send_user_cmd(sender.ctx.reactor_id, "go")
    assert recv_exact_nb(rt, peer, 11) == b"firstsecond"
    pump_until(rt, lambda: len(events) == 3)
    rid = sender.ctx.reactor_id
    assert events == [("sent", rid), ("write", 6), ("sent2", rid)], events
    peer.close()


# --------------------------------------------------------------------------- item 15

def test_auto_send_buffer_write_returns_bytes_not_items(rt):
    """Item 15: write(array('i', [1, 2, 3])) returned 3 (items); it returns 12 (bytes), as
    count_written() says, and those 12 bytes are what the peer receives."""
    results = {}
    data = array("i", [1, 2, 3])

    def action(ctx):
        w = ctx.acquire_send()
        results["write"] = w.write(data)
        results["count"] = w.count_written()
        results["len"] = len(w)
        w.send()

    sender = Base(action)
    peer = _stream(rt, sender)
    rt.cmd_sender.send_user_cmd(sender.ctx.reactor_id, "go")
    expected = data.tobytes()
    assert recv_exact_nb(rt, peer, len(expected)) == expected
    assert results == {"write": 12, "count": 12, "len": 12}, results
    peer.close()


# --------------------------------------------------------------------------- item 16

@pytest.mark.parametrize("bad", [42, "callback", b"x"], ids=repr)
def test_send_or_que_with_a_non_callable_on_sent_raises_type_error(rt, bad):
    """Item 16: send_or_que(data, on_sent=42) was accepted, the bytes sent, and the failure
    came later as a logged "completion 42 raised TypeError".  TypeError at the call, and
    nothing sent."""
    errors = []

    def action(ctx):
        try:
            ctx.send_or_que(b"never", on_sent=bad)
        except TypeError as exc:
            errors.append(exc)
        ctx.send_or_que(b"after")

    sender = Base(action)
    peer = _stream(rt, sender)
    rt.cmd_sender.send_user_cmd(sender.ctx.reactor_id, "go")
    assert recv_exact_nb(rt, peer, 5) == b"after"
    assert len(errors) == 1, errors
    assert sender.closed == []
    peer.close()


# --------------------------------------------------------------------------- memoryviews

def test_send_or_que_takes_the_bytes_a_memoryview_shows(rt):
    """send_or_que reads a C-contiguous memoryview's bytes directly (0.2: no buffer export per
    call): a slice, a cast and a view of a bytearray send exactly what they show; a strided
    view and a released one go through the ordinary buffer protocol and raise its errors."""
    backing = bytearray(b"0123456789abcdef")
    errors = []

    def action(ctx):
        mv = memoryview(backing)
        ctx.send_or_que(mv[2:6])                        # b"2345"
        ctx.send_or_que(mv[10:].cast("B", (3, 2)))      # 2-D, C-contiguous: b"abcdef"
        ctx.send_or_que(memoryview(array("H", [0x4241])))   # b"AB" (little-endian)
        for bad in (mv[::2], _released(mv)):
            try:
                ctx.send_or_que(bad)
            except (BufferError, ValueError) as exc:
                errors.append(type(exc))
        ctx.send_or_que(mv[:1])                         # b"0": the stream is still fine

    sender = Base(action)
    peer = _stream(rt, sender)
    rt.cmd_sender.send_user_cmd(sender.ctx.reactor_id, "go")
    expected = b"2345abcdef" + array("H", [0x4241]).tobytes() + b"0"
    assert recv_exact_nb(rt, peer, len(expected)) == expected
    assert errors == [BufferError, ValueError], errors
    assert sender.closed == []
    peer.close()


def _released(mv):
    view = mv[:4]
    view.release()
    return view


# --------------------------------------------------------------------------- item 17

def test_max_events_too_large_is_refused_at_construction():
    """Item 17: ReactRuntime(max_events=200_000_000) was accepted, then every process_events
    failed with EINVAL (epoll_wait takes at most INT_MAX / sizeof(struct epoll_event) =
    178,956,970 events).  ValueError at construction; 1024 works."""
    with pytest.raises(ValueError):
        ReactRuntime(max_events=200_000_000).close()
    rt = ReactRuntime(max_events=1024)
    try:
        assert rt.process_events(0) is False
    finally:
        rt.close()
    if BACKEND == "epoll":
        with pytest.raises(ValueError):                 # just over epoll_wait's bound
            ReactRuntime(max_events=178_956_971).close()


def test_on_sent_of_a_reply_that_overflows_the_cork_runs_after_the_send(rt):
    """Replies made while one read is dispatched are held (corked) and leave together; once
    they pass CORK_BYTES the send that crossed it flushes them.  That flush wrote the bytes of
    the very send that triggered it, and its on_sent ran inside that send_or_que.  Three
    pipelined requests, each answered with 20,000 bytes: every on_sent runs after its send
    returned, in order, and every byte arrives."""
    log = []

    class Replier(Base):
        def on_inbound_message(self, buf, new_bytes, decoded, ctx):
            end = bytes(buf).find(b"\n")
            if end < 0:
                return reactio.ExpectMsgSize(0)
            inside = [True]
            tag = bytes(buf[:end])
            ctx.send_or_que(tag * 20_000, lambda r: log.append((tag, inside[0], r)))
            inside[0] = False
            return DropMsgSize(end + 1)

    server = Replier()
    peer = _stream(rt, server)
    peer.sendall(b"a\nb\nc\n")
    got = recv_exact_nb(rt, peer, 60_000, timeout=20)
    assert got == b"a" * 20_000 + b"b" * 20_000 + b"c" * 20_000
    pump_until(rt, lambda: len(log) == 3)
    assert [(tag, inside) for tag, inside, _ in log] == [(b"a", False), (b"b", False),
                                                         (b"c", False)], log
    assert all(r == server.ctx.reactor_id for _, _, r in log)
    peer.close()


def test_replies_to_a_pipelining_peer_leave_in_one_send_per_read(rt):
    """Write coalescing.  A peer that writes 32 requests at once and waits for the 32 replies:
    the replies made while one read is dispatched leave together, and once a read held several
    messages the next read's first reply is held too (IN_QUEUE), so each burst costs one send(),
    not two, and the peer is not woken for the first reply alone.  A peer that then sends one
    message at a time: from its second message on, every reply leaves from inside
    send_or_que (COMPLETE), as in ping-pong.  Every byte arrives, in order."""
    results = []

    class Echo8(Base):
        def on_inbound_message(self, buf, new_bytes, decoded, ctx):
            if len(buf) < 8:
                return reactio.ExpectMsgSize(8)
            results.append((bytes(buf[:8]), ctx.send_or_que(buf[:8])))
            return DropMsgSize(8)

    peer = _stream(rt, Echo8())
    for burst in range(30):
        blob = b"".join(b"%03d%05d" % (burst, i) for i in range(32))
        peer.sendall(blob)
        assert recv_exact_nb(rt, peer, len(blob), timeout=20) == blob
    firsts = [res for msg, res in results if msg.endswith(b"00000")]
    assert len(results) == 30 * 32 and len(firsts) == 30
    held = sum(res == SendOrQueResult.IN_QUEUE for res in firsts[1:])
    # (a burst the kernel splits over two reads starts a new batch: allow a few)
    assert held >= 20, f"only {held} of 29 bursts had their first reply held: {firsts}"
    results.clear()
    for i in range(30):
        msg = b"lone%04d" % i
        peer.sendall(msg)
        assert recv_exact_nb(rt, peer, 8, timeout=20) == msg
    assert [msg for msg, _ in results] == [b"lone%04d" % i for i in range(30)]
    assert all(res == SendOrQueResult.COMPLETE for _, res in results[1:]), results
    peer.close()
