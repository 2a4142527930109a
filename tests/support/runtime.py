"""Driving a ReactRuntime from a test: pump it until something holds, open listeners and
connections through its commands, collect completions."""
from __future__ import annotations

import time

import reactio
from reactio import DefaultTcpListenerHandler, Deferred, ReactRuntime


class Completion:
    """A completion callback that records its single result (and fails if called twice)."""

    def __init__(self):
        self.results = []

    def __call__(self, result):
        self.results.append(result)

    @property
    def done(self) -> bool:
        return bool(self.results)

    @property
    def result(self):
        assert len(self.results) == 1, f"completion called {len(self.results)} times"
        return self.results[0]


def pump_until(rt: ReactRuntime, predicate, timeout: float = 5.0, step: float = 0.005):
    """Run the runtime until predicate() is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        rt.process_events(step)


def run_until_idle(rt: ReactRuntime, timeout: float = 5.0) -> None:
    """Run the runtime until a round has nothing to do."""
    deadline = time.monotonic() + timeout
    while rt.process_events(0.01):
        assert time.monotonic() < deadline, "runtime did not become idle"


def listen(rt: ReactRuntime, handler, addr="127.0.0.1:0"):
    """Start a listener; returns (listener_id, port), and for a ``"unix:"`` address
    (listener_id, that address): what connect() and raw_client() take either way."""
    done = Completion()
    rt.cmd_sender.send_listen(addr, handler, Deferred.IMMEDIATE, done)
    pump_until(rt, lambda: done.done)
    lid = done.result
    assert isinstance(lid, reactio.ReactorID), lid
    if isinstance(addr, str) and addr.startswith("unix:"):
        return lid, addr
    return lid, rt.local_address(lid)[1]


def listen_factory(rt: ReactRuntime, factory, recv_buffer_min_size=4096, addr="127.0.0.1:0",
                   **options):
    """A listener whose every connection is served by ``factory()``; returns (id, port)."""
    handler = DefaultTcpListenerHandler(lambda count, param: factory(), recv_buffer_min_size,
                                        None, **options)
    return listen(rt, handler, addr)


def connect(rt: ReactRuntime, port: int, reactor, recv_buffer_min_size=4096, host="127.0.0.1",
            **options):
    """An outbound connection served by ``reactor`` (to ``port`` on ``host``, or to the
    ``"unix:"`` address ``port``); returns what its completion got (the ReactorID, or the
    error)."""
    done = Completion()
    addr = port if isinstance(port, str) else (host, port)
    rt.cmd_sender.send_connect(addr, recv_buffer_min_size, reactor, Deferred.IMMEDIATE,
                               done, **options)
    pump_until(rt, lambda: done.done)
    return done.result


def stream_ids(rt: ReactRuntime, slots: int = 64, max_generation: int = 7):
    """The ReactorIDs of the runtime's streams (the reactors with a DispatchContext) among the
    first ``slots`` slots and generations 1..max_generation, in slot order."""
    ids = []
    for slot in range(slots):
        for gen in range(1, max_generation + 1):
            rid = reactio.ReactorID(slot, gen)
            if rt.get_context(rid) is not None:
                ids.append(rid)
    return ids
