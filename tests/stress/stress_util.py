"""Shared pieces of the stress tests (tests/stress, marker ``stress``).

Sizes come from environment variables so that a bigger local run needs no edit; the defaults
are what CI runs.  Every figure a test reached is recorded with ``report()``: it goes to the
test's JUnit properties, to stdout (``-s``) and, when REACTIO_FIGURES names a file, to that
file as one JSON line per test (RELIABILITY.md quotes such a run).
"""
from __future__ import annotations

import gc
import json
import os
import sys
import time

import pytest

if sys.platform == "win32":
    # every stress module imports this first: each is reported as skipped, with the reason
    pytest.skip("the stress suite measures Linux resources (/proc, RLIMIT_NOFILE) and drives "
                "Linux-only peers", allow_module_level=True)

import resource  # noqa: E402  (POSIX only)

HERE = os.path.dirname(os.path.abspath(__file__))


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def allocated_blocks() -> int:
    gc.collect()
    return sys.getallocatedblocks()


def raise_nofile(wanted: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (as far as the hard limit allows);
    returns the previous (soft, hard) for restore_nofile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, hard


def restore_nofile(previous: tuple[int, int]) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, previous)


def report(request, **figures) -> None:
    """Record the figures a stress test reached."""
    for key, value in figures.items():
        request.node.user_properties.append((key, value))
    line = {"test": request.node.nodeid, **figures}
    print("\nFIGURES", json.dumps(line))
    path = os.environ.get("REACTIO_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


class Deadline:
    def __init__(self, seconds: float, what: str):
        self.end = time.monotonic() + seconds
        self.what = what

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise AssertionError(f"{self.what}: not done in time")
