"""The legs of a comparison: what runs as the server and the client of each.

A leg is symmetric: its server and its pingpong client use the same I/O stack (a C epoll
client against the C epoll server, an asyncio client against the asyncio server, ...),
except reactio-aio, whose server is reactio-py's reactor attached to uvloop and whose client
is reactio-py's: the two legs differ only in how the server's runtime is driven.
The ``scale`` command uses only the legs' servers; its load always comes from the C load
generator.

This module runs in the harness process. It never imports the legs' libraries itself:
availability is checked in a child (``worker check``), so a broken or missing extension
module is reported as a skipped leg, never a crash of the harness.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, TypeVar

from . import cbuild, tls
from .procs import ChildError

if TYPE_CHECKING:
    from .progress import Progress

# Every leg, in the order tables list them. The C leg is the floor every ratio refers to.
ALL_LEGS = ("c", "asyncio", "uvloop", "reactio-py", "reactio-cy", "reactio-aio")
FLOOR = "c"

DESCRIPTIONS = {
    "c": "C epoll client and server (cc -O2), the floor",
    "asyncio": "asyncio Protocol, default event loop",
    "uvloop": "asyncio Protocol on uvloop's loop",
    "reactio-py": "reactio, Python Reactor subclass",
    "reactio-cy": "reactio, Cython Reactor subclass",
    "reactio-aio": "reactio, Python Reactor subclass, server attached to uvloop (reactio.aio)",
}

# Python package root to hand to the children, so that `python -m reactio.bench.worker`
# finds the very reactio this harness was imported from (a source tree on PYTHONPATH too).
_PKG_ROOT = str(Path(os.path.abspath(__file__)).parents[2])


def child_env() -> Dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PKG_ROOT + (os.pathsep + path if path else "")
    return env


def parse_legs(text: Optional[str], default: List[str]) -> List[str]:
    """``"a,b"`` -> ``["a", "b"]`` validated against ALL_LEGS; ``None`` -> ``default``."""
    if not text:
        return list(default)
    legs = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in legs if x not in ALL_LEGS]
    if bad:
        raise ValueError(f"unknown leg(s) {', '.join(bad)}; choose from {', '.join(ALL_LEGS)}")
    return list(dict.fromkeys(legs))  # drop duplicates, keep order


def usable_legs(legs: List["Leg"], need_client: bool, command: str,
                progress: "Progress", udp: bool = False) -> Tuple[List["Leg"], Dict[str, str]]:
    """The legs that can run, in order, and by name why each of the others cannot (noted on
    ``progress`` as skipped for ``command``)."""
    available: List[Leg] = []
    skipped: Dict[str, str] = {}
    for leg in legs:
        reason = leg.check(need_client=need_client, udp=udp)
        if reason:
            skipped[leg.name] = reason
            progress.note(f"{command}: leg {leg.name} skipped: {reason}")
        else:
            available.append(leg)
    return available, skipped


def round_order(available: List["Leg"], r: int) -> List["Leg"]:
    """The order round ``r`` runs the legs in: each round starts one leg further on, so that
    no leg always runs first (or right after the same one)."""
    k = r % len(available) if available else 0
    return available[k:] + available[:k]


class LegOutcome:
    """One leg's outcome in one mode (at one size, depth or connection count): ``ok`` until
    a round fails or the leg is skipped. The modes' result classes add their figures."""

    def __init__(self, leg: "Leg") -> None:
        self.leg = leg
        self.status = "ok"
        self.reason: Optional[str] = None

    def fail(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason

    def head(self) -> Dict[str, Any]:
        """The start of ``to_dict``: the leg, its description, status and any reason."""
        d: Dict[str, Any] = {"leg": self.leg.name, "description": self.leg.description,
                             "status": self.status}
        if self.reason:
            d["reason"] = self.reason
        return d


class RoundsOutcome(LegOutcome):
    """A leg's outcome kept as one dict of figures per round (cost, idle): ``ok`` once a
    round is in, ``median(key)`` of a figure over the rounds."""

    def __init__(self, leg: "Leg") -> None:
        super().__init__(leg)
        self.rounds: List[Dict[str, Any]] = []

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.rounds)

    def median(self, key: str) -> float:
        return float(statistics.median(r[key] for r in self.rounds))


R = TypeVar("R", bound=LegOutcome)
T = TypeVar("T")


def run_rounds(legs: List["Leg"], available: List["Leg"], skipped: Dict[str, str],
               make: Callable[["Leg"], R], rounds: int, measure: Callable[["Leg", int], T],
               record: Callable[[R, int, T], None], command: str, progress: "Progress",
               where: str = "") -> Dict[str, R]:
    """Run ``rounds`` rounds over the ``available`` legs, interleaved (``round_order``), and
    return each leg's outcome by name (``make(leg)``, failed as skipped for the ``skipped``
    legs). Round ``r`` calls ``measure(leg, r)`` for every leg still ok, then
    ``record(outcome, r, figures)``; a measurement that raises ChildError, OSError or
    ValueError fails its leg (no more rounds for it), noted on ``progress`` as
    "COMMAND: leg NAME{where} failed: ...". Clears ``progress`` at the end."""
    per_leg = {leg.name: make(leg) for leg in legs}
    for name, reason in skipped.items():
        per_leg[name].fail("skipped", reason)
    for r in range(rounds):
        for leg in round_order(available, r):
            res = per_leg[leg.name]
            measure_round(res, r, lambda: measure(leg, r), lambda f: record(res, r, f),
                          command, progress, where)
    progress.clear()
    return per_leg


def measure_round(res: LegOutcome, r: int, measure: Callable[[], T],
                  record: Callable[[T], None], command: str, progress: "Progress",
                  where: str = "") -> None:
    """One leg's round ``r``, if the leg is still ok: ``record(measure())``. A measurement
    that raises ChildError, OSError or ValueError fails the leg instead (no more rounds for
    it), noted on ``progress`` as "COMMAND: leg NAME{where} failed: ..."."""
    if res.status != "ok":
        return
    try:
        figures = measure()
    except (ChildError, OSError, ValueError) as e:
        res.fail("failed", f"round {r + 1}: {e}")
        progress.note(f"{command}: leg {res.leg.name}{where} failed: {e}")
        return
    record(figures)


class Leg:
    """How to start one leg's server and pingpong client.

    ``check()`` returns None when the leg can run, else the reason it cannot (built C
    programs, importable modules), evaluated once.
    """

    def __init__(self, name: str):
        if name not in ALL_LEGS:
            raise ValueError(name)
        self.name = name
        self.description = DESCRIPTIONS[name]
        self._checked = False
        self._reason: Optional[str] = None
        self._exes: Dict[str, Path] = {}
        self.udp = False        # pingpong --udp: this leg's UDP server and client (udp_legs)

    def check(self, need_client: bool = True, udp: bool = False) -> Optional[str]:
        if not self._checked:
            self._checked = True
            self.udp = udp
            self._reason = self._check_c(need_client) if self.name == FLOOR else self._check_py()
        return self._reason

    def _check_c(self, need_client: bool) -> Optional[str]:
        if tls.enabled():
            return "the C floor has no TLS (--tls: the ratios are to uvloop)"
        try:
            if self.udp:
                self._exes["udp"] = cbuild.build("udp_pingpong")
                return None
            self._exes["server"] = cbuild.build("echo_server")
            if need_client:
                self._exes["client"] = cbuild.build("pingpong_client")
        except cbuild.BuildError as e:
            return str(e)
        return None

    def _check_py(self) -> Optional[str]:
        argv = [sys.executable, "-m", "reactio.bench.worker", "check", self.name]
        argv += ["--udp"] if self.udp else []
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                                 env=child_env(), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return "import check timed out"
        if out.returncode == 0:
            return None
        lines = (out.stdout + out.stderr).strip().splitlines()
        return lines[-1] if lines else f"import check failed (exit status {out.returncode})"

    def server_argv(self, conns: int, spin: bool, timeout: float,
                    workers: Optional[int] = None, unix: Optional[str] = None,
                    threads: Optional[int] = None) -> List[str]:
        """A server that prints ``port N``, serves ``conns`` connections, exits after; with
        ``workers``, one that serves from that many processes sharing the port
        (SO_REUSEPORT) until SIGTERM, then exits 0; with ``unix``, one that listens on the
        Unix stream socket at that path (and prints ``port 0``); with ``threads``, one process
        running that many runtime threads, until SIGTERM (reactio legs only); for a UDP leg
        (check(udp=True)), its UDP echo server (udp_legs.py, c/udp_pingpong.c)."""
        if self.udp:
            argv = ([str(self._exes["udp"]), "server"] if self.name == FLOOR else [
                sys.executable, "-m", "reactio.bench.worker", "server", self.name, "--udp"])
        elif self.name == FLOOR:
            argv = [str(self._exes["server"]), "--conns", str(conns)]
        else:
            argv = [sys.executable, "-m", "reactio.bench.worker", "server", self.name,
                    "--conns", str(conns)]
        argv += ["--timeout", str(int(timeout) + 1)]
        if workers:
            argv += ["--workers", str(workers)]
        if unix:
            argv += ["--unix", unix]
        if threads:
            argv += ["--threads", str(threads)]
        return argv + (["--spin"] if spin else [])

    def client_argv(self, port: int, count: int, warmup: int, size: int, out: Path,
                    spin: bool, timeout: float, unix: Optional[str] = None) -> List[str]:
        """A pingpong client: ``progress N`` lines, ``done COUNT ELAPSED_NS``, samples in out;
        connected to 127.0.0.1:port, or to the Unix socket at path ``unix``."""
        if self.name == FLOOR:
            if self.udp:
                argv = [str(self._exes["udp"]), "client", str(port)]
            else:
                argv = [str(self._exes["client"]), f"unix:{unix}" if unix else str(port)]
            argv += [str(count), str(warmup), str(size), str(out)]
        else:
            argv = [sys.executable, "-m", "reactio.bench.worker", "client", self.name,
                    "--port", str(port), "--count", str(count), "--warmup", str(warmup),
                    "--size", str(size), "--out", str(out)]
            argv += ["--unix", unix] if unix else []
            argv += ["--udp"] if self.udp else []
        argv += ["--timeout", str(int(timeout) + 1)]
        return argv + (["--spin"] if spin else [])

    @property
    def env(self) -> Optional[Dict[str, str]]:
        return None if self.name == FLOOR else child_env()
