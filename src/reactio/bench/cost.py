"""``cost``: user-space instructions per echoed message of each leg's server, under
``valgrind --tool=callgrind``.

An instruction count does not depend on the machine's load, its clock or the other
processes on it, so it is exact and repeatable where timings are not: it can gate
regressions (tests/test_cost.py does) on a shared, noisy machine. It counts user space only
(the kernel's side of the system calls is not in it; ``pipeline`` counts those calls).

Each leg's server runs under callgrind twice, serving the C pipeline client (bursts of
DEPTH, strict ping-pong by default) for N and then 2N messages; the server's fixed costs
(interpreter start-up, imports, listen, accept, close, exit) are the same in both runs, so

    instructions per message = (instructions(2N) - instructions(N)) / N

The Python children run with PYTHONHASHSEED=0, so that hash randomisation cannot move the
fixed part between the two runs. One thing still depends on timing: a reactio wait that lasts
longer than 20 ms releases the GIL (~400 instructions; shorter waits keep it when no other
thread exists), so on a loaded machine, where the client is sometimes descheduled that long,
the reactio legs' figures rise by a few tens of instructions per message (e.g. 564 -> 586 for
reactio-cy); the budgets of tests/test_cost.py leave room for that. Rounds (``--rounds``) repeat the pair, legs interleaved as
in the other modes, and report the spread, which shows how exact the figure is here.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import cbuild, stats, tools
from .legs import FLOOR, Leg, RoundsOutcome, run_rounds, usable_legs
from .pipeline import run_session
from .progress import Progress

STARTUP_TIMEOUT = 300.0   # an interpreter starting under valgrind is ~50x slower
SECONDS_PER_MSG = 0.01    # and so is every message


def callgrind_total(path: Path) -> int:
    """The instruction count (Ir) of a callgrind output file: its ``totals:`` line (or
    ``summary:``, which older valgrinds write alone)."""
    found: Optional[int] = None
    with open(path) as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
            if line.startswith("summary:"):
                found = int(line.split()[1])
    if found is None:
        raise ValueError(f"{path.name}: no totals in the callgrind output")
    return found


class CostResult(RoundsOutcome):
    """One leg's instruction counts, one entry per round."""

    @property
    def per_msg(self) -> float:
        """The median over rounds of the instructions per message."""
        return self.median("instructions_per_msg")

    def to_dict(self, floor: Optional["CostResult"]) -> Dict[str, Any]:
        d = self.head()
        if not self.ok:
            return d
        per = [r["instructions_per_msg"] for r in self.rounds]
        d["instructions_per_msg"] = self.per_msg
        d["spread"] = max(per) - min(per)
        d["fixed_instructions"] = self.rounds[0]["fixed_instructions"]
        d["rounds"] = self.rounds
        fl = floor if floor is not None and floor.ok else None
        d["ratio_instructions_per_msg"] = stats.ratio(self.per_msg,
                                                      fl.per_msg if fl is not None else None)
        return d


def measure(leg: Leg, valgrind: str, client: Path, messages: int, depth: int, size: int,
            workdir: Path, progress: Progress, label: str) -> int:
    """Instructions of one whole server run under callgrind serving ``messages`` messages."""
    out = workdir / f"{leg.name}-{messages}.callgrind"
    wrapper = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", "--quiet"]
    env = dict(leg.env if leg.env is not None else os.environ, PYTHONHASHSEED="0")
    run_session(leg, client, depth=depth, size=size, warmup=0, count=messages, trace_count=0,
                strace=None, workdir=workdir, progress=progress,
                label=f"{label}, {messages:,} messages", wrapper=wrapper, env=env,
                startup_timeout=STARTUP_TIMEOUT, seconds_per_msg=SECONDS_PER_MSG)
    try:
        return callgrind_total(out)
    finally:
        out.unlink()


def run(legs: List[Leg], count: int, size: int, depth: int, rounds: int,
        progress: Progress) -> Dict[str, Any]:
    """Instructions per message of every leg's server. Raises tools.ToolMissing without
    valgrind and cbuild.BuildError without the C client."""
    valgrind = tools.find("valgrind")
    client = cbuild.build("pipeline_client")
    n = -(-count // depth) * depth  # whole bursts, so that 2n is exactly twice n
    available, skipped = usable_legs(legs, False, "cost", progress)
    with tempfile.TemporaryDirectory(prefix="reactio-bench-") as tmp:
        workdir = Path(tmp)

        def run_pair(leg: Leg, r: int) -> Dict[int, int]:
            label = f"cost, round {r + 1}/{rounds}, {leg.name}"
            # the order of the pair alternates too: neither size always runs first
            sizes = [n, 2 * n] if r % 2 == 0 else [2 * n, n]
            return {m: measure(leg, valgrind, client, m, depth, size, workdir, progress, label)
                    for m in sizes}

        def record(res: CostResult, r: int, counts: Dict[int, int]) -> None:
            per_msg = (counts[2 * n] - counts[n]) / n
            res.rounds.append({"round": r + 1, "messages": n,
                               "instructions": counts[n],
                               "instructions_2x": counts[2 * n],
                               "instructions_per_msg": per_msg,
                               "fixed_instructions": counts[n] - per_msg * n})

        per_leg = run_rounds(legs, available, skipped, CostResult, rounds, run_pair, record,
                             "cost", progress)
    floor = per_leg.get(FLOOR)
    return {
        "command": "cost",
        "params": {"count": n, "size": size, "depth": depth, "rounds": rounds,
                   "legs": [leg.name for leg in legs],
                   "client": "C pipeline client (depth 1: strict ping-pong)",
                   "method": "valgrind --tool=callgrind, user-space instructions (Ir) of "
                             "the server: (runs of 2N minus N messages) / N",
                   "valgrind": tools.version("valgrind")},
        "results": [{"depth": depth,
                     "legs": [per_leg[leg.name].to_dict(floor) for leg in legs]}],
    }
