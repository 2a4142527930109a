"""reactio's echo_client: ping-pongs with echo_server and reports round-trip latency per batch.

    python -m reactio.examples.echo_client --addr 127.0.0.1:10254 --count 100000 --batch 10000

Exit status: 0 when every round trip completed, 1 when the connection failed or closed early,
130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Optional, Sequence

from reactio import ReactorID, ReactRuntime
from reactio.examples.pingpong import (HEADER_SIZE, LatencyStats, PingpongReactor,
                                       format_stats_header, format_stats_row, print_report)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m reactio.examples.echo_client",
        description="reactio ping-pong client: strict request/reply round trips to echo_server.")
    parser.add_argument("--addr", default="127.0.0.1:10254",
                        help="server address host:port (default 127.0.0.1:10254)")
    parser.add_argument("--count", type=int, default=100000,
                        help="round trips to make (default 100000)")
    parser.add_argument("--batch", type=int, default=10000,
                        help="round-trip samples per latency report (default 10000)")
    parser.add_argument("--body", default="test msg000", help="message body")
    parser.add_argument("--connect-timeout", type=float, default=5.0,
                        help="seconds to wait for the connection (default 5)")
    args = parser.parse_args(argv)
    if args.count <= 0 or args.batch <= 0:
        parser.error("--count and --batch must be positive")
    if args.connect_timeout <= 0:
        parser.error("--connect-timeout must be positive")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    body = args.body.encode()
    client = PingpongReactor("client", is_client=True, round_trips=args.count,
                             latency_batch=args.batch, body=body, on_report=print_report)
    client.keep_all_samples = True
    errors: list[BaseException] = []

    def on_connect(result: Any) -> None:
        if isinstance(result, ReactorID):
            print(f"connected to {args.addr}: {args.count} round trips of "
                  f"{HEADER_SIZE + len(body)}-byte messages", flush=True)
            print(format_stats_header(), flush=True)
        else:
            errors.append(result)

    started = time.perf_counter()
    with ReactRuntime() as rt:
        # a malformed address, a refused connection or the timeout reach on_connect
        rt.cmd_sender.send_connect(args.addr, 1024, client, None, on_connect,
                                   timeout=args.connect_timeout)
        try:
            rt.run(1.0)             # until the client closes (after --count round trips)
        except KeyboardInterrupt:
            print(f"interrupted after {client.count_received} round trips", file=sys.stderr)
            return 130
    elapsed = time.perf_counter() - started
    if errors:
        exc = errors[0]
        print(f"error: cannot connect to {args.addr}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    if client.all_samples:
        print(format_stats_row("all", "-", LatencyStats.from_samples(client.all_samples)))
    rate = client.count_received / elapsed if elapsed > 0 else float("inf")
    print(f"done: {client.count_received}/{args.count} round trips in {elapsed:.2f} s "
          f"({rate:,.0f} round trips/s)", flush=True)
    if client.count_received != args.count:
        err = client.close_error
        print("error: connection closed early" + (f": {err}" if err else ""), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
