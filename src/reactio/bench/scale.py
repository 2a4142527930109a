"""``scale``: echo throughput with N connections, one message in flight on each.

Load always comes from the C epoll load generator (``c/loadgen.c``), so the client side is
the same for every server. For every connection count, round r runs every leg's server
once (order rotated by r, as in pingpong). The load generator connects all N connections,
warms up, then measures for a fixed duration; it prints ``measure-start`` and
``measure-end`` at the window's edges, where the harness reads the server process's CPU
time (utime + stime from /proc), giving the server's CPU time per message.
"""
from __future__ import annotations

import signal
import tempfile
from array import array
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import cbuild, stats
from .legs import FLOOR, Leg, LegOutcome, run_rounds, usable_legs
from .procs import (Child, ChildError, Pins, cpu_seconds, deadline_in, pin_plan, pins_json,
                    require_nofile, tree_cpu_seconds)
from .progress import Progress

STARTUP_TIMEOUT = 60.0
CONNECT_TIMEOUT = 60.0  # loadgen itself gives up after 30 s


class ScaleResult(LegOutcome):
    """One leg's outcome at one connection count, accumulated over rounds."""

    def __init__(self, leg: Leg) -> None:
        super().__init__(leg)
        self.samples = array("q")
        self.messages = 0
        self.elapsed_ns = 0
        self.cpu_s = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.messages > 0

    @property
    def rate(self) -> float:
        return self.messages / (self.elapsed_ns / 1e9)

    @property
    def cpu_per_msg_us(self) -> float:
        return self.cpu_s / self.messages * 1e6

    def to_dict(self, floor: Optional["ScaleResult"]) -> Dict[str, Any]:
        d = self.head()
        if not self.ok:
            return d
        d["messages"] = self.messages
        d["elapsed_s"] = self.elapsed_ns / 1e9
        d["messages_per_s"] = self.rate
        d["latency_us"] = stats.summarize(self.samples)
        d["server_cpu_s"] = self.cpu_s
        d["server_cpu_us_per_msg"] = self.cpu_per_msg_us
        d["server_cpu_utilization"] = self.cpu_s / (self.elapsed_ns / 1e9)
        fl = floor if floor is not None and floor.ok else None
        d["ratio_messages_per_s"] = stats.ratio(self.rate, fl.rate if fl is not None else None)
        # cpu/msg ratio: how many times the C server's CPU time one message costs.
        d["ratio_cpu_per_msg"] = stats.ratio(self.cpu_per_msg_us,
                                             fl.cpu_per_msg_us if fl is not None else None)
        return d


# What one run measures: (samples, messages, elapsed_ns, server_cpu_s).
RunFigures = Tuple["array[int]", int, int, float]


def run_once(leg: Leg, loadgen: Path, conns: int, size: int, warmup: float, duration: float,
             pins: Pins, spin: bool, workdir: Path, progress: Progress,
             label: str, workers: Optional[int] = None,
             threads: Optional[int] = None) -> RunFigures:
    """One server + load generator run: (samples, messages, elapsed_ns, server_cpu_s).

    With ``workers``, the server runs that many processes sharing its port; it is stopped
    with SIGTERM after the load generator is done (it must then exit 0), and its CPU time is
    that of its whole process tree.  With ``threads`` it is one process (all its threads'
    CPU time), stopped the same way."""
    out = workdir / f"scale-{leg.name}-{conns}.samples"
    timeout = STARTUP_TIMEOUT + CONNECT_TIMEOUT + warmup + duration + 30
    server_cpus, client_cpus = pins
    cpu_of = tree_cpu_seconds if workers else cpu_seconds
    progress.update(f"{label}: starting")
    with Child(f"{leg.name} server", leg.server_argv(conns, spin, timeout, workers, threads=threads),
               workdir=workdir, cpus=server_cpus, env=leg.env) as server:
        port = server.read_port(deadline_in(STARTUP_TIMEOUT))
        argv = [str(loadgen), str(port), str(conns), f"{warmup:g}", f"{duration:g}", str(size),
                str(out), "--timeout", str(int(timeout) + 1)]
        with Child("loadgen", argv, workdir=workdir, cpus=client_cpus) as lg:
            deadline = deadline_in(timeout)
            cpu0: Optional[float] = None
            cpu1: Optional[float] = None
            result: Optional[Tuple[int, int]] = None
            for line in lg.lines(deadline, server):
                if line.startswith("progress "):
                    progress.update(f"{label}: {int(line.split()[1]):,} messages")
                elif line.startswith("connected "):
                    progress.update(f"{label}: connected, warming up")
                elif line == "measure-start":
                    cpu0 = cpu_of(server.pid)
                elif line.startswith("measure-end "):
                    cpu1 = cpu_of(server.pid)
                    _, msgs, elapsed = line.split()
                    result = int(msgs), int(elapsed)
                elif line == "done":
                    break
            if lg.wait(deadline_in(10)) != 0:
                raise lg.failure("failed")
        if workers or threads:
            server.signal(signal.SIGTERM)       # these servers serve until told to stop
        if server.wait(deadline_in(30)) != 0:
            raise server.failure("failed")
    if cpu0 is None or cpu1 is None or result is None:
        raise ChildError("loadgen: no measurement window (duration too short?)")
    samples = stats.load_samples(str(out))
    out.unlink()
    messages, elapsed_ns = result
    if messages == 0:
        raise ChildError(f"{leg.name} server: no message was echoed in the measurement window")
    return samples, messages, elapsed_ns, cpu1 - cpu0


def run(legs: List[Leg], conns_list: List[int], size: int, warmup: float, duration: float,
        rounds: int, pin: str, spin: bool, progress: Progress,
        workers: Optional[int] = None, threads: Optional[int] = None) -> Dict[str, Any]:
    pins = pin_plan(pin)
    require_nofile(max(conns_list))  # the raised limit is inherited by the children
    loadgen = cbuild.build("loadgen")  # BuildError: no scale run at all without it
    available, skipped = usable_legs(legs, False, "scale", progress)
    results: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="reactio-bench-") as tmp:
        workdir = Path(tmp)
        for conns in conns_list:
            def measure(leg: Leg, r: int, conns: int = conns) -> RunFigures:
                label = f"scale {conns} conns, round {r + 1}/{rounds}, {leg.name}"
                if workers:
                    label += f" x{workers}"
                if threads:
                    label += f" {threads} threads"
                return run_once(leg, loadgen, conns, size, warmup, duration, pins, spin,
                                workdir, progress, label, workers, threads)

            def record(res: ScaleResult, r: int, fig: RunFigures) -> None:
                samples, msgs, elapsed, cpu = fig
                res.samples.extend(samples)
                res.messages += msgs
                res.elapsed_ns += elapsed
                res.cpu_s += cpu

            per_leg = run_rounds(legs, available, skipped, ScaleResult, rounds, measure, record,
                                 "scale", progress, where=f" at {conns} conns")
            floor = per_leg.get(FLOOR)
            results.append({"conns": conns, "threads": threads,
                            "legs": [per_leg[leg.name].to_dict(floor) for leg in legs]})
    return {
        "command": "scale",
        "params": {"conns": conns_list, "size": size, "warmup": warmup, "duration": duration,
                   "rounds": rounds, "pin": pin, "spin": spin, "workers": workers,
                   "threads": threads,
                   "cpus": pins_json(pins),
                   "legs": [leg.name for leg in legs]},
        "results": results,
    }
