"""What machine and software a result was measured on (for ``--json`` and the table header)."""
from __future__ import annotations

import os
import platform
import sys
import time
from typing import Dict, Optional, Tuple


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _version(dist: str) -> Optional[str]:
    try:
        from importlib import metadata
        return metadata.version(dist)
    except Exception:
        return None


def _cpu_ticks() -> Optional[Tuple[int, int]]:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def busy_fraction(interval: float = 0.5) -> Optional[float]:
    """Fraction of the machine's CPU time in use over ``interval`` seconds, before a run.

    The harness is idle meanwhile, so this is other load: a busy machine makes every
    figure noisy, and the harness says so rather than print noise as results.
    """
    a = _cpu_ticks()
    time.sleep(interval)
    b = _cpu_ticks()
    if a is None or b is None or b[1] == a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1])


def machine_info() -> Dict[str, object]:
    """CPU, kernel, Python and library versions. Never raises; unknowns are None."""
    from . import cbuild
    try:
        cc = cbuild.compiler_version()
    except cbuild.BuildError:
        cc = None
    return {
        "cpu_model": _cpu_model(),
        "nproc": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
        "cpufreq_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        # The reactio actually imported (a source tree may differ from what pip installed).
        "reactio": getattr(sys.modules.get("reactio"), "__version__", None) or _version("reactio"),
        "uvloop": _version("uvloop"),
        "cc": cc,
    }


def one_line(info: Dict[str, object]) -> str:
    return (f"{info['cpu_model']}, {info['nproc']} CPUs, Linux {info['kernel']}, "
            f"Python {info['python']}, reactio {info['reactio'] or '?'}, "
            f"uvloop {info['uvloop'] or 'not installed'}")
