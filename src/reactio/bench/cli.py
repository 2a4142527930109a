"""Command line of ``python -m reactio.bench``.

    python -m reactio.bench pingpong [--compare] [--unix] [--count N] [--size B ...] [--pin MODE] ...
    python -m reactio.bench scale [--conns 1,10,100,1000] [--duration S] [--legs ...] ...
    python -m reactio.bench scale --workers N ...   (every server in N processes, one port)
    python -m reactio.bench pipeline [--depth 16] [--count N] [--trace-count N] ...
    python -m reactio.bench cost [--count N] [--depth 1] [--legs ...]     (needs valgrind)
    python -m reactio.bench idle [--conns 10000] [--legs ...]
    python -m reactio.bench info
    python -m reactio.bench plot RESULTS.json OUT.png

Exit status: 0 when every requested leg ran (skipped legs, e.g. uvloop not installed, do
not count as errors), 1 when a leg failed, 2 on bad arguments or when nothing could run.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from types import FrameType
from typing import List, NoReturn, Optional

from . import legs as legs_mod
from . import machine, report
from .legs import ALL_LEGS, Leg
from .procs import raise_nofile_limit
from .progress import Progress

PINGPONG_DEFAULT_LEGS = ["c", "reactio-py"]
PLOTTED = ("pingpong", "scale")  # the modes --plot draws a chart of


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return v


def _non_negative_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return v


def _seconds(text: str) -> float:
    v = float(text)
    if not v >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError("must be a non-negative number of seconds")
    return v


def _positive_seconds(text: str) -> float:
    v = _seconds(text)
    if v == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return v


def _size(text: str) -> int:
    v = int(text)
    if not 10 <= v <= 10 + 0xFFFF:
        raise argparse.ArgumentTypeError("a message is 10 (header only) to 65545 bytes")
    return v


def _conns(text: str) -> List[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of integers") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError("connection counts must be at least 1")
    return vals


def _depths(text: str) -> List[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of integers") from None
    if not vals or min(vals) < 1 or max(vals) > 65536:
        raise argparse.ArgumentTypeError("depths are 1 to 65536 messages")
    return vals


def _depth(text: str) -> int:
    v = int(text)
    if not 1 <= v <= 65536:
        raise argparse.ArgumentTypeError("a depth is 1 to 65536 messages")
    return v


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reactio.bench",
        description="Round-trip latency and echo throughput of reactio against asyncio, "
                    "uvloop and a C epoll floor, on this machine.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser, default_pin: str) -> None:
        sp.add_argument("--legs", help=f"comma-separated legs, from {','.join(ALL_LEGS)}")
        sp.add_argument("--pin", choices=("same-core", "split", "none"), default=default_pin,
                        help="CPU affinity of the two processes: both on one CPU, on two "
                             f"different CPUs, or left alone (default {default_pin})")
        sp.add_argument("--spin", action="store_true",
                        help="busy-poll instead of blocking, in the legs that can (c, "
                             "reactio); do not combine with --pin same-core")
        sp.add_argument("--rounds", type=_positive_int,
                        help="interleaved rounds: each runs every leg once, in a rotated "
                             "order (default: pingpong 10, scale 1)")
        sp.add_argument("--json", metavar="FILE", help="write all results and machine info")
        sp.add_argument("--plot", metavar="FILE.png", help="draw a chart (needs matplotlib)")
        sp.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    pp = sub.add_parser(
        "pingpong", help="one connection, strict ping-pong, round-trip latency per leg",
        description="Server and client in two processes, one TCP connection on 127.0.0.1 "
                    "(TCP_NODELAY), one message in flight, reactio's wire format (u16 "
                    "length + i64 monotonic-ns stamp + body). The client measures every "
                    "round trip. Round r runs every leg once with COUNT/ROUNDS round trips "
                    "(after its own warm-up), in an order rotated by r.")
    pp.add_argument("--count", type=_positive_int, default=100_000,
                    help="recorded round trips per leg and size (default 100000)")
    pp.add_argument("--warmup", type=_non_negative_int, default=2000,
                    help="unrecorded round trips at the start of every run (default 2000)")
    pp.add_argument("--size", type=_size, action="append", metavar="BYTES",
                    help="message size including the 10-byte header; repeat for several "
                         "(default 64 and 1024)")
    pp.add_argument("--compare", action="store_true",
                    help="run every leg: " + ", ".join(ALL_LEGS) + " (without it and "
                         "without --legs: " + ",".join(PINGPONG_DEFAULT_LEGS) + ")")
    pp.add_argument("--tls", action="store_true",
                    help="every leg over TLS (ssl= contexts, a throwaway self-signed "
                         "certificate made with the openssl command); the C floor has no "
                         "TLS, so the ratios are to uvloop")
    pp.add_argument("--udp", action="store_true",
                    help="one UDP datagram per message instead of a TCP connection (the C "
                         "floor is c/udp_pingpong.c; reactio-aio has no UDP leg)")
    pp.add_argument("--timeout", type=_positive_seconds,
                    help="seconds one run (server + client) may take (default: from COUNT)")
    pp.add_argument("--unix", action="store_true",
                    help="run every leg over a Unix stream socket too, in the same rounds, "
                         "and report each leg's Unix figures against its loopback TCP ones")
    common(pp, "same-core")

    sp = sub.add_parser(
        "scale", help="echo throughput with N connections driven by a C load generator",
        description="For every connection count, a C epoll load generator keeps one message "
                    "in flight on each connection to each leg's server, and reports "
                    "messages/s, latency, and the server's CPU time per message.")
    sp.add_argument("--conns", type=_conns, default=[1, 10, 100, 1000],
                    help="comma-separated connection counts (default 1,10,100,1000)")
    sp.add_argument("--duration", type=_positive_seconds, default=5.0,
                    help="measured seconds per run (default 5)")
    sp.add_argument("--warmup", type=_seconds, default=1.0,
                    help="seconds of unmeasured load before each run's window (default 1)")
    sp.add_argument("--size", type=_size, default=64, help="message size (default 64)")
    sp.add_argument("--workers", type=_positive_int, metavar="N",
                    help="run every server as N processes sharing its port (SO_REUSEPORT; "
                         "reactio: reactio.workers.run); the pin default becomes none, so "
                         "that the workers can use every CPU")
    common(sp, "split")

    def basic(sp: argparse.ArgumentParser, default_rounds: int) -> None:
        sp.add_argument("--legs", help=f"comma-separated legs, from {','.join(ALL_LEGS)} "
                                       "(default: all)")
        sp.add_argument("--rounds", type=_positive_int, default=default_rounds,
                        help="interleaved rounds: each runs every leg once, in a rotated "
                             f"order (default {default_rounds})")
        sp.add_argument("--size", type=_size, default=64, help="message size (default 64)")
        sp.add_argument("--json", metavar="FILE", help="write all results and machine info")
        sp.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    plp = sub.add_parser(
        "pipeline", help="echo throughput with DEPTH messages in flight on one connection",
        description="A C client pipelines in bursts on one connection to each leg's server "
                    "(DEPTH messages in one write, then all their echoes, as "
                    "redis-benchmark -P does) and reports messages/s, latency, the "
                    "server's CPU time per message (/proc/PID/stat) and its system calls "
                    "per message (strace -c, in a separate traced phase).")
    plp.add_argument("--depth", type=_depths, default=[16],
                     help="messages in flight; a comma-separated list runs each (default 16)")
    plp.add_argument("--count", type=_positive_int, default=200_000,
                     help="measured messages per leg and depth, over all rounds "
                          "(default 200000)")
    plp.add_argument("--warmup", type=_non_negative_int, default=10_000,
                     help="unmeasured messages at the start of every run (default 10000)")
    plp.add_argument("--trace-count", type=_non_negative_int, default=16_000,
                     help="messages of the traced phase that counts system calls, over all "
                          "rounds; 0: no counts, no strace needed (default 16000)")
    plp.add_argument("--pin", choices=("same-core", "split", "none"), default="split",
                     help="CPU affinity of server and client (default split)")
    basic(plp, 3)

    cp = sub.add_parser(
        "cost", help="user-space instructions per echoed message (valgrind callgrind)",
        description="Runs each leg's server under valgrind --tool=callgrind for N and 2N "
                    "messages from the C client (strict ping-pong unless --depth) and "
                    "reports (instructions(2N) - instructions(N)) / N: exact, independent "
                    "of the machine's load. Needs valgrind.")
    cp.add_argument("--count", type=_positive_int, default=2000,
                    help="N: the runs serve N and 2N messages (default 2000)")
    cp.add_argument("--depth", type=_depth, default=1,
                    help="messages per burst (default 1: strict ping-pong)")
    basic(cp, 1)

    up = sub.add_parser(
        "udpflood", help="datagrams/s and system calls per datagram of one UDP echo endpoint",
        description="A C flooder sends COUNT datagrams as fast as sendmmsg takes them to each "
                    "leg's UDP echo endpoint; reports datagrams/s handled, loss, and (reactio) "
                    "system calls per datagram, with recv_batch=32 (recvmmsg/sendmmsg) and "
                    "recv_batch=1 (one recvmsg + one sendto per datagram, asyncio's way).")
    up.add_argument("--count", type=_positive_int, default=500_000,
                    help="datagrams per run (default 500000)")
    basic(up, 1)

    ip = sub.add_parser(
        "idle", help="server memory (RSS) per idle connection",
        description="A C client opens N connections to each leg's server, echoes one "
                    "message on each and holds them open; reports the server's RSS growth "
                    "per connection.")
    ip.add_argument("--conns", type=_conns, default=[10_000],
                    help="comma-separated connection counts (default 10000)")
    basic(ip, 1)

    sub.add_parser("info", help="machine info and which legs can run here")

    plp = sub.add_parser("plot", help="draw the chart of a saved --json file")
    plp.add_argument("json_file")
    plp.add_argument("png_file")
    return p


def _terminated(signum: int, frame: Optional[FrameType]) -> NoReturn:
    raise SystemExit(128 + signum)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if not sys.platform.startswith("linux"):
        # The C floor and load generator use epoll; CPU time and pinning use /proc and
        # sched_setaffinity.
        print("error: python -m reactio.bench runs on Linux only", file=sys.stderr)
        return 2
    # SIGTERM and SIGHUP (the terminal or ssh session went away) unwind like Ctrl-C, so every
    # `with Child(...)` stops and reaps its process and the run's temp dir is removed.
    signal.signal(signal.SIGTERM, _terminated)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # under nohup, stay immune
        signal.signal(signal.SIGHUP, _terminated)
    try:
        if args.command == "info":
            return _info()
        if args.command == "plot":
            return _replot(args.json_file, args.png_file)
        return _bench(args, argv if argv is not None else sys.argv[1:])
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _info() -> int:
    info = machine.machine_info()
    for k, v in info.items():
        print(f"{k:22} {v}")
    print()
    for name in ALL_LEGS:
        reason = Leg(name).check(need_client=True)
        print(f"{name:11} {'ok' if reason is None else 'unavailable: ' + reason}")
    print()
    from . import tools
    for tool, needed_by in (("valgrind", "cost"), ("strace", "pipeline's system calls")):
        try:
            state = f"ok ({tools.version(tool)})"
        except tools.ToolMissing as e:
            state = f"unavailable: {e}"
        print(f"{tool:11} {state}  [{needed_by}]")
    return 0


def _replot(json_file: str, png_file: str) -> int:
    from . import plot
    with open(json_file) as f:
        doc = json.load(f)
    try:
        runs = [run for run in doc["runs"] if run["command"] in PLOTTED]
        if not runs:
            raise plot.PlotError(f"{json_file} has no {' or '.join(PLOTTED)} run to chart "
                                 "(the other modes have tables only)")
        for run in runs:
            fn = plot.plot_pingpong if run["command"] == "pingpong" else plot.plot_scale
            fn(run, png_file, machine.one_line(doc["machine"]))
    except plot.PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {png_file}")
    return 0


def _bench(args: argparse.Namespace, argv: List[str]) -> int:
    from . import cbuild, plot, tools
    from .tls import TlsSetupError
    want_plot: Optional[str] = getattr(args, "plot", None)
    if want_plot:
        try:
            plot._pyplot()  # fail before a long run, not after it
        except plot.PlotError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if getattr(args, "spin", False) and args.pin == "same-core":
        print("warning: --spin with --pin same-core makes the two processes fight for one "
              "CPU; the figures will mostly measure the scheduler", file=sys.stderr)
    default = PINGPONG_DEFAULT_LEGS if args.command == "pingpong" and not args.compare \
        else list(ALL_LEGS)
    try:
        names = legs_mod.parse_legs(args.legs, default)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "cost":
        try:
            tools.find("valgrind")  # say how to install it before anything runs
        except tools.ToolMissing as e:
            print(f"error: the cost mode runs the servers under valgrind: {e}",
                  file=sys.stderr)
            return 2
    raise_nofile_limit()
    legs = [Leg(n) for n in names]
    progress = Progress(enabled=not args.quiet)
    info = machine.machine_info()
    line = machine.one_line(info)
    busy = machine.busy_fraction()
    info["busy_before_run"] = busy
    if busy is not None and busy > 0.15:
        print(f"warning: {busy:.0%} of this machine's CPU time was in use by other programs "
              "just before the run; expect noisy figures"
              + (" (instruction counts are not affected)" if args.command == "cost" else ""),
              file=sys.stderr)
        line += f" [machine {busy:.0%} busy before the run]"

    try:
        if args.command == "pingpong":
            from . import pingpong
            if args.udp and args.unix:
                raise ValueError("--udp and --unix are two different transports: one at a time")
            result = pingpong.run(legs, args.size or [64, 1024], args.count, args.warmup,
                                  args.rounds or 10, args.pin, args.spin, args.timeout, progress,
                                  args.unix, args.udp, args.tls)
            text = report.pingpong_table(result, line)
        elif args.command == "scale":
            from . import scale
            pin = args.pin
            if args.workers and not any(a == "--pin" or a.startswith("--pin=") for a in argv):
                pin = "none"            # N worker processes pinned to one CPU cannot scale
            result = scale.run(legs, args.conns, args.size, args.warmup, args.duration,
                               args.rounds or 1, pin, args.spin, progress, args.workers)
            text = report.scale_table(result, line)
        elif args.command == "pipeline":
            from . import pipeline
            result = pipeline.run(legs, args.depth, args.size, args.count, args.warmup,
                                  args.trace_count, args.rounds, args.pin, progress)
            text = report.pipeline_table(result, line)
        elif args.command == "udpflood":
            from . import udpflood
            result = udpflood.run(args.count, args.size, args.rounds, progress, names)
            text = udpflood.table(result, line)
        elif args.command == "cost":
            from . import cost
            result = cost.run(legs, args.count, args.size, args.depth, args.rounds, progress)
            text = report.cost_table(result, line)
        else:
            from . import idle
            result = idle.run(legs, args.conns, args.size, args.rounds, progress)
            text = report.idle_table(result, line)
    except cbuild.BuildError as e:
        print(f"error: a C program of the {args.command} mode cannot be built: {e}",
              file=sys.stderr)
        return 2
    except (tools.ToolMissing, TlsSetupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # e.g. --pin split on a single CPU
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        progress.clear()
    print(text, flush=True)

    if args.json:
        report.write_json(args.json, info, [result], ["python -m reactio.bench"] + argv)
        print(f"wrote {args.json}")
    if want_plot:
        try:
            fn = plot.plot_pingpong if args.command == "pingpong" else plot.plot_scale
            fn(result, want_plot, line)
            print(f"wrote {want_plot}")
        except plot.PlotError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    statuses = [row["status"] for block in result["results"] for row in block["legs"]]
    if "ok" not in statuses:
        return 2
    return 1 if "failed" in statuses else 0
