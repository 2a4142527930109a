"""reactio's echo_server: serves the ping-pong protocol (PingpongReactor, server side) and reports
its own round-trip latencies per batch.

    python -m reactio.examples.echo_server --addr 127.0.0.1:10254
    python -m reactio.examples.echo_server --addr 127.0.0.1:0 --once   # any port, one client

Prints ``listening on HOST:PORT`` once the listener is up (with port 0 that is how a script
learns the port); an IPv6 host is in brackets, ``listening on [::1]:PORT``, so that the
address can be given as it is to ``echo_client --addr``.  Runs until Ctrl-C or SIGTERM (exit status 0), or, with ``--once``, until
its first connection closes (reactio's behaviour: the listener closes when it accepts).
"""
from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, Optional, Sequence

from reactio import DefaultTcpListenerHandler, ReactorID, ReactRuntime
from reactio.examples.pingpong import PingpongReactor, format_stats_header, print_report


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m reactio.examples.echo_server",
        description="reactio ping-pong echo server (u16 length + i64 timestamp framing).")
    parser.add_argument("--addr", default="127.0.0.1:10254",
                        help="listen address host:port (default 127.0.0.1:10254; port 0 = any)")
    parser.add_argument("--batch", type=int, default=1000,
                        help="round-trip samples per latency report (default 1000)")
    parser.add_argument("--quiet", action="store_true", help="no latency reports")
    parser.add_argument("--once", action="store_true",
                        help="accept one connection and exit when it closes")
    args = parser.parse_args(argv)
    if args.batch <= 0:
        parser.error("--batch must be positive")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    report = None if args.quiet else print_report
    state: dict[str, Any] = {"error": None, "connections": 0}

    def new_server(count: int, _param: Any) -> PingpongReactor:
        state["connections"] = count
        return PingpongReactor(f"server-{count}", is_client=False, latency_batch=args.batch,
                               close_listener=args.once, on_report=report,
                               on_closed=on_closed)

    with ReactRuntime() as rt:
        def on_closed(reactor: PingpongReactor) -> None:
            print(f"{reactor.name}: connection closed after {reactor.count_sent} echoes",
                  flush=True)
            if args.once:
                rt.stop()

        def on_listen(result: Any) -> None:
            if not isinstance(result, ReactorID):
                state["error"] = result
                rt.stop()
                return
            host, port = rt.local_address(result)[:2]
            # "[v6addr]:port" is the form every reactio address parser accepts for IPv6
            shown_host = f"[{host}]" if ":" in host else host
            print(f"listening on {shown_host}:{port}", flush=True)
            if not args.quiet:
                print(format_stats_header(), flush=True)

        def on_sigterm(signum: int, _frame: Any) -> None:
            # handled like Ctrl-C: KeyboardInterrupt propagates out of process_events() (a
            # flag set with rt.stop() could be lost if it came before run_forever() started)
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_sigterm)
        rt.cmd_sender.send_listen(args.addr, DefaultTcpListenerHandler(new_server, 1024), None,
                                  on_listen)
        try:
            rt.run_forever(1.0)
        except KeyboardInterrupt:
            print("interrupted: closing", flush=True)
    # leaving the with block closed the runtime: open connections got their on_close
    if state["error"] is not None:
        exc = state["error"]
        print(f"error: cannot listen on {args.addr}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    print(f"echo server stopped after {state['connections']} connection(s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
