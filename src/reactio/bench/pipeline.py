"""``pipeline``: echo throughput with DEPTH messages in flight on one connection, per leg.

The client is always the C pipeline client (``c/pipeline_client.c``), so only the servers
differ. It pipelines in bursts, as ``redis-benchmark -P`` does: DEPTH messages in one write,
then all DEPTH echoes read back, then the next burst. A burst reaches the server as one
segment, so what the server does per message (reads, writes, wake-ups) does not depend on
how fast either side runs, and the counts below are reproducible.

Per leg and depth, from one server + client run per round (rounds interleaved, the order of
the legs rotated by the round, as in ``pingpong``):

* messages/s and per-message latency (burst write to echo read) of the measured phase;
* the server's CPU time per message: utime + stime of /proc/PID/stat, read at the edges of
  the measured phase while the server is idle (the client pauses there with nothing in
  flight); resolution one clock tick, so the phase should last a second or more;
* system calls per message, by call: ``strace -f -c`` attached to the server for a separate,
  traced phase right after the measured one (ptrace makes every system call several times
  slower, which would spoil the other figures). Attaching and detaching happen while the
  server is idle in its poll, so the count holds the traced messages' calls, give or take
  the one poll under way at each attach (counted once, twice when restarted, or not at all).
  Without strace the figures are reported unavailable, with how to install it.
"""
from __future__ import annotations

import signal
import tempfile
from array import array
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from . import cbuild, stats, tools
from .legs import FLOOR, Leg, run_rounds, usable_legs
from .pingpong import _split
from .procs import Child, ChildError, Pins, cpu_seconds, deadline_in, pin_plan, pins_json
from .progress import Progress
from .scale import ScaleResult

STARTUP_TIMEOUT = 60.0   # a server must report its port within this (Python start-up)
ATTACH_TIMEOUT = 30.0    # strace must have attached within this
SECONDS_PER_MSG = 0.001  # a generous bound on one message, for a run's watchdog

SYSCALL_METHOD = ("strace -f -c attached to the server for a separate traced phase of "
                  "whole bursts; the server is idle when strace attaches and detaches "
                  "(+-1 poll per round)")


class Session:
    """What one server + pipeline client run measured."""

    def __init__(self) -> None:
        self.messages = 0
        self.elapsed_ns = 0
        self.cpu_s = 0.0
        self.samples: array[int] = array("q")
        self.traced_messages = 0
        self.syscalls: Optional[Dict[str, int]] = None
        self.syscalls_error: Optional[str] = None


def parse_strace_summary(text: str) -> Dict[str, int]:
    """Calls per system call name from the table ``strace -c`` writes.

    The rows sit between the first two dashed lines; the calls column is the fourth and the
    name the last (the errors column before it may be empty). Raises ValueError when there
    is no table.
    """
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("------")]
    if len(rules) < 2:
        raise ValueError("no strace -c summary table in its output")
    calls: Dict[str, int] = {}
    for line in lines[rules[0] + 1:rules[1]]:
        tok = line.split()
        if len(tok) < 5:
            continue
        calls[tok[-1]] = calls.get(tok[-1], 0) + int(tok[3])
    return calls


def _start_tracer(strace: str, pid: int, out: Path, workdir: Path) -> Child:
    tracer = Child("strace", [strace, "-f", "-c", "-o", str(out), "-p", str(pid)],
                   workdir=workdir)
    try:
        tracer.wait_stderr("attached", deadline_in(ATTACH_TIMEOUT))
    except ChildError:
        tracer.stop()
        raise
    return tracer


def _stop_tracer(tracer: Child, out: Path) -> Dict[str, int]:
    """Detach strace (SIGINT: it detaches and writes its summary) and read its counts."""
    tracer.signal(signal.SIGINT)
    tracer.wait(deadline_in(ATTACH_TIMEOUT))
    try:
        return parse_strace_summary(out.read_text())
    except (OSError, ValueError) as e:
        raise tracer.failure(f"wrote no summary: {e}") from None


def run_session(leg: Leg, client: Path, *, depth: int, size: int, warmup: int, count: int,
                trace_count: int, strace: Optional[str], workdir: Path, progress: Progress,
                label: str, pins: Pins = (None, None), wrapper: Sequence[str] = (),
                env: Optional[Dict[str, str]] = None,
                startup_timeout: float = STARTUP_TIMEOUT,
                seconds_per_msg: float = SECONDS_PER_MSG) -> Session:
    """One server of ``leg`` (run under ``wrapper``, e.g. valgrind, if given) driven by the
    pipeline client through its phases. Raises ChildError (quoting the child's stderr) when
    anything goes wrong; a tracer that cannot attach only costs the system call counts."""
    sess = Session()
    samples_path = workdir / f"{leg.name}-{depth}.samples"
    trace_out = workdir / f"{leg.name}-{depth}.strace"
    timeout = startup_timeout + 30 + seconds_per_msg * (warmup + count + trace_count + depth)
    deadline = deadline_in(timeout)
    server_cpus, client_cpus = pins
    progress.update(f"{label}: starting")
    server_argv = list(wrapper) + leg.server_argv(1, False, timeout)
    with Child(f"{leg.name} server", server_argv, workdir=workdir, cpus=server_cpus,
               env=env if env is not None else leg.env) as server:
        port = server.read_port(min(deadline, deadline_in(startup_timeout)))
        argv = [str(client), str(port), str(depth), str(size), str(warmup), str(count),
                str(trace_count if strace else 0), str(samples_path),
                "--timeout", str(int(timeout) + 1)]
        cpu0: Optional[float] = None
        tracer: Optional[Child] = None
        with Child("pipeline client", argv, workdir=workdir, cpus=client_cpus) as cl:
            try:
                for line in cl.lines(deadline, server):
                    word, _, rest = line.partition(" ")
                    if word == "progress":
                        progress.update(f"{label}: {int(rest):,}/{count:,} messages")
                    elif line == "paused measure":
                        cpu0 = cpu_seconds(server.pid)
                        cl.signal(signal.SIGUSR1)
                    elif word == "measured":
                        if cpu0 is None:
                            raise cl.failure("measured before its pause")
                        sess.cpu_s = cpu_seconds(server.pid) - cpu0
                        msgs, elapsed = rest.split()
                        sess.messages, sess.elapsed_ns = int(msgs), int(elapsed)
                    elif line == "paused trace":
                        assert strace is not None  # the client traces only when given a count
                        progress.update(f"{label}: counting system calls")
                        try:
                            tracer = _start_tracer(strace, server.pid, trace_out, workdir)
                        except ChildError as e:
                            sess.syscalls_error = str(e)
                        cl.signal(signal.SIGUSR1)
                    elif word == "traced":
                        sess.traced_messages = int(rest.split()[0])
                    elif line == "paused close":
                        if tracer is not None:
                            try:
                                sess.syscalls = _stop_tracer(tracer, trace_out)
                            except ChildError as e:
                                sess.syscalls_error = str(e)
                            tracer.stop()
                            tracer = None
                        cl.signal(signal.SIGUSR1)
                    elif line == "done":
                        break
            finally:
                if tracer is not None:
                    tracer.stop()
            if cl.wait(deadline_in(10)) != 0:
                raise cl.failure("failed")
        if server.wait(deadline_in(startup_timeout)) != 0:
            raise server.failure("failed")
    sess.samples = stats.load_samples(str(samples_path))
    samples_path.unlink()
    if not sess.messages or len(sess.samples) != sess.messages:
        raise ChildError(f"pipeline client: {len(sess.samples)} samples for "
                         f"{sess.messages} messages")
    return sess


class PipelineResult(ScaleResult):
    """One leg's outcome at one depth, accumulated over rounds: ScaleResult's throughput,
    latency and CPU figures, plus the system calls of the traced phases."""

    def __init__(self, leg: Leg) -> None:
        super().__init__(leg)
        self.traced_messages = 0
        self.syscalls: Dict[str, int] = {}
        self.syscalls_error: Optional[str] = None  # set: no counts for this leg
        self.rounds: List[Dict[str, Any]] = []

    def add(self, r: int, sess: Session) -> None:
        self.samples.extend(sess.samples)
        self.messages += sess.messages
        self.elapsed_ns += sess.elapsed_ns
        self.cpu_s += sess.cpu_s
        if sess.syscalls_error is not None and self.syscalls_error is None:
            # a round whose tracer failed spoils the sum: report no counts rather than a part
            self.syscalls_error = sess.syscalls_error
        elif sess.syscalls is not None:
            self.traced_messages += sess.traced_messages
            for name, n in sess.syscalls.items():
                self.syscalls[name] = self.syscalls.get(name, 0) + n
        self.rounds.append({"round": r + 1, "messages": sess.messages,
                            "messages_per_s": sess.messages / (sess.elapsed_ns / 1e9),
                            "server_cpu_us_per_msg": sess.cpu_s / sess.messages * 1e6})

    @property
    def syscalls_per_msg(self) -> Optional[float]:
        if self.syscalls_error is not None or not self.traced_messages:
            return None
        return sum(self.syscalls.values()) / self.traced_messages

    def to_dict(self, floor: Optional[ScaleResult]) -> Dict[str, Any]:
        d = super().to_dict(floor)
        if not self.ok:
            return d
        d["rounds"] = self.rounds
        per_msg = self.syscalls_per_msg
        if per_msg is not None:
            d["syscalls"] = {
                "messages": self.traced_messages,
                "per_msg": per_msg,
                "by_call": {name: n / self.traced_messages for name, n in
                            sorted(self.syscalls.items(), key=lambda kv: (-kv[1], kv[0]))},
            }
        else:
            d["syscalls"] = None
            d["syscalls_unavailable"] = self.syscalls_error or "not counted (--trace-count 0)"
        fl = floor if isinstance(floor, PipelineResult) and floor.ok else None
        d["ratio_syscalls_per_msg"] = stats.ratio(
            per_msg, fl.syscalls_per_msg if fl is not None else None)
        return d


def run(legs: List[Leg], depths: List[int], size: int, count: int, warmup: int,
        trace_count: int, rounds: int, pin: str, progress: Progress) -> Dict[str, Any]:
    """Run the pipeline over ``legs`` for every depth; returns the JSON-able result."""
    pins = pin_plan(pin)
    client = cbuild.build("pipeline_client")  # BuildError: no pipeline run without it
    strace: Optional[str] = None
    no_trace_reason: Optional[str] = None
    if trace_count > 0:
        try:
            strace = tools.find("strace")
        except tools.ToolMissing as e:
            no_trace_reason = str(e)
            progress.note(f"pipeline: no system call counts: {e}")
    shares = _split(count, rounds)
    # the traced messages, spread over the rounds too (a round may get none)
    trace_shares = _split(trace_count, len(shares)) if strace else []
    trace_shares += [0] * (len(shares) - len(trace_shares))
    available, skipped = usable_legs(legs, False, "pipeline", progress)

    results: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="reactio-bench-") as tmp:
        workdir = Path(tmp)
        for depth in depths:
            def measure(leg: Leg, r: int, depth: int = depth) -> Session:
                label = f"pipeline depth {depth}, round {r + 1}/{len(shares)}, {leg.name}"
                return run_session(leg, client, depth=depth, size=size, warmup=warmup,
                                   count=shares[r], trace_count=trace_shares[r],
                                   strace=strace, workdir=workdir, progress=progress,
                                   label=label, pins=pins)

            per_leg = run_rounds(legs, available, skipped, PipelineResult, len(shares),
                                 measure, PipelineResult.add, "pipeline", progress,
                                 f" at depth {depth}")
            for res in per_leg.values():
                if res.traced_messages == 0 and res.syscalls_error is None:
                    res.syscalls_error = no_trace_reason or "not counted (--trace-count 0)"
            floor = per_leg.get(FLOOR)
            results.append({"depth": depth,
                            "legs": [per_leg[leg.name].to_dict(floor) for leg in legs]})
    return {
        "command": "pipeline",
        "params": {"depths": depths, "size": size, "count": count, "warmup_per_run": warmup,
                   "trace_count": trace_count, "rounds": len(shares), "pin": pin,
                   "cpus": pins_json(pins), "legs": [leg.name for leg in legs],
                   "client": "C pipeline client, bursts of DEPTH messages in one write",
                   "cpu_method": "utime+stime of /proc/PID/stat at the measured phase's edges",
                   "syscall_method": SYSCALL_METHOD if strace else None,
                   "strace": tools.version("strace") if strace else None,
                   "syscalls_unavailable": no_trace_reason},
        "results": results,
    }

