"""Child-process plumbing for the harness.

Contract: every child started through :class:`Child` is reaped, whatever happens (a leg
that fails, a timeout, Ctrl-C in the harness): use it as a context manager, and its exit
stops it (SIGTERM, then SIGKILL) if it still runs. Every wait takes a deadline, so nothing
in the harness can hang. Children also carry their own watchdog (``--timeout``, an
``alarm()``), so they end even if the harness is killed with SIGKILL.

Children talk to the harness with short text lines on stdout ("port 4242", "progress 100",
"done ..."). Their stderr goes to a file, so a chatty or crashing child can never block on
a full pipe, and its tail is quoted when a leg fails.
"""
from __future__ import annotations

import os
import resource
import select
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple, Type

# CPU sets of (server, client) from pin_plan(); None: not pinned
Pins = Tuple[Optional[Set[int]], Optional[Set[int]]]


class ChildError(Exception):
    """A child misbehaved: it exited early or with an error, or missed a deadline."""


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.

    Children inherit it, which is what 1000-connection runs need.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def require_nofile(conns: int) -> None:
    """Raise RLIMIT_NOFILE (``raise_nofile_limit``, inherited by the children); ValueError
    when it is still too low for ``conns`` connections (with a margin of 64)."""
    limit = raise_nofile_limit()
    if conns + 64 > limit:
        raise ValueError(f"{conns} connections need more file descriptors than "
                         f"RLIMIT_NOFILE allows here ({limit}); raise the hard limit "
                         "(ulimit -Hn) or use fewer --conns")


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` in seconds, from /proc/PID/stat.

    Resolution is one clock tick (usually 10 ms), which is why callers measure windows of
    seconds. Raises ChildError when the process is gone.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError as e:
        raise ChildError(f"cannot read CPU time of pid {pid}: {e}") from None
    # Fields after the command name, which may itself contain spaces and parentheses.
    fields = stat[stat.rindex(b")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` and of all its live descendants (a server with
    worker processes), from /proc. Raises ChildError when ``pid`` is gone."""
    parents: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue                # gone meanwhile
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    total = cpu_seconds(pid)
    todo = list(parents.get(pid, ()))
    while todo:
        child = todo.pop()
        try:
            total += cpu_seconds(child)
        except ChildError:
            continue                # exited meanwhile
        todo.extend(parents.get(child, ()))
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (VmRSS of /proc/PID/status).

    Raises ChildError when the process is gone.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # the kernel says "kB": KiB
    except (OSError, ValueError) as e:
        raise ChildError(f"cannot read the RSS of pid {pid}: {e}") from None
    raise ChildError(f"pid {pid} has no VmRSS (a zombie?)")


def deadline_in(seconds: float) -> float:
    return time.monotonic() + seconds


class Child:
    """A child process with line-based stdout, stderr in a file, and optional CPU pinning.

    ``cpus``: the CPU set to pin the child to right after it starts (``os.sched_setaffinity``),
    before it can have done any measured work (it first has to start up and report).
    """

    def __init__(self, name: str, argv: Sequence[str], *, workdir: Path,
                 cpus: Optional[Set[int]] = None, env: Optional[Dict[str, str]] = None) -> None:
        self.name = name
        self.argv = list(argv)
        self._stderr_path = workdir / f"{name}.stderr"
        self._stderr = open(self._stderr_path, "w+b")
        self._buf = b""
        self._eof = False
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=self._stderr, env=env, close_fds=True,
                # Own session: a Ctrl-C in the terminal reaches only the harness, which
                # then stops the children itself (no tracebacks from every child).
                start_new_session=True)
        except OSError as e:
            self._stderr.close()
            raise ChildError(f"{name}: cannot start {self.argv[0]}: {e}") from None
        if cpus:
            try:
                os.sched_setaffinity(self.proc.pid, cpus)
            except ProcessLookupError:
                pass  # it died already; the caller sees that at its next read
            except OSError as e:
                self.stop()
                raise ChildError(f"{name}: cannot pin to CPUs {sorted(cpus)}: {e}") from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_line(self, deadline: float) -> Optional[str]:
        """The next stdout line (without the newline), or None at EOF.

        Raises ChildError if no full line arrives before ``deadline`` (time.monotonic()).
        """
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line, self._buf = self._buf[:nl], self._buf[nl + 1:]
                return line.decode("utf-8", "replace").rstrip("\r")
            if self._eof:
                if self._buf:
                    line, self._buf = self._buf, b""
                    return line.decode("utf-8", "replace")
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.failure("timed out waiting for its output")
            stdout = self.proc.stdout
            assert stdout is not None  # Popen(stdout=PIPE)
            fd = stdout.fileno()
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 65536)
                if chunk:
                    self._buf += chunk
                else:
                    self._eof = True

    def read_port(self, deadline: float) -> int:
        """The port of a server child's first line, ``port N``; ChildError for anything else."""
        line = self.read_line(deadline)
        if not line or not line.startswith("port "):
            raise self.failure(f"did not report its port (got {line!r})")
        return int(line.split()[1])

    def lines(self, deadline: float, server: Optional["Child"] = None) -> Iterator[str]:
        """Every stdout line until the caller stops; reaching EOF is a ChildError (the
        client's, or ``server``'s if that one has exited: the cause, not the symptom)."""
        while True:
            line = self.read_line(deadline)
            if line is None:
                self.wait(deadline_in(10))
                if server is not None and server.proc.poll() is not None:
                    raise server.failure("exited during the run")
                raise self.failure("exited before it was done")
            yield line

    def wait(self, deadline: float) -> int:
        """Wait for the exit until ``deadline``; returns the exit status (negative: signal)."""
        try:
            return self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise self.failure("did not exit in time") from None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child itself (not its group) while it is unreaped."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def wait_stderr(self, text: str, deadline: float) -> None:
        """Wait until the child's stderr contains ``text``; ChildError if it exits first or
        ``deadline`` passes (for tools that announce readiness on stderr, e.g. strace)."""
        while text not in self.stderr_tail(1 << 16):
            if self.proc.poll() is not None:
                raise self.failure(f"exited before it said {text!r}")
            if time.monotonic() > deadline:
                raise self.failure(f"did not say {text!r} in time")
            time.sleep(0.01)

    def stderr_tail(self, limit: int = 1500) -> str:
        """The last ``limit`` characters the child wrote to stderr."""
        try:
            self._stderr.flush()
            size = os.path.getsize(self._stderr_path)
            with open(self._stderr_path, "rb") as f:
                f.seek(max(0, size - limit))
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def failure(self, what: str) -> ChildError:
        """A ChildError for ``what`` that quotes the exit status and stderr when known."""
        rc = self.proc.poll()
        msg = f"{self.name}: {what}"
        if rc is not None:
            msg += f" (exit status {describe_status(rc)})"
        tail = self.stderr_tail()
        if tail:
            msg += "\n    " + tail.replace("\n", "\n    ")
        return ChildError(msg)

    def stop(self) -> None:
        """Stop the child if it still runs, with anything it started (its process group: it
        leads its own session), SIGTERM then SIGKILL, and reap it. Idempotent.

        The group is signalled only while the child is unreaped, so its id cannot have been
        reused by an unrelated process.
        """
        for sig, grace in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)  # also reaches grandchildren
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.stop()


def describe_status(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return str(rc)


def pins_json(pins: Pins) -> Dict[str, Optional[List[int]]]:
    """The CPUs of a pin plan as a run's JSON records them."""
    return {"server": sorted(pins[0]) if pins[0] else None,
            "client": sorted(pins[1]) if pins[1] else None}


def pin_plan(mode: str) -> Pins:
    """CPU sets for (server, client) for ``--pin same-core|split|none``.

    Uses the CPUs this process may run on. ``same-core`` puts both on the last of them,
    ``split`` the server on the second-to-last and the client on the last. Returns
    ``(None, None)`` for ``none``. Raises ValueError when ``split`` has only one CPU.
    """
    if mode == "none":
        return None, None
    cpus: List[int] = sorted(os.sched_getaffinity(0))
    if mode == "same-core":
        return {cpus[-1]}, {cpus[-1]}
    if mode == "split":
        if len(cpus) < 2:
            raise ValueError("--pin split needs two CPUs, this process may use only "
                             f"{cpus}")
        return {cpus[-2]}, {cpus[-1]}
    raise ValueError(f"unknown pin mode {mode!r}")
