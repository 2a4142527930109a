"""PingpongReactor: reactio's latency example, and a one-runtime demo of it.

Wire format (reactio's examples/example/pingpong.rs, little-endian as on x86_64 and arm64):

    [0..2)   u16  body length
    [2..10)  i64  send time, monotonic nanoseconds (reactio.monotonic_ns()), set by the sender
    [10..)   body

One message is in flight per connection (strict ping-pong, no pipelining), so the numbers are
latencies, not throughput.  Both sides measure a round trip as "reply processed" minus "my last
send", and report min/p50/p99/p99.9/max per batch of ``latency_batch`` samples.  Unlike reactio,
the first reply is timed too, "max" is the true maximum, and a batch of 1 works.

    python -m reactio.examples.pingpong --count 20000 --batch 5000
"""
from __future__ import annotations

import argparse
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from reactio import (CmdSender, DefaultTcpListenerHandler, DispatchContext, DropMsgSize,
                     ExpectMsgSize, MessageResult, ReactorID, ReactRuntime, Reactor,
                     monotonic_ns)

__all__ = ["HEADER", "HEADER_SIZE", "encode_message", "parse_frame", "EchoReactor",
           "LatencyStats", "PingpongReactor", "format_stats_header", "format_stats_row", "main"]

HEADER = struct.Struct("<Hq")           # body length, send time (ns)
HEADER_SIZE = HEADER.size               # 10
_STAMP = struct.Struct("<q")            # the send time alone, rewritten in place on echo
MAX_BODY = 0xFFFF


def encode_message(body: bytes, send_time_ns: int) -> bytes:
    """One message in reactio's wire format."""
    if len(body) > MAX_BODY:
        raise ValueError(f"body of {len(body)} bytes does not fit the u16 length field")
    return HEADER.pack(len(body), send_time_ns) + body


def parse_frame(buf: memoryview) -> tuple[Optional[MessageResult], int]:
    """The framing half of a reactor for reactio's wire format: ``(ExpectMsgSize, 0)`` while
    the message at the start of ``buf`` is incomplete (return that result from
    on_inbound_message), else ``(None, n)`` with ``n`` the size of that whole message."""
    if len(buf) < HEADER_SIZE:
        return ExpectMsgSize(0), 0                  # size unknown until the header is in
    n = HEADER_SIZE + (buf[0] | (buf[1] << 8))
    if n > len(buf):
        return ExpectMsgSize(n), 0
    return None, n


class EchoReactor(Reactor):
    """Echoes every message of reactio's wire format back unchanged, straight from the
    receive buffer (no copy).  A subclass that wants to look at each message, or answer it
    differently, overrides ``on_frame``."""
    __slots__ = ()

    def on_inbound_message(self, buf: memoryview, new_bytes: int, decoded_msg_size: int,
                           ctx: DispatchContext) -> MessageResult:
        res, n = parse_frame(buf)
        if res is not None:
            return res
        self.on_frame(buf[:n], ctx)
        return DropMsgSize(n)

    def on_frame(self, msg: memoryview, ctx: DispatchContext) -> None:
        """One whole message (header included; valid only during the call): echo it."""
        ctx.send_or_que(msg)


@dataclass(frozen=True)
class LatencyStats:
    """Order statistics of one batch of samples, in nanoseconds.  Percentiles use the
    nearest-rank method: p-th percentile = the ceil(p/100 * n)-th smallest sample."""
    count: int
    min: int
    p50: int
    p99: int
    p999: int
    max: int

    @classmethod
    def from_samples(cls, samples: Sequence[int]) -> "LatencyStats":
        if not samples:
            raise ValueError("no samples")
        d = sorted(samples)
        n = len(d)

        def rank(permille: int) -> int:
            # ceil(permille * n / 1000) in integers: 99.9 / 100 * 1000 is 999.0000000000001
            # in floating point, whose ceil would pick the wrong sample
            k = -(-permille * n // 1000)
            return d[min(n, max(1, k)) - 1]

        return cls(n, d[0], rank(500), rank(990), rank(999), d[-1])


_COLUMNS = ("min", "p50", "p99", "p99.9", "max")


def format_stats_header() -> str:
    return (f"{'side':<10} {'batch':>5} {'samples':>8} "
            + " ".join(f"{c + '(us)':>10}" for c in _COLUMNS))


def format_stats_row(side: str, batch: object, stats: LatencyStats) -> str:
    values = (stats.min, stats.p50, stats.p99, stats.p999, stats.max)
    return (f"{side:<10} {batch!s:>5} {stats.count:>8} "
            + " ".join(f"{v / 1000.0:>10.1f}" for v in values))


# on_report(reactor, batch_number, stats): batch_number counts from 1; the partial batch left at
# close is reported with its own number too.
ReportFn = Callable[["PingpongReactor", int, LatencyStats], None]


def print_report(reactor: "PingpongReactor", batch: int, stats: LatencyStats) -> None:
    # one write per line: reactors on several threads must not interleave their lines
    sys.stdout.write(format_stats_row(reactor.name, batch, stats) + "\n")
    sys.stdout.flush()


class PingpongReactor(Reactor):
    """One side of a ping-pong connection.

    The client (``is_client=True``) sends the first message on connect and closes after
    ``round_trips`` replies (None: never).  The server echoes every message, re-stamping its
    send time in place (a zero-copy echo); with ``close_listener`` it closes the listener that
    accepted it, so that listener serves exactly one connection (as reactio's server does).
    ``round_trips`` on a server makes it close after that many echoes.
    """

    def __init__(self, name: str, *, is_client: bool, round_trips: Optional[int] = None,
                 latency_batch: int = 1000, body: bytes = b"test msg000",
                 close_listener: bool = False, on_report: Optional[ReportFn] = print_report,
                 on_closed: Optional[Callable[["PingpongReactor"], None]] = None) -> None:
        if latency_batch <= 0:
            raise ValueError("latency_batch must be positive")
        if round_trips is not None and round_trips <= 0:
            raise ValueError("round_trips must be positive or None")
        self.name = name
        self.is_client = is_client
        self.round_trips = round_trips
        self.latency_batch = latency_batch
        self.body = bytes(body)
        self.close_listener = close_listener
        self.on_report = on_report
        self.on_closed = on_closed
        self.reactor_id: Optional[ReactorID] = None
        self.count_received = 0         # complete messages received
        self.count_sent = 0             # messages sent (first message + echoes)
        self.last_sent_ns = 0           # when this side last sent; 0 = nothing to time yet
        self.samples: list[int] = []    # round trips of the current batch, ns
        self.batches: list[LatencyStats] = []
        self.all_samples: list[int] = []    # kept only with keep_all_samples
        self.keep_all_samples = False
        self.started_ns = 0
        self.finished_ns = 0
        self.closed = False

    # -- sending

    def start(self, ctx: DispatchContext) -> None:
        """Send the first message (the client does this on connect)."""
        self.started_ns = now = monotonic_ns()
        ctx.send_or_que(encode_message(self.body, now))
        self.last_sent_ns = now
        self.count_sent += 1

    # -- Reactor callbacks

    def on_connected(self, ctx: DispatchContext, listener_id: Optional[ReactorID]) -> None:
        self.reactor_id = ctx.reactor_id
        if self.close_listener and listener_id is not None:
            ctx.cmd_sender.send_close(listener_id)
        if self.is_client:
            self.start(ctx)

    def on_inbound_message(self, buf: memoryview, new_bytes: int, decoded_msg_size: int,
                           ctx: DispatchContext) -> MessageResult:
        partial, msg_size = parse_frame(buf)
        if partial is not None:
            return partial
        recv_ns = monotonic_ns()
        self.count_received += 1
        if self.last_sent_ns:
            self._add_sample(recv_ns - self.last_sent_ns)
        if self.round_trips is not None and self.count_received >= self.round_trips:
            self.finished_ns = recv_ns
            ctx.close()                             # graceful: the peer sees EOF
            return DropMsgSize(msg_size)
        now = monotonic_ns()
        _STAMP.pack_into(buf, 2, now)
        ctx.send_or_que(buf[:msg_size])
        self.last_sent_ns = now
        self.count_sent += 1
        return DropMsgSize(msg_size)

    def on_close(self, reactor_id: ReactorID, cmd_sender: CmdSender) -> None:
        self.closed = True
        if self.samples:
            self._report()                          # the partial last batch
        if self.on_closed is not None:
            self.on_closed(self)

    # -- statistics

    def _add_sample(self, rtt_ns: int) -> None:
        self.samples.append(rtt_ns)
        if self.keep_all_samples:
            self.all_samples.append(rtt_ns)
        if len(self.samples) >= self.latency_batch:
            self._report()

    def _report(self) -> None:
        stats = LatencyStats.from_samples(self.samples)
        self.samples = []
        self.batches.append(stats)
        if self.on_report is not None:
            self.on_report(self, len(self.batches), stats)


# ----------------------------------------------------------------------------- demo

def run_pingpong(count: int, batch: int, body: bytes = b"test msg000",
                 addr: str = "127.0.0.1:0", timeout: float = 60.0,
                 on_report: Optional[ReportFn] = print_report
                 ) -> tuple[PingpongReactor, PingpongReactor]:
    """Server and client on one runtime, ``count`` round trips; returns (client, server).
    Raises the listen/connect error, or TimeoutError if the exchange does not finish."""
    servers: list[PingpongReactor] = []
    errors: list[BaseException] = []

    def new_server(n: int, _param: Any) -> PingpongReactor:
        servers.append(PingpongReactor(f"server-{n}", is_client=False, latency_batch=batch,
                                       body=body, close_listener=True, on_report=on_report))
        return servers[-1]

    client = PingpongReactor("client", is_client=True, round_trips=count, latency_batch=batch,
                             body=body, on_report=on_report)
    client.keep_all_samples = True
    with ReactRuntime() as rt:
        def on_connect(result: Any) -> None:
            if not isinstance(result, ReactorID):
                errors.append(result)

        def on_listen(result: Any) -> None:
            if not isinstance(result, ReactorID):
                errors.append(result)
                return
            # runs on rt's thread (this one), so the runtime may be used directly
            rt.cmd_sender.send_connect(rt.local_address(result), 4096, client, None, on_connect)

        rt.cmd_sender.send_listen(addr, DefaultTcpListenerHandler(new_server, 4096), None,
                                  on_listen)
        deadline = time.monotonic() + timeout
        while rt.process_events(0.1):
            if errors:
                raise errors[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"ping-pong did not finish within {timeout} s "
                                   f"({client.count_received} of {count} round trips)")
        if errors:
            raise errors[0]
    if not servers:
        raise RuntimeError("the server never accepted the connection")
    return client, servers[0]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reactio.examples.pingpong",
        description="Ping-pong over loopback TCP with server and client on one reactio runtime "
                    "(one thread); prints round-trip latency per batch.")
    parser.add_argument("--count", type=int, default=20000,
                        help="round trips the client makes (default 20000)")
    parser.add_argument("--batch", type=int, default=5000,
                        help="samples per reported batch (default 5000)")
    parser.add_argument("--body", default="test msg000",
                        help="message body; 10-byte header + body go each way")
    parser.add_argument("--addr", default="127.0.0.1:0",
                        help="listen address (default 127.0.0.1:0, any free port)")
    args = parser.parse_args(argv)
    if args.count <= 0 or args.batch <= 0:
        parser.error("--count and --batch must be positive")
    body = args.body.encode()
    print(f"reactio ping-pong: {args.count} round trips of {HEADER_SIZE + len(body)}-byte "
          f"messages, server and client on one runtime (one thread), loopback TCP")
    print("round trip = reply processed - own last send; client and server each measure it")
    print(format_stats_header(), flush=True)
    started = time.perf_counter()
    try:
        client, server = run_pingpong(args.count, args.batch, body, args.addr)
    except (OSError, TimeoutError, RuntimeError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    if client.all_samples:
        print(format_stats_row("client all", "-", LatencyStats.from_samples(client.all_samples)))
    rate = client.count_received / elapsed if elapsed > 0 else float("inf")
    print(f"done: client {client.count_received}/{args.count} round trips, server echoed "
          f"{server.count_sent}; {elapsed:.2f} s, {rate:,.0f} round trips/s")
    return 0 if client.count_received == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
