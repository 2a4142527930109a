"""ThreadedReactorMgr: startup, the name registry, commands across threads, shutdown that runs
every on_close, error isolation, and reactio's test_threaded_pingpong scenario."""
from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Optional

import pytest

from reactio import (DefaultTcpListenerHandler, Deferred, DropMsgSize, DuplicateReactorNameError,
                     ReactorID, ReactorUID, Reactor, RuntimeClosedError, ThreadedReactorMgr)
from reactio.examples.threaded_pingpong import (CMD_FROM_CLIENT, START_SENDING,
                                                ThreadedPingpongReactor, run_threaded_pingpong)

pytestmark = pytest.mark.timeout(30)


# ----------------------------------------------------------------------------- helpers

def wait_for(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.001)


class Sink(Reactor):
    """Records user commands and where its callbacks ran; discards received bytes."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.reactor_id: Optional[ReactorID] = None
        self.connected = threading.Event()
        self.commands: list[Any] = []
        self.closed_on: Optional[str] = None
        self.connected_on: Optional[str] = None

    def on_connected(self, ctx, listener_id):
        self.reactor_id = ctx.reactor_id
        self.connected_on = threading.current_thread().name
        self.connected.set()

    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        return DropMsgSize(len(buf))

    def on_command(self, cmd, ctx):
        self.commands.append(cmd)

    def on_close(self, reactor_id, cmd_sender):
        self.closed_on = threading.current_thread().name


class Listener(DefaultTcpListenerHandler):
    def __init__(self, factory):
        super().__init__(lambda count, param: factory(), 1024)
        self.closed_on: Optional[str] = None

    def on_close_listen(self, reactor_id, cmd_sender):
        self.closed_on = threading.current_thread().name


def listen_on(mgr: ThreadedReactorMgr, runtime_id: int, handler) -> tuple[ReactorID, int]:
    """Start a port-0 listener on one runtime; returns (listener id, port)."""
    result: list[Any] = []

    def done(res):
        # on the runtime's own thread: the one place its runtime may be used
        port = mgr.get_runtime(runtime_id).local_address(res)[1] if isinstance(res, ReactorID) \
            else None
        result.append((res, port))

    mgr.get_cmd_sender(runtime_id).send_listen("127.0.0.1:0", handler, None, done)
    wait_for(lambda: result, what="listen")
    lid, port = result[0]
    assert isinstance(lid, ReactorID), lid
    return lid, port


def connected_pair(mgr: ThreadedReactorMgr, runtime_id: int, name: str, client_cls=None
                   ) -> tuple["Sink", "Sink", ReactorID]:
    """A server and a client Sink on one runtime, both connected; plus the listener id."""
    servers: list[Sink] = []
    listener = Listener(lambda: servers.append(Sink(f"{name}-server")) or servers[-1])
    lid, port = listen_on(mgr, runtime_id, listener)
    client = (client_cls or Sink)(f"{name}-client")
    mgr.get_cmd_sender(runtime_id).send_connect(("127.0.0.1", port), 1024, client)
    assert client.connected.wait(5)
    wait_for(lambda: servers and servers[0].connected.is_set(), what="accept")
    return servers[0], client, lid


# ----------------------------------------------------------------------------- startup

def test_threads_are_named_and_ready_at_once():
    with ThreadedReactorMgr(3) as mgr:
        assert [t.name for t in mgr.threads()] == [f"reactio-runtime-{i}" for i in range(3)]
        assert all(t.is_alive() for t in mgr.threads())
        senders = [mgr.get_cmd_sender(i) for i in range(3)]
        assert len({id(s) for s in senders}) == 3
        with pytest.raises(IndexError):
            mgr.get_cmd_sender(3)
        with pytest.raises(IndexError):
            mgr.get_cmd_sender(-1)
        assert mgr.current_runtime_id() is None
        # a command's completion runs on the target runtime's thread
        seen = []
        for i in range(3):
            senders[i].send_user_cmd(ReactorID(1, 99), "x", None, lambda res, i=i: seen.append(
                (i, threading.current_thread().name, mgr.current_runtime_id())))
        wait_for(lambda: len(seen) == 3)
        assert sorted(seen) == [(i, f"reactio-runtime-{i}", i) for i in range(3)]
    assert not any(t.is_alive() for t in mgr.threads())


def test_start_and_stop_immediately_never_hangs():
    """A stop() right after startup (before a thread reached run_forever) is not lost."""
    for _ in range(25):
        mgr = ThreadedReactorMgr(4)
        mgr.stop()
        mgr.join(timeout=5)


def test_runtime_creation_failure_is_raised():
    with pytest.raises(RuntimeError, match="could not create its runtime") as info:
        ThreadedReactorMgr(2, max_events=0)         # every ReactRuntime() raises ValueError
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(ValueError):
        ThreadedReactorMgr(0)


def test_idle_runtimes_cost_no_cpu():
    """The GIL is released while a runtime waits, and nothing wakes an idle one."""
    with ThreadedReactorMgr(4):
        time.sleep(0.05)                            # let the threads settle in epoll_wait
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(0.5)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
    assert cpu < 0.1 * wall, f"4 idle runtimes used {cpu:.3f} s CPU in {wall:.3f} s"


# ----------------------------------------------------------------------------- name registry

def test_registry_refuses_duplicates_without_overwriting():
    with ThreadedReactorMgr(2) as mgr:
        a = ReactorUID(0, ReactorID(1, 1))
        b = ReactorUID(1, ReactorID(2, 1))
        mgr.add_reactor_uid("svc", a)
        with pytest.raises(DuplicateReactorNameError, match="svc"):
            mgr.add_reactor_uid("svc", b)
        assert mgr.find_reactor_uid("svc") == a          # reactio would now return b
        assert mgr.count_reactors() == 1
        # the loser's cleanup must not remove the winner's entry
        assert mgr.remove_reactor_name("svc", b) is None
        assert mgr.find_reactor_uid("svc") == a
        assert mgr.remove_reactor_name("svc", a) == a
        assert mgr.find_reactor_uid("svc") is None
        assert mgr.remove_reactor_name("svc") is None
        mgr.add_reactor_uid("other", (1, ReactorID(3, 1)))      # a plain tuple is accepted
        assert mgr.find_reactor_uid("other") == ReactorUID(1, ReactorID(3, 1))
        assert mgr.remove_reactor_name("other") == ReactorUID(1, ReactorID(3, 1))
        assert mgr.count_reactors() == 0


def test_registry_under_concurrent_adds():
    """8 threads race to register the same 200 names: each name has exactly one winner, and
    every loser got the error."""
    with ThreadedReactorMgr(1) as mgr:
        wins: list[tuple[str, int]] = []
        losses = []
        barrier = threading.Barrier(8)

        def racer(t: int) -> None:
            barrier.wait()
            for n in range(200):
                try:
                    mgr.add_reactor_uid(f"name-{n}", ReactorUID(t, ReactorID(n, 1)))
                    wins.append((f"name-{n}", t))
                except DuplicateReactorNameError:
                    losses.append(n)

        threads = [threading.Thread(target=racer, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(wins) == 200 and len(losses) == 7 * 200
        for name, t in wins:
            assert mgr.find_reactor_uid(name).runtime_id == t
        assert mgr.count_reactors() == 200


# ----------------------------------------------------------------------------- shutdown

def test_stop_then_join_runs_every_on_close_on_its_own_thread():
    mgr = ThreadedReactorMgr(2)
    pairs = [connected_pair(mgr, i, f"rt{i}") for i in range(2)]
    pending = []
    # a deferred command far in the future: close() must fail its completion
    mgr.get_cmd_sender(1).send_user_cmd(pairs[1][1].reactor_id, "later", Deferred.after(60),
                                        pending.append)
    wait_for(lambda: mgr.get_runtime(1).count_deferred_queue() == 1)
    mgr.stop()
    mgr.join(timeout=5)
    for i, (server, client, lid) in enumerate(pairs):
        assert server.closed_on == f"reactio-runtime-{i}"
        assert client.closed_on == f"reactio-runtime-{i}"
    assert len(pending) == 1 and isinstance(pending[0], RuntimeClosedError)
    assert all(mgr.get_runtime(i).closed for i in range(2))
    with pytest.raises(RuntimeClosedError):
        mgr.get_cmd_sender(0).send_user_cmd(pairs[0][0].reactor_id, "too late")
    mgr.stop()                                      # idempotent
    mgr.join()


def test_context_manager_closes_listeners_and_streams():
    with ThreadedReactorMgr(2) as mgr:
        servers: list[Sink] = []
        listener = Listener(lambda: servers.append(Sink()) or servers[-1])
        lid, port = listen_on(mgr, 1, listener)
        client = Sink()
        mgr.get_cmd_sender(0).send_connect(("127.0.0.1", port), 1024, client)   # cross-runtime
        assert client.connected.wait(5)
        wait_for(lambda: servers and servers[0].connected.is_set())
    assert listener.closed_on == "reactio-runtime-1"
    assert servers[0].closed_on == "reactio-runtime-1"
    assert client.closed_on == "reactio-runtime-0"
    assert not any(t.is_alive() for t in mgr.threads())


def test_join_from_a_runtime_thread_raises_instead_of_deadlocking():
    """reactio's Arc cycle can make a worker thread join itself; ours refuses clearly."""
    with ThreadedReactorMgr(2) as mgr:
        outcome = []

        def in_runtime(_result):
            try:
                mgr.join(timeout=1)
            except RuntimeError as exc:
                outcome.append(exc)
            mgr.stop()                              # stop() is fine from a runtime thread

        mgr.get_cmd_sender(1).send_user_cmd(ReactorID(1, 99), None, None, in_runtime)
        wait_for(lambda: outcome)
        assert "its own thread reactio-runtime-1" in str(outcome[0])
        mgr.join(timeout=5)                         # the stop() above ended every thread


def test_join_timeout():
    mgr = ThreadedReactorMgr(1)
    try:
        with pytest.raises(TimeoutError, match="was stop\\(\\) called"):
            mgr.join(timeout=0.05)
    finally:
        mgr.stop()
        mgr.join(timeout=5)


def test_a_new_thread_with_a_reused_ident_is_not_a_runtime_thread():
    """Issue 16: the OS reuses the idents of ended threads.  After stop()/join(), a new thread
    that happens to get a dead runtime thread's ident is an unrelated thread:
    current_runtime_id() is None there and join() works (it is not "its own thread")."""
    mgr = ThreadedReactorMgr(2)
    worker_idents = {t.ident for t in mgr.threads()}
    mgr.stop()
    mgr.join(timeout=5)
    seen = []

    def probe():
        if threading.get_ident() not in worker_idents:
            return
        seen.append(mgr.current_runtime_id())
        try:
            mgr.join(timeout=1)
            seen.append("joined")
        except Exception as exc:
            seen.append(exc)

    for _ in range(200):            # on Linux a thread's stack, hence its ident, is reused
        t = threading.Thread(target=probe)
        t.start()
        t.join()
        if seen:
            break
    else:
        pytest.skip("no new thread got an ended runtime thread's ident in 200 tries")
    assert seen == [None, "joined"]


# ----------------------------------------------------------------------------- error isolation

class Faulty(Sink):
    def on_command(self, cmd, ctx):
        if cmd == "raise":
            raise ValueError("reactor bug")
        if cmd == "exit":
            raise SystemExit("reactor asked the process to exit")
        super().on_command(cmd, ctx)


def test_reactor_exception_closes_only_that_reactor(expected_errors):
    with ThreadedReactorMgr(1) as mgr:
        servers: list[Sink] = []
        lid, port = listen_on(mgr, 0, Listener(lambda: servers.append(Faulty()) or servers[-1]))
        victim, survivor = Faulty(), Faulty()
        for r in (victim, survivor):
            mgr.get_cmd_sender(0).send_connect(("127.0.0.1", port), 1024, r)
            assert r.connected.wait(5)
        results = []
        mgr.get_cmd_sender(0).send_user_cmd(victim.reactor_id, "raise", None, results.append)
        wait_for(lambda: victim.closed_on is not None)
        mgr.get_cmd_sender(0).send_user_cmd(survivor.reactor_id, "ok", None, results.append)
        wait_for(lambda: len(results) == 2)
        assert isinstance(results[0], ValueError)
        assert results[1] == survivor.reactor_id and survivor.commands == ["ok"]
        assert mgr.threads()[0].is_alive()
    assert expected_errors.matching("ValueError")


def test_unexpected_exception_in_thread_loop_is_logged_closed_and_reported(expected_errors):
    """SystemExit from a callback propagates out of process_events(): the thread logs it,
    still closes its runtime (on_close runs) and join() raises it; other threads go on."""
    mgr = ThreadedReactorMgr(2)
    server, client, lid = connected_pair(mgr, 0, "doomed", client_cls=Faulty)
    other_server, other_client, _ = connected_pair(mgr, 1, "fine")
    mgr.get_cmd_sender(0).send_user_cmd(client.reactor_id, "exit")
    wait_for(lambda: not mgr.threads()[0].is_alive(), what="runtime thread 0 ending")
    assert server.closed_on == client.closed_on == "reactio-runtime-0"
    # runtime 1 is unaffected
    results = []
    mgr.get_cmd_sender(1).send_user_cmd(other_client.reactor_id, "still here", None,
                                        results.append)
    wait_for(lambda: results)
    assert results == [other_client.reactor_id]
    mgr.stop()
    with pytest.raises(RuntimeError, match="reactio-runtime-0 failed: SystemExit") as info:
        mgr.join(timeout=5)
    assert isinstance(info.value.__cause__, SystemExit)
    assert [i for i, _ in mgr.thread_errors] == [0]
    assert other_client.closed_on == "reactio-runtime-1"
    assert expected_errors.matching("runtime thread reactio-runtime-0 failed")


# ----------------------------------------------------------------------------- commands at scale

@pytest.mark.timeout(60)
def test_8_threads_send_10000_commands_each_to_reactors_on_4_runtimes():
    """Every completion runs exactly once (with the target's ReactorID), every command is
    delivered exactly once, and each reactor sees each sender's commands in send order."""
    nruntimes, nsenders, per_sender = 4, 8, 10_000
    with ThreadedReactorMgr(nruntimes) as mgr:
        targets: list[tuple[int, Sink]] = []
        for i in range(nruntimes):
            server, client, _ = connected_pair(mgr, i, f"rt{i}")
            targets += [(i, server), (i, client)]
        completions: list[tuple[int, int, Any]] = []    # list.append is atomic
        barrier = threading.Barrier(nsenders)

        def record(sender: int, seq: int, result: Any) -> None:
            completions.append((sender, seq, result))

        def send_all(sender: int) -> None:
            cmd_senders = [mgr.get_cmd_sender(rt) for rt, _ in targets]
            ids = [r.reactor_id for _, r in targets]
            barrier.wait()
            for seq in range(per_sender):
                t = (seq + sender) % len(targets)
                cmd_senders[t].send_user_cmd(ids[t], (sender, seq), None,
                                             functools.partial(record, sender, seq))

        threads = [threading.Thread(target=send_all, args=(s,)) for s in range(nsenders)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        total = nsenders * per_sender
        wait_for(lambda: len(completions) >= total, timeout=40, what="all completions")
        time.sleep(0.05)                                # a duplicate would show up by now

        assert len(completions) == total
        assert len({(s, q) for s, q, _ in completions}) == total
        by_target = {r.reactor_id: r for _, r in targets}
        for s, q, result in completions:
            t = (q + s) % len(targets)
            assert result == targets[t][1].reactor_id, (s, q, result)
        for t, (rt, reactor) in enumerate(targets):
            assert reactor.reactor_id in by_target
            for s in range(nsenders):
                seqs = [q for (snd, q) in reactor.commands if snd == s]
                expected = [q for q in range(per_sender) if (q + s) % len(targets) == t]
                assert seqs == expected, f"target {t}, sender {s}: lost, duplicated or reordered"
        assert sum(len(r.commands) for _, r in targets) == total


# ----------------------------------------------------------------------------- reactio's test

def test_threaded_pingpong():
    """reactio's test_threaded_pingpong: listener on runtime 0, whose completion connects from
    runtime 1; the client uses a deferred self-command, a name lookup and a cross-thread user
    command, then ping-pongs 5 times; both reactors close and unregister."""
    reports = []
    client, server, mgr = run_threaded_pingpong(
        5, batch=1000, timeout=10,
        on_report=lambda reactor, batch, stats: reports.append((reactor.name, stats.count)))
    assert client.count_received == 5 and client.closed and server.closed
    assert client.commands_received[-1] == START_SENDING
    assert server.commands_received == [CMD_FROM_CLIENT]
    assert client.peer_uid == ReactorUID(0, server.reactor_id)
    assert client.cross_thread_result == server.reactor_id     # completion of the command
    assert client.uid.runtime_id == 1 and server.uid.runtime_id == 0
    assert mgr.count_reactors() == 0                            # both names removed
    assert sorted(reports) == [("myclient", 5), ("server-1", 4)]   # final partial batches
    assert not any(t.is_alive() for t in mgr.threads())


def test_threaded_pingpong_name_clash_does_not_steal_the_entry(expected_errors):
    """A second reactor registering a taken name is refused (and closed); its on_close does not
    remove the owner's entry."""
    with ThreadedReactorMgr(2) as mgr:
        owner = ReactorUID(0, ReactorID(7, 7))
        mgr.add_reactor_uid("server-1", owner)
        finished = threading.Event()
        servers = []

        def new_server(count, _param):
            servers.append(ThreadedPingpongReactor("server-1", 0, mgr, is_client=False,
                                                   on_report=None,
                                                   on_finished=lambda r: finished.set()))
            return servers[-1]

        lid, port = listen_on(mgr, 0, DefaultTcpListenerHandler(new_server, 1024))
        intruder = Sink()
        mgr.get_cmd_sender(1).send_connect(("127.0.0.1", port), 1024, intruder)
        assert finished.wait(5)
        assert isinstance(servers[0].close_error, DuplicateReactorNameError)
        assert mgr.find_reactor_uid("server-1") == owner
    assert expected_errors.matching("already registered")


def test_forgotten_manager_is_stopped_at_exit():
    """A manager nobody stopped does not block interpreter exit, and its reactors' on_close
    still runs then."""
    script = textwrap.dedent("""
        import time
        from reactio import DefaultTcpListenerHandler, DropMsgSize, Reactor, ThreadedReactorMgr

        class R(Reactor):
            def on_inbound_message(self, buf, new_bytes, decoded, ctx):
                return DropMsgSize(len(buf))
            def on_close(self, reactor_id, cmd_sender):
                print("on_close", flush=True)

        mgr = ThreadedReactorMgr(1)
        ports = []
        mgr.get_cmd_sender(0).send_listen(
            "127.0.0.1:0", DefaultTcpListenerHandler(lambda count, param: R(), 1024), None,
            lambda lid: ports.append(mgr.get_runtime(0).local_address(lid)[1]))
        while not ports:
            time.sleep(0.001)
        done = []
        mgr.get_cmd_sender(0).send_connect(("127.0.0.1", ports[0]), 1024, R(), None, done.append)
        while not done:
            time.sleep(0.001)
        del mgr
        print("main done", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["main done", "on_close", "on_close"], proc.stdout
