"""Text tables and the JSON file of a run's results."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from .legs import FLOOR
from .stats import PERCENTILES


def _num(v: Optional[float], width: int, fmt: str = "{:.1f}") -> str:
    return ("-" if v is None else fmt.format(v)).rjust(width)


def _ratio(v: Optional[float], width: int = 7) -> str:
    return ("-" if v is None else f"{v:.2f}x").rjust(width)


def _reasons(rows: List[Dict[str, Any]]) -> List[str]:
    out = []
    for row in rows:
        if row["status"] != "ok":
            reason = (row.get("reason") or "").strip().replace("\n", "\n      ")
            out.append(f"  {row['leg']}: {row['status']}: {reason}")
    return out


def _pinning(p: Dict[str, Any], client_role: str) -> str:
    """The run's --pin mode, with the CPUs it put the server and the client on."""
    pin = str(p["pin"])
    if pin != "none":
        cpus = p["cpus"]
        pin += f" (server CPU {cpus['server']}, {client_role} CPU {cpus['client']})"
    return pin


def pingpong_table(result: Dict[str, Any], machine_line: str) -> str:
    p = result["params"]
    pin = _pinning(p, "client")
    lines = [f"# {machine_line}"]
    cols = ["min"] + [label for label, _ in PERCENTILES] + ["max", "mean"]
    for block in result["results"]:
        lines.append("")
        over = f" over {block['transport']}" if "transport" in block else ""
        udp = p.get("udp")
        lines.append(f"pingpong{over}{' --udp' if udp else ''}, {block['size']} B "
                     f"{'datagrams' if udp else 'messages'}, {p['count']:,} round trips per leg "
                     f"in {p['rounds']} interleaved rounds (+{p['warmup_per_run']:,} warm-up "
                     f"per run), pin {pin}, {'busy poll' if p['spin'] else 'blocking poll'}")
        ref = p.get("reference", FLOOR)
        lines.append("latency in µs, ratios to the C floor" if ref == FLOOR else
                     f"over TLS; latency in µs, ratios (/R) to the {ref} leg")
        r = "C" if ref == FLOOR else "R"
        head = f"{'leg':<11}" + "".join(c.rjust(9) for c in cols) + \
            f"{'rt/s':>9}{'p50/' + r:>8}{'p99/' + r:>8}"
        lines.append(head)
        for row in block["legs"]:
            if row["status"] != "ok":
                continue
            lat = row["latency_us"]
            lines.append(f"{row['leg']:<11}" + "".join(_num(lat[c], 9) for c in cols)
                         + _num(row["round_trips_per_s"], 9, "{:,.0f}")
                         + _ratio(row["ratio_p50"], 8) + _ratio(row["ratio_p99"], 8))
        lines += _reasons(block["legs"])
    for cmp in result.get("unix_vs_tcp", []):
        lines += _unix_vs_tcp_table(cmp)
    if p["spin"] and any(x in p["legs"] for x in ("asyncio", "uvloop")):
        lines.append("note: asyncio and uvloop cannot busy-poll; they block in every mode")
    return "\n".join(lines)


def _unix_vs_tcp_table(cmp: Dict[str, Any]) -> List[str]:
    """pingpong --unix: each leg's Unix socket against its loopback TCP, same run."""
    lines = ["", f"Unix socket vs loopback TCP, {cmp['size']} B messages (same run): p50 in µs, "
             "unix/tcp < 1 means Unix is faster",
             f"{'leg':<11}{'tcp p50':>9}{'unix p50':>9}{'unix/tcp':>9}{'tcp p99':>9}"
             f"{'unix p99':>9}{'unix/tcp':>9}{'tcp rt/s':>10}{'unix rt/s':>10}"]
    for row in cmp["legs"]:
        lines.append(f"{row['leg']:<11}" + _num(row["tcp_p50_us"], 9)
                     + _num(row["unix_p50_us"], 9) + _ratio(row["p50_unix_over_tcp"], 9)
                     + _num(row["tcp_p99_us"], 9) + _num(row["unix_p99_us"], 9)
                     + _ratio(row["p99_unix_over_tcp"], 9)
                     + _num(row["tcp_round_trips_per_s"], 10, "{:,.0f}")
                     + _num(row["unix_round_trips_per_s"], 10, "{:,.0f}"))
    return lines


def scale_table(result: Dict[str, Any], machine_line: str) -> str:
    p = result["params"]
    pin = _pinning(p, "load generator")
    lines = [f"# {machine_line}", "",
             f"scale: echo of {p['size']} B messages, one in flight per connection, C epoll "
             f"load generator, {p['duration']:g} s measured per run after {p['warmup']:g} s "
             f"warm-up, {p['rounds']} round(s), pin {pin}"
             + (f", every server in {p['workers']} process{'es' if p['workers'] > 1 else ''}"
                " sharing its port (SO_REUSEPORT)" if p.get("workers") else "")
             + (f", the server one process of {p['threads']} runtime thread(s) "
                "(ThreadedReactorMgr, reuse_port)" if p.get("threads") else ""),
             "latency in µs, server CPU in µs per message, ratios to the C server"]
    head = (f"{'conns':>6}  {'leg':<11}{'msgs/s':>11}{'p50':>9}{'p99':>9}{'p99.9':>9}"
            f"{'cpu/msg':>9}{'cpu%':>7}{'msgs/C':>8}{'cpu/C':>8}")
    for block in result["results"]:
        lines.append("")
        lines.append(head)
        for row in block["legs"]:
            if row["status"] != "ok":
                continue
            lat = row["latency_us"]
            lines.append(f"{block['conns']:>6}  {row['leg']:<11}"
                         + _num(row["messages_per_s"], 11, "{:,.0f}")
                         + _num(lat["p50"], 9) + _num(lat["p99"], 9) + _num(lat["p99.9"], 9)
                         + _num(row["server_cpu_us_per_msg"], 9, "{:.2f}")
                         + _num(row["server_cpu_utilization"] * 100, 7, "{:.0f}")
                         + _ratio(row["ratio_messages_per_s"], 8)
                         + _ratio(row["ratio_cpu_per_msg"], 8))
        lines += _reasons(block["legs"])
        floor = next((r for r in block["legs"] if r["leg"] == FLOOR and r["status"] == "ok"),
                     None)
        if floor and block["conns"] > 1 and floor["server_cpu_utilization"] < 0.9:
            lines.append(f"  note: the C server used {floor['server_cpu_utilization']:.0%} of "
                         "a CPU, so the load generator or other load on the machine, not the "
                         "server, set msgs/s here; cpu/C is the fairer comparison")
    return "\n".join(lines)


def write_json(path: str, machine: Dict[str, object], results: List[Dict[str, Any]],
               argv: List[str]) -> None:
    doc = {"tool": "reactio.bench", "argv": argv, "machine": machine, "floor": FLOOR,
           "runs": results}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def pipeline_table(result: Dict[str, Any], machine_line: str) -> str:
    p = result["params"]
    pin = _pinning(p, "client")
    counted = (f"system calls per message from strace -c over {p['trace_count']:,} further "
               "messages (a separate, traced phase)" if p["syscall_method"] else
               f"no system call counts: {p['syscalls_unavailable'] or '--trace-count 0'}")
    lines = [f"# {machine_line}", "",
             f"pipeline: bursts of DEPTH {p['size']} B messages on one connection from a C "
             f"client, {p['count']:,} messages per leg and depth in {p['rounds']} interleaved "
             f"round(s) (+{p['warmup_per_run']:,} warm-up per run), pin {pin}",
             "latency in µs (burst write to echo read), server CPU in µs per message "
             "(/proc/PID/stat), ratios to the C server; " + counted]
    head = (f"{'depth':>6}  {'leg':<11}{'msgs/s':>11}{'p50':>9}{'p99':>9}{'cpu/msg':>9}"
            f"{'sys/msg':>9}{'msgs/C':>8}{'cpu/C':>8}{'sys/C':>8}")
    for block in result["results"]:
        lines.append("")
        lines.append(head)
        calls = []
        for row in block["legs"]:
            if row["status"] != "ok":
                continue
            lat = row["latency_us"]
            sc = row["syscalls"]
            lines.append(f"{block['depth']:>6}  {row['leg']:<11}"
                         + _num(row["messages_per_s"], 11, "{:,.0f}")
                         + _num(lat["p50"], 9) + _num(lat["p99"], 9)
                         + _num(row["server_cpu_us_per_msg"], 9, "{:.2f}")
                         + _num(sc["per_msg"] if sc else None, 9, "{:.3f}")
                         + _ratio(row["ratio_messages_per_s"], 8)
                         + _ratio(row["ratio_cpu_per_msg"], 8)
                         + _ratio(row["ratio_syscalls_per_msg"], 8))
            if sc:
                calls.append(f"  {row['leg']:<11}" + ", ".join(
                    f"{name} {n:.4g}" for name, n in sc["by_call"].items()))
        if calls:
            lines.append("system calls per message, by call:")
            lines += calls
        lines += _reasons(block["legs"])
    return "\n".join(lines)


def cost_table(result: Dict[str, Any], machine_line: str) -> str:
    p = result["params"]
    shape = "strict ping-pong" if p["depth"] == 1 else f"bursts of {p['depth']}"
    lines = [f"# {machine_line}", "",
             f"cost: user-space instructions per echoed {p['size']} B message ({shape}, C "
             f"client), server under {p['valgrind']} --tool=callgrind, (runs of "
             f"{2 * p['count']:,} minus {p['count']:,} messages) / {p['count']:,}, "
             f"{p['rounds']} round(s)",
             "exact but for the reactio legs' waits over 20 ms (a GIL release each, more on a "
             "loaded machine); fixed = start-up, accept, close and exit, per run"]
    lines.append("")
    lines.append(f"{'leg':<11}{'instr/msg':>12}{'spread':>9}{'/C':>9}{'fixed':>15}")
    for block in result["results"]:
        for row in block["legs"]:
            if row["status"] != "ok":
                continue
            lines.append(f"{row['leg']:<11}" + _num(row["instructions_per_msg"], 12, "{:,.1f}")
                         + _num(row["spread"], 9, "{:,.1f}")
                         + _ratio(row["ratio_instructions_per_msg"], 9)
                         + _num(row["fixed_instructions"], 15, "{:,.0f}"))
        lines += _reasons(block["legs"])
    return "\n".join(lines)


def idle_table(result: Dict[str, Any], machine_line: str) -> str:
    p = result["params"]
    lines = [f"# {machine_line}", "",
             f"idle: N connections held open by a C client after one {p['size']} B echo "
             f"each, server RSS (VmRSS) listening and with them, {p['rounds']} round(s)",
             "bytes of server RSS per idle connection, ratios to the C server"]
    head = (f"{'conns':>7}  {'leg':<11}{'RSS listen':>12}{'RSS conns':>12}{'B/conn':>9}"
            f"{'/C':>8}")
    for block in result["results"]:
        lines.append("")
        lines.append(head)
        for row in block["legs"]:
            if row["status"] != "ok":
                continue
            lines.append(f"{block['conns']:>7}  {row['leg']:<11}"
                         + _num(row["rss_listening_bytes"] / 2**20, 8, "{:.1f}") + " MiB"
                         + _num(row["rss_idle_conns_bytes"] / 2**20, 8, "{:.1f}") + " MiB"
                         + _num(row["bytes_per_conn"], 9, "{:,.0f}")
                         + _ratio(row["ratio_bytes_per_conn"], 8))
        lines += _reasons(block["legs"])
    return "\n".join(lines)
