"""The reactio legs: a Python ``Reactor`` subclass (reactio-py), a Cython one (reactio-cy), and
the Python one driven by uvloop through ``reactio.aio.attach`` (reactio-aio).

reactio-py and reactio-cy run the same loop shape a user would write: one ``ReactRuntime``
per process, a listener (server) or a connect (client), then ``rt.run()`` until the
runtime is idle (the loop never returns to Python between events). Blocking mode waits in
epoll without a time limit (``run(-1)``), like the C floor; ``--spin`` busy-polls
(``run(busy_poll=True)``). reactio-aio runs the very same
reactors with the runtime attached to a uvloop event loop (``reactio.aio.attach``: uvloop
waits in its own epoll, which watches the runtime's) and awaits ``aio.listen`` /
``aio.connect``; like the asyncio legs it ignores ``--spin``. It is the one leg that is not
symmetric: its pingpong client is reactio-py's (``run_forever`` loop), so that reactio-aio
and reactio-py differ only in how the server's runtime is driven, and the ratio of the two
is the cost of serving through ``attach`` (what issue 15's target is about).

The server accepts N connections, then closes its listener; when the last connection
closes the runtime is idle and the process exits. The client closes its connection after
the last round trip, with the same effect.

The Python reactors (``_pyecho``) are the code a performance-aware user writes with the
public API: framing on the memoryview ``buf``, the echo handed to ``send_or_que`` without a
copy. The Cython reactors live in ``_cyecho.pyx`` and use the zero-object path
(``on_inbound_raw``, ``send_raw``). Both are imported only when a server or client runs, so
importing this module needs no reactio.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Awaitable, Callable, List, Optional, Union

from . import tls
from .worker import Recorder

if TYPE_CHECKING:
    from reactio import DispatchContext, Reactor, ReactorID, ReactRuntime, TcpListenerHandler

    from ._cyecho import CyPingClient
    from ._pyecho import PyPingClient


def check(leg: str) -> None:
    """Raise (ImportError, usually) when ``leg`` cannot run here."""
    import reactio  # noqa: F401
    from reactio import ReactRuntime  # noqa: F401
    if leg == "reactio-cy":
        try:
            from . import _cyecho  # noqa: F401
        except ImportError as e:
            raise ImportError(f"the Cython reactors (reactio.bench._cyecho) are not compiled "
                              f"in this install ({e})") from None
    if leg == "reactio-aio":
        from reactio import aio  # noqa: F401
        try:
            import uvloop  # noqa: F401
        except ImportError as e:
            raise ImportError(f"uvloop is not installed here (pip install uvloop): {e}") from None


class _ServerState:
    """Shared by a server's reactors: stop listening once ``target`` connections came in."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.accepted = 0

    def on_accept(self, ctx: DispatchContext, listener_id: Optional[ReactorID]) -> None:
        self.accepted += 1
        if self.accepted == self.target and listener_id is not None:
            ctx.cmd_sender.send_close(listener_id)


def _listen(rt: ReactRuntime, handler: TcpListenerHandler, unix: Optional[str] = None) -> int:
    """Start listening on 127.0.0.1, port 0, or on the Unix socket ``unix``; returns the port
    (0 for a Unix socket)."""
    from reactio import Deferred
    result: List[Union[ReactorID, BaseException]] = []
    addr = f"unix:{unix}" if unix else ("127.0.0.1", 0)
    rt.cmd_sender.send_listen(addr, handler, Deferred.IMMEDIATE, result.append)
    deadline = time.monotonic() + 30
    while not result:
        if time.monotonic() > deadline:
            raise TimeoutError("listen did not complete")
        rt.process_events(0.1)
    listener = result[0]
    if isinstance(listener, BaseException):
        raise listener
    return 0 if unix else rt.local_address(listener)[1]


def _run(rt: ReactRuntime, spin: bool) -> None:
    """Until the runtime is idle, the loop in C between events: blocking waits, or with
    ``spin`` a busy poll (``run(busy_poll=True)``)."""
    if spin:
        rt.run(busy_poll=True)
    else:
        rt.run(-1.0)


def serve(leg: str, conns: int, spin: bool, announce: Callable[[int], None],
          unix: Optional[str] = None) -> None:
    from reactio import DefaultTcpListenerHandler, ReactRuntime
    if leg == "reactio-aio":
        return _aio_serve(conns, announce, unix)
    state = _ServerState(conns)
    factory: Callable[[int, object], Reactor]
    if leg == "reactio-cy":
        from ._cyecho import CyEchoServer
        factory = lambda count, param: CyEchoServer(state)  # noqa: E731
    else:
        from ._pyecho import PyEchoServer
        factory = lambda count, param: PyEchoServer(state)  # noqa: E731
    with ReactRuntime() as rt:
        handler = DefaultTcpListenerHandler(factory, 4096, None, backlog=4096,
                                            ssl=tls.server_context())
        announce(_listen(rt, handler, unix))
        _run(rt, spin)


def serve_workers(leg: str, workers: int, spin: bool, announce: Callable[[int], None],
                  timeout: int) -> None:
    """``workers`` processes sharing one port (reuse_port=True), until SIGTERM: reactio-py and
    reactio-cy through ``reactio.workers.run`` (their runtimes in ``run_forever``; --spin does
    not apply), reactio-aio with the harness's own fork loop, each worker attached to
    uvloop."""
    from reactio import DefaultTcpListenerHandler, ReactRuntime, workers as rworkers
    state = _ServerState(1 << 62)       # never closes its listener: SIGTERM ends the run
    factory: Callable[[int, object], Reactor]
    if leg == "reactio-cy":
        from ._cyecho import CyEchoServer
        factory = lambda count, param: CyEchoServer(state)  # noqa: E731
    else:
        from ._pyecho import PyEchoServer
        factory = lambda count, param: PyEchoServer(state)  # noqa: E731

    def handler() -> TcpListenerHandler:
        return DefaultTcpListenerHandler(factory, 4096, None, backlog=4096, reuse_port=True)

    if leg == "reactio-aio":
        from .worker import run_forked

        def serve_on(port: int, ready: Callable[[], None]) -> None:
            import asyncio

            from reactio import aio

            async def main() -> None:
                with ReactRuntime() as rt, aio.attach(rt):
                    await aio.listen(rt, ("127.0.0.1", port), handler())
                    ready()
                    await asyncio.Event().wait()            # until SIGTERM

            _uvloop_run(main)

        run_forked(workers, serve_on, announce, timeout)
        return

    from .worker import ReadyPipe
    holder = rworkers.reserve_port("127.0.0.1")
    port = holder.getsockname()[1]
    pipe = ReadyPipe()

    def setup(rt: ReactRuntime) -> None:
        def listening(result: Union[ReactorID, BaseException]) -> None:
            if isinstance(result, BaseException):
                raise SystemExit(f"worker cannot listen on port {port}: {result}")
            pipe.ready()
            me = rworkers.current_worker()
            if me is not None and me.index == 0 and me.restarts == 0:
                # The parent is inside workers.run(): worker 0 announces the port (on the
                # stdout they share) once every worker listens.
                pipe.wait(workers)
                announce(port)

        rt.cmd_sender.send_listen(("127.0.0.1", port), handler(), None, listening)

    try:
        # max_restarts=0: a crash is a failed run, not something to ride out
        rworkers.run(setup, workers=workers, max_restarts=0, stop_timeout=5.0)
    finally:
        holder.close()
        pipe.close()


def ping(leg: str, port: int, size: int, rec: Recorder, spin: bool,
         unix: Optional[str] = None) -> None:
    from reactio import Deferred, ReactRuntime
    if leg == "reactio-aio":
        leg = "reactio-py"          # the same client: only the server differs (module doc)
    errors: List[BaseException] = []
    client: Union[CyPingClient, PyPingClient]
    if leg == "reactio-cy":
        from ._cyecho import CyPingClient
        client = CyPingClient(size, rec, errors)
    else:
        from ._pyecho import PyPingClient
        client = PyPingClient(size, rec, errors)
    connected: List[Union[ReactorID, BaseException]] = []
    with ReactRuntime() as rt:
        addr = f"unix:{unix}" if unix else ("127.0.0.1", port)
        rt.cmd_sender.send_connect(addr, max(4096, 2 * size), client,
                                   Deferred.IMMEDIATE, connected.append,
                                   ssl=tls.client_context())
        _run(rt, spin)
    if connected and isinstance(connected[0], BaseException):
        raise connected[0]
    if errors:
        raise errors[0]
    if client.i < rec.total:
        raise RuntimeError("the runtime went idle before the last round trip")


# ---------------------------------------------------------------------- reactio-aio

def _uvloop_run(main: Callable[[], Awaitable[None]]) -> None:
    import uvloop
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def _aio_serve(conns: int, announce: Callable[[int], None], unix: Optional[str]) -> None:
    """The reactio-py server, its runtime attached to uvloop: returns once ``conns``
    connections were accepted and closed."""
    import asyncio

    from reactio import DefaultTcpListenerHandler, ReactRuntime, aio

    from ._pyecho import PyEchoServer

    async def main() -> None:
        done = asyncio.get_running_loop().create_future()
        state = _ServerState(conns)
        closed = [0]

        class Server(PyEchoServer):
            def on_close(self, reactor_id: ReactorID, cmd_sender: object) -> None:
                closed[0] += 1
                if closed[0] == conns and not done.done():
                    done.set_result(None)   # (on_close runs on the loop's thread)

        with ReactRuntime() as rt:
            with aio.attach(rt):
                handler = DefaultTcpListenerHandler(lambda count, param: Server(state), 4096,
                                                    None, backlog=4096,
                                                    ssl=tls.server_context())
                lid = await aio.listen(rt, f"unix:{unix}" if unix else ("127.0.0.1", 0),
                                       handler)
                announce(0 if unix else rt.local_address(lid)[1])
                await done

    _uvloop_run(main)
