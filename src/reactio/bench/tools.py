"""The external tools some modes use: valgrind (``cost``) and strace (``pipeline``'s system
call counts).

Neither is a Python package, so neither comes with ``pip install 'reactio[bench]'``. When one
is missing, the mode says so and how to install it (``bench/install-tools.sh`` in a source
tree does it on Debian/Ubuntu and Fedora). ``$REACTIO_BENCH_VALGRIND`` and
``$REACTIO_BENCH_STRACE`` name a specific executable instead of the one on ``$PATH``.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from typing import Dict

INSTALL_HINTS: Dict[str, str] = {
    "valgrind": "install it with `apt-get install valgrind` (Debian, Ubuntu), `dnf install "
                "valgrind` (Fedora) or, from a source tree, `bench/install-tools.sh`",
    "strace": "install it with `apt-get install strace` (Debian, Ubuntu), `dnf install "
              "strace` (Fedora) or, from a source tree, `bench/install-tools.sh`",
}


class ToolMissing(Exception):
    """An external tool is not installed or does not run; the message says how to fix it."""


@functools.lru_cache(maxsize=None)
def find(name: str) -> str:
    """Path of the working tool ``name`` (``valgrind`` or ``strace``); raises ToolMissing."""
    var = f"REACTIO_BENCH_{name.upper()}"
    override = os.environ.get(var)
    path = override or shutil.which(name)
    where = f"${var}={override}" if override else f"{name} on $PATH"
    if not path:
        raise ToolMissing(f"{name} is not installed: {INSTALL_HINTS[name]}")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolMissing(f"{name} does not run ({where}: {e}); {INSTALL_HINTS[name]}") from None
    if out.returncode != 0:
        raise ToolMissing(f"{name} does not run ({where}: exit status {out.returncode}); "
                          f"{INSTALL_HINTS[name]}")
    return path


def version(name: str) -> str:
    """First line of ``NAME --version``, or raises ToolMissing."""
    out = subprocess.run([find(name), "--version"], capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    return (out.stdout.strip().splitlines() or ["unknown"])[0]
