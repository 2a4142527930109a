"""The cross-thread paths under contention (issue 17): what the GIL used to serialize.

Each test drives one path that other threads reach while runtimes run on their own threads:
the command inbox (append + wake-up handshake), stop() from another thread, runtimes closed
while others send to them, counters read from other threads, the name registry, a listener
handler shared by several runtimes, and the resolver pool.  On a GIL build they run in the
default suite with small counts (well under 20 s together); tools/freethreaded.sh runs them
on CPython 3.13t with the GIL disabled and REACTIO_FT_FULL=1: 8 senders x 100,000 commands.

Every check is exact: each completion once, in send order per sender and runtime; a
command accepted by send_*() is completed (by the runtime, or by its close()) and never lost;
a lost wake-up shows as a stall far above the bound (the runtimes poll with a 30 s timeout).
"""
from __future__ import annotations

import collections
import functools
import gc
import os
import random
import socket
import sys
import sysconfig
import threading
import time
from typing import Any, Optional

import pytest

from reactio import (DatagramReactor, DefaultTcpListenerHandler, DropMsgSize,
                     DuplicateReactorNameError, ReactorID, ReactorNotFoundError, ReactorUID,
                     ReactRuntime, Reactor, RuntimeClosedError, ThreadedReactorMgr)
from reactio import _net
from reactio.simpleio import SimpleIoListener

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
FULL = os.environ.get("REACTIO_FT_FULL") == "1"
LONG_POLL = 30.0                        # a lost wake-up would stall a runtime this long


def n(full: int, small: int) -> int:
    """The count for this run: full under tools/freethreaded.sh (REACTIO_FT_FULL=1)."""
    return full if FULL else small


pytestmark = pytest.mark.timeout(900 if FULL else 60)

STALE = ReactorID(1, 999)               # never a live reactor: completes ReactorNotFoundError


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.002)


def fd_count() -> Optional[int]:
    if not os.path.isdir("/proc/self/fd"):
        return None
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


class Target(Reactor):
    """Records user commands (on its runtime's thread only); discards bytes."""

    def __init__(self) -> None:
        self.reactor_id: Optional[ReactorID] = None
        self.connected = threading.Event()
        self.commands: list[Any] = []

    def on_connected(self, ctx, listener_id):
        self.reactor_id = ctx.reactor_id
        self.ctx = ctx
        self.connected.set()

    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        return DropMsgSize(len(buf))

    def on_command(self, cmd, ctx):
        self.commands.append(cmd)


def open_target(mgr: ThreadedReactorMgr, runtime_id: int) -> Target:
    """A connected stream on ``runtime_id`` (its accepted side is the target)."""
    accepted: list[Target] = []
    listening: list[Any] = []
    handler = DefaultTcpListenerHandler(lambda count, param: accepted.append(Target())
                                        or accepted[-1], 1024)

    def listened(res):
        listening.append((res, mgr.get_runtime(runtime_id).local_address(res)[1]
                          if isinstance(res, ReactorID) else None))

    mgr.get_cmd_sender(runtime_id).send_listen("127.0.0.1:0", handler, None, listened)
    wait_for(lambda: listening, 10, "listen")
    lid, port = listening[0]
    assert isinstance(lid, ReactorID), lid
    mgr.get_cmd_sender(runtime_id).send_connect(("127.0.0.1", port), 1024, Target())
    wait_for(lambda: accepted and accepted[0].connected.is_set(), 10, "accept")
    return accepted[0]


# ----------------------------------------------------------------------------- commands

def test_8_senders_to_4_runtimes_every_completion_once_and_in_order():
    """8 threads send to targets on 4 runtimes (each sender rotates over the runtimes, at most
    1,000 commands outstanding): every completion runs exactly once with the target's id, and
    per (sender, runtime) the completions and the deliveries come in send order.  A thread
    reads the runtimes' counters all along: they only grow."""
    nrt, nsenders, per_sender, window = 4, 8, n(100_000, 2_500), 1_000
    with ThreadedReactorMgr(nrt, poll_timeout=LONG_POLL) as mgr:
        targets = [open_target(mgr, i) for i in range(nrt)]
        ids = [t.reactor_id for t in targets]
        base = [mgr.get_runtime(i).count_received_commands() for i in range(nrt)]
        # done[s][r]: (seq, result) of sender s's commands to runtime r, appended only by
        # runtime r's thread (the completion runs there)
        done = [[[] for _ in range(nrt)] for _ in range(nsenders)]
        windows = [threading.Semaphore(window) for _ in range(nsenders)]
        errors: list[BaseException] = []
        barrier = threading.Barrier(nsenders + 1)
        stop_reading = threading.Event()
        counter_readings: list[list[int]] = [[] for _ in range(nrt)]

        def completion(s: int, r: int, seq: int, result: Any) -> None:
            done[s][r].append((seq, result))
            windows[s].release()

        def sender(s: int) -> None:
            senders = [mgr.get_cmd_sender(r) for r in range(nrt)]
            try:
                barrier.wait()
                for seq in range(per_sender):
                    r = (seq + s) % nrt
                    if not windows[s].acquire(timeout=LONG_POLL / 2):
                        raise AssertionError(f"sender {s}: no completion for {LONG_POLL / 2} s "
                                             f"at seq {seq} (lost command or wake-up)")
                    senders[r].send_user_cmd(ids[r], (s, seq), None,
                                             functools.partial(completion, s, r, seq))
            except BaseException as exc:
                errors.append(exc)

        def counter_reader() -> None:
            runtimes = [mgr.get_runtime(r) for r in range(nrt)]
            while not stop_reading.is_set():
                for r, rt in enumerate(runtimes):
                    counter_readings[r].append(rt.count_received_commands())
                time.sleep(0.001)

        threads = [threading.Thread(target=sender, args=(s,)) for s in range(nsenders)]
        reader = threading.Thread(target=counter_reader)
        reader.start()
        for t in threads:
            t.start()
        t0 = time.monotonic()
        barrier.wait()
        for t in threads:
            t.join()
        total = nsenders * per_sender
        wait_for(lambda: sum(len(d) for row in done for d in row) >= total, 60,
                 "every completion")
        seconds = time.monotonic() - t0
        time.sleep(0.05)                        # a duplicate completion would show by now
        stop_reading.set()
        reader.join()

        assert errors == []
        for s in range(nsenders):
            for r in range(nrt):
                seqs = [q for q, _ in done[s][r]]
                expected = list(range((r - s) % nrt, per_sender, nrt))
                assert seqs == expected, (f"sender {s} -> runtime {r}: completions lost, "
                                          f"duplicated or out of order")
                assert all(res == ids[r] for _, res in done[s][r]), (s, r)
        for r, t in enumerate(targets):
            per = collections.defaultdict(list)
            for s, q in t.commands:
                per[s].append(q)
            for s in range(nsenders):
                assert per[s] == list(range((r - s) % nrt, per_sender, nrt)), (r, s)
        for r in range(nrt):
            readings = counter_readings[r]
            assert readings == sorted(readings), f"runtime {r}: counter went backwards"
            assert (mgr.get_runtime(r).count_received_commands() - base[r]
                    == total // nrt)
    print(f"\n{total} commands in {seconds:.2f} s ({total / seconds:,.0f}/s), "
          f"free-threaded={FREE_THREADED}, GIL={getattr(sys, '_is_gil_enabled', lambda: True)()}")


def test_a_command_always_wakes_a_blocked_loop():
    """Round trips from 4 threads to 2 runtimes blocked in epoll_wait with a 30 s timeout:
    each command must wake its loop at once (a lost wake-up in the polling/wake_pending
    handshake stalls the round trip for up to 30 s)."""
    nthreads, rounds = 4, n(20_000, 400)
    worst = [0.0] * nthreads
    errors: list[BaseException] = []
    with ThreadedReactorMgr(2, poll_timeout=LONG_POLL) as mgr:
        def pinger(k: int) -> None:
            sender = mgr.get_cmd_sender(k % 2)
            ev = threading.Event()
            results: list[Any] = []

            def done(res):
                results.append(res)
                ev.set()
            try:
                for i in range(rounds):
                    ev.clear()
                    t0 = time.monotonic()
                    sender.send_user_cmd(STALE, i, None, done)
                    if not ev.wait(5.0):
                        raise AssertionError(f"thread {k}: round {i} not completed in 5 s "
                                             "(lost wake-up)")
                    worst[k] = max(worst[k], time.monotonic() - t0)
                    # sometimes let the loop go back to sleep before the next command
                    if i % 7 == 0:
                        time.sleep(0.0002)
                assert len(results) == rounds
                assert all(isinstance(r, ReactorNotFoundError) for r in results)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=pinger, args=(k,)) for k in range(nthreads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert max(worst) < 2.0, f"slowest round trip {max(worst):.3f} s"


def test_stop_from_another_thread_is_never_lost():
    """stop() from a foreign thread, each time the loop is blocked in (or about to enter)
    epoll_wait with a 30 s timeout: run_forever() returns within 5 s, once per stop()."""
    rounds = n(2_000, 200)
    rt = ReactRuntime()
    returns = [0]
    returned = threading.Condition()
    finished = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while not finished.is_set():
                rt.run_forever(LONG_POLL)
                with returned:
                    returns[0] += 1
                    returned.notify_all()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=loop)
    t.start()
    try:
        for i in range(rounds):
            if i % 3 == 0:
                time.sleep(0.0005)          # let the loop block in epoll_wait first
            rt.stop()
            with returned:
                assert returned.wait_for(lambda: returns[0] == i + 1, 5.0), \
                    f"stop() #{i + 1} did not make run_forever() return within 5 s"
    finally:
        finished.set()
        rt.stop()
        t.join(10)
        assert not t.is_alive()
        rt.close()
    assert errors == []


def test_runtimes_started_and_stopped_while_others_send():
    """4 threads send to whichever runtimes are live while another thread keeps replacing
    them: a new runtime starts on its thread, the old one is stopped from the replacing
    thread and closes on its own.  Each send either raises RuntimeClosedError at once or its
    completion runs exactly once (ReactorNotFoundError from the runtime, RuntimeClosedError
    from close()); no thread, eventfd or epoll descriptor is left behind."""
    slots_n, cycles, nsenders = 4, n(400, 40), 4
    fds_before = fd_count()
    lock = threading.Lock()
    slots: list[tuple[ReactRuntime, threading.Thread]] = []
    accepted = [0] * nsenders
    refused = [0] * nsenders
    completed: list[tuple[int, int, Any]] = []          # list.append: one at a time
    errors: list[BaseException] = []
    churning = threading.Event()
    churning.set()

    def run(rt: ReactRuntime) -> None:
        try:
            rt.run_forever(LONG_POLL)
        except BaseException as exc:
            errors.append(exc)
        finally:
            rt.close()                          # on its own thread, as the contract says

    def start() -> tuple[ReactRuntime, threading.Thread]:
        rt = ReactRuntime()
        t = threading.Thread(target=run, args=(rt,))
        t.start()
        return rt, t

    def sender(s: int) -> None:
        rng = random.Random(s)
        seq = 0
        try:
            while churning.is_set():
                with lock:
                    rt, _ = slots[rng.randrange(slots_n)]
                cs = rt.cmd_sender
                try:
                    cs.send_user_cmd(STALE, seq, None,
                                     lambda res, s=s, q=seq: completed.append((s, q, res)))
                    accepted[s] += 1
                except RuntimeClosedError:
                    refused[s] += 1
                seq += 1
        except BaseException as exc:
            errors.append(exc)

    for _ in range(slots_n):
        slots.append(start())
    senders = [threading.Thread(target=sender, args=(s,)) for s in range(nsenders)]
    for t in senders:
        t.start()
    retired = []
    try:
        rng = random.Random(99)
        for c in range(cycles):
            i = rng.randrange(slots_n)
            new = start()
            with lock:
                old, slots[i] = slots[i], new
            time.sleep(rng.random() * 0.002)
            old[0].stop()                       # from this (foreign) thread
            retired.append(old)
    finally:
        churning.clear()
        for t in senders:
            t.join(30)
        with lock:
            live = list(slots)
        for rt, _ in live:
            rt.stop()
        for rt, t in retired + live:
            t.join(30)
            assert not t.is_alive(), "a runtime thread did not stop within 30 s"
    assert errors == []
    total = sum(accepted)
    assert total > 0
    per_cmd = collections.Counter((s, q) for s, q, _ in completed)
    lost = total - len(per_cmd)
    assert lost == 0, f"{lost} of {total} accepted commands never completed"
    assert set(per_cmd.values()) == {1}, "a completion ran twice"
    kinds = collections.Counter(type(res).__name__ for _, _, res in completed)
    assert set(kinds) <= {"ReactorNotFoundError", "RuntimeClosedError"}, kinds
    print(f"\n{cycles} runtime replacements; {total} commands accepted ({dict(kinds)}), "
          f"{sum(refused)} refused with RuntimeClosedError")
    del slots, retired, live
    if fds_before is not None:
        assert fd_count() == fds_before, "descriptors left behind"


def test_managers_stopped_while_others_send():
    """ThreadedReactorMgr.stop() from one thread while 4 others send through its senders:
    every accepted command completes once, every refused one raised RuntimeClosedError."""
    rounds, per_sender = n(60, 6), n(200_000, 20_000)
    for _ in range(rounds):
        mgr = ThreadedReactorMgr(2, poll_timeout=LONG_POLL)
        completed: list[tuple[int, int]] = []
        accepted = [0] * 4
        errors: list[BaseException] = []
        go = threading.Barrier(5)

        def sender(s: int) -> None:
            try:
                go.wait()
                for q in range(per_sender):
                    try:
                        mgr.get_cmd_sender(q % 2).send_user_cmd(
                            STALE, q, None, lambda res, s=s, q=q: completed.append((s, q)))
                    except RuntimeClosedError:
                        return
                    accepted[s] += 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=sender, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        go.wait()
        time.sleep(0.01)
        mgr.stop()
        mgr.join(timeout=30)
        for t in threads:
            t.join(30)
        assert errors == []
        assert len(completed) == len(set(completed)) == sum(accepted), \
            f"{sum(accepted) - len(set(completed))} accepted commands never completed"


# ----------------------------------------------------------------------------- registry

def test_name_registry_under_contention():
    """8 threads add, find and remove 16 shared names with their own uids: a name is held by
    at most one thread at a time, the holder always finds its own uid (an entry is never
    overwritten), a non-owner's remove never removes it, and the registry ends empty."""
    nthreads, ops, names = 8, n(200_000, 4_000), 16
    errors: list[BaseException] = []
    holds = [0] * nthreads
    barrier = threading.Barrier(nthreads)
    with ThreadedReactorMgr(1) as mgr:
        def worker(k: int) -> None:
            mine = ReactorUID(k, ReactorID(k, 1))
            rng = random.Random(k)
            held: set[str] = set()
            try:
                barrier.wait()
                for _ in range(ops):
                    name = f"svc-{rng.randrange(names)}"
                    if name in held:
                        assert mgr.find_reactor_uid(name) == mine, "entry overwritten"
                        if rng.random() < 0.5:
                            assert mgr.remove_reactor_name(name, mine) == mine
                            held.discard(name)
                        continue
                    try:
                        mgr.add_reactor_uid(name, mine)
                        held.add(name)
                        holds[k] += 1
                    except DuplicateReactorNameError:
                        assert mgr.remove_reactor_name(name, mine) is None
                        other = mgr.find_reactor_uid(name)
                        assert other != mine
                for name in held:
                    assert mgr.remove_reactor_name(name, mine) == mine
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert mgr.count_reactors() == 0
        assert sum(holds) > nthreads


# ----------------------------------------------------------------------------- shared objects

def test_concurrent_stop_sends_one_stop_per_runtime():
    """8 threads call ThreadedReactorMgr.stop() at once: each runtime gets exactly one stop
    command (its only command), and every thread returns."""
    for _ in range(n(200, 20)):
        mgr = ThreadedReactorMgr(2, poll_timeout=LONG_POLL)
        base = [mgr.get_runtime(i).count_received_commands() for i in range(2)]
        barrier = threading.Barrier(8)

        def stopper() -> None:
            barrier.wait()
            mgr.stop()

        threads = [threading.Thread(target=stopper) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        mgr.join(timeout=30)
        assert [mgr.get_runtime(i).count_received_commands() - base[i]
                for i in range(2)] == [1, 1]


@pytest.mark.parametrize("kind", ["DefaultTcpListenerHandler", "SimpleIoListener"])
def test_listener_handler_shared_by_runtimes_counts_each_connection_once(kind):
    """One listener handler listening on 4 runtimes (SO_REUSEPORT, one port): the kernel
    spreads the connections over the runtimes' threads, and the factory still gets the
    counts 1..N, each once."""
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("no SO_REUSEPORT")
    nrt, nclients = 4, n(4_000, 400)
    counts: list[int] = []
    if kind == "SimpleIoListener":
        handler: Any = SimpleIoListener(1024, lambda count: counts.append(count) or Target(),
                                        reuse_port=True)
    else:
        handler = DefaultTcpListenerHandler(
            lambda count, param: counts.append(count) or Target(), 1024, reuse_port=True)
    with ThreadedReactorMgr(nrt) as mgr:
        port = 0
        for r in range(nrt):
            got: list[Any] = []
            mgr.get_cmd_sender(r).send_listen(
                ("127.0.0.1", port), handler, None,
                lambda res, r=r: got.append((res, mgr.get_runtime(r).local_address(res)[1]
                                             if isinstance(res, ReactorID) else None)))
            wait_for(lambda: got, 10, "listen")
            assert isinstance(got[0][0], ReactorID), got
            port = got[0][1]
        errors: list[BaseException] = []

        def client(k: int) -> None:
            try:
                for _ in range(nclients // 4):
                    with socket.create_connection(("127.0.0.1", port), timeout=10):
                        pass
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        wait_for(lambda: len(counts) >= nclients, 20, "every accept")
    assert sorted(counts) == list(range(1, nclients + 1)), "a count was given twice"


# A core bug found by the test below, on GIL builds too: with the Cython directive
# binding=False the default arguments of the inner function ``done(result, p=p, sender=sender)``
# in _resolve (_connect.pxi) are stored in module globals, shared by every
# instance of it, so each lookup in flight posts the *last* started connect (and to the last
# runtime's sender).  docs/internals-threading.md has the fix; strict: remove the marks then.
# (These two found a bug of 0.1.0: the resolver's callback was a closure whose default
# arguments, under binding=False, were shared by every call, so concurrent name lookups reached
# the wrong connect.)


def test_concurrent_name_lookups_each_reach_their_own_connect():
    """One runtime, 8 connects by name started in one batch, to a listening port and to a
    closed one in turn: each completion gets its own outcome."""
    rt = ReactRuntime()
    try:
        handler = DefaultTcpListenerHandler(lambda count, param: Target(), 1024)
        got: list[Any] = []
        rt.cmd_sender.send_listen("127.0.0.1:0", handler, None, got.append)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            rt.process_events(0.01)
        port = rt.local_address(got[0])[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        results: list[list[Any]] = [[] for _ in range(8)]
        for i in range(8):
            rt.cmd_sender.send_connect(f"localhost:{port if i % 2 == 0 else closed_port}", 1024,
                                       Target(), None, results[i].append, timeout=2)
        deadline = time.monotonic() + 5
        while not all(results) and time.monotonic() < deadline:
            rt.process_events(0.01)
        outcome = [type(r[0]).__name__ if r else None for r in results]
        assert outcome == ["ReactorID", "ConnectionRefusedError"] * 4, outcome
    finally:
        rt.close()


def test_name_lookups_from_many_runtimes_at_once():
    """8 runtimes connect to "localhost:port" at the same moment (names are resolved on the
    shared resolver pool): every connect completes once, and there is one pool."""
    nrt, per = 8, n(50, 6)
    with ThreadedReactorMgr(nrt) as mgr:
        got: list[Any] = []
        handler = DefaultTcpListenerHandler(lambda count, param: Target(), 1024)
        mgr.get_cmd_sender(0).send_listen(
            "127.0.0.1:0", handler, None,
            lambda res: got.append(mgr.get_runtime(0).local_address(res)[1]))
        wait_for(lambda: got, 10, "listen")
        port = got[0]
        results: list[list[Any]] = [[] for _ in range(nrt)]
        barrier = threading.Barrier(nrt)

        def connect_all(r: int) -> None:
            barrier.wait()
            for _ in range(per):
                mgr.get_cmd_sender(r).send_connect(f"localhost:{port}", 1024, Target(), None,
                                                   results[r].append, timeout=3)

        threads = [threading.Thread(target=connect_all, args=(r,)) for r in range(nrt)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_for(lambda: sum(map(len, results)) >= nrt * per, 10, "every connect")
        time.sleep(0.05)
        assert [len(r) for r in results] == [per] * nrt
        for r in results:
            assert all(isinstance(x, ReactorID) for x in r), r
    pools = {t.name.rsplit("_", 1)[0] for t in threading.enumerate()
             if t.name.startswith("reactio-resolver")}
    assert len(pools) <= 1, pools
    assert _net._resolver is not None


# ----------------------------------------------------------------------------- ownership
# A runtime is used from one thread: what only its loop thread may do is refused elsewhere
# (docs/internals-threading.md, C4, C9, C10).

def test_two_threads_racing_for_one_runtime_one_is_refused():
    """process_events() claims the loop by compare-and-swap: of two threads calling it at
    once, one runs and the other gets RuntimeError; nothing else happens, and the runtime
    still works afterwards."""
    rounds = n(20_000, 2_000)
    unexpected: list[BaseException] = []
    refused = [0, 0]
    with ReactRuntime() as rt:
        done: list[Any] = []
        start = threading.Barrier(2)

        def hammer(k: int) -> None:
            start.wait()
            for _ in range(rounds):
                try:
                    rt.process_events(0)
                except RuntimeError as exc:
                    if "another thread" not in str(exc):
                        unexpected.append(exc)
                    refused[k] += 1
                except BaseException as exc:
                    unexpected.append(exc)

        ts = [threading.Thread(target=hammer, args=(k,)) for k in range(2)]
        rt.cmd_sender.send_call(lambda: 1, None, done.append)
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        assert not unexpected, unexpected[:3]
        rt.cmd_sender.send_call(lambda: 2, None, done.append)
        while len(done) < 2:
            rt.process_events(0.1)
        assert done == [1, 2]


def run_in_thread(rt: ReactRuntime) -> threading.Thread:
    """rt.run_forever() on a new thread, once it runs there."""
    running = threading.Event()
    rt.cmd_sender.send_call(running.set)
    t = threading.Thread(target=rt.run_forever, args=(LONG_POLL,))
    t.start()
    assert running.wait(10), "run_forever did not start"
    return t


def test_timer_cancel_from_another_thread_is_refused_while_it_runs():
    with ReactRuntime() as rt:
        handles: list[Any] = []
        t = run_in_thread(rt)
        try:
            rt.cmd_sender.send_call(lambda: rt.call_later(3600, print), None, handles.append)
            wait_for(lambda: handles, 10, "call_later on the loop thread")
            h = handles[0]
            with pytest.raises(RuntimeError, match="send_call"):
                h.cancel()
            assert not h.cancelled()
            rt.cmd_sender.send_call(h.cancel, None, handles.append)
            wait_for(lambda: len(handles) == 2, 10, "cancel through send_call")
            assert h.cancelled() and rt.count_deferred_queue() == 0
        finally:
            rt.stop()
            t.join(10)
        assert not t.is_alive()


@pytest.mark.skipif(not FREE_THREADED, reason="the stream's thread check is compiled in on "
                    "free-threaded (and debug) builds only; under the GIL it costs nothing")
def test_stream_used_from_another_thread_is_refused_while_its_runtime_runs():
    with ThreadedReactorMgr(1, poll_timeout=LONG_POLL) as mgr:
        target = open_target(mgr, 0)
        with pytest.raises(RuntimeError, match="another thread"):
            target.ctx.send_or_que(b"x")
        with pytest.raises(RuntimeError, match="another thread"):
            target.ctx.send_no_que(b"x")
        with pytest.raises(RuntimeError, match="another thread"):
            target.ctx.close()
        done: list[Any] = []          # the same calls on the loop thread are fine
        mgr.get_cmd_sender(0).send_call(lambda: target.ctx.send_or_que(b"x"), None,
                                        done.append)
        wait_for(lambda: done, 10, "send on the loop thread")
        assert not isinstance(done[0], BaseException), done


class _BoundEndpoint(DatagramReactor):
    def __init__(self) -> None:
        self.ctx: Any = None

    def on_bound(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_datagram(self, buf: Any, addr: Any, ctx: Any) -> None:
        pass


@pytest.mark.skipif(not FREE_THREADED, reason="the endpoint's thread check is compiled in on "
                    "free-threaded (and debug) builds only; under the GIL it costs nothing")
def test_datagram_endpoint_used_from_another_thread_is_refused_while_its_runtime_runs():
    with ReactRuntime() as rt:
        ep = _BoundEndpoint()
        done: list[Any] = []
        rt.cmd_sender.send_bind_udp(("127.0.0.1", 0), ep, None, done.append)
        t = run_in_thread(rt)
        try:
            wait_for(lambda: done, 10, "the bind")
            assert not isinstance(done[0], BaseException), done
            addr = ("127.0.0.1", 9)     # (discard: nothing listens; a datagram is just sent)
            with pytest.raises(RuntimeError, match="another thread"):
                ep.ctx.send_to(b"x", addr)
            with pytest.raises(RuntimeError, match="another thread"):
                ep.ctx.close()
            assert ep.ctx.is_open
            sent: list[Any] = []      # the same call on the loop thread is fine
            rt.cmd_sender.send_call(lambda: ep.ctx.send_to(b"x", addr), None, sent.append)
            wait_for(lambda: sent, 10, "send_to on the loop thread")
            assert sent[0] is True, sent
        finally:
            rt.stop()
            t.join(10)
        assert not t.is_alive()
