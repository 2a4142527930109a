"""Children: the scripts in tests/helpers/ (scenarios that may crash the interpreter, servers
with their own resource limits) run in a fresh interpreter that imports the same reactio."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

import reactio

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPERS = os.path.join(TESTS, "helpers")


def child_env(*paths: str) -> dict:
    """os.environ with the directory this reactio was imported from (an in-place build, say),
    then ``paths``, in front of PYTHONPATH."""
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(reactio.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, *paths, env.get("PYTHONPATH")) if p)
    return env


def run_helper(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run tests/helpers/<script> in a fresh interpreter with this reactio on its path."""
    return subprocess.run([sys.executable, os.path.join(HELPERS, script), *args],
                          capture_output=True, text=True, timeout=timeout, env=child_env())


def _tool(name: str):
    """A system tool's path (ip and tc live in /usr/sbin, often not on a user's PATH)."""
    return shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}")
                                  else None)


def run_helper_in_netns(script: str, setup: str, tools=("ip",),
                        timeout: float = 60) -> subprocess.CompletedProcess:
    """Run tests/helpers/<script> in a private network namespace (unshare --net
    --map-root-user) after the shell commands ``setup``, in which ``{ip}``, ``{tc}``... stand
    for the tools named in ``tools``.  Skips the test (with the reason) where the tools or an
    unprivileged network namespace are missing."""
    import pytest
    found = {name: _tool(name) for name in ("unshare", *tools)}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (a private Linux network namespace)")
    setup = setup.format(**found)
    unshare = [found["unshare"], "--net", "--map-root-user", "sh", "-c"]
    probe = subprocess.run(unshare + [setup], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"no network namespace of our own here ({setup}): "
                    f"{probe.stderr.strip()[:200]}")
    helper = shlex.quote(os.path.join(HELPERS, script))
    run = f"{setup} && exec {shlex.quote(sys.executable)} {helper}"
    return subprocess.run(unshare + [run], capture_output=True, text=True, timeout=timeout,
                          env=child_env())


def last_json(proc: subprocess.CompletedProcess):
    """The JSON report a helper prints last; a crash (no report) fails with its stderr."""
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    assert lines, (f"no report (exit code {proc.returncode}); stderr tail:\n"
                   + proc.stderr[-1500:])
    return json.loads(lines[-1])
