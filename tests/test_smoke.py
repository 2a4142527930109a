"""The quick subset: what must hold for every built wheel (cibuildwheel's test-command and
tools/build-dist.sh run this file against the installed package).  A few seconds, loopback
only, standard library only.

With REACTIO_SMOKE_INSTALLED=1 the test also insists that reactio was imported from an
installed wheel, not from a source tree on sys.path.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import sysconfig
import threading
import time
from typing import Any, List, Optional, Tuple, Union

import pytest

import reactio
from reactio import (DefaultTcpListenerHandler, Deferred, DispatchContext, DropMsgSize,
                     ExpectMsgSize, MessageResult, ReactorID, ReactRuntime, Reactor)

pytestmark = pytest.mark.timeout(60)

PKG_DIR = os.path.dirname(os.path.abspath(reactio.__file__))


def pump(rt: ReactRuntime, pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        rt.process_events(0.005)


# ------------------------------------------------------------------------------ the package

def test_version_is_the_distribution_version():
    from importlib import metadata
    assert reactio.__version__ == metadata.version("reactio")


def test_python_m_reactio_version():
    out = subprocess.run([sys.executable, "-m", "reactio", "--version"], capture_output=True,
                         text=True, timeout=60, cwd=os.path.dirname(PKG_DIR))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == reactio.__version__


def test_public_names_are_importable():
    for name in reactio.__all__:
        assert getattr(reactio, name) is not None, name
    for mod in ("reactio.errors", "reactio.listener", "reactio.utils", "reactio.simpleio",
                "reactio.threaded", "reactio.examples.pingpong", "reactio.aio",
                "reactio.workers", "reactio.examples.aio_status"):
        importlib.import_module(mod)


def test_typing_and_cython_api_files_are_installed():
    # py.typed + stubs for type checkers; _core.pxd for `cimport reactio._core`
    for name in ("py.typed", "_core.pyi", "listener.pyi", "_core.pxd"):
        assert os.path.isfile(os.path.join(PKG_DIR, name)), name


def test_extension_is_compiled():
    core = sys.modules["reactio._core"]
    assert core.__file__ is not None
    assert core.__file__.endswith((".so", ".pyd")), core.__file__


@pytest.mark.skipif(not sysconfig.get_config_var("Py_GIL_DISABLED"),
                    reason="a free-threaded CPython (3.13t, 3.14t) only")
def test_free_threaded_build_keeps_the_gil_disabled():
    # every extension module declares freethreading_compatible (Py_mod_gil): importing them
    # must not turn the GIL back on (the interpreter would, with a RuntimeWarning)
    code = ("import importlib.util, sys, reactio\n"
            "if importlib.util.find_spec('reactio.bench._cyecho'):\n"
            "    import reactio.bench._cyecho\n"
            "print(sys._is_gil_enabled())")
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], env=env,
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, "False"), out.stderr[-2000:]


@pytest.mark.skipif(os.environ.get("REACTIO_SMOKE_INSTALLED") != "1",
                    reason="set REACTIO_SMOKE_INSTALLED=1 when testing an installed wheel")
def test_imported_from_an_installed_wheel():
    assert "site-packages" in PKG_DIR.replace(os.sep, "/"), PKG_DIR
    assert not os.path.exists(os.path.join(PKG_DIR, "_core.pyx")), "wheel ships Cython sources"


# ------------------------------------------------------------------------------ the runtime

def split_message(buf: memoryview) -> Tuple[Optional[MessageResult], int]:
    """u16 little-endian length + body: (ExpectMsgSize, 0) while the message at the start of
    ``buf`` is incomplete, else (None, its size)."""
    if len(buf) < 2:
        return ExpectMsgSize(0), 0
    n = 2 + int.from_bytes(buf[:2], "little")
    if n > len(buf):
        return ExpectMsgSize(n), 0
    return None, n


class Echo(Reactor):
    """u16 little-endian length + body; echoes every message."""

    def on_inbound_message(self, buf: memoryview, new_bytes: int, decoded_msg_size: int,
                           ctx: DispatchContext) -> MessageResult:
        partial, n = split_message(buf)
        if partial is not None:
            return partial
        ctx.send_or_que(buf[:n])
        return DropMsgSize(n)


class Client(Reactor):
    def __init__(self, messages: List[bytes]) -> None:
        self.to_send = messages
        self.echoed: List[bytes] = []
        self.closed_with: Optional[Union[BaseException, str]] = "open"
        self.commands: List[Any] = []

    def on_connected(self, ctx: DispatchContext, listener_id: Optional[ReactorID]) -> None:
        for m in self.to_send:                       # several messages in one burst
            ctx.send_or_que(len(m).to_bytes(2, "little") + m)

    def on_inbound_message(self, buf: memoryview, new_bytes: int, decoded_msg_size: int,
                           ctx: DispatchContext) -> MessageResult:
        partial, n = split_message(buf)
        if partial is not None:
            return partial
        self.echoed.append(bytes(buf[2:n]))
        if len(self.echoed) == len(self.to_send):
            ctx.close()
        return DropMsgSize(n)

    def on_command(self, cmd: Any, ctx: DispatchContext) -> None:
        self.commands.append(cmd)

    def on_close(self, reactor_id: ReactorID, cmd_sender: Any) -> None:
        self.closed_with = self.close_error


def start_listener(rt: ReactRuntime, factory) -> int:
    result: list = []
    rt.cmd_sender.send_listen("127.0.0.1:0", DefaultTcpListenerHandler(factory), None,
                              result.append)
    pump(rt, lambda: result)
    assert isinstance(result[0], ReactorID), result[0]
    return rt.local_address(result[0])[1]


def test_echo_round_trip_over_loopback():
    msgs = [b"hello", b"", b"x" * 5000, bytes(range(256))]
    client = Client(msgs)
    with ReactRuntime() as rt:
        port = start_listener(rt, lambda count, param: Echo())
        done: list = []
        rt.cmd_sender.send_connect(("127.0.0.1", port), 1024, client, None, done.append)
        pump(rt, lambda: client.closed_with != "open")
        assert isinstance(done[0], ReactorID)
        assert client.echoed == msgs
        assert client.closed_with is None           # an orderly close
        pump(rt, lambda: rt.count_streams() == 0)   # the server side saw EOF and closed
        assert rt.count_reactors() == 1             # the listener


def test_deferred_and_cross_thread_commands():
    client = Client([])                             # sends nothing, stays connected
    with ReactRuntime() as rt:
        port = start_listener(rt, lambda count, param: Echo())
        done: list = []
        rt.cmd_sender.send_connect(f"127.0.0.1:{port}", 1024, client, Deferred.IMMEDIATE,
                                   done.append)
        pump(rt, lambda: done)
        rid = done[0]
        assert isinstance(rid, ReactorID)
        sender = rt.cmd_sender
        completions: list = []
        # deferred commands run in due order, whatever the send order
        sender.send_user_cmd(rid, "late", Deferred.after(0.03), completions.append)
        sender.send_user_cmd(rid, "early", Deferred.after(0.01), completions.append)
        pump(rt, lambda: rt.count_deferred_queue() == 2)
        # a command from another thread wakes a loop blocked in process_events
        t = threading.Timer(0.05, lambda: sender.send_user_cmd(rid, "from-thread"))
        t.start()
        started = time.monotonic()
        while len(client.commands) < 3:
            rt.process_events(5.0)
            assert time.monotonic() - started < 5.0
        t.join()
        assert client.commands == ["early", "late", "from-thread"]
        assert completions == [rid, rid]
        # a stale id is refused with an exception passed to the completion
        sender.send_close(rid)
        pump(rt, lambda: client.closed_with != "open")
        stale: list = []
        sender.send_user_cmd(rid, "nobody", None, stale.append)
        pump(rt, lambda: stale)
        assert isinstance(stale[0], reactio.ReactorNotFoundError)


def test_threaded_manager_starts_and_stops():
    from reactio.threaded import ThreadedReactorMgr
    with ThreadedReactorMgr(2) as mgr:
        assert mgr.nthreads == 2
        got = threading.Event()
        results: list = []

        def on_listen(result: object) -> None:
            results.append(result)
            got.set()

        mgr.get_cmd_sender(1).send_listen("127.0.0.1:0",
                                          DefaultTcpListenerHandler(lambda c, p: Echo()),
                                          None, on_listen)
        assert got.wait(5.0)
        assert isinstance(results[0], ReactorID)
