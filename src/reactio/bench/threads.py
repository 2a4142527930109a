"""``scale --threads``: one process, N runtimes on N threads (issue 17, free-threaded CPython).

Two measurements:

- ``scale --threads N`` (with the C load generator): the reactio-py / reactio-cy server is a
  ``ThreadedReactorMgr(N)`` whose N runtimes each listen on the announced port with
  ``reuse_port=True`` (the kernel spreads the connections over them); it serves until SIGTERM.
  ``serve_threads`` below is that server (``python -m reactio.bench.worker server LEG
  --threads N``).
- ``scale --threads 1,2 --in-process``: no load generator (on a 2-core machine it takes a core
  the server would use): each of N threads runs its own runtime with one loopback connection,
  a Python echo reactor on one end and a pinger on the other (one 64-byte message in flight),
  polling without blocking, so the thread is CPU-bound on Python code.  With the GIL the
  threads take turns (N threads echo about as much as one); on a free-threaded build
  (3.13t, 3.14t) each thread has a core.  Messages/s are counted over a fixed window after a
  warm-up; the CPU time is the whole process's (``time.process_time``).
"""
from __future__ import annotations

import os
import signal
import struct
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Union

from reactio import (DefaultTcpListenerHandler, DispatchContext, DropMsgSize, ExpectMsgSize,
                     MessageResult, Reactor, ReactorID, ReactRuntime, ThreadedReactorMgr)
from reactio import workers as rworkers

from .legs_reactio import _listen, _ServerState
from .worker import HDR

_HEAD = struct.Struct("<Hq")  # the harness's wire header: body length, send stamp


def _echo_factory(leg: str, target: int) -> Callable[[int, object], Any]:
    state = _ServerState(target)
    if leg == "reactio-cy":
        from ._cyecho import CyEchoServer
        return lambda count, param: CyEchoServer(state)
    from ._pyecho import PyEchoServer
    return lambda count, param: PyEchoServer(state)


def serve_threads(leg: str, threads: int, announce: Callable[[int], None]) -> None:
    """``threads`` runtimes of one ThreadedReactorMgr listening on one port (reuse_port),
    until SIGTERM; then they are stopped and joined, and the process exits 0."""
    if leg not in ("reactio-py", "reactio-cy"):
        raise SystemExit(f"--threads: reactio-py and reactio-cy only, not {leg}")
    factory = _echo_factory(leg, 1 << 62)       # never closes its listener
    term = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: term.set())
    holder = rworkers.reserve_port("127.0.0.1")
    port = holder.getsockname()[1]
    results: List[Union[ReactorID, BaseException]] = []
    listening = threading.Semaphore(0)

    def done(result: Union[ReactorID, BaseException]) -> None:
        results.append(result)
        listening.release()

    try:
        with ThreadedReactorMgr(threads) as mgr:
            for i in range(threads):
                handler = DefaultTcpListenerHandler(factory, 4096, None, backlog=4096,
                                                    reuse_port=True)
                mgr.get_cmd_sender(i).send_listen(("127.0.0.1", port), handler, None, done)
            for _ in range(threads):
                if not listening.acquire(timeout=30):
                    raise TimeoutError("a runtime did not start listening within 30 s")
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise SystemExit(f"cannot listen on port {port}: {errors[0]!r}")
            announce(port)
            while not term.wait(1.0):
                pass
    finally:
        holder.close()


class _Pinger(Reactor):
    """The client end of one in-process pair: one message in flight, counted per echo."""

    def __init__(self, size: int, run: "_InProcessRun") -> None:
        super().__init__()
        self.size = size
        self.run = run
        self.count = 0
        self.msg = bytearray(b"x" * size)
        _HEAD.pack_into(self.msg, 0, size - HDR, 0)

    def on_connected(self, ctx: DispatchContext, listener_id: Optional[ReactorID]) -> None:
        ctx.send_or_que(self.msg)

    def on_inbound_message(self, buf: memoryview, new_bytes: int, decoded_msg_size: int,
                           ctx: DispatchContext) -> MessageResult:
        if len(buf) < self.size:
            return ExpectMsgSize(self.size)
        self.count += 1
        # (the shared flag is read every 256 echoes: on a free-threaded build each read of a
        # shared object is an atomic reference-count update that two cores fight over)
        if self.count & 255 or not self.run.stop:
            ctx.send_or_que(self.msg)
        return DropMsgSize(self.size)


class _InProcessRun:
    def __init__(self, threads: int, size: int) -> None:
        self.threads = threads
        self.size = size
        self.stop = False
        self.start = threading.Barrier(threads + 1)
        self.pingers: List[Any] = [None] * threads
        self.errors: List[BaseException] = []

    def pair(self, i: int) -> None:
        try:
            with ReactRuntime() as rt:
                port = _listen(rt, DefaultTcpListenerHandler(_echo_factory("reactio-py", 1),
                                                             4096, None))
                pinger = self.pingers[i] = _Pinger(self.size, self)
                rt.cmd_sender.send_connect(("127.0.0.1", port), 4096, pinger)
                self.start.wait(60)
                while not self.stop:
                    rt.process_events(0)
        except BaseException as exc:
            self.errors.append(exc)
            self.start.abort()


def measure_in_process(threads: int, size: int, warmup: float, duration: float) -> Dict[str, Any]:
    """One run with ``threads`` pairs: messages/s over the window, CPU per message."""
    run = _InProcessRun(threads, size)
    ts = [threading.Thread(target=run.pair, args=(i,), name=f"pair-{i}") for i in range(threads)]
    for t in ts:
        t.start()
    try:
        run.start.wait(60)
        time.sleep(warmup)
        c0, t0, cpu0 = sum(p.count for p in run.pingers), time.perf_counter(), time.process_time()
        time.sleep(duration)
        c1, t1, cpu1 = sum(p.count for p in run.pingers), time.perf_counter(), time.process_time()
    finally:
        run.stop = True
        for t in ts:
            t.join(30)
    if run.errors:
        raise RuntimeError(f"an in-process pair failed: {run.errors[0]!r}") from run.errors[0]
    msgs = c1 - c0
    if msgs <= 0:
        raise RuntimeError("no message was echoed in the measurement window")
    return {"threads": threads, "messages": msgs, "elapsed_s": t1 - t0,
            "messages_per_s": msgs / (t1 - t0), "cpu_s": cpu1 - cpu0,
            "cpu_us_per_msg": (cpu1 - cpu0) / msgs * 1e6,
            "per_thread": [p.count for p in run.pingers]}


def interpreter() -> Dict[str, Any]:
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    import sysconfig
    return {"version": sys.version.split()[0],
            "free_threaded_build": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
            "gil_enabled": gil, "cpus": os.cpu_count(), "load": os.getloadavg()}


def run_in_process(thread_counts: List[int], size: int, warmup: float, duration: float,
                   rounds: int) -> Dict[str, Any]:
    """Each thread count ``rounds`` times, interleaved (1, 2, 1, 2, ...)."""
    runs: Dict[int, List[Dict[str, Any]]] = {n: [] for n in thread_counts}
    for _ in range(rounds):
        for n in thread_counts:
            runs[n].append(measure_in_process(n, size, warmup, duration))
    results = []
    base: Optional[float] = None
    for n in thread_counts:
        best = max(runs[n], key=lambda r: r["messages_per_s"])
        if base is None:
            base = best["messages_per_s"]
        results.append(dict(best, ratio_to_first=best["messages_per_s"] / base,
                            rounds=[r["messages_per_s"] for r in runs[n]]))
    return {"command": "scale-in-process", "interpreter": interpreter(),
            "params": {"threads": thread_counts, "size": size, "warmup": warmup,
                       "duration": duration, "rounds": rounds},
            "results": results}


def in_process_table(result: Dict[str, Any]) -> str:
    it = result["interpreter"]
    head = (f"# Python {it['version']}, {'free-threaded' if it['free_threaded_build'] else 'GIL'}"
            f" build, GIL {'enabled' if it['gil_enabled'] else 'disabled'}, {it['cpus']} CPUs,"
            f" load average {it['load'][0]:.2f} at the end\n"
            f"scale --in-process: N threads, each a runtime echoing {result['params']['size']} B"
            f" over one loopback connection (Python reactors, busy-polling); best of "
            f"{result['params']['rounds']} round(s) of {result['params']['duration']:g} s; cores ="
            " the process's CPU time / elapsed time (with the GIL at most about 1)\n\n")
    lines = [f"{'threads':>7} {'msgs/s':>12} {'vs first':>9} {'cpu us/msg':>11} {'cores':>6}"
             "  rounds (msgs/s)"]
    for r in result["results"]:
        rounds = ", ".join(f"{x:,.0f}" for x in r["rounds"])
        lines.append(f"{r['threads']:>7} {r['messages_per_s']:>12,.0f} "
                     f"{r['ratio_to_first']:>8.2f}x {r['cpu_us_per_msg']:>11.2f} "
                     f"{r['cpu_s'] / r['elapsed_s']:>6.2f}  {rounds}")
    return head + "\n".join(lines) + "\n"
