"""reactio.workers: serve on many cores with N pre-forked processes, one runtime in each.

    def setup(rt: ReactRuntime) -> None:
        handler = DefaultTcpListenerHandler(make_reactor, reuse_port=True)
        rt.cmd_sender.send_listen(("0.0.0.0", 8000), handler)

    reactio.workers.run(setup, workers=4)      # in the main thread of the main module

``run`` forks ``workers`` processes (default ``os.cpu_count()``).  Each makes its own
``ReactRuntime`` after the fork (a runtime made before fork() refuses to run in a child), calls
``setup(rt)`` and runs ``rt.run_forever()``.  The listeners of all workers bind the same
address with ``reuse_port=True`` (SO_REUSEPORT): the kernel spreads incoming connections over
them, and each connection lives in one worker.  The parent only supervises:

- SIGTERM or SIGINT to the parent stops every worker gracefully: a worker stops accepting
  (its listeners close), closes its streams the graceful way (queued bytes are flushed, then
  the peer gets an EOF), waits for them up to ``stop_timeout`` seconds, then ``close()``s its
  runtime and exits 0.  Workers still running ``stop_timeout + 5`` s later are killed.  A
  second signal kills them at once.  ``run`` then returns (your program exits 0).
- A worker that crashes (exits non-zero, or is killed by a signal) is logged at ERROR on the
  ``reactio`` logger (``reactio.workers``) and restarted after a back-off: ``backoff``
  seconds, doubled for every further crash in the last ``restart_window`` seconds, at most
  ``max_backoff``.  More than ``max_restarts`` crashes within ``restart_window`` seconds
  (default: 5 in 60 s) means the workers keep crashing: ``run`` stops the others and raises
  ``WorkersCrashedError``, so the program exits non-zero and its supervisor (systemd, ...)
  sees it.
- A worker that exits 0 on its own (something called ``rt.stop()``) has finished on purpose:
  it is not restarted; ``run`` returns when no worker is left.

Inside a worker, ``current_worker()`` tells its index (0 .. workers-1) and how many times that
slot was restarted.  Needs ``fork()`` and SO_REUSEPORT (Linux); elsewhere ``run`` raises
NotImplementedError.  The kernel (Linux) balances connections over the listeners by a hash of
the connection's addresses and ports, not by load.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from reactio._core import ReactRuntime
from reactio.errors import ReactioError

__all__ = ["run", "current_worker", "reserve_port", "WorkerInfo", "WorkersCrashedError"]

log = logging.getLogger("reactio.workers")

# how much longer than stop_timeout the parent waits before it kills a stopping worker
KILL_GRACE = 5.0
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class WorkersCrashedError(ReactioError, RuntimeError):
    """The workers crashed more than ``max_restarts`` times within ``restart_window`` s."""


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """Who this worker process is: ``index`` in 0 .. workers-1, ``restarts`` of that slot so
    far (0 for the first process), ``workers`` in all."""
    index: int
    restarts: int
    workers: int


_current: Optional[WorkerInfo] = None


def current_worker() -> Optional[WorkerInfo]:
    """In a worker process of ``run``: its WorkerInfo.  Anywhere else: None."""
    return _current


def reserve_port(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT that does not listen: it holds the
    port (port 0: a free one; ``sock.getsockname()[1]`` tells which) for the workers'
    ``reuse_port=True`` listeners while it stays open, and never receives a connection.
    Keep it open while ``run`` runs.  Needs SO_REUSEPORT (NotImplementedError elsewhere)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise NotImplementedError("SO_REUSEPORT does not exist on this platform")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _check_platform() -> None:
    if not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"):
        raise NotImplementedError(
            "reactio.workers needs fork() and SO_REUSEPORT, which this platform does not have "
            f"({sys.platform}); run one process, or ThreadedReactorMgr for several runtimes")


def _exit_status(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class _Worker:
    __slots__ = ("index", "restarts", "pid", "started")

    def __init__(self, index: int, restarts: int, pid: int) -> None:
        self.index = index
        self.restarts = restarts
        self.pid = pid
        self.started = time.monotonic()


class _Supervisor:
    """The parent's state: live workers, pending restarts, crash history, signals."""

    def __init__(self, setup: Callable[[ReactRuntime], object], workers: int,
                 runtime_options: Mapping[str, Any], stop_timeout: float, max_restarts: int,
                 restart_window: float, backoff: float, max_backoff: float,
                 poll_timeout: float) -> None:
        self.setup = setup
        self.nworkers = workers
        self.runtime_options = dict(runtime_options)
        self.stop_timeout = stop_timeout
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.poll_timeout = poll_timeout
        self.live: Dict[int, _Worker] = {}
        self.restart_due: Dict[int, float] = {}     # index -> monotonic time
        self.restarts: List[int] = [0] * workers
        self.crashes: List[float] = []              # monotonic times of recent crashes
        self.signals = 0                            # SIGTERM/SIGINT received
        self.pid = os.getpid()
        self.rfd = self.wfd = -1

    # ------------------------------------------------------------------ signals

    def _on_stop_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        self.signals += 1
        if self.signals > 1:                        # a second one: no more waiting
            for w in self.live.values():
                self._kill(w.pid, signal.SIGKILL)

    def _wait(self, timeout: Optional[float]) -> None:
        """Sleep until a signal arrives (SIGCHLD included) or ``timeout`` seconds pass."""
        try:
            select.select([self.rfd], [], [], timeout)
        except InterruptedError:
            pass
        try:
            while os.read(self.rfd, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    @staticmethod
    def _kill(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    # ------------------------------------------------------------------ workers

    def spawn(self, index: int) -> None:
        restarts = self.restarts[index]
        sys.stdout.flush()
        sys.stderr.flush()
        # SIGTERM/SIGINT stay blocked across fork() until the worker has its own handlers:
        # one arriving in between must stop the worker, not run the parent's handler there
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            raise
        if pid == 0:                                # the worker: never returns
            code = 1
            try:
                code = _worker_main(self, index, restarts, old_mask)
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        self.live[pid] = _Worker(index, restarts, pid)
        log.info("worker %d started (pid %d)", index, pid)

    def reap(self) -> List[Tuple[_Worker, int]]:
        """The workers that exited since the last call: [(worker, exit code)]."""
        done = []
        for pid in list(self.live):
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:                # reaped elsewhere (someone's waitpid(-1))
                got, status = pid, 0
            if got == pid:
                done.append((self.live.pop(pid), _exit_status(status)))
        return done

    def crashed(self, w: _Worker, code: int) -> None:
        now = time.monotonic()
        self.crashes = [t for t in self.crashes if now - t < self.restart_window]
        self.crashes.append(now)
        if len(self.crashes) > self.max_restarts:
            raise WorkersCrashedError(
                f"worker {w.index} (pid {w.pid}) {_describe(code)}: {len(self.crashes)} "
                f"crashes within {self.restart_window:g} s (max_restarts={self.max_restarts}); "
                "giving up")
        delay = min(self.max_backoff, self.backoff * 2 ** (len(self.crashes) - 1))
        self.restarts[w.index] += 1
        self.restart_due[w.index] = now + delay
        log.error("worker %d (pid %d) %s; restarting it in %.2f s (restart %d of this worker, "
                  "%d crash(es) in the last %g s)", w.index, w.pid, _describe(code), delay,
                  self.restarts[w.index], len(self.crashes), self.restart_window)

    def supervise(self) -> None:
        for i in range(self.nworkers):
            self.spawn(i)
        while self.signals == 0:
            for w, code in self.reap():
                if code == 0:
                    log.info("worker %d (pid %d) exited 0 on its own: not restarted",
                             w.index, w.pid)
                else:
                    self.crashed(w, code)           # raises when they keep crashing
            now = time.monotonic()
            for index, due in list(self.restart_due.items()):
                if due <= now and self.signals == 0:
                    del self.restart_due[index]
                    self.spawn(index)
            if not self.live and not self.restart_due:
                return
            timeout = self.poll_timeout
            if self.restart_due:
                timeout = max(0.0, min(timeout, min(self.restart_due.values()) - now))
            self._wait(timeout)

    def stop_all(self) -> None:
        """SIGTERM every worker, wait for them (stop_timeout + KILL_GRACE), kill the rest."""
        self.restart_due.clear()
        for w in self.live.values():
            self._kill(w.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout + KILL_GRACE
        while self.live:
            for w, code in self.reap():
                if code != 0:
                    log.warning("worker %d (pid %d) %s while stopping", w.index, w.pid,
                                _describe(code))
            left = deadline - time.monotonic()
            if not self.live:
                break
            if left <= 0:
                for w in self.live.values():
                    log.error("worker %d (pid %d) did not stop within %g s: killing it",
                              w.index, w.pid, self.stop_timeout + KILL_GRACE)
                    self._kill(w.pid, signal.SIGKILL)
                for pid in list(self.live):
                    try:
                        os.waitpid(pid, 0)
                    except ChildProcessError:
                        pass
                    del self.live[pid]
                break
            self._wait(min(left, self.poll_timeout))


def run(setup: Callable[[ReactRuntime], object], *, workers: Optional[int] = None,
        runtime_options: Optional[Mapping[str, Any]] = None, stop_timeout: float = 10.0,
        max_restarts: int = 5, restart_window: float = 60.0, backoff: float = 0.5,
        max_backoff: float = 10.0) -> None:
    """Run ``setup`` in ``workers`` pre-forked processes, each with its own ReactRuntime
    (``ReactRuntime(**runtime_options)``), until SIGTERM or SIGINT (see the module's doc).

    Call it from the main thread (it handles signals), before starting threads of your own
    (fork() copies only the calling thread).  Returns after a graceful stop, or when every
    worker exited 0 on its own; raises WorkersCrashedError when workers keep crashing,
    NotImplementedError where fork() or SO_REUSEPORT is missing, ValueError for bad
    arguments."""
    if not callable(setup):
        raise TypeError(f"setup must be callable (setup(rt)), not {type(setup).__name__}")
    _check_platform()
    if workers is None:
        workers = os.cpu_count() or 1
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, not {workers!r}")
    if not max_restarts >= 0 or not restart_window > 0:
        raise ValueError("max_restarts must be >= 0 and restart_window > 0")
    if not stop_timeout >= 0 or not backoff >= 0 or not max_backoff >= backoff:
        raise ValueError("stop_timeout and backoff must be >= 0, max_backoff >= backoff")
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("reactio.workers.run() must be called from the main thread (it "
                           "handles SIGTERM and SIGINT)")
    if _current is not None:
        raise RuntimeError("reactio.workers.run() called inside a worker")
    sup = _Supervisor(setup, workers, runtime_options or {}, stop_timeout, max_restarts,
                      restart_window, backoff, max_backoff, poll_timeout=1.0)
    sup.rfd, sup.wfd = os.pipe()
    os.set_blocking(sup.rfd, False)
    os.set_blocking(sup.wfd, False)
    old_handlers = {}
    old_wakeup = -1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            old_handlers[sig] = signal.signal(sig, sup._on_stop_signal)
        old_handlers[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, _ignore_signal)
        old_wakeup = signal.set_wakeup_fd(sup.wfd, warn_on_full_buffer=False)
        try:
            sup.supervise()
        except WorkersCrashedError as exc:
            log.error("%s; stopping the other workers", exc)
            raise
        finally:
            if sup.live:
                log.info("stopping %d worker(s)", len(sup.live))
            sup.stop_all()
    finally:
        if os.getpid() == sup.pid:
            signal.set_wakeup_fd(old_wakeup)
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
            os.close(sup.rfd)
            os.close(sup.wfd)


def _ignore_signal(signum: int, frame: Optional[FrameType]) -> None:
    """SIGCHLD: the handler's only job is that the wake-up fd gets a byte."""


# ---------------------------------------------------------------------- the worker side

def _parent_death_signal(parent: int) -> None:
    """Linux: SIGTERM this worker when the parent dies (even by SIGKILL), so no worker
    outlives its supervisor."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:              # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(sup: _Supervisor, index: int, restarts: int, mask: Any) -> int:
    """The body of a worker process (SIGTERM/SIGINT blocked until its handlers are in
    place, then ``mask`` again); returns its exit status."""
    global _current
    # undo the parent's signal plumbing: its wake-up pipe is not ours to write
    signal.set_wakeup_fd(-1)
    os.close(sup.rfd)
    os.close(sup.wfd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _current = WorkerInfo(index, restarts, sup.nworkers)
    state: Dict[str, Any] = {"rt": None, "stop": False}

    def on_stop(signum: int, frame: Optional[FrameType]) -> None:
        state["stop"] = True
        if state["rt"] is not None:
            state["rt"].stop()              # thread-safe; wakes run_forever at once

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)   # a stop sent meanwhile is handled now
    _parent_death_signal(sup.pid)
    code = 0
    try:
        rt = ReactRuntime(**sup.runtime_options)
        state["rt"] = rt
        try:
            if not state["stop"]:
                sup.setup(rt)
            if not state["stop"]:
                rt.run_forever()
            if state["stop"]:
                rt.shutdown(sup.stop_timeout)
        finally:
            rt.close()
    except BaseException as exc:
        log.error("worker %d (pid %d): %s: %s", index, os.getpid(), type(exc).__name__, exc,
                  exc_info=exc)
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
    except Exception:                           # an exit code is all that is left to give
        pass
    return code

