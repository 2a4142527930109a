"""Light fault tests (issue 5), runtime lifetime: a runtime dropped without close() is
collected with everything it holds; close() finishes its work even when an on_close raises
KeyboardInterrupt; a DispatchContext kept after its stream closed is safe to use."""
from __future__ import annotations

import gc
import sys

import pytest

import reactio
from reactio import ReactRuntime

from support.env import BACKEND
from support.fds import runtime_descriptors
from support.reactors import EchoReactor
from support.runtime import Completion, listen_factory, pump_until
from support.sockets import raw_client

pytestmark = pytest.mark.timeout(30)


@pytest.mark.skipif(BACKEND == "iocp",
                    reason="IOCP: the pending operations of a runtime dropped without close() "
                           "keep their sockets (the kernel owns them)")
def test_unclosed_runtime_collected_by_gc_closes_every_fd():
    """Regression: a runtime dropped without close() is in a reference cycle (rt -> slots ->
    DispatchContext -> rt).  The GC's tp_clear used to set its slots to None before
    __dealloc__, which raised "TypeError: 'NoneType' object is not iterable" (ignored) and
    leaked the epoll fd, the eventfd, the listener and every stream."""
    unraisable = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        gc.collect()
        base = runtime_descriptors()
        for n_streams in (0, 1, 5, 20):
            rt = ReactRuntime()
            lid, port = listen_factory(rt, EchoReactor)
            peers = [raw_client(port) for _ in range(n_streams)]
            pump_until(rt, lambda: rt.count_streams() == n_streams)
            # keep the runtime alive only through cycles, with pending commands
            rt.cmd_sender.send_user_cmd(lid, rt)
            rt.cmd_sender.send_user_cmd(lid, rt, reactio.Deferred.after(100))
            for p in peers:
                p.close()
            del rt, peers
            gc.collect()
            leaked = runtime_descriptors() - base
            assert not leaked, f"{leaked} leaked with {n_streams} streams"
    finally:
        sys.unraisablehook = old_hook
    assert unraisable == [], [u.exc_value for u in unraisable]


def test_close_finishes_even_when_an_on_close_raises_keyboard_interrupt():
    """close() runs every on_close and fails every pending completion; a KeyboardInterrupt
    from one callback still propagates, but only after that work is done (no fd leaked)."""

    class Interrupting(EchoReactor):
        def on_close(self, reactor_id, cmd_sender):
            super().on_close(reactor_id, cmd_sender)
            raise KeyboardInterrupt

    gc.collect()
    base = runtime_descriptors()
    rt = ReactRuntime()
    reactors = [EchoReactor(), Interrupting(), EchoReactor(), Interrupting(), EchoReactor()]
    made = list(reactors)
    lid, port = listen_factory(rt, lambda: reactors.pop(0))
    peers = [raw_client(port) for _ in range(len(made))]
    pump_until(rt, lambda: rt.count_streams() == len(made))
    pending = [Completion() for _ in range(3)]
    for c in pending:
        rt.cmd_sender.send_user_cmd(lid, "later", reactio.Deferred.after(60), c)
    rt.process_events(0)
    queued = Completion()
    rt.cmd_sender.send_user_cmd(lid, "queued", None, queued)
    with pytest.raises(KeyboardInterrupt):
        rt.close()
    assert all(len(r.closed) == 1 for r in made), [r.closed for r in made]
    for c in pending + [queued]:
        assert isinstance(c.result, reactio.RuntimeClosedError)
    rt.close()                                  # idempotent afterwards
    with pytest.raises(reactio.RuntimeClosedError):
        rt.process_events(0)
    for p in peers:
        p.close()
    del rt
    gc.collect()
    assert runtime_descriptors() == base


def _write_and_send(w):
    w.write(b"x")
    return w.send()


def test_closed_context_and_reader_are_safe_to_use(rt):
    """A DispatchContext kept after its stream closed: every method raises
    ReactorClosedError or is a no-op; its MsgReader refuses to read."""
    kept = {}

    class Keeper(EchoReactor):
        def on_connected(self, ctx, listener_id):
            kept["ctx"] = ctx

    lid, port = listen_factory(rt, Keeper)
    peer = raw_client(port)
    pump_until(rt, lambda: "ctx" in kept)
    ctx = kept["ctx"]
    peer.close()
    pump_until(rt, lambda: rt.count_streams() == 0)
    for name, call in [("send_or_que", lambda: ctx.send_or_que(b"x")),
                       ("send_no_que", lambda: ctx.send_no_que(b"x")),
                       ("peer_address", lambda: ctx.peer_address),
                       ("local_address", lambda: ctx.local_address),
                       ("nodelay", lambda: ctx.nodelay),
                       ("acquire_send", lambda: _write_and_send(ctx.acquire_send()))]:
        with pytest.raises(reactio.ReactorClosedError):
            call()
            print(name, "did not raise")
    ctx.close()
    ctx.close(abort=True)
    assert not ctx.is_open and ctx.send_queue_size == 0
    with pytest.raises((reactio.ReactorClosedError, RuntimeError, ValueError)):
        ctx.reader.try_read_fast_read(ctx)
    with pytest.raises((reactio.ReactorClosedError, RuntimeError, ValueError)):
        ctx.reader.try_read_fast_dispatch(ctx)
    assert rt.count_streams() == 0 and rt.count_reactors() == 1     # the listener

