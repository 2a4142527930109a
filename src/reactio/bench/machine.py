"""What machine and software a result was measured on (for ``--json`` and the table header)."""
from __future__ import annotations

import os
import platform
import sys
from typing import Dict, Optional


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
