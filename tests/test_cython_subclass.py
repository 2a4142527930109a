"""A Cython subclass of Reactor, compiled at test time against the installed reactio .pxd,
echoes messages with a number of Python allocations that does not grow with the count; and
send_raw refuses a negative length (issue 16, item 13)."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from importlib.machinery import EXTENSION_SUFFIXES

import pytest

import reactio
from reactio import Deferred, ReactRuntime

from support.runtime import Completion, listen_factory, pump_until
from support.subproc import TESTS, child_env

pytestmark = pytest.mark.timeout(240)

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def cy_module(tmp_path_factory):
    pytest.importorskip("Cython")
    build = tmp_path_factory.mktemp("cybuild")
    src = os.path.join(HERE, "cython", "cy_echo_reactor.pyx")
    (build / "cy_echo_reactor.pyx").write_bytes(open(src, "rb").read())
    pkg_root = os.path.dirname(os.path.dirname(reactio.__file__))
    (build / "setup.py").write_text(textwrap.dedent(f"""
        from setuptools import setup, Extension
        from Cython.Build import cythonize
        setup(ext_modules=cythonize(
            [Extension("cy_echo_reactor", ["cy_echo_reactor.pyx"])],
            include_path=[{pkg_root!r}], language_level=3, quiet=True))
    """))
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=build,
                          capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    built = [p for p in build.iterdir() if p.name.startswith("cy_echo_reactor.")
             and p.name.endswith(tuple(EXTENSION_SUFFIXES))]
    assert len(built) == 1, sorted(p.name for p in build.iterdir())
    spec = importlib.util.spec_from_file_location("cy_echo_reactor", built[0])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def run_echoes(cy, count, server_cls=None):
    rt = ReactRuntime()
    try:
        server_cls = server_cls or cy.CyEcho
        servers = []
        lid, port = listen_factory(rt, lambda: servers.append(server_cls()) or servers[-1])
        client = cy.CyClient(count)
        done = Completion()
        rt.cmd_sender.send_connect(("127.0.0.1", port), 4096, client, Deferred.IMMEDIATE, done)
        pump_until(rt, lambda: done.done)
        assert isinstance(done.result, reactio.ReactorID)
        # warm-up done: measure the steady state from here
        before = sys.getallocatedblocks()
        while client.count < count:
            rt.process_events(1.0)
        after = sys.getallocatedblocks()
        pump_until(rt, lambda: rt.count_streams() == 0)
        return client, servers, after - before
    finally:
        rt.close()


def test_cython_reactor_echoes_with_constant_allocations(cy_module):
    run_echoes(cy_module, 200)                      # warm caches (results, freelists)
    client_small, servers_small, growth_small = run_echoes(cy_module, 1_000)
    client_big, servers_big, growth_big = run_echoes(cy_module, 10_000)
    assert client_big.count == 10_000 and servers_big[0].count == 10_000
    # a per-message allocation that is kept would grow with the count (10x here)
    print(f"allocated-block growth: {growth_small} over 1,000 echoes, {growth_big} over 10,000")
    assert abs(growth_big) < 200, growth_big
    assert abs(growth_big - growth_small) < 100, (growth_small, growth_big)


def test_cython_cpdef_override_is_dispatched(cy_module):
    client, servers, _ = run_echoes(cy_module, 2_000, cy_module.CyCpdefEcho)
    assert client.count == 2_000


# run with the build directory and tests/ on PYTHONPATH
NEGATIVE_SEND_CHILD = r"""
import json, socket
import cy_echo_reactor as cy
from reactio import DefaultTcpListenerHandler, ReactRuntime
from support.runtime import pump_until
from support.sockets import recv_exact_nb
from support.wire import frame

def pump(rt, pred):
    pump_until(rt, pred, 10.0)

def recv_exact(rt, sock, n):
    return recv_exact_nb(rt, sock, n, 10.0)

big = bytes(range(256)) * 16384
rt = ReactRuntime()
servers = []
done = []
handler = DefaultTcpListenerHandler(
    lambda c, p: servers.append(cy.CyNegativeSend(big)) or servers[-1])
rt.cmd_sender.send_listen("127.0.0.1:0", handler, None, done.append)
pump(rt, lambda: done)
peer = socket.create_connection(("127.0.0.1", rt.local_address(done[0])[1]), timeout=5)
f1, f2 = frame(b"plain"), frame(b"Queued first")
peer.sendall(f1)
first = recv_exact(rt, peer, 2 * len(f1)) == f1 + f1
peer.sendall(f2)
second = recv_exact(rt, peer, len(big) + 2 * len(f2)) == big + f2 + f2
print(json.dumps({"errors": servers[0].errors, "empty_queue_ok": first,
                  "queued_ok": second}), flush=True)
peer.close()
rt.close()
"""


def test_send_raw_negative_length_raises_value_error(cy_module):
    """Issue 16, item 13: a Cython reactor calling ctx.send_raw(data, n) with n < 0 (here -1)
    made memcpy copy SIZE_MAX bytes (a segfault) or dropped queued bytes.  It raises
    ValueError, with an empty queue and with 4 MiB queued, and the stream keeps every byte in
    order.  Run in a subprocess: the bug kills the interpreter."""
    build = os.path.dirname(os.path.abspath(cy_module.__file__))
    proc = subprocess.run([sys.executable, "-c", NEGATIVE_SEND_CHILD],
                          capture_output=True, text=True, timeout=60, env=child_env(build, TESTS))
    assert proc.returncode == 0, (f"exit code {proc.returncode}; stderr tail:\n"
                                  + proc.stderr[-1500:])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"errors": ["ValueError", "ValueError"], "empty_queue_ok": True,
                      "queued_ok": True}, report
