"""Latency statistics over int64 nanosecond samples.

Percentiles use the nearest-rank definition on the sorted samples (the value below which
the given fraction of samples lies, never an interpolation between two samples), so every
reported figure is a latency that was actually measured.
"""
from __future__ import annotations

import math
from array import array
from typing import Dict, Iterable, List, Sequence

# (label, fraction) of the percentiles every table and JSON result carries.
PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999))


def load_samples(path: str) -> array[int]:
    """Read a samples file written by a client: native int64 nanoseconds, one per sample."""
    samples = array("q")
    if samples.itemsize != 8:  # pragma: no cover - every platform we run on has 8-byte q
        raise RuntimeError("array('q') is not 64-bit here")
    with open(path, "rb") as f:
        data = f.read()
    if len(data) % 8:
        raise ValueError(f"{path}: {len(data)} bytes is not a whole number of int64 samples")
    samples.frombytes(data)
    return samples


def percentile(sorted_samples: Sequence[int], q: float) -> int:
    """Nearest-rank percentile: the smallest sample with at least ``q`` of them at or below it."""
    n = len(sorted_samples)
    if n == 0:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q * n))
    return sorted_samples[min(rank, n) - 1]


def summarize(samples: Iterable[int]) -> Dict[str, float]:
    """min, percentiles, max and mean of ``samples`` (ns), returned in microseconds.

    Also ``n``, the number of samples.
    """
    s = sorted(samples)
    if not s:
        raise ValueError("no samples")
    out: Dict[str, float] = {"n": len(s), "min": s[0] / 1e3}
    for label, q in PERCENTILES:
        out[label] = percentile(s, q) / 1e3
    out["max"] = s[-1] / 1e3
    out["mean"] = sum(s) / len(s) / 1e3
    return out


def nines_curve(samples: Iterable[int], points_per_decade: int = 20) -> List[List[float]]:
    """The percentile distribution as ``[[q, latency_us], ...]`` for plotting.

    Points are spaced evenly on the "nines" scale ``-log10(1 - q)`` from q = 0 up to the
    largest q the sample count resolves (1 - 1/n), and the maximum is added at the end.
    """
    s = sorted(samples)
    n = len(s)
    if n == 0:
        return []
    top = math.log10(n)  # q = 1 - 1/n
    steps = max(1, int(top * points_per_decade))
    curve = []
    for i in range(steps + 1):
        q = 1.0 - 10.0 ** (-top * i / steps)
        curve.append([q, percentile(s, q) / 1e3])
    curve.append([1.0, s[-1] / 1e3])
    return curve


def ratio(value: float | None, floor: float | None) -> float | None:
    """``value / floor``, or None when either is unknown or the floor is zero."""
    if value is None or not floor:
        return None
    return value / floor
