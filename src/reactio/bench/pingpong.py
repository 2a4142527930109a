"""``pingpong``: round-trip latency of one connection, per leg, interleaved in rounds.

For every message size, round r runs every leg once (a fresh server and client process
pair, a warm-up, then its share of the round trips), the order of the legs rotated by r:
a slow drift of the machine (frequency, a noisy neighbour) then hits every leg alike
instead of whichever leg happened to run last. A leg's samples are pooled over its rounds;
its per-round p50 is kept too (in the JSON) to show how stable the figures were.

A leg that cannot run (not installed, cannot import, does not compile) is skipped with the
reason; a leg that fails in a round is reported failed, with its stderr, and not run again.
The other legs carry on either way.
"""
from __future__ import annotations

import os
import tempfile
from array import array
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import stats, tls
from .legs import FLOOR, Leg, LegOutcome, measure_round, round_order, usable_legs
from .procs import Child, ChildError, Pins, deadline_in, pin_plan, pins_json
from .progress import Progress

STARTUP_TIMEOUT = 60.0  # a child must report within this (Python start-up, imports)
TRANSPORTS = ("tcp", "unix")    # pingpong --unix runs both, tcp alone otherwise


class LegResult(LegOutcome):
    """One leg's outcome for one message size, accumulated over rounds."""

    def __init__(self, leg: Leg) -> None:
        super().__init__(leg)
        self.samples = array("q")
        self.elapsed_ns = 0
        self.rounds: List[Dict[str, float]] = []
        self._summary: Optional[Dict[str, float]] = None

    def summary(self) -> Dict[str, float]:
        """Latency statistics (µs) of all samples so far, computed once after the last round."""
        if self._summary is None or self._summary["n"] != len(self.samples):
            self._summary = stats.summarize(self.samples)
        return self._summary

    def add_round(self, r: int, samples: "array[int]", elapsed: int) -> None:
        self.samples.extend(samples)
        self.elapsed_ns += elapsed
        s = sorted(samples)
        self.rounds.append({"round": r + 1, "count": len(s),
                            "p50_us": stats.percentile(s, 0.5) / 1e3,
                            "p99_us": stats.percentile(s, 0.99) / 1e3,
                            "elapsed_s": elapsed / 1e9})

    def rate(self) -> Optional[float]:
        return len(self.samples) / (self.elapsed_ns / 1e9) if self.elapsed_ns else None

    def to_dict(self, floor: Optional["LegResult"]) -> Dict[str, Any]:
        d = self.head()
        if self.status != "ok" or not self.samples:
            return d
        s = self.summary()
        d["latency_us"] = s
        d["round_trips_per_s"] = self.rate()
        f = floor.summary() if floor is not None and floor.ok else None
        d["ratio_p50"] = stats.ratio(s["p50"], f["p50"] if f is not None else None)
        d["ratio_p99"] = stats.ratio(s["p99"], f["p99"] if f is not None else None)
        d["rounds"] = self.rounds
        d["nines_curve"] = stats.nines_curve(self.samples)
        return d

    @property
    def ok(self) -> bool:
        return self.status == "ok" and len(self.samples) > 0


def _split(count: int, rounds: int) -> List[int]:
    """``count`` round trips over ``rounds`` rounds, as evenly as possible, none empty."""
    rounds = max(1, min(rounds, count))
    base, extra = divmod(count, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def run_once(leg: Leg, size: int, count: int, warmup: int, pins: Pins, spin: bool,
             timeout: float, workdir: Path, progress: Progress,
             label: str, unix: Optional[str] = None) -> Tuple[array[int], int]:
    """One server/client pair of ``leg`` (over TCP, or the Unix socket at path ``unix``):
    returns (samples, elapsed_ns of the recorded part).

    Raises ChildError (with the child's stderr) when anything goes wrong.
    """
    out = workdir / f"{leg.name}-{size}.samples"
    deadline = deadline_in(timeout)
    server_cpus, client_cpus = pins
    progress.update(f"{label}: starting")
    if unix:
        Path(unix).unlink(missing_ok=True)      # (a server that does not remove its own)
    with Child(f"{leg.name} server", leg.server_argv(1, spin, timeout, unix=unix),
               workdir=workdir, cpus=server_cpus, env=leg.env) as server:
        port = server.read_port(min(deadline, deadline_in(STARTUP_TIMEOUT)))
        argv = leg.client_argv(port, count, warmup, size, out, spin, timeout, unix)
        with Child(f"{leg.name} client", argv, workdir=workdir, cpus=client_cpus,
                   env=leg.env) as client:
            for line in client.lines(deadline, server):
                if line.startswith("progress "):
                    progress.update(f"{label}: {int(line.split()[1]):,}/{count:,} round trips")
                elif line.startswith("done "):
                    _, n, elapsed = line.split()
                    break
            rc = client.wait(deadline_in(10))
            if rc != 0:
                raise client.failure("failed")
        rc = server.wait(deadline_in(10))
        if rc != 0:
            raise server.failure("failed")
    samples = stats.load_samples(str(out))
    out.unlink()
    if len(samples) != count or int(n) != count:
        raise ChildError(f"{leg.name} client: wrote {len(samples)} samples, expected {count}")
    return samples, int(elapsed)


def run(legs: List[Leg], sizes: List[int], count: int, warmup: int, rounds: int,
        pin: str, spin: bool, timeout: Optional[float], progress: Progress,
        unix: bool = False, udp: bool = False, use_tls: bool = False) -> Dict[str, Any]:
    """Run the ping-pong over ``legs`` for every size; returns the JSON-able result.  With
    ``unix``, every leg also runs over a Unix stream socket, in the same rounds (the two
    transports back to back, their order alternating by round), and ``unix_vs_tcp`` gives
    each leg's Unix figures over its TCP ones.  With ``udp`` every leg runs its UDP server and
    client instead (one datagram per message; not with ``unix``).  With ``use_tls`` every leg
    runs over TLS (bench/tls.py) and the ratios are to uvloop (to asyncio without uvloop): the
    C floor has no TLS."""
    if not use_tls:
        return _run(legs, sizes, count, warmup, rounds, pin, spin, timeout, progress, unix,
                    udp, FLOOR)
    if unix or udp:
        raise ValueError("--tls runs over TCP: not with --unix or --udp")
    with tempfile.TemporaryDirectory(prefix="reactio-bench-tls-") as tmp:
        os.environ[tls.ENV] = str(tls.make_material(Path(tmp)))
        try:
            names = [leg.name for leg in legs]
            ref = "uvloop" if "uvloop" in names else "asyncio"
            return _run(legs, sizes, count, warmup, rounds, pin, spin, timeout, progress,
                        False, False, ref)
        finally:
            del os.environ[tls.ENV]


def _run(legs: List[Leg], sizes: List[int], count: int, warmup: int, rounds: int,
         pin: str, spin: bool, timeout: Optional[float], progress: Progress, unix: bool,
         udp: bool, reference: str) -> Dict[str, Any]:
    pins = pin_plan(pin)
    shares = _split(count, rounds)
    available, skipped = usable_legs(legs, True, "pingpong", progress, udp)
    transports = TRANSPORTS if unix else TRANSPORTS[:1]
    results: List[Dict[str, Any]] = []
    comparisons: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="reactio-bench-") as tmp:
        workdir = Path(tmp)
        for size in sizes:
            per = {(t, leg.name): LegResult(leg) for t in transports for leg in legs}
            for (t, name), res in per.items():
                if name in skipped:
                    res.fail("skipped", skipped[name])
            _rounds(per, available, shares, size, warmup, pins, spin, timeout, workdir,
                    progress, transports)
            progress.clear()
            for t in transports:
                floor = per.get((t, reference))
                if reference != FLOOR and (floor is None or not floor.ok):
                    floor = per.get((t, "asyncio"))     # (uvloop could not run)
                block: Dict[str, Any] = {"size": size, "legs": [per[(t, leg.name)].to_dict(
                    floor) for leg in legs]}
                if unix:
                    block["transport"] = t
                results.append(block)
            if unix:
                comparisons.append(_unix_vs_tcp(size, legs, per))
    out: Dict[str, Any] = {
        "command": "pingpong",
        "params": {"count": count, "warmup_per_run": warmup, "rounds": len(shares),
                   "sizes": sizes, "pin": pin,
                   "cpus": pins_json(pins),
                   "spin": spin, "legs": [leg.name for leg in legs], "unix": unix, "udp": udp,
                   "tls": tls.enabled(), "reference": reference},
        "results": results,
    }
    if unix:
        out["unix_vs_tcp"] = comparisons
    return out


def _rounds(per: Dict[Tuple[str, str], LegResult], available: List[Leg], shares: List[int],
            size: int, warmup: int, pins: Pins, spin: bool, timeout: Optional[float],
            workdir: Path, progress: Progress, transports: Tuple[str, ...]) -> None:
    """Every round of one size: each available leg once per transport (``per`` is keyed by
    (transport, leg name)); a failed run fails that leg on that transport."""
    for r, share in enumerate(shares):
        for leg in round_order(available, r):
            for t in transports if r % 2 == 0 else transports[::-1]:
                res = per[(t, leg.name)]
                over = f" over {t}" if len(transports) > 1 else ""
                label = f"pingpong{' --udp' if leg.udp else ''} {size} B{over}, round {r + 1}/{len(shares)}, {leg.name}"
                t_out = timeout or (STARTUP_TIMEOUT + (share + warmup) * 0.002)
                path = str(workdir / "pingpong.sock") if t == "unix" else None
                measure_round(
                    res, r,
                    lambda: run_once(leg, size, share, warmup, pins, spin, t_out, workdir,
                                     progress, label, path),
                    lambda got: res.add_round(r, *got), "pingpong", progress, over)


def _unix_vs_tcp(size: int, legs: List[Leg], per: Dict[Tuple[str, str], LegResult]
                 ) -> Dict[str, Any]:
    """Each leg's Unix-socket figures against its TCP ones (ratios below 1: Unix faster)."""
    rows = []
    for leg in legs:
        tcp, unix = per[("tcp", leg.name)], per[("unix", leg.name)]
        if not (tcp.ok and unix.ok):
            continue
        tp50, up50 = tcp.summary()["p50"], unix.summary()["p50"]
        tp99, up99 = tcp.summary()["p99"], unix.summary()["p99"]
        rows.append({"leg": leg.name, "tcp_p50_us": tp50, "unix_p50_us": up50,
                     "p50_unix_over_tcp": stats.ratio(up50, tp50),
                     "tcp_p99_us": tp99, "unix_p99_us": up99,
                     "p99_unix_over_tcp": stats.ratio(up99, tp99),
                     "tcp_round_trips_per_s": tcp.rate(), "unix_round_trips_per_s": unix.rate()})
    return {"size": size, "legs": rows}
