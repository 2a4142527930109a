"""ThreadedPingpongReactor: reactio's threaded_pingpong example.

Client and server live on different runtimes (threads) of one ThreadedReactorMgr:
1. the server listens on runtime 0; the listen completion asks runtime 1 to connect;
2. each reactor registers its name in the manager on connect; the server closes its listener;
3. the client sends itself a deferred "StartSending" command (10 ms);
4. on it, the client looks up "server-1", sends it the cross-thread user command
   "TestCmdFromClient", then starts the ping-pong;
5. on close, each reactor removes its own name (owner-checked) and reports it is done.

    python -m reactio.examples.threaded_pingpong --count 1000
"""
from __future__ import annotations

import argparse
import sys
import threading
from typing import Any, Callable, Optional, Sequence

from reactio import (CmdSender, CommandNotHandledError, DefaultTcpListenerHandler, Deferred,
                     DispatchContext, ReactorID)
from reactio.examples.pingpong import (PingpongReactor, ReportFn, format_stats_header,
                                       print_report)
from reactio.threaded import ReactorUID, ThreadedReactorMgr

__all__ = ["ThreadedPingpongReactor", "START_SENDING", "CMD_FROM_CLIENT", "run_threaded_pingpong",
           "main"]

START_SENDING = "StartSending"
CMD_FROM_CLIENT = "TestCmdFromClient"
START_DELAY = 0.010             # the client's deferred self-command, as in reactio
LOOKUP_RETRIES = 100            # the server may not be registered yet: retry every START_DELAY


class ThreadedPingpongReactor(PingpongReactor):
    """A PingpongReactor that registers itself by name with a ThreadedReactorMgr and talks to
    its peer through commands across runtimes."""

    def __init__(self, name: str, runtime_id: int, mgr: ThreadedReactorMgr, *,
                 is_client: bool, server_name: str = "server-1",
                 on_finished: Optional[Callable[["ThreadedPingpongReactor"], None]] = None,
                 **options: Any) -> None:
        super().__init__(name, is_client=is_client, **options)
        self.runtime_id = runtime_id
        self.mgr = mgr
        self.server_name = server_name
        self.on_finished = on_finished
        self.uid: Optional[ReactorUID] = None
        self.commands_received: list[Any] = []     # user commands that reached this reactor
        self.lookup_attempts = 0
        self.peer_uid: Optional[ReactorUID] = None
        self.cross_thread_result: Any = None        # completion of the command to the server
        self.registered = False

    def on_connected(self, ctx: DispatchContext, listener_id: Optional[ReactorID]) -> None:
        self.reactor_id = ctx.reactor_id
        self.uid = ReactorUID(self.runtime_id, ctx.reactor_id)
        self.mgr.add_reactor_uid(self.name, self.uid)   # a duplicate name raises: closes us
        self.registered = True
        if self.close_listener and listener_id is not None:
            ctx.cmd_sender.send_close(listener_id)
        if self.is_client:
            ctx.cmd_sender.send_user_cmd(ctx.reactor_id, START_SENDING,
                                         Deferred.after(START_DELAY))

    def on_command(self, cmd: Any, ctx: DispatchContext) -> None:
        self.commands_received.append(cmd)
        if cmd == START_SENDING and self.is_client:
            self.lookup_attempts += 1
            peer = self.mgr.find_reactor_uid(self.server_name)
            if peer is None:
                if self.lookup_attempts >= LOOKUP_RETRIES:
                    raise LookupError(f"{self.name}: no reactor named {self.server_name!r} "
                                      f"after {self.lookup_attempts} lookups")
                ctx.cmd_sender.send_user_cmd(ctx.reactor_id, START_SENDING,
                                             Deferred.after(START_DELAY))
                return
            self.peer_uid = peer
            self.mgr.send_user_cmd(peer, CMD_FROM_CLIENT, None, self._on_cross_thread_done)
            self.start(ctx)
        elif cmd == CMD_FROM_CLIENT and not self.is_client:
            pass                                    # recorded above: that is the whole test
        else:
            raise CommandNotHandledError(f"{self.name}: unexpected command {cmd!r}")

    def _on_cross_thread_done(self, result: Any) -> None:
        # runs on the server's runtime thread
        self.cross_thread_result = result

    def on_close(self, reactor_id: ReactorID, cmd_sender: CmdSender) -> None:
        if self.registered:
            self.mgr.remove_reactor_name(self.name, self.uid)   # only our own entry
        super().on_close(reactor_id, cmd_sender)
        if self.on_finished is not None:
            self.on_finished(self)


def run_threaded_pingpong(count: int, batch: int = 1000, timeout: float = 30.0,
                          on_report: Optional[ReportFn] = print_report
                          ) -> tuple[ThreadedPingpongReactor, ThreadedPingpongReactor,
                                     ThreadedReactorMgr]:
    """Run the scenario on a 2-runtime manager; returns (client, server, stopped manager).
    Raises the listen/connect error, or TimeoutError."""
    finished: list[ThreadedPingpongReactor] = []
    errors: list[BaseException] = []
    all_done = threading.Event()
    lock = threading.Lock()
    servers: list[ThreadedPingpongReactor] = []

    def finish(reactor: ThreadedPingpongReactor) -> None:
        with lock:
            finished.append(reactor)
            if len(finished) == 2:
                all_done.set()

    def fail(exc: BaseException) -> None:
        errors.append(exc)
        all_done.set()

    with ThreadedReactorMgr(2) as mgr:
        server_rt, client_rt = 0, 1

        def new_server(n: int, _param: Any) -> ThreadedPingpongReactor:
            servers.append(ThreadedPingpongReactor(
                f"server-{n}", server_rt, mgr, is_client=False, latency_batch=batch,
                close_listener=True, on_report=on_report, on_finished=finish))
            return servers[-1]

        client = ThreadedPingpongReactor("myclient", client_rt, mgr, is_client=True,
                                         round_trips=count, latency_batch=batch,
                                         on_report=on_report, on_finished=finish)

        def on_connect(result: Any) -> None:
            if not isinstance(result, ReactorID):
                fail(result)

        def on_listen(result: Any) -> None:
            if not isinstance(result, ReactorID):
                fail(result)
                return
            # runs on runtime 0's thread, which owns that runtime
            addr = mgr.get_runtime(server_rt).local_address(result)
            mgr.get_cmd_sender(client_rt).send_connect(addr, 1024, client, None, on_connect)

        mgr.get_cmd_sender(server_rt).send_listen(
            "127.0.0.1:0", DefaultTcpListenerHandler(new_server, 1024), None, on_listen)
        if not all_done.wait(timeout):
            raise TimeoutError(f"threaded ping-pong did not finish within {timeout} s "
                               f"({client.count_received} of {count} round trips)")
        if errors:
            raise errors[0]
    return client, servers[0], mgr


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reactio.examples.threaded_pingpong",
        description="Ping-pong between a client and a server on two runtimes (threads) of a "
                    "ThreadedReactorMgr, with a deferred self-command, a name lookup and a "
                    "cross-thread user command.")
    parser.add_argument("--count", type=int, default=1000, help="round trips (default 1000)")
    parser.add_argument("--batch", type=int, default=1000,
                        help="samples per reported batch (default 1000)")
    args = parser.parse_args(argv)
    if args.count <= 0 or args.batch <= 0:
        parser.error("--count and --batch must be positive")
    print(f"reactio threaded ping-pong: server on runtime 0, client on runtime 1, "
          f"{args.count} round trips")
    print(format_stats_header(), flush=True)
    try:
        client, server, mgr = run_threaded_pingpong(args.count, args.batch)
    except (OSError, TimeoutError, RuntimeError, LookupError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"client {client.name}: {client.count_received}/{args.count} round trips; found "
          f"{client.server_name!r} at {client.peer_uid} after {client.lookup_attempts} "
          f"lookup(s); cross-thread command completed with {client.cross_thread_result!r}")
    print(f"server {server.name}: commands received {server.commands_received}; echoed "
          f"{server.count_sent}; names left registered: {mgr.count_reactors()}")
    ok = (client.count_received == args.count and CMD_FROM_CLIENT in server.commands_received
          and isinstance(client.cross_thread_result, ReactorID))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
