"""``idle``: the memory an idle connection costs each leg's server.

For every connection count N, each leg's server (one process per server) is started, its
resident set size read once it listens, then the C idle client (``c/idle_client.c``) opens N
connections, exchanges one message on each (so every connection has been accepted and has
its reactor, protocol object and buffers in place) and holds them all open and silent; the
server's resident set size is read again, and

    bytes per idle connection = (RSS with N idle connections - RSS listening) / N

RSS is VmRSS of /proc/PID/status: the process's own memory (objects, buffers, the pages its
allocator touched), not the kernel's socket buffers. Rounds repeat this, legs interleaved.
"""
from __future__ import annotations

import signal
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import cbuild, stats
from .legs import FLOOR, Leg, RoundsOutcome, run_rounds, usable_legs
from .procs import Child, ChildError, deadline_in, require_nofile, rss_bytes
from .progress import Progress

STARTUP_TIMEOUT = 60.0
SECONDS_PER_CONN = 0.01  # a generous bound on connecting and echoing once, for the watchdog


class IdleResult(RoundsOutcome):
    """One leg's RSS figures at one connection count, one entry per round."""

    @property
    def per_conn(self) -> float:
        """The median over rounds of the bytes per idle connection."""
        return self.median("bytes_per_conn")

    def to_dict(self, floor: Optional["IdleResult"]) -> Dict[str, Any]:
        d = self.head()
        if not self.ok:
            return d
        d["bytes_per_conn"] = self.per_conn
        d["rss_listening_bytes"] = self.median("rss_listening")
        d["rss_idle_conns_bytes"] = self.median("rss_idle_conns")
        d["rounds"] = self.rounds
        fl = floor if floor is not None and floor.ok else None
        d["ratio_bytes_per_conn"] = stats.ratio(self.per_conn,
                                                fl.per_conn if fl is not None else None)
        return d


def run_once(leg: Leg, client: Path, conns: int, size: int, workdir: Path,
             progress: Progress, label: str) -> Dict[str, Any]:
    """One server with ``conns`` idle connections: its RSS listening and with them."""
    timeout = STARTUP_TIMEOUT + 60 + SECONDS_PER_CONN * conns
    deadline = deadline_in(timeout)
    progress.update(f"{label}: starting")
    with Child(f"{leg.name} server", leg.server_argv(conns, False, timeout), workdir=workdir,
               env=leg.env) as server:
        port = server.read_port(min(deadline, deadline_in(STARTUP_TIMEOUT)))
        before = rss_bytes(server.pid)
        argv = [str(client), str(port), str(conns), str(size), "--timeout", str(int(timeout) + 1)]
        after: Optional[int] = None
        with Child("idle client", argv, workdir=workdir) as cl:
            for line in cl.lines(deadline, server):
                if line.startswith("progress "):
                    progress.update(f"{label}: {int(line.split()[1]):,}/{conns:,} connections")
                elif line.startswith("ready "):
                    after = rss_bytes(server.pid)
                    cl.signal(signal.SIGUSR1)  # measured: close them all
                elif line == "done":
                    break
            if cl.wait(deadline_in(30)) != 0:
                raise cl.failure("failed")
        if server.wait(deadline_in(60)) != 0:
            raise server.failure("failed")
    if after is None:
        raise ChildError("idle client: never had all its connections ready")
    return {"rss_listening": before, "rss_idle_conns": after,
            "bytes_per_conn": (after - before) / conns}


def run(legs: List[Leg], conns_list: List[int], size: int, rounds: int,
        progress: Progress) -> Dict[str, Any]:
    require_nofile(max(conns_list))  # the raised limit is inherited by the children
    client = cbuild.build("idle_client")  # BuildError: no idle run at all without it
    available, skipped = usable_legs(legs, False, "idle", progress)
    results: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="reactio-bench-") as tmp:
        workdir = Path(tmp)
        for conns in conns_list:
            def measure(leg: Leg, r: int, conns: int = conns) -> Dict[str, Any]:
                label = f"idle {conns:,} conns, round {r + 1}/{rounds}, {leg.name}"
                return run_once(leg, client, conns, size, workdir, progress, label)

            def record(res: IdleResult, r: int, fig: Dict[str, Any]) -> None:
                res.rounds.append({"round": r + 1, **fig})

            per_leg = run_rounds(legs, available, skipped, IdleResult, rounds, measure, record,
                                 "idle", progress, where=f" at {conns} conns")
            floor = per_leg.get(FLOOR)
            results.append({"conns": conns,
                            "legs": [per_leg[leg.name].to_dict(floor) for leg in legs]})
    return {
        "command": "idle",
        "params": {"conns": conns_list, "size": size, "rounds": rounds,
                   "legs": [leg.name for leg in legs],
                   "client": "C idle client: connect, one echo each, then silent",
                   "method": "VmRSS of /proc/PID/status, listening vs with the idle "
                             "connections, divided by their number"},
        "results": results,
    }
