"""``--plot FILE.png``: the latency percentile distribution of every leg on one chart.

x is the percentile on a "nines" scale (-log10(1 - q): 0, 90, 99, 99.9, ... evenly spaced),
y the latency in µs on a log scale, one line per leg; one chart per message size. The
curves come from the result's ``nines_curve`` (so a saved JSON file can be re-plotted).
matplotlib is an optional dependency (the ``bench`` extra).
"""
from __future__ import annotations

import math
from types import ModuleType
from typing import Any, Dict, List, Tuple

SUPTITLE_FONTSIZE = 9


class PlotError(Exception):
    pass


def _pyplot() -> ModuleType:
    """matplotlib.pyplot, set up to draw into files."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("--plot needs matplotlib: pip install matplotlib "
                        "(or pip install 'reactio[bench]')") from None
    pyplot: ModuleType = plt  # a module also where mypy cannot see the optional matplotlib
    return pyplot


def plot_pingpong(result: Dict[str, Any], path: str, title: str = "") -> None:
    plt = _pyplot()
    from matplotlib import ticker
    blocks: List[Dict[str, Any]] = [b for b in result["results"]
                                    if any(r["status"] == "ok" for r in b["legs"])]
    if not blocks:
        raise PlotError("nothing to plot: no leg produced samples")
    fig, axes = plt.subplots(1, len(blocks), figsize=(7 * len(blocks), 5), squeeze=False)
    top = 1
    for ax, block in zip(axes[0], blocks):
        for row in block["legs"]:
            if row["status"] != "ok":
                continue
            xs: List[float] = []
            ys: List[float] = []
            for q, us in row["nines_curve"]:
                if q < 1.0:
                    xs.append(-math.log10(1.0 - q))
                else:
                    # The maximum (q = 1, the curve's last point) sits just past the last
                    # resolvable percentile.
                    xs.append((xs[-1] + 0.15) if xs else 0.0)
                ys.append(us)
            top = max(top, math.ceil(max(xs)))
            label = row["leg"]
            if row.get("ratio_p50") is not None:
                label += f" (p50 {row['latency_us']['p50']:.1f} µs, {row['ratio_p50']:.2f}x C)"
            else:
                label += f" (p50 {row['latency_us']['p50']:.1f} µs)"
            ax.plot(xs, ys, label=label, linewidth=1.5)
        ticks = list(range(0, top + 1))
        ax.set_xticks(ticks)
        ax.set_xticklabels(["0"] + [_nines_label(k) for k in ticks[1:]])
        ax.set_yscale("log")
        plain = ticker.FuncFormatter(lambda v, _pos: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        # Minor ticks: label 2, 3 and 5 of each decade only, the others crowd the axis.
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(
            lambda v, _pos: f"{v:g}" if f"{v:g}"[0] in "235" else ""))
        ax.set_xlabel("percentile")
        ax.set_ylabel("round-trip latency (µs)")
        over = f" over {block['transport']}" if "transport" in block else ""
        ax.set_title(f"pingpong{over}, {block['size']} B messages")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    _finish(fig, title, path)
    plt.close(fig)


def _wrap_title(title: str, width_in: float, fontsize: float = SUPTITLE_FONTSIZE) -> str:
    """The machine line is longer than a one-chart figure is wide (a long CPU model name, an
    uninstalled uvloop), and a suptitle is neither wrapped nor shrunk: break it at its
    ", " separators into lines that fit ``width_in`` inches."""
    # an average glyph of DejaVu Sans is about 0.6 em wide; keep a margin for the edges
    budget = max(20, int(width_in * 72 / (fontsize * 0.6)) - 4)
    lines: List[str] = []
    for part in title.split(", "):
        if lines and len(lines[-1]) + 2 + len(part) <= budget:
            lines[-1] += ", " + part
        else:
            lines.append(part)
    return "\n".join(lines)


def _finish(fig: Any, title: str, path: str) -> None:
    """The machine line as a suptitle that fits the figure, a layout that makes room for it,
    and the file."""
    if title:
        fig.suptitle(_wrap_title(title, fig.get_figwidth()), fontsize=SUPTITLE_FONTSIZE)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _nines_label(k: int) -> str:
    """1 -> '90', 2 -> '99', 3 -> '99.9', ..."""
    s = f"{100 * (1 - 10 ** -k):.{max(0, k - 2)}f}"
    return s


def plot_scale(result: Dict[str, Any], path: str, title: str = "") -> None:
    """messages/s against connections, one line per leg (log x)."""
    plt = _pyplot()
    series: Dict[str, List[Tuple[int, float]]] = {}
    for block in result["results"]:
        for row in block["legs"]:
            if row["status"] == "ok":
                series.setdefault(row["leg"], []).append((block["conns"], row["messages_per_s"]))
    if not series:
        raise PlotError("nothing to plot: no leg produced results")
    from matplotlib import ticker
    fig, ax = plt.subplots(figsize=(7, 5))
    for leg, pts in series.items():
        ax.plot([c for c, _ in pts], [m for _, m in pts], marker="o", label=leg)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.set_xlabel("connections (one message in flight on each)")
    ax.set_ylabel("messages / s")
    # 1.5M rather than 1.5 with a detached "1e6" over the axis
    ax.yaxis.set_major_formatter(ticker.EngFormatter(sep=""))
    ax.set_ylim(bottom=0)
    p = result["params"]
    ax.set_title(f"echo throughput, {p['size']} B messages, pin {p['pin']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _finish(fig, title, path)
    plt.close(fig)
