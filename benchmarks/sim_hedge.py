"""Simulation: Hedge against a service where 1% of calls are 100x slower, and in a brownout.

Each attempt takes 8-12 ms, except 1% that take 0.8-1.2 s (100x), drawn
independently per attempt from a seeded rng. Clients call at ``rate`` per second
for ``calls`` calls, each in its own task, on Trio's autojump clock. Printed: the
p50, p99 and p99.9 latency without and with ``Hedge()`` (delay: the p95 of recent
latencies) and the extra attempts it cost.

Brownout: for the middle third of the run every attempt takes 10x longer
(80-120 ms) with the same 1% tail. A ``RetryBudget`` (ratio 0.1, 10 retries/s
reserve) pays for hedges; the extra attempts stay within its share. Shown with the
adaptive delay and with a fixed 20 ms delay (every brownout call wants a hedge),
each with and without the budget.

Run: ``python benchmarks/sim_hedge.py`` (writes docs/_static/hedging.png).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio.testing

from trio_resilience import Hedge, RetryBudget

STEP = 0.01


@dataclass
class Result:
    label: str
    calls: int
    p50: float
    p99: float
    p999: float
    extra: float  # extra attempts / calls
    brownout_extra: float  # extra attempts / calls, during the brownout only
    latencies: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _simulate(
    label: str,
    hedged: bool,
    calls: int,
    rate: float,
    brownout: bool,
    budget: bool,
    delay: float | None,
    budget_window: float,
    seed: int,
) -> Result:
    rng = random.Random(seed)
    duration = calls / rate
    slow_from, slow_to = (duration / 3, 2 * duration / 3) if brownout else (0.0, 0.0)
    attempts_in_brownout = 0
    calls_in_brownout = 0

    async def service() -> None:
        nonlocal attempts_in_brownout
        now = trio.current_time()
        scale = 10.0 if slow_from <= now < slow_to else 1.0
        if scale > 1:
            attempts_in_brownout += 1
        base = rng.uniform(0.8, 1.2) if rng.random() < 0.01 else rng.uniform(0.008, 0.012)
        await trio.sleep(base * scale)

    hedge = Hedge(
        delay=delay,
        budget=RetryBudget(ratio=0.1, window=budget_window) if budget else None,
        name=label,
    )
    latencies: list[float] = []
    times: list[float] = []

    async def client() -> None:
        nonlocal calls_in_brownout
        start = trio.current_time()
        if slow_from <= start < slow_to:
            calls_in_brownout += 1
        if hedged:
            await hedge.call(service)
        else:
            await service()
        times.append(start)
        latencies.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        carry = 0.0
        started = 0
        while started < calls:
            carry += rate * STEP
            arrivals = min(int(carry), calls - started)
            carry -= arrivals
            for _ in range(arrivals):
                nursery.start_soon(client)
            started += arrivals
            await trio.sleep(STEP)

    stats = hedge.statistics()
    extra = stats.hedges / calls if hedged else 0.0
    brownout_extra = 0.0
    if brownout and hedged:
        # Attempts made in the brownout beyond one per call started in it.
        brownout_extra = (attempts_in_brownout - calls_in_brownout) / max(1, calls_in_brownout)
    return Result(
        label,
        calls,
        quantile(latencies, 0.5),
        quantile(latencies, 0.99),
        quantile(latencies, 0.999),
        extra,
        brownout_extra,
        latencies,
        times,
    )


def simulate(
    label: str,
    *,
    hedged: bool = True,
    calls: int = 20_000,
    rate: float = 400.0,
    brownout: bool = False,
    budget: bool = False,
    delay: float | None = None,
    budget_window: float = 10.0,
    seed: int = 1,
) -> Result:
    """Run one scenario on an autojump MockClock."""
    return trio.run(
        _simulate,
        label,
        hedged,
        calls,
        rate,
        brownout,
        budget,
        delay,
        budget_window,
        seed,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results[:2]:
        ordered = sorted(r.latencies)
        n = len(ordered)
        tail = [1 - (i + 0.5) / n for i in range(n)]
        left.loglog([v * 1000 for v in ordered], tail, label=r.label)
    left.axhline(0.001, color="0.6", lw=0.8, ls="--")
    left.text(10, 0.0012, "p99.9", fontsize=8, color="0.4")
    left.set_xlabel("latency (ms)")
    left.set_ylabel("share of calls slower")
    left.set_title("1% of attempts 100x slower")
    left.legend(fontsize=8)
    labels = [r.label for r in results[2:]]
    extras = [r.brownout_extra * 100 for r in results[2:]]
    right.bar(range(len(labels)), extras, color=["tab:gray", "tab:blue", "tab:gray", "tab:orange"])
    right.axhline(15, color="tab:red", lw=1, ls="--", label="15% bound")
    right.set_xticks(range(len(labels)), [x.replace(", ", "\n") for x in labels], fontsize=8)
    right.set_yscale("log")
    right.set_ylabel("extra attempts during the brownout (%)")
    right.set_title("brownout: every attempt 10x slower")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    plain = simulate("no hedge", hedged=False)
    hedged = simulate("Hedge()")
    drop = 1 - hedged.p999 / plain.p999
    for r in (plain, hedged):
        print(
            f"{r.label:<10} p50 {r.p50 * 1000:6.1f} ms  p99 {r.p99 * 1000:7.1f} ms  "
            f"p99.9 {r.p999 * 1000:7.1f} ms  extra attempts {r.extra:.2%}"
        )
    print(f"p99.9 drop: {drop:.1%} (target >= 80%) for {hedged.extra:.2%} extra (target <= 6%)")
    brownouts = [
        simulate("no budget, p95 delay", brownout=True),
        simulate("budget, p95 delay", brownout=True, budget=True),
        simulate("no budget, fixed 20 ms", brownout=True, delay=0.02),
        simulate("budget, fixed 20 ms", brownout=True, budget=True, delay=0.02),
    ]
    for r in brownouts:
        print(
            f"brownout, {r.label:<22} extra attempts during it {r.brownout_extra:.2%}, "
            f"overall {r.extra:.2%} (target with a budget <= 15%)"
        )
    out = Path(__file__).parent.parent / "docs" / "_static" / "hedging.png"
    out.parent.mkdir(exist_ok=True)
    plot([plain, hedged, *brownouts], out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
