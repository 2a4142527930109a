"""ThreadedReactorMgr: N ReactRuntimes, each on its own thread (reactio::threaded_reactors).

Each thread ``reactio-runtime-{i}`` creates its runtime (a runtime is used only by the thread
that owns it) and runs ``run_forever()``; the GIL is released while a runtime waits in
epoll_wait, so idle runtimes cost nothing and busy ones interleave.  Other threads reach a
runtime only through its CmdSender (``get_cmd_sender(i)``), and reactors find each other
through a name registry of ``ReactorUID(runtime_id, reactor_id)``.

Differences from reactio, each one a bug there:
- startup waits for every thread's runtime without a deadline (the Rust crate reactio panics after 100 ms);
- ``stop()`` then ``join()`` closes every runtime on its own thread, so every reactor's
  ``on_close`` runs and every pending completion is failed with RuntimeClosedError (reactio
  drops the runtimes silently);
- ``add_reactor_uid`` refuses a duplicate name and leaves the owner's entry alone (reactio
  overwrites it and then reports the error); ``remove_reactor_name`` can check the owner;
- ``join()`` from one of the manager's own threads raises RuntimeError instead of
  self-joining (reactio's Arc cycle makes the last drop on a worker thread join itself);
- an unexpected exception in a runtime thread is logged, the runtime is still closed, and
  ``join()`` raises it; a reactor's own exceptions only close that reactor (the core
  isolates callbacks), never the thread.
"""
from __future__ import annotations

import atexit
import logging
import threading
import time
from types import TracebackType
from typing import Any, Callable, NamedTuple, Optional

from reactio._core import CmdSender, Deferred, ReactorID, ReactRuntime
from reactio.errors import DuplicateReactorNameError, RuntimeClosedError

__all__ = ["ThreadedReactorMgr", "ReactorUID", "DuplicateReactorNameError"]

log = logging.getLogger("reactio.threaded")

# Generation 0 is never given to a live slot, so a command to this id always completes with
# ReactorNotFoundError: its completion then runs on the runtime's thread, inside run_forever().
_NO_REACTOR = ReactorID(0xFFFFFFFF, 0)


class ReactorUID(NamedTuple):
    """A reactor's address across the manager's runtimes."""
    runtime_id: int
    reactor_id: ReactorID


class _Worker:
    """One runtime thread's state; written by that thread before ``ready`` is set."""
    __slots__ = ("index", "runtime", "ready", "error")

    def __init__(self, index: int) -> None:
        self.index = index
        self.runtime: Optional[ReactRuntime] = None     # None until created (or if it failed)
        self.ready = threading.Event()
        self.error: Optional[BaseException] = None


def _run_worker(worker: _Worker, stopping: threading.Event, poll_timeout: float,
                runtime_options: dict[str, Any]) -> None:
    """Body of a runtime thread (it needs nothing of the manager but these arguments)."""
    try:
        rt = ReactRuntime(**runtime_options)
    except BaseException as exc:
        worker.error = exc
        worker.ready.set()
        return
    worker.runtime = rt
    worker.ready.set()
    try:
        # stop() posts a command whose completion calls rt.stop() from inside run_forever(),
        # so a stop() that comes before run_forever() starts is not lost; the flag covers a
        # return from run_forever() for any other reason.
        while not stopping.is_set():
            rt.run_forever(poll_timeout)
    except BaseException as exc:        # SystemExit/KeyboardInterrupt raised by a callback too
        worker.error = exc
        log.error("runtime thread %s failed: %s: %s; closing its runtime",
                  threading.current_thread().name, type(exc).__name__, exc, exc_info=exc)
    finally:
        try:
            rt.close()                  # every on_close runs here, on the runtime's thread
        except BaseException as exc:
            if worker.error is None:
                worker.error = exc
            log.error("runtime thread %s: close() failed: %s", threading.current_thread().name,
                      exc, exc_info=exc)


def _stopper(rt: ReactRuntime) -> Callable[[Any], None]:
    """A completion that makes ``rt.run_forever()`` return (it runs on rt's own thread)."""
    def stop(_result: Any) -> None:
        rt.stop()
    return stop


# Managers started and not yet joined.  Strong references: a running manager nobody refers to
# any more is still stopped and joined at exit, so its reactors' on_close runs.
_live_managers: "set[ThreadedReactorMgr]" = set()
_live_managers_lock = threading.Lock()


@atexit.register
def _stop_live_managers() -> None:
    """At interpreter exit, stop and join managers nobody stopped, so their reactors' on_close
    still runs (the threads are daemons: a forgotten manager never blocks exit)."""
    with _live_managers_lock:
        managers = list(_live_managers)
    for mgr in managers:
        try:
            mgr.stop()
            mgr.join(timeout=5.0, raise_errors=False)
        except BaseException as exc:    # exit must go on
            log.error("stopping %r at exit: %s", mgr, exc)


class ThreadedReactorMgr:
    """``nthreads`` runtimes, one per thread, plus a registry of reactor names.

    ``with ThreadedReactorMgr(4) as mgr:`` stops and joins on exit.  The constructor returns
    once every runtime exists and its CmdSender can be used.  ``runtime_options`` are passed to
    each ``ReactRuntime(...)``; ``poll_timeout`` bounds each epoll wait (commands wake the loop
    at once; this only limits how long a lost wake-up could delay it).
    """

    def __init__(self, nthreads: int, *, poll_timeout: float = 1.0,
                 name_prefix: str = "reactio-runtime", **runtime_options: Any) -> None:
        if nthreads <= 0:
            raise ValueError(f"nthreads must be positive, not {nthreads}")
        self._stopping = threading.Event()
        self._stop_lock = threading.Lock()      # exactly one stop() sends the stop commands
        self._joined = False
        self._names: dict[str, ReactorUID] = {}
        self._names_lock = threading.Lock()
        self._workers = [_Worker(i) for i in range(nthreads)]
        self._threads = [
            threading.Thread(target=_run_worker, name=f"{name_prefix}-{w.index}", daemon=True,
                             args=(w, self._stopping, poll_timeout, runtime_options))
            for w in self._workers]
        # Thread object -> runtime id.  Not thread idents: the OS reuses the ident of an ended
        # thread, and an unrelated new thread would then pass for a runtime thread.
        self._thread_index: dict[threading.Thread, int] = {
            t: w.index for w, t in zip(self._workers, self._threads)}
        for t in self._threads:
            t.start()
        for w in self._workers:
            w.ready.wait()              # set by the thread itself, success or failure
        failed = [w for w in self._workers if w.runtime is None]
        if failed:
            self.stop()
            self.join(raise_errors=False)
            raise RuntimeError(f"runtime thread {failed[0].index} could not create its "
                               f"runtime: {failed[0].error!r}") from failed[0].error
        with _live_managers_lock:
            _live_managers.add(self)

    # ------------------------------------------------------------------ runtimes

    @property
    def nthreads(self) -> int:
        return len(self._workers)

    def get_cmd_sender(self, runtime_id: int) -> CmdSender:
        """The thread-safe CmdSender of runtime ``runtime_id`` (IndexError if out of range)."""
        return self.get_runtime(runtime_id).cmd_sender

    def get_runtime(self, runtime_id: int) -> ReactRuntime:
        """The runtime itself.  It is not thread-safe: call its methods only on its own thread
        (from a callback or completion running there, e.g. ``local_address`` of a listener in
        the listen completion); its counters may be read from anywhere."""
        rt = self._worker(runtime_id).runtime
        assert rt is not None           # the constructor raised if a runtime was not created
        return rt

    def current_runtime_id(self) -> Optional[int]:
        """The runtime id of the calling thread, or None if it is not one of this manager's."""
        return self._thread_index.get(threading.current_thread())

    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def _worker(self, runtime_id: int) -> _Worker:
        if not 0 <= runtime_id < len(self._workers):
            raise IndexError(f"runtime_id {runtime_id} out of range 0..{len(self._workers) - 1}")
        return self._workers[runtime_id]

    def send_user_cmd(self, uid: ReactorUID, cmd: Any, deferred: Optional[Deferred] = None,
                      on_completion: Optional[Callable[[Any], None]] = None) -> None:
        """Send a user command to the reactor ``uid`` on whichever runtime it lives."""
        self.get_cmd_sender(uid.runtime_id).send_user_cmd(uid.reactor_id, cmd, deferred,
                                                          on_completion)

    # ------------------------------------------------------------------ name registry

    def add_reactor_uid(self, name: str, uid: ReactorUID) -> None:
        """Register ``name`` -> ``uid``.  Raises DuplicateReactorNameError if the name is taken;
        the registered entry is then left unchanged."""
        if not isinstance(uid, ReactorUID):
            uid = ReactorUID(*uid)
        with self._names_lock:
            owner = self._names.get(name)
            if owner is not None:
                raise DuplicateReactorNameError(
                    f"reactor name {name!r} is already registered to {owner}")
            self._names[name] = uid

    def find_reactor_uid(self, name: str) -> Optional[ReactorUID]:
        with self._names_lock:
            return self._names.get(name)

    def remove_reactor_name(self, name: str, uid: Optional[ReactorUID] = None
                            ) -> Optional[ReactorUID]:
        """Unregister ``name`` and return its uid (None if absent).  With ``uid`` given, the
        entry is removed only if it belongs to ``uid`` (a reactor that lost a name race must
        not remove the winner's entry); otherwise None is returned and nothing changes."""
        with self._names_lock:
            owner = self._names.get(name)
            if owner is None or (uid is not None and owner != uid):
                return None
            del self._names[name]
            return owner

    def count_reactors(self) -> int:
        """Registered names (reactors register themselves; unnamed ones are not counted)."""
        with self._names_lock:
            return len(self._names)

    # ------------------------------------------------------------------ shutdown

    def stop(self) -> None:
        """Ask every runtime thread to leave run_forever() and close its runtime.  Returns at
        once; thread-safe, idempotent, callable from a reactor on one of the runtimes."""
        with self._stop_lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
        for w in self._workers:
            rt = w.runtime
            if rt is None:
                continue
            try:
                # the completion runs on w's thread inside run_forever(); sending the command
                # also wakes a loop blocked in epoll_wait
                rt.cmd_sender.send_user_cmd(_NO_REACTOR, None, None, _stopper(rt))
            except RuntimeClosedError:
                pass                    # that thread already closed its runtime

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def join(self, timeout: Optional[float] = None, *, raise_errors: bool = True) -> None:
        """Wait until every runtime thread has closed its runtime (call stop() first, or have
        a reactor call it).  Raises TimeoutError if ``timeout`` seconds pass first, RuntimeError
        when called from one of the manager's own threads (it would wait for itself), and,
        with ``raise_errors``, RuntimeError chained to the first exception that ended a
        runtime thread (see ``thread_errors``)."""
        if self.current_runtime_id() is not None:
            raise RuntimeError(
                f"ThreadedReactorMgr.join() called from its own thread "
                f"{threading.current_thread().name}: it would wait for itself; call stop() there "
                "and join() from another thread")
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            if deadline is None:
                t.join()
            else:
                t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise TimeoutError(f"runtime thread {t.name} still running after "
                                   f"{timeout} s (was stop() called?)")
        self._joined = True
        with _live_managers_lock:
            _live_managers.discard(self)
        errors = self.thread_errors
        if raise_errors and errors:
            index, exc = errors[0]
            raise RuntimeError(f"runtime thread {self._threads[index].name} failed: "
                               f"{type(exc).__name__}: {exc}") from exc

    @property
    def thread_errors(self) -> list[tuple[int, BaseException]]:
        """(runtime_id, exception) for each runtime thread that ended by an exception."""
        return [(w.index, w.error) for w in self._workers if w.error is not None]

    def __enter__(self) -> "ThreadedReactorMgr":
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.stop()
        # while another exception propagates, report thread errors through the log only
        self.join(raise_errors=exc_type is None)

    def __repr__(self) -> str:
        state = "joined" if self._joined else "stopping" if self.stopping else "running"
        return f"<ThreadedReactorMgr {len(self._workers)} runtimes, {state}>"
