"""``udpflood``: how many datagrams per second one UDP echo endpoint handles, and with how many
system calls, when datagrams arrive faster than it can take them.

A C flooder (``c/udp_pingpong.c flood``) sends COUNT datagrams to the leg's echo endpoint as
fast as sendmmsg() takes them (it never reads the echoes), then a goodbye.  The endpoint echoes
every datagram it gets to its sender and reports how many it got, in how long (first readable
datagram to the goodbye), and -- reactio -- its recv and send calls.  What the receive buffer
cannot hold is dropped by the kernel and counted as lost.  reactio's legs run twice: with
recv_batch=32 (recvmmsg; the replies of one batch in one sendmmsg) and with recv_batch=1 (one
recvmsg and one sendto per datagram, asyncio's way), so the difference between the two rows is
what batching saves.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import cbuild
from .legs import child_env
from .procs import Child, ChildError, deadline_in
from .progress import Progress

VARIANTS: List[Tuple[str, int]] = [("reactio-cy", 32), ("reactio-cy", 1), ("reactio-py", 32),
                                   ("reactio-py", 1), ("asyncio", 1), ("uvloop", 1)]


def _name(leg: str, batch: int) -> str:
    return f"{leg} batch={batch}" if leg.startswith("reactio") else leg


def _once(flooder: Path, leg: str, batch: int, count: int, size: int, workdir: Path,
          timeout: float) -> Dict[str, int]:
    deadline = deadline_in(timeout)
    argv = [sys.executable, "-m", "reactio.bench.worker", "server", leg, "--udp",
            "--flood-sink", str(batch)]
    with Child(f"{leg} sink", argv, workdir=workdir, env=child_env()) as sink:
        line = sink.read_line(deadline)
        if not line or not line.startswith("port "):
            raise sink.failure(f"did not report its port (got {line!r})")
        port = line.split()[1]
        with Child("flooder", [str(flooder), "flood", port, str(count), str(size)],
                   workdir=workdir) as fl:
            line = fl.read_line(deadline)
            if not line or not line.startswith("sent "):
                raise fl.failure("did not finish")
            fl.wait(deadline)
        line = sink.read_line(deadline)
        if not line or not line.startswith("stats "):
            raise sink.failure(f"no stats (got {line!r}); the goodbye may have been lost")
        if sink.wait(deadline) != 0:
            raise sink.failure("failed")
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}


def run(count: int, size: int, rounds: int, progress: Progress,
        legs: Optional[List[str]] = None) -> Dict[str, Any]:
    flooder = cbuild.build("udp_pingpong")
    variants = [v for v in VARIANTS if legs is None or v[0] in legs]
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="reactio-udpflood-") as tmp:
        for leg, batch in variants:
            row: Dict[str, Any] = {"leg": _name(leg, batch), "status": "ok", "runs": []}
            for r in range(rounds):
                progress.update(f"udpflood {_name(leg, batch)}, round {r + 1}/{rounds}")
                try:
                    row["runs"].append(_once(flooder, leg, batch, count, size, Path(tmp),
                                             60 + count * 20e-6))
                except (ChildError, OSError, ValueError) as e:
                    row["status"], row["reason"] = "failed", str(e)
                    break
            if row["runs"]:
                got = sum(x["received"] for x in row["runs"])
                ns = sum(x["elapsed_ns"] for x in row["runs"])
                row["received"] = got
                row["lost_pct"] = 100.0 * (1 - got / (count * len(row["runs"])))
                row["datagrams_per_s"] = got / (ns / 1e9) if ns else None
                calls = [x["recv_calls"] + x["send_calls"] for x in row["runs"]]
                row["calls_per_datagram"] = (sum(calls) / got if got and min(calls) >= 0
                                             else None)
            rows.append(row)
    progress.clear()
    return {"command": "udpflood", "params": {"count": count, "size": size, "rounds": rounds},
            "results": [{"size": size, "legs": rows}]}


def table(result: Dict[str, Any], machine_line: str) -> str:
    p = result["params"]
    lines = [f"# {machine_line}", "",
             f"udpflood: {p['count']:,} datagrams of {p['size']} B per run, {p['rounds']} "
             "run(s) per leg, every datagram echoed",
             f"{'leg':<22}{'datagrams/s':>13}{'lost':>8}{'syscalls/datagram':>19}"]
    for row in result["results"][0]["legs"]:
        if row["status"] != "ok":
            lines.append(f"{row['leg']:<22}  {row['status']}: {row.get('reason', '')[:60]}")
            continue
        calls = row["calls_per_datagram"]
        lines.append(f"{row['leg']:<22}{row['datagrams_per_s']:>13,.0f}"
                     f"{row['lost_pct']:>7.1f}%"
                     + (f"{calls:>19.3f}" if calls is not None else f"{'-':>19}"))
    return "\n".join(lines)
