"""reactio.aio: run a ReactRuntime inside an asyncio event loop, and await its commands.

    handle = reactio.aio.attach(rt)       # the running loop now drives rt (no thread on Linux)
    lid = await reactio.aio.listen(rt, "127.0.0.1:0", handler)
    rid = await reactio.aio.connect(rt, ("127.0.0.1", port), MyReactor())
    await reactio.aio.user_cmd(rt, rid, "hello")
    await reactio.aio.close(rt, rid)
    port = await reactio.aio.call(rt, lambda: rt.local_address(lid)[1])   # on rt's thread
    handle.detach()                       # rt is yours again (process_events, run_forever)

How ``attach`` drives the runtime (epoll backend): the loop watches ``rt.fileno()``, the
runtime's epoll descriptor, which is readable while socket events are pending; with
``rt._external_poll(True)`` a command sent from any thread makes it readable too.  When it is
readable the loop calls ``rt.process_events(0)`` (which never blocks), then asks
``rt._next_due_ns()`` when the runtime next has work without a socket event: ``0`` (queued
commands or owed completions: run again on the loop's next iteration), the due time of its
earliest timer (a loop timer is set for it), or ``None``.  Reactor callbacks and completions
then run on the loop's thread, between other callbacks of the loop: they must not block, as
any asyncio callback must not.

The IOCP backend (Windows) has no pollable descriptor: there ``attach`` runs the runtime with
``run_forever()`` on a helper thread instead, so reactor callbacks run on that thread; the
awaitables below work the same, their results are handed to the loop thread-safely.
``attach(rt, thread=True)`` chooses the thread on Linux as well.

The awaitables work whoever drives the runtime (``attach``, a thread in ``run_forever``, a
``ThreadedReactorMgr`` runtime: pass a ``CmdSender`` instead of the runtime).  They raise the
exception the command's completion received.  Cancelling the awaiting task never cancels the
command: it still completes inside the runtime, and a listener or stream made by a ``listen``
or ``connect`` whose awaiter is gone is closed when it completes, so nothing is orphaned.
"""
from __future__ import annotations

import asyncio
import logging
import select
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, TypeVar, Union, cast

import reactio
from reactio import (CmdSender, DefaultTcpListenerHandler, Deferred, Reactor, ReactorID,
                     ReactRuntime, monotonic_ns)
from reactio.errors import RuntimeClosedError

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Type

    from reactio._core import _ListenerHandler

__all__ = ["AttachHandle", "attach", "listen", "connect", "close", "user_cmd", "call"]

log = logging.getLogger("reactio")

# "host:port", "[v6]:port", (host, port) or (host, port, flowinfo, scope_id)
Address = Union[str, Tuple[str, int], Tuple[str, int, int, int]]
_Result = Union[ReactorID, BaseException]
_T = TypeVar("_T")

# runtimes attached now, by id() (a ReactRuntime takes no attributes and no weak references;
# the handle keeps the runtime alive while it is in here, so its id cannot be reused)
_attached: Dict[int, "AttachHandle"] = {}
_attached_lock = threading.Lock()


def _ignore(result: _Result) -> None:
    pass


def _nothing() -> None:
    pass


class AttachHandle:
    """What ``attach()`` returns: the runtime is driven by ``loop`` until ``detach()``.

    ``threaded`` says how: False, the loop polls the runtime's descriptor and runs it on the
    loop's thread; True, a helper thread runs ``rt.run_forever()`` (IOCP, or ``thread=True``).
    Also a context manager: ``with aio.attach(rt): ...`` detaches on exit.
    """

    def __init__(self, rt: ReactRuntime, loop: asyncio.AbstractEventLoop, threaded: bool,
                 timeout: float) -> None:
        self.runtime = rt
        self.loop = loop
        self.threaded = threaded
        self._attached = False
        self._loop_thread = threading.get_ident()
        self._timeout = timeout
        self._fd = -1
        self._poller: Any = None
        self._on_ready: Callable[[], None] = _nothing
        self._soon: Optional[asyncio.Handle] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_due = 0
        self._draining_wake = False
        self._thread: Optional[threading.Thread] = None

    @property
    def attached(self) -> bool:
        return self._attached

    def __repr__(self) -> str:
        how = "thread" if self.threaded else f"fd {self._fd}"
        state = "attached" if self._attached else "detached"
        return f"<reactio.aio.AttachHandle {state} ({how})>"

    # ------------------------------------------------------------------ start and stop

    def _start(self) -> None:
        rt = self.runtime
        if self.threaded:
            self._thread = threading.Thread(target=self._run_thread, name="reactio-aio",
                                            daemon=True)
            self._attached = True
            self._thread.start()
            return
        self._fd = rt.fileno()
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        self._poller = poller
        self._on_ready = self._make_reader()
        rt._external_poll(True)
        try:
            self.loop.add_reader(self._fd, self._on_ready)
        except BaseException:
            rt._external_poll(False)
            raise
        self._attached = True
        # commands queued and timers set before attach() are due now or later
        self._soon = self.loop.call_soon(self._on_soon)

    def detach(self) -> None:
        """Stop driving the runtime (idempotent).  Descriptor mode: the loop stops watching it
        and cancels its timers; call from the loop's thread (not from a callback of the
        runtime's other thread).  Thread mode: stops run_forever() and joins the thread.
        The runtime stays usable: process_events(), run_forever(), attach() again, close()."""
        if not self._attached:
            return
        if self.threaded:
            thread = self._thread
            if thread is not None and thread.ident == threading.get_ident():
                raise RuntimeError("detach() from the runtime's own thread would wait for "
                                   "itself: call it from the event loop's thread")
            self._attached = False
            self.runtime.stop()
            if thread is not None:
                thread.join()
            self._forget()
            return
        if threading.get_ident() != self._loop_thread:
            raise RuntimeError("detach() must be called from the event loop's thread")
        self._attached = False
        for h in (self._soon, self._timer):
            if h is not None:
                h.cancel()
        self._soon = self._timer = None
        try:
            self.loop.remove_reader(self._fd)
        except RuntimeError:
            pass            # the loop is closed: it watches nothing any more
        if not self.runtime.closed:
            self.runtime._external_poll(False)
        self._forget()

    def _forget(self) -> None:
        with _attached_lock:
            if _attached.get(id(self.runtime)) is self:
                del _attached[id(self.runtime)]

    def __enter__(self) -> AttachHandle:
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.detach()

    # ------------------------------------------------------------------ descriptor mode

    def _make_reader(self) -> Callable[[], None]:
        """The loop's callback, for a readable descriptor and for our timers: run the runtime
        once without blocking, then arrange for its next work without a socket event.  A
        closure over bound methods: it runs once per wake-up, so every lookup counts."""
        process = self.runtime.process_events
        next_due = self.runtime._next_due_ns
        after = self._after_events

        def on_ready() -> None:
            try:
                busy = process(0.0)
                due = next_due()
            except Exception as exc:        # KeyboardInterrupt, SystemExit: the loop's business
                self._failed(exc)
                return
            if due is not None or not busy:
                after(busy, due)

        return on_ready

    def _after_events(self, busy: bool, due: Optional[int]) -> None:
        if not self._attached:
            return                          # a callback detached us
        if due is not None:
            self._schedule(due)
        elif not busy and self._poller.poll(0):
            self._drain_idle_wake()

    def _on_soon(self) -> None:
        self._soon = None
        self._on_ready()

    def _on_timer(self) -> None:
        self._timer = None
        self._on_ready()

    def _schedule(self, due: int) -> None:
        if due == 0:
            if self._soon is None:
                self._soon = self.loop.call_soon(self._on_soon)
            return
        if self._timer is not None:
            if self._timer_due <= due:
                return      # an earlier wake-up is set; it schedules the next one
            self._timer.cancel()
        delay_ns = due - monotonic_ns()
        # Whole milliseconds, rounded up, as the runtime's own epoll timeout does: uvloop's
        # timers have millisecond resolution, and an early call would only run again.
        delay = -(-delay_ns // 1_000_000) / 1000.0 if delay_ns > 0 else 0.0
        self._timer_due = due
        self._timer = self.loop.call_later(delay, self._on_timer)

    def _drain_idle_wake(self) -> None:
        """An idle runtime (no reactors, nothing queued) returns from process_events() without
        polling, so a wake-up left on its descriptor (by stop(), or a command that was run
        before its wake-up was read) would keep the descriptor readable and the loop spinning.
        A command (a call that does nothing else) makes the next process_events() poll,
        which reads it."""
        if self._draining_wake:
            return
        self._draining_wake = True

        def drained() -> None:
            self._draining_wake = False

        try:
            self.runtime.cmd_sender.send_call(drained)
        except RuntimeClosedError:
            self._draining_wake = False

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, RuntimeClosedError) or self.runtime.closed:
            log.error("reactio.aio: the runtime was closed while attached; detaching (detach() "
                      "before close())")
        else:
            log.error("reactio.aio: process_events() raised %s; detaching the runtime",
                      type(exc).__name__, exc_info=exc)
        self.detach()

    # ------------------------------------------------------------------ thread mode

    def _run_thread(self) -> None:
        try:
            self.runtime.run_forever(self._timeout)
        except BaseException as exc:
            log.error("reactio.aio: the runtime's thread stopped: %s: %s", type(exc).__name__,
                      exc, exc_info=exc)
        finally:
            if self._attached:
                # run_forever returned without detach(): someone called rt.stop()
                log.warning("reactio.aio: the runtime's run_forever() returned (rt.stop() was "
                            "called): nothing drives it any more")
                self._attached = False
                self._forget()


def attach(rt: ReactRuntime, loop: Optional[asyncio.AbstractEventLoop] = None, *,
           thread: Optional[bool] = None, timeout: float = 1.0) -> AttachHandle:
    """Drive ``rt`` from ``loop`` (default: the running loop) until ``handle.detach()``.

    ``thread``: None (default) uses the runtime's descriptor where the backend has one
    (epoll, Linux) and a helper thread running ``rt.run_forever(timeout)`` where it has not
    (IOCP, Windows); True forces the thread.  A runtime is attached to one loop at a time
    (RuntimeError otherwise).  Works with any asyncio loop that implements ``add_reader``
    (the default selector loops, uvloop)."""
    if not isinstance(rt, ReactRuntime):
        raise TypeError(f"attach() takes a ReactRuntime, not {type(rt).__name__}")
    if rt.closed:
        raise RuntimeClosedError("the runtime is closed")
    if loop is None:
        loop = asyncio.get_running_loop()
    if thread is None:
        thread = reactio.BACKEND == "iocp"
    handle = AttachHandle(rt, loop, bool(thread), timeout)
    with _attached_lock:
        if id(rt) in _attached:
            raise RuntimeError(f"this runtime is already attached ({_attached[id(rt)]!r}); "
                               "detach() it first")
        _attached[id(rt)] = handle
    try:
        handle._start()
    except BaseException:
        handle._forget()
        raise
    return handle


# ---------------------------------------------------------------------- awaitable commands

def _cmd_sender(rt: Union[ReactRuntime, CmdSender]) -> CmdSender:
    if isinstance(rt, ReactRuntime):
        return rt.cmd_sender
    if isinstance(rt, CmdSender):
        return rt
    raise TypeError(f"expected a ReactRuntime or a CmdSender, not {type(rt).__name__}")


def _close_orphan(sender: CmdSender, rid: ReactorID) -> None:
    """A listener or stream whose awaiter was cancelled: nobody knows its id, so close it."""
    log.debug("reactio.aio: closing %s, made for a cancelled awaiter", rid)
    try:
        sender.send_close(rid, None, _ignore)
    except RuntimeClosedError:
        pass                # the runtime is closed: so is the reactor


async def _command(sender: CmdSender, send: Callable[[Callable[[_Result], None]], None],
                   close_orphan: bool) -> ReactorID:
    """Send a command with a completion that resolves a future of the running loop."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[ReactorID] = loop.create_future()
    loop_thread = threading.get_ident()

    def deliver(result: _Result) -> None:           # on the loop's thread
        if fut.cancelled():
            if close_orphan and isinstance(result, ReactorID):
                _close_orphan(sender, result)
        elif isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)

    def completion(result: _Result) -> None:        # on the runtime's thread
        if threading.get_ident() == loop_thread:
            deliver(result)
            return
        try:
            loop.call_soon_threadsafe(deliver, result)
        except RuntimeError:                         # the loop is closed: nobody awaits
            if close_orphan and isinstance(result, ReactorID):
                _close_orphan(sender, result)

    send(completion)
    return await fut


async def listen(rt: Union[ReactRuntime, CmdSender], addr: Address,
                 handler: Union[_ListenerHandler, Callable[[int, Any], Optional[Reactor]]], *,
                 deferred: Optional[Deferred] = None, **options: Any) -> ReactorID:
    """``send_listen`` as an awaitable: the listener's ReactorID (``rt.local_address(id)``
    tells a port-0 listener's port), or raises its error (``OSError`` with errno
    EADDRINUSE, ...).  ``handler`` is a TcpListenerHandler, or a reactor factory
    ``factory(count, param)`` that is wrapped in ``DefaultTcpListenerHandler(factory,
    **options)`` (options: recv_buffer_min_size, param, max_send_queue, max_msg_size,
    nodelay, backlog, reuse_port).  If the awaiting task is cancelled, the listener is
    closed once it has started."""
    sender = _cmd_sender(rt)
    h: _ListenerHandler
    if hasattr(handler, "on_new_connection"):
        if options:
            raise TypeError(f"listen() with a handler object takes no options "
                            f"({', '.join(options)}): set them on the handler")
        h = cast("_ListenerHandler", handler)
    elif callable(handler):
        h = DefaultTcpListenerHandler(handler, **options)
    else:
        raise TypeError("handler must be a TcpListenerHandler or a reactor factory "
                        f"(count, param) -> Reactor, not {type(handler).__name__}")
    return await _command(sender, lambda done: sender.send_listen(addr, h, deferred, done),
                          True)


async def connect(rt: Union[ReactRuntime, CmdSender], addr: Address, reactor: Reactor, *,
                  recv_buffer_min_size: int = 4096, deferred: Optional[Deferred] = None,
                  timeout: Optional[float] = None, max_send_queue: Optional[int] = None,
                  max_msg_size: Optional[int] = None, nodelay: bool = True) -> ReactorID:
    """``send_connect`` as an awaitable: the stream's ReactorID once it is connected (its
    ``on_connected`` has run), or raises the error (``ConnectionRefusedError``,
    ``TimeoutError`` after ``timeout`` seconds, ``socket.gaierror``, ...).  Bad option values
    raise ValueError at once.  If the awaiting task is cancelled, the stream is closed
    (gracefully) when the connect completes."""
    sender = _cmd_sender(rt)
    return await _command(sender, lambda done: sender.send_connect(
        addr, recv_buffer_min_size, reactor, deferred, done, timeout=timeout,
        max_send_queue=max_send_queue, max_msg_size=max_msg_size, nodelay=nodelay), True)


async def close(rt: Union[ReactRuntime, CmdSender], reactor_id: ReactorID, *,
                abort: bool = False, deferred: Optional[Deferred] = None) -> None:
    """``send_close`` as an awaitable: returns once the runtime has acted on it -- a listener
    or a connect in progress is closed then, a stream is closing (with ``abort`` it is
    closed; otherwise it first flushes its queued bytes, and its reactor's ``on_close`` says
    when that is over).  Raises ``ReactorNotFoundError`` for a closed or stale id."""
    sender = _cmd_sender(rt)
    await _command(sender, lambda done: sender.send_close(reactor_id, deferred, done,
                                                          abort=abort), False)


async def user_cmd(rt: Union[ReactRuntime, CmdSender], reactor_id: ReactorID, cmd: Any, *,
                   deferred: Optional[Deferred] = None) -> None:
    """``send_user_cmd`` as an awaitable: returns once the reactor's ``on_command(cmd, ctx)``
    has run; raises what it raised (which also closed that reactor),
    ``CommandNotHandledError``, or ``ReactorNotFoundError``."""
    sender = _cmd_sender(rt)
    await _command(sender, lambda done: sender.send_user_cmd(reactor_id, cmd, deferred, done),
                   False)


async def call(rt: Union[ReactRuntime, CmdSender], fn: Callable[..., _T], *args: Any) -> _T:
    """Run ``fn(*args)`` on the runtime's thread, between its events, and return its result
    (or raise its exception).  The way to use the runtime itself -- ``rt.local_address()``,
    ``rt.get_context()``, a context's ``send_or_que`` -- from a coroutine when the runtime
    runs on another thread (``attach`` in thread mode, ``ThreadedReactorMgr``); with a
    descriptor attachment that thread is the loop's own, and ``fn`` runs inside the loop's
    next call of ``process_events()``."""
    sender = _cmd_sender(rt)
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[_T] = loop.create_future()
    loop_thread = threading.get_ident()

    def deliver(ok: bool, value: Any) -> None:      # on the loop's thread
        if fut.cancelled():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def run() -> None:                              # on the runtime's thread
        value: Any
        try:
            ok, value = True, fn(*args)
        except BaseException as exc:                # handed to the awaiter, not lost
            ok, value = False, exc
        if threading.get_ident() == loop_thread:
            deliver(ok, value)
            return
        try:
            loop.call_soon_threadsafe(deliver, ok, value)
        except RuntimeError:
            pass                                    # the loop is closed: nobody awaits

    sender.send_call(run)
    return await fut
