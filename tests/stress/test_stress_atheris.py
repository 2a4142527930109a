"""Issue 10: the coverage-guided fuzz target of the framing reader (tests/fuzz/fuzz_framing.py,
atheris) runs for REACTIO_STRESS_ATHERIS_SECONDS (default 45) in a subprocess.  A crash or an
invariant violation fails the test; the input that found it is kept as crash-* in the test's
tmp_path and named in the failure, so that ``python tests/fuzz/fuzz_framing.py CRASH_FILE``
replays it.  Skipped when atheris is not installed (``pip install .[fuzz]``).

This runs the extension as built (coverage of the Python harness only); tools/fuzz-native.sh
runs the same target with the Cython core instrumented.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

import reactio

from stress_util import HERE, env_int, report

pytestmark = [pytest.mark.stress, pytest.mark.timeout(300)]

SECONDS = env_int("REACTIO_STRESS_ATHERIS_SECONDS", 45)
TARGET = os.path.join(os.path.dirname(HERE), "fuzz", "fuzz_framing.py")


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                    reason="atheris is not installed (pip install .[fuzz])")
def test_atheris_framing_fuzz(request, tmp_path):
    env = dict(os.environ)
    # the target must import the reactio this test run imports (an in-place build, say)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(reactio.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, TARGET, f"-max_total_time={SECONDS}", "-print_final_stats=1",
         f"-artifact_prefix={tmp_path}{os.sep}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SECONDS + 120)
    output = proc.stdout + proc.stderr
    crashes = sorted(str(p) for p in tmp_path.glob("*-*") if p.name.split("-")[0] in
                     ("crash", "timeout", "oom", "leak", "slow"))
    assert proc.returncode == 0 and not crashes, (
        f"the fuzz target failed (exit status {proc.returncode}; inputs: {crashes}):\n"
        + output[-6000:])
    done = re.search(r"#(\d+)\s+DONE\s+(?:cov: (\d+) )?ft: (\d+)", output)
    assert done, "no final libFuzzer status line:\n" + output[-3000:]
    executions = int(done.group(1))
    assert executions >= 100, f"only {executions} inputs ran in {SECONDS} s"
    report(request, seconds=SECONDS, executions=executions,
           coverage=int(done.group(2) or 0), features=int(done.group(3)))
