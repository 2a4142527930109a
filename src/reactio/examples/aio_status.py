"""A reactio TCP echo server and an asyncio HTTP status page in one process (reactio.aio).

    python -m reactio.examples.aio_status --echo-addr 127.0.0.1:10255 --http-addr 127.0.0.1:8080
    printf 'hello\\n' | nc -q1 127.0.0.1 10255          # echoed back
    curl http://127.0.0.1:8080/                        # live counters

The echo server is a reactio ``Reactor`` (line framing: every ``\\n``-terminated line is a
message, echoed back from the receive buffer without a copy).  Its runtime is attached to the
asyncio loop (``reactio.aio.attach``), so the HTTP server -- plain ``asyncio.start_server``
with a hand-written HTTP/1.0 response -- reads the runtime's counters directly, on the same
thread, with no lock.  With uvloop installed, ``--uvloop`` runs both on uvloop's loop.

Prints ``echo server on HOST:PORT`` and ``status page on http://HOST:PORT/`` once both
listen (port 0 picks a free port: that is how a script learns which).  Runs until Ctrl-C or
SIGTERM, then closes everything and exits 0.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from typing import Any, Optional, Sequence

from reactio import (DispatchContext, DropMsgSize, ExpectMsgSize, MessageResult, ReactorID,
                     ReactRuntime, Reactor, aio)


class Stats:
    """What the status page shows; updated by the reactors (on the loop's thread)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.connections = 0
        self.messages = 0
        self.bytes = 0
        self.pages = 0


class LineEcho(Reactor):
    """Echoes every complete line; counts them."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def on_connected(self, ctx: DispatchContext, listener_id: Optional[ReactorID]) -> None:
        self.stats.connections += 1

    def on_inbound_message(self, buf: memoryview, new_bytes: int, decoded_msg_size: int,
                           ctx: DispatchContext) -> MessageResult:
        data = buf.tobytes()            # a copy to search (this example is about asyncio)
        n = data.rfind(b"\n") + 1       # the complete lines
        if n == 0:
            return ExpectMsgSize(0)     # no complete line yet: call again with more bytes
        ctx.send_or_que(buf[:n])        # echo straight from the receive buffer
        self.stats.messages += data.count(b"\n", 0, n)
        self.stats.bytes += n
        return DropMsgSize(n)


def status_body(rt: ReactRuntime, stats: Stats) -> bytes:
    lines = [
        "reactio echo server",
        f"uptime: {time.monotonic() - stats.started:.1f} s",
        f"streams: {rt.count_streams()}",
        f"connections: {stats.connections}",
        f"messages echoed: {stats.messages}",
        f"bytes echoed: {stats.bytes}",
        f"socket events: {rt.count_sock_events()}",
        f"status pages served: {stats.pages}",
    ]
    return ("\n".join(lines) + "\n").encode()


def http_response(status: str, body: bytes) -> bytes:
    head = (f"HTTP/1.0 {status}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("ascii") + body


async def serve_status(rt: ReactRuntime, stats: Stats, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
    """One HTTP/1.0 request: the request line, headers up to the blank line, one response."""
    try:
        request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        parts = request.split(b"\r\n", 1)[0].split()
        if len(parts) == 3 and parts[0] in (b"GET", b"HEAD") and parts[1] == b"/":
            stats.pages += 1
            response = http_response("200 OK", status_body(rt, stats))
            if parts[0] == b"HEAD":
                response = response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        elif len(parts) == 3:
            response = http_response("404 Not Found", b"not found: try /\n")
        else:
            response = http_response("400 Bad Request", b"bad request\n")
        writer.write(response)
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
            ConnectionError):
        pass
    finally:
        writer.close()


async def main_async(echo_addr: str, http_addr: str) -> int:
    loop = asyncio.get_running_loop()
    stats = Stats()
    stop = asyncio.Event()
    try:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
    except (NotImplementedError, AttributeError):   # Windows: Ctrl-C raises KeyboardInterrupt
        pass
    with ReactRuntime() as rt:
        with aio.attach(rt):
            try:
                lid = await aio.listen(rt, echo_addr, lambda count, param: LineEcho(stats))
            except OSError as exc:
                print(f"error: cannot listen on {echo_addr}: {exc}", file=sys.stderr)
                return 1
            host, port = rt.local_address(lid)[:2]
            print(f"echo server on {host}:{port}", flush=True)

            http_host, _, http_port = http_addr.rpartition(":")
            server = await asyncio.start_server(
                lambda r, w: serve_status(rt, stats, r, w), http_host.strip("[]"),
                int(http_port))
            h, p = server.sockets[0].getsockname()[:2]
            print(f"status page on http://{h}:{p}/", flush=True)
            async with server:
                await stop.wait()
            print("stopping: closing the echo server", flush=True)
            await aio.close(rt, lid)
    # leaving the blocks detached the runtime, then closed it: every stream got its on_close
    print(f"stopped after {stats.connections} connection(s), {stats.messages} message(s)",
          flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reactio.examples.aio_status",
        description="reactio echo server + asyncio HTTP status page in one process.")
    parser.add_argument("--echo-addr", default="127.0.0.1:10255",
                        help="echo server address host:port (default 127.0.0.1:10255; port 0 "
                             "= any)")
    parser.add_argument("--http-addr", default="127.0.0.1:8080",
                        help="status page address host:port (default 127.0.0.1:8080)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = parser.parse_args(argv)
    runner: Any = asyncio.run
    if args.uvloop:
        import uvloop
        runner = uvloop.run
    try:
        return int(runner(main_async(args.echo_addr, args.http_addr)))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
