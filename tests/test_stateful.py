"""Issue 10, the stateful layer: a hypothesis RuleBasedStateMachine (tests/helpers/
stateful_machine.py, where its rules and invariants are described) drives one runtime and
raw-socket peers through random interleavings of hostile and ordinary events, checking after
every step that on_close runs once, count_streams() matches the live streams, ReactorIDs are
unique, completions run once, echoes are prefixes of what was sent; and at the end that a
settled runtime does not spin, every completion ran exactly once after close() and no
descriptor leaked.

It runs in a subprocess: on a broken core an example can crash the interpreter.  Derandomized
(a fixed seed), so every run explores the same examples; tests/stress/test_stress_stateful.py
runs ten times as many.  A failure shows hypothesis' shrunk falsifying example."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import reactio

HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers")

EXAMPLES = 70
STEPS = 30


def run_machine(examples: int, steps: int, shrink_seconds: int, timeout: float):
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(reactio.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, HELPERS, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, os.path.join(HELPERS, "stateful_machine.py"),
                           str(examples), str(steps), str(shrink_seconds)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        how = (f"exit code {proc.returncode}" if proc.returncode > 0
               else f"killed by signal {-proc.returncode}")
        pytest.fail(f"the state machine failed ({how}):\n{output[-6000:]}", pytrace=False)
    assert "OK:" in proc.stdout, output[-3000:]
    print(proc.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(180)
def test_stateful_runtime_against_hostile_peers():
    """70 derandomized examples of up to 30 steps (~30 s when everything holds; a failure is
    shrunk for at most 30 s)."""
    run_machine(EXAMPLES, STEPS, shrink_seconds=30, timeout=170)
