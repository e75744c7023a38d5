"""The demo's timeline plot: exact state changes from events, rates over exact time bins."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from ._scenes import DemoResult, RunResult, _quantile

PLOT_SUFFIXES = (".png", ".svg", ".pdf")
_LEVEL = {"closed": 0.0, "half_open": 0.5, "open": 1.0, "forced_open": 1.0, "disabled": 0.0}


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


def check_plot_path(path: str) -> None:
    """Raise ValueError, before any run, for a file the plot could not be written to."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in PLOT_SUFFIXES:
        raise ValueError(
            f"--plot must name a {', '.join(PLOT_SUFFIXES[:-1])} or {PLOT_SUFFIXES[-1]} "
            f"file, got {path!r}"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"--plot: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--plot: cannot write to the folder {folder!r}")


def check_matplotlib() -> None:
    """Raise PlotUnavailable when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'trio-resilience[plot]'"
        ) from exc


def bin_edges(duration: float, width: float = 1.0) -> list[float]:
    """Edges 0, width, 2 width, ... up to ``duration`` exactly (the last bin may be shorter)."""
    count = math.ceil(duration / width)
    return [min(i * width, duration) for i in range(count + 1)]


def rates(times: Sequence[float], duration: float, width: float = 1.0) -> list[float]:
    """Events per second in each bin of :func:`bin_edges`: count / the bin's own width.

    Events outside ``[0, duration)`` are left out, never folded into the last bin.
    """
    edges = bin_edges(duration, width)
    counts = [0] * (len(edges) - 1)
    for t in times:
        if 0 <= t < duration:
            counts[min(int(t // width), len(counts) - 1)] += 1
    return [c / (edges[i + 1] - edges[i]) for i, c in enumerate(counts)]


def p99_per_bin(points: Sequence[tuple[float, float]], duration: float) -> list[float]:
    """p99 latency of the requests served in each one-second bin (0 where none was)."""
    edges = bin_edges(duration)
    buckets: list[list[float]] = [[] for _ in range(len(edges) - 1)]
    for at, latency in points:
        if 0 <= at < duration:
            buckets[min(int(at), len(buckets) - 1)].append(latency)
    return [_quantile(sorted(b), 0.99) or 0.0 for b in buckets]


def breaker_steps(run: RunResult, duration: float) -> tuple[list[float], list[float]]:
    """The breaker's level as a step function with a point at every recorded change.

    Built from the ``on_state_change`` events themselves, so every half-open period,
    however short, appears at its exact time.
    """
    xs, ys = [0.0], [0.0]
    for change in run.transitions:
        xs.append(change.at)
        ys.append(_LEVEL.get(str(change.new_state), 1.0))
    xs.append(max(duration, xs[-1]))
    ys.append(ys[-1])
    return xs, ys


def timeline(result: DemoResult, run: RunResult) -> dict[str, Any]:
    """Every series of the plot, computed from exact event times."""
    duration = result.config.duration
    edges = bin_edges(duration)
    outage = result.config.phase_bounds()[1]
    return {
        "edges": edges,
        "upstream_up": ([0.0, outage[1], outage[2], duration], [1.0, 0.0, 1.0, 1.0]),
        "goodput": rates(run.events["served"], duration),
        "shed": rates(run.events["shed"], duration),
        "p99_latency": p99_per_bin(run.latency_points, duration),
        "breaker": breaker_steps(run, duration),
    }


def plot(result: DemoResult, path: str) -> None:
    """Draw the timeline of both runs to ``path`` (.png, .svg or .pdf)."""
    check_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(5, 1, figsize=(10, 11), sharex=True)
    labels = (
        "upstream up",
        "breaker (0 closed, .5 half-open, 1 open)",
        "served / s",
        "p99 latency (s)",
        "shed / s",
    )
    for run, color in ((result.unguarded, "tab:red"), (result.guarded, "tab:green")):
        series = timeline(result, run)
        edges = series["edges"]
        if run is result.unguarded:
            axes[0].step(*series["upstream_up"], where="post", color="black")
        else:
            xs, ys = series["breaker"]
            axes[1].step(xs, ys, where="post", color=color, label=run.name)
            for change in run.transitions:  # a mark at every change, however short
                axes[1].axvline(change.at, color=color, linewidth=0.3, alpha=0.5)
        for ax, key in zip(axes[2:], ("goodput", "p99_latency", "shed"), strict=True):
            values = series[key]
            ax.stairs(values, edges, color=color, label=run.name)
    for ax, label in zip(axes, labels, strict=True):
        ax.set_ylabel(label, fontsize=8)
        for name, start, _end in result.config.phase_bounds():
            ax.axvline(start, color="grey", linewidth=0.5)
            if ax is axes[0]:
                ax.text(start + 0.5, 1.05, name, fontsize=8)
    axes[2].legend(loc="center", bbox_to_anchor=(0.3, 0.5))
    axes[-1].set_xlabel("virtual seconds")
    fig.suptitle(f"trio-resilience demo, seed {result.config.seed}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
