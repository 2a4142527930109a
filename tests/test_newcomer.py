"""Issue 13: what a newcomer meets first.  The three newcomer programs (a line-based chat
server, a client to a dead port, a periodic timer) are docs examples run by tests/test_docs.py;
this file pins the behaviour they rely on and the messages a newcomer reads when something goes
wrong, and keeps the docs from teaching what deadlocks or hides failures.
"""
from __future__ import annotations

import ast
import errno
import inspect
import logging
import pydoc
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import reactio
from reactio import (DefaultTcpListenerHandler, DropMsgSize, ReactorClosedError,
                     ReactorID, ReactRuntime, Reactor, SendQueueOverflowError)

from conftest import Completion, SinkReactor, connect, listen_factory, pump_until

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
_PY_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def python_blocks():
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for m in _PY_BLOCK.finditer(text):
            yield f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}", m.group(1)


def dead_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder(Reactor):
    def __init__(self):
        self.events = []

    def on_connected(self, ctx, listener_id):
        self.events.append("on_connected")

    def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
        return DropMsgSize(len(buf))

    def on_close(self, reactor_id, cmd_sender):
        self.events.append("on_close")


# ----------------------------------------------------------------------- item 1: failed connects

def test_failed_connect_without_completion_logs_one_error_naming_the_address(
        rt, expected_errors, caplog):
    port = dead_port()
    client = Recorder()
    with caplog.at_level(logging.DEBUG, logger="reactio"):
        rt.cmd_sender.send_connect(("127.0.0.1", port), 4096, client)
        pump_until(rt, lambda: client.close_error is not None)
        rt.process_events(0.01)
    errors = [r for r in caplog.records if r.name == "reactio" and r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "127.0.0.1" in message and str(port) in message, message
    assert "ConnectionRefusedError" in message, message     # (the text of errno is the OS's)
    assert client.events == []                      # neither on_connected nor on_close
    assert isinstance(client.close_error, ConnectionRefusedError)
    assert expected_errors.messages == [message]


def test_failed_connect_with_a_completion_is_not_logged_and_runs_no_callback(rt, caplog):
    port = dead_port()
    client = Recorder()
    done = Completion()
    with caplog.at_level(logging.DEBUG, logger="reactio"):
        rt.cmd_sender.send_connect(f"127.0.0.1:{port}", 4096, client, None, done)
        pump_until(rt, lambda: done.done)
    assert isinstance(done.result, ConnectionRefusedError)
    assert str(port) in str(done.result)
    assert client.close_error is done.result
    assert client.events == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_send_listen_on_a_port_in_use_names_the_address(rt):
    _, port = listen_factory(rt, SinkReactor)
    done = Completion()
    rt.cmd_sender.send_listen(("127.0.0.1", port), DefaultTcpListenerHandler(
        lambda n, p: SinkReactor()), None, done)
    pump_until(rt, lambda: done.done)
    err = done.result
    assert isinstance(err, OSError) and err.errno == errno.EADDRINUSE, repr(err)
    assert "127.0.0.1" in str(err) and str(port) in str(err), str(err)


# ------------------------------------------------------------------ limits and close, in the log

def _open_pair(rt, **options):
    """(client ctx, the raw server-side peer's reactor) over loopback."""
    servers = []

    def make():
        servers.append(SinkReactor())
        return servers[-1]

    _, port = listen_factory(rt, make)
    rid = connect(rt, port, SinkReactor(), **options)
    assert isinstance(rid, ReactorID), rid
    pump_until(rt, lambda: servers)
    return rt.get_context(rid)


def test_a_single_send_larger_than_max_send_queue_says_so(rt, expected_errors, caplog):
    ctx = _open_pair(rt)
    big = bytes(100 * 1024 * 1024)
    with caplog.at_level(logging.INFO, logger="reactio"):
        with pytest.raises(SendQueueOverflowError) as info:
            ctx.send_or_que(big)
        pump_until(rt, lambda: expected_errors.messages)
    text = str(info.value)
    assert f"one send of {len(big)} bytes is larger than max_send_queue" in text, text
    assert f"max_send_queue={rt.max_send_queue}" in text, text
    # the stream is closed by it, with one ERROR line that carries the same explanation
    assert not ctx.is_open
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "larger than max_send_queue" in errors[0], errors


def test_close_with_unsent_bytes_warns_with_the_byte_count(caplog):
    rt = ReactRuntime()
    try:
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        lst.setblocking(False)
        port = lst.getsockname()[1]
        rid = connect(rt, port, SinkReactor())
        assert isinstance(rid, ReactorID), rid
        peer = None
        while peer is None:                          # accepted, and never read
            try:
                peer, _ = lst.accept()
            except BlockingIOError:
                rt.process_events(0.005)
        ctx = rt.get_context(rid)
        ctx.send_or_que(bytes(8 * 1024 * 1024))      # more than loopback's buffers take
        queued = ctx.send_queue_size
        assert queued > 0
        with caplog.at_level(logging.WARNING, logger="reactio"):
            rt.close()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                    and "unsent bytes" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
        m = re.search(r"(\d+) unsent bytes of (\d+) stream", warnings[0].getMessage())
        assert m, warnings[0].getMessage()
        assert 0 < int(m.group(1)) <= queued and m.group(2) == "1"
    finally:
        rt.close()
        lst.close()
        if peer is not None:
            peer.close()


# ------------------------------------------------------------- item 4: another stream's context

def test_another_streams_ctx_on_the_runtime_thread_sends_until_it_closes(rt):
    """What docs/reactor.md#talking-to-other-reactors promises."""
    received = []

    class Collect(Reactor):
        def on_inbound_message(self, buf, new_bytes, decoded_msg_size, ctx):
            received.append(bytes(buf))
            return DropMsgSize(len(buf))

    servers = []

    def make():
        servers.append(Collect())
        return servers[-1]

    _, port = listen_factory(rt, make)
    a = connect(rt, port, SinkReactor())
    b = connect(rt, port, SinkReactor())
    ctx_b = rt.get_context(b)

    relayed = Completion()
    # from a completion of the same runtime (its thread): b's ctx is usable
    rt.cmd_sender.send_call(lambda: ctx_b.send_or_que(b"via b"), None, relayed)
    pump_until(rt, lambda: relayed.done and b"".join(received) == b"via b")
    assert relayed.result == reactio.SendOrQueResult.COMPLETE
    rt.cmd_sender.send_close(b)
    pump_until(rt, lambda: rt.get_context(b) is None)
    assert not ctx_b.is_open
    with pytest.raises(ReactorClosedError):
        ctx_b.send_or_que(b"too late")
    assert rt.get_context(a) is not None                # the others are untouched


# -------------------------------------------------------------------- item 5: docs and examples

def test_readme_explains_the_reactor_id_its_example_prints_and_its_1024():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    code = next(code for where, code in python_blocks() if where.startswith("README.md"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"^connected: (\d+:\d+)$", proc.stdout, re.M)
    assert m, proc.stdout
    assert f"`connected: {m.group(1)}`" in text           # the output the prose explains
    assert "slot:generation" in text and "ReactorID" in text
    assert ", 1024, " in code and "`1024`" in text and "recv_buffer_min_size" in text


@pytest.mark.skipif(sys.platform == "win32", reason="the bench harness is Linux-only")
def test_bench_page_gives_both_install_commands_and_the_scale_duration():
    from reactio.bench import cli
    text = (ROOT / "docs" / "bench.md").read_text(encoding="utf-8")
    assert "pip install 'reactio[bench]'" in text and "pip install '.[bench]'" in text
    duration = cli._parser().parse_args(["scale"]).duration
    assert f"**{duration:g} s** by default" in text, duration


@pytest.mark.skipif(sys.platform == "win32", reason="the bench harness is Linux-only")
def test_plot_title_is_wrapped_to_the_figure():
    from reactio.bench import plot
    line = ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz, 2 CPUs, Linux 6.18.44-fc-v669, "
            "Python 3.11.7, reactio 0.1.0, uvloop not installed")
    wrapped = plot._wrap_title(line, 7.0)
    lines = wrapped.split("\n")
    assert len(lines) == 2, lines
    assert ", ".join(lines) == line                   # nothing lost, broken at separators
    assert plot._wrap_title(line, 14.0) == line       # a wide figure keeps one line


@pytest.mark.skipif(sys.platform == "win32", reason="the bench harness is Linux-only")
def test_plot_title_fits_inside_the_png(tmp_path):
    pytest.importorskip("matplotlib")
    from reactio.bench import plot
    legs = [{"leg": leg, "status": "ok", "latency_us": {"p50": p50}, "ratio_p50": p50 / 12,
             "nines_curve": [(0.0, p50), (0.9, p50 * 1.2), (0.99, p50 * 2), (1.0, p50 * 5)]}
            for leg, p50 in (("c", 12.0), ("reactio-py", 13.0), ("asyncio", 50.0))]
    seen = {}
    import matplotlib.figure
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        seen["fig"] = fig.bbox.bounds
        seen["title"] = fig._suptitle.get_window_extent(renderer).bounds
        return real_savefig(fig, *args, **kwargs)

    title = ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz, 2 CPUs, Linux 6.18.44-fc-v669, "
             "Python 3.11.7, reactio 0.1.0, uvloop not installed")
    matplotlib.figure.Figure.savefig = savefig
    try:
        plot.plot_pingpong({"results": [{"size": 64, "legs": legs}]}, str(tmp_path / "p.png"),
                           title)
    finally:
        matplotlib.figure.Figure.savefig = real_savefig
    fx, fy, fw, fh = seen["fig"]
    tx, ty, tw, th = seen["title"]
    assert fx <= tx and tx + tw <= fx + fw, (seen, "the title is clipped left or right")
    assert ty + th <= fy + fh, (seen, "the title is clipped at the top")
    assert (tmp_path / "p.png").stat().st_size > 0


# what blocks a thread that runs the loop: a blocking connect, send or receive on a plain socket
_BLOCKING = re.compile(r"create_connection\(|\.sendall\(|\.settimeout\(|\.makefile\(")


@pytest.mark.parametrize("where,code", list(python_blocks()), ids=[w for w, _ in python_blocks()])
def test_docs_examples_use_only_non_blocking_sockets(where, code):
    if "socket" not in code:
        return
    found = _BLOCKING.findall(code)
    assert not found, f"{where}: blocking socket calls {found} (use a non-blocking socket)"
    if re.search(r"socket\.socket\(", code) and ".connect_ex(" in code:
        assert "setblocking(False)" in code, f"{where}: a socket that connects must be " \
                                             "non-blocking"


def _send_connect_calls(code):
    for node in ast.walk(ast.parse(code)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "send_connect"):
            yield node


@pytest.mark.parametrize("where,code", list(python_blocks()), ids=[w for w, _ in python_blocks()])
def test_docs_examples_that_connect_handle_failure(where, code):
    """Every connect has a completion, and the example looks for an exception in a result (a
    call whose line says "# no completion" shows the failure log on purpose)."""
    lines = code.splitlines()
    calls = [c for c in _send_connect_calls(code) if "# no completion" not in lines[c.lineno - 1]]
    for call in calls:
        has_completion = len(call.args) >= 5 or any(k.arg == "on_completion"
                                                    for k in call.keywords)
        assert has_completion, f"{where}:{call.lineno}: send_connect without a completion"
    if calls:
        assert re.search(r"isinstance\([^)]*BaseException\)|isinstance\([^)]*Error\)", code), \
            f"{where}: no completion checks for an exception"


# ------------------------------------------------------------- item 6: introspection

def test_runtime_signature_is_inspectable():
    sig = inspect.signature(ReactRuntime)
    assert list(sig.parameters) == ["max_send_queue", "max_msg_size", "high_water",
                                    "low_water", "drain_timeout", "max_events"]
    with ReactRuntime() as rt:
        for name in ("max_send_queue", "max_msg_size", "high_water", "low_water",
                     "drain_timeout"):
            assert sig.parameters[name].default == getattr(rt, name), name


def test_help_of_reactor_shows_no_cython_pickle_noise():
    text = pydoc.render_doc(Reactor, renderer=pydoc.plaintext)
    assert "__reduce_cython__" not in text and "__setstate_cython__" not in text, text
