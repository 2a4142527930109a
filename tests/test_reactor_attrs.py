"""The instance attributes of a Python Reactor / DatagramReactor subclass cost what a plain
class's cost.

CPython 3.11+ specialises ``self.x`` reads and writes for the dict layout it expects; the
dict it makes by itself for an instance of a subclass of a Cython class shares its keys with
the class, and the specialised instructions missed on it every time (a read of ``self.count``
cost 518 instructions per iteration against 250 for a plain class). Reactor's ``__cinit__``
gives such an instance an ordinary dict (``_ordinary_dict`` in _core.pyx). Counted with
callgrind (runs of N and 2N reads, so start-up cancels), like tests/test_cost.py: exact, not
timed.
"""
import shutil
import subprocess
import sys

import pytest

import reactio

needs_callgrind = pytest.mark.skipif(
    shutil.which("valgrind") is None,
    reason="valgrind is not installed: apt-get install valgrind (or bench/install-tools.sh)")

N = 5000

SCRIPT = """
import sys, reactio
class Stream(reactio.Reactor):
    def __init__(self): self.count = 0
class Endpoint(reactio.DatagramReactor):
    def __init__(self): self.count = 0
class Plain:
    def __init__(self): self.count = 0
def loop(o, n):
    for _ in range(n):
        o.count += 1
loop({"stream": Stream, "endpoint": Endpoint, "plain": Plain}[sys.argv[1]](), int(sys.argv[2]))
"""


ENV = {"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}


def per_iteration(tmp_path, kind):
    # once without valgrind first: a run that compiles stale .pyc files would count that work
    # in N's run only, and 2N - N would no longer be the loop's cost alone
    subprocess.run([sys.executable, "-c", SCRIPT, kind, "1"], check=True, timeout=60,
                   env=ENV)
    from reactio.bench.cost import callgrind_total    # (the bench harness is POSIX-only)
    counts = {}
    for n in (N, 2 * N):
        out = tmp_path / f"{kind}-{n}.callgrind"
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--quiet",
             sys.executable, "-c", SCRIPT, kind, str(n)],
            capture_output=True, text=True, timeout=100, env=ENV)
        assert proc.returncode == 0, proc.stderr[-2000:]
        counts[n] = callgrind_total(out)
    return (counts[2 * N] - counts[N]) / N


def test_a_python_subclass_gets_an_ordinary_dict():
    class Stream(reactio.Reactor):
        def __init__(self, a):
            self.a = a

    class Slotted(reactio.Reactor):
        __slots__ = ("a",)

    s = Stream(3)
    assert vars(s) == {"a": 3}
    s.b = 4
    assert s.__dict__ == {"a": 3, "b": 4}
    assert not hasattr(Slotted(), "__dict__")      # no dict where the class has none
    assert vars(type("E", (reactio.DatagramReactor,), {})()) == {}


@needs_callgrind
@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["stream", "endpoint"])
def test_attribute_access_costs_what_a_plain_class_costs(tmp_path, kind):
    plain = per_iteration(tmp_path, "plain")
    sub = per_iteration(tmp_path, kind)
    assert plain > 0
    # measured (CPython 3.11.7): plain 490, a subclass 541 (1,144 without the ordinary dict)
    assert sub <= 1.3 * plain, (f"{kind}: {sub:,.1f} instructions per `self.count += 1`, a "
                                f"plain class {plain:,.1f}")
