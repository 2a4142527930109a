"""Entry point of the harness's Python children: ``python -m reactio.bench.worker``.

    worker check  LEG                      exit 0 when LEG's modules import, else say why
    worker server LEG [--conns N] [--spin] [--timeout S] [--workers W | --threads T]
                  [--unix PATH]
    worker client LEG --port P --count N --warmup W --size B --out FILE [--spin] [--timeout S]
                  [--unix PATH]
    (--udp with check / server / client: the leg's UDP pair of pingpong --udp, udp_legs.py)

The protocol with the harness (the same as the C programs'): the server prints
``port N`` once it listens on 127.0.0.1:N, serves N connections and exits 0 when they are
all closed; the client prints ``progress K`` lines about twice a second and
``done COUNT ELAPSED_NS`` at the end, having written COUNT native int64 round-trip times
(ns) to FILE. ``--timeout`` is a watchdog (SIGALRM's default action ends the process), so a
child never outlives a harness that was killed.

``--workers W`` (``scale --workers``): the server serves from W processes that each listen
on the announced port with SO_REUSEPORT, until SIGTERM, which stops them all; it then exits
0 (``--conns`` does not apply). The reactio-py and reactio-cy legs run them with
``reactio.workers.run``; the other legs with ``run_forked`` below, which works the same way
as the C server's ``--workers``.  ``--threads T`` (``scale --threads``, reactio-py and
reactio-cy): the same, from one process whose ThreadedReactorMgr runs T runtimes
(``threads.serve_threads``).

``--unix PATH`` (``pingpong --unix``): the connection is a Unix stream socket at PATH, not
TCP; the server announces ``port 0`` once it listens there.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
import traceback
from typing import Callable, List, Optional, Protocol

from .procs import raise_nofile_limit

HDR = 10  # u16 body length + i64 send stamp


class Recorder:
    """Round-trip bookkeeping shared by the Python clients.

    ``samples`` is preallocated (no allocation per message); ``record(i, rtt)`` stores the
    RTT of round trip ``i`` (counted from 0 including the warm-up) and reports progress.
    """

    def __init__(self, count: int, warmup: int) -> None:
        from array import array
        self.count = count
        self.warmup = warmup
        self.total = count + warmup
        self.samples: array[int] = array("q", bytes(8 * count))
        self.start_ns = 0
        self.end_ns = 0
        self._next_progress = time.monotonic_ns() + 500_000_000

    def progress(self, i: int, now_ns: int) -> None:
        """Called every 1024 round trips or so: print a progress line twice a second."""
        if now_ns >= self._next_progress:
            self._next_progress = now_ns + 500_000_000
            print(f"progress {max(0, i - self.warmup)}", flush=True)

    def finish(self, path: str) -> None:
        with open(path, "wb") as f:
            self.samples.tofile(f)
        print(f"done {self.count} {self.end_ns - self.start_ns}", flush=True)


def check_echo(msg: bytes, size: int, stamp: int) -> None:
    """Raise unless ``msg`` is the echo of our ``size``-byte message stamped ``stamp``."""
    n = HDR + (msg[0] | (msg[1] << 8))
    if n != size or int.from_bytes(msg[2:10], "little") != stamp:
        raise RuntimeError(f"echo does not match the message sent (length {n}, want {size})")


def announce_port(port: int) -> None:
    print(f"port {port}", flush=True)


def reserve_port() -> socket.socket:
    """A socket bound to 127.0.0.1 on an ephemeral port with SO_REUSEPORT that does not
    listen: it holds the port for the workers' SO_REUSEPORT listeners."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _parent_death_signal() -> None:
    """This process gets SIGTERM when its parent dies (Linux), like the C server's workers."""
    import ctypes
    try:
        ctypes.CDLL(None).prctl(1, int(signal.SIGTERM), 0, 0, 0)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ReadyPipe:
    """Workers say "I listen" (one byte each); the port is announced once all of them did,
    so that no connection of the run reaches a port with fewer listeners than workers."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()

    def ready(self) -> None:
        """In a worker, once its listener is up."""
        os.write(self.w, b"+")

    def wait(self, count: int, timeout: float = 60.0) -> None:
        """Until ``count`` workers said so (raises TimeoutError after ``timeout`` s)."""
        import select
        got = 0
        deadline = time.monotonic() + timeout
        while got < count:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                raise TimeoutError(f"{got} of {count} workers listening after {timeout:g} s")
            got += len(os.read(self.r, count - got))

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


def run_forked(workers: int, serve_on: Callable[[int, Callable[[], None]], None],
               announce: Callable[[int], None], timeout: int) -> None:
    """Hold a port, fork ``workers`` processes that each run ``serve_on(port, ready)``
    (listen on the port with SO_REUSEPORT, call ``ready()``, serve until killed), announce
    the port once every worker is ready, and wait for SIGTERM (or SIGINT), which stops the
    workers; raise if one of them ends before that."""
    holder = reserve_port()
    port = holder.getsockname()[1]
    ready = ReadyPipe()
    wanted = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, wanted)     # until sigwaitinfo below
    pids: List[int] = []
    try:
        for _ in range(workers):
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    signal.pthread_sigmask(signal.SIG_SETMASK, old)
                    _parent_death_signal()
                    signal.alarm(timeout)               # (alarms are not inherited)
                    holder.close()
                    serve_on(port, ready.ready)
                    code = 0
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(code)
            pids.append(pid)
        ready.wait(workers)
        announce(port)
        while True:
            info = signal.sigwaitinfo(wanted)
            if info.si_signo != signal.SIGCHLD:
                break
            for pid in pids:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    pids.remove(pid)
                    raise RuntimeError(f"worker {pid} ended before it was told to stop")
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in pids:
            os.waitpid(pid, 0)
        holder.close()
        ready.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class LegModule(Protocol):
    """What a leg's module (``legs_asyncio``, ``legs_reactio``) provides to the worker."""

    def check(self, leg: str) -> None: ...

    def serve(self, leg: str, conns: int, spin: bool, announce: Callable[[int], None],
              unix: Optional[str] = None) -> None: ...

    def serve_workers(self, leg: str, workers: int, spin: bool,
                      announce: Callable[[int], None], timeout: int) -> None: ...

    def ping(self, leg: str, port: int, size: int, rec: Recorder, spin: bool,
             unix: Optional[str] = None) -> None: ...


def _impl(leg: str) -> LegModule:
    if leg in ("asyncio", "uvloop"):
        from . import legs_asyncio
        return legs_asyncio
    if leg in ("reactio-py", "reactio-cy", "reactio-aio"):
        from . import legs_reactio
        return legs_reactio
    raise SystemExit(f"worker: unknown leg {leg!r}")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reactio.bench.worker")
    p.add_argument("role", choices=("check", "server", "client"))
    p.add_argument("leg")
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--port", type=int)
    p.add_argument("--count", type=int)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--out")
    p.add_argument("--spin", action="store_true")
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("--workers", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--udp", action="store_true", help="pingpong --udp: the leg's UDP pair")
    p.add_argument("--flood-sink", type=int, metavar="RECV_BATCH",
                   help="udpflood: the leg's UDP echo sink (reactio: with this recv_batch)")
    p.add_argument("--unix", metavar="PATH",
                   help="a Unix stream socket at PATH instead of TCP on 127.0.0.1 (the server "
                        "announces port 0); not with --workers")
    a = p.parse_args(argv)

    if a.role == "check":
        try:
            if a.udp:       # first: a leg without a UDP pair says so, whatever it imports
                from . import udp_legs
                udp_legs.check(a.leg)
            _impl(a.leg).check(a.leg)
        except Exception as e:  # the reason is the point: print it, exit non-zero
            print(f"{type(e).__name__}: {e}")
            return 1
        print("ok")
        return 0

    signal.alarm(a.timeout)
    raise_nofile_limit()
    mod = _impl(a.leg)
    if a.udp:
        from . import udp_legs
    if a.role == "server":
        if a.udp and a.flood_sink:
            udp_legs.flood_sink(a.leg, a.flood_sink, announce_port)
        elif a.udp:
            udp_legs.serve(a.leg, a.spin, announce_port)
        elif a.threads:
            from .threads import serve_threads
            serve_threads(a.leg, a.threads, announce_port)
        elif a.workers:
            mod.serve_workers(a.leg, a.workers, a.spin, announce_port, a.timeout)
        else:
            mod.serve(a.leg, a.conns, a.spin, announce_port, a.unix)
        return 0
    if a.port is None or a.count is None or a.out is None:
        p.error("client needs --port, --count and --out")
    if not HDR <= a.size <= HDR + 0xFFFF:
        p.error("--size must be 10..65545")
    rec = Recorder(a.count, a.warmup)
    if a.udp:
        udp_legs.ping(a.leg, a.port, a.size, rec, a.spin)
    else:
        mod.ping(a.leg, a.port, a.size, rec, a.spin, a.unix)
    rec.finish(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
