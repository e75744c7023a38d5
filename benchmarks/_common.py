"""Shared helpers: time async loops in one Trio run and report ratios to a baseline.

These machines are shared and noisy, so every figure is a ratio against a baseline
measured in the same process, rounds interleaved, and each timing is a median.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

Loop = Callable[[int], Awaitable[None]]

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
SCALE = float(os.environ.get("BENCH_SCALE", "1.0"))


@dataclass
class Row:
    """One line of the report."""

    what: str
    baseline: str
    us: float
    baseline_us: float
    ratio: float
    target: str
    met: bool


async def time_loops(loops: dict[str, Loop], n: int, rounds: int = ROUNDS) -> dict[str, float]:
    """Median seconds per iteration of each loop, rounds interleaved across loops."""
    n = max(1, int(n * SCALE))
    samples: dict[str, list[float]] = {name: [] for name in loops}
    for loop in loops.values():  # warm up
        await loop(min(n, 1000))
    for _ in range(rounds):
        for name, loop in loops.items():
            gc.collect()
            gc.disable()
            start = time.perf_counter()
            await loop(n)
            samples[name].append((time.perf_counter() - start) / n)
            gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


def ratio_row(
    what: str,
    baseline: str,
    times: dict[str, float],
    *,
    at_most: float | None = None,
    at_least: float | None = None,
) -> Row:
    """A row comparing times[what] with times[baseline] against a ratio target."""
    ratio = times[what] / times[baseline]
    if at_most is not None:
        target, met = f"<= {at_most:g}x", ratio <= at_most
    elif at_least is not None:
        ratio = times[baseline] / times[what]
        target, met = f">= {at_least:g}x faster", ratio >= at_least
    else:
        target, met = "-", True
    return Row(what, baseline, times[what] * 1e6, times[baseline] * 1e6, ratio, target, met)


async def memory_growth(loop: Loop, n: int) -> int:
    """Bytes still allocated after n more iterations than after a warm-up."""
    await loop(10_000)
    gc.collect()
    tracemalloc.start()
    await loop(1000)
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    await loop(n)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before


def report(title: str, rows: list[Row], extra: dict[str, object] | None = None) -> None:
    """Print a table, or JSON lines when BENCH_JSON is set (used by run_all.py)."""
    if os.environ.get("BENCH_JSON"):
        for row in rows:
            print(json.dumps({"bench": title, **asdict(row)}))
        if extra:
            print(json.dumps({"bench": title, "extra": extra}))
        return
    print(f"\n{title}")
    print(f"{'what':<44} {'us':>8} {'baseline':<28} {'us':>8} {'ratio':>7}  target")
    for r in rows:
        flag = "ok" if r.met else "MISSED"
        print(
            f"{r.what:<44} {r.us:8.3f} {r.baseline:<28} {r.baseline_us:8.3f} "
            f"{r.ratio:6.2f}x  {r.target} {flag}"
        )
    for key, value in (extra or {}).items():
        print(f"{key}: {value}")
    sys.stdout.flush()
