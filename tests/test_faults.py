"""Light fault tests (issue 5): callback abuse, re-entrancy, peer faults, EMFILE under accept,
connect timeouts, runtime lifetime.  Each runs in well under a second or two; the heavy
versions are under tests/stress/ (marker ``stress``)."""
from __future__ import annotations

import gc
import os
import sys

import pytest

import reactio
from reactio import ReactRuntime

from conftest import EchoReactor, listen_factory, pump_until, raw_client

pytestmark = pytest.mark.timeout(30)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --------------------------------------------------------------------------- runtime lifetime

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
        base = open_fds()
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
            assert open_fds() == base, f"{open_fds() - base} fds leaked with {n_streams} streams"
    finally:
        sys.unraisablehook = old_hook
    assert unraisable == [], [u.exc_value for u in unraisable]
