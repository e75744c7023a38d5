"""Simulation: AdaptiveThrottle in front of a backend at 2x and 10x overload, then recovery.

A client offers ``offered`` requests per second throughout. The backend accepts at
most its capacity per second (a token bucket) and refuses the rest at once; healthy,
its capacity is twice the offered load; during the overload (three windows) it
drops to ``offered / overload``; then it recovers. Everything runs on Trio's autojump
clock, seeded. Printed: the ratio of the traffic that reached the backend to what it
accepted over the last window of the overload (SRE's figure: 2.0 with k = 2), and
how long after the recovery the local rejections fell below 5%.

Run: ``python benchmarks/sim_throttle.py`` (writes docs/_static/throttle.png).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio.testing

from trio_resilience import AdaptiveThrottle, ThrottledError

STEP = 0.05  # seconds between two bursts of arrivals


class Refused(Exception):
    """The backend refused a request (overloaded)."""


@dataclass
class Result:
    overload: float
    window: float
    ratio: float  # backend received / accepted over the overload's last window
    recovery_time: float  # seconds after recovery until rejections < 5% (inf: never)
    rejection_after_window: float  # rejection share in the second after recovery + window
    seconds: list[float] = field(default_factory=list)
    offered: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)


async def _simulate(overload: float, offered_rate: float, window: float, seed: int) -> Result:
    throttle = AdaptiveThrottle(
        k=2.0, window=window, rng=random.Random(seed), failure_on=Refused, name="sim"
    )
    healthy = 2 * offered_rate
    tokens = healthy * STEP
    start_overload = window / 2
    end_overload = start_overload + 3 * window
    end = end_overload + 2 * window
    seconds = int(end)
    offered = [0] * seconds
    sent = [0] * seconds
    accepted = [0] * seconds
    rejected = [0] * seconds

    async def backend() -> None:
        nonlocal tokens
        second = int(trio.current_time())
        sent[second] += 1
        if tokens >= 1:
            tokens -= 1
            accepted[second] += 1
            return
        raise Refused

    carry = 0.0
    now = 0.0
    while now < end - 1e-9:
        second = int(now)
        capacity = offered_rate / overload if start_overload <= now < end_overload else healthy
        tokens = min(max(1.0, capacity * STEP), tokens + capacity * STEP)
        carry += offered_rate * STEP
        arrivals = int(carry)
        carry -= arrivals
        for _ in range(arrivals):
            offered[second] += 1
            try:
                await throttle.call(backend)
            except ThrottledError:
                rejected[second] += 1
            except Refused:
                pass
        await trio.sleep(STEP)
        now = trio.current_time()

    last = range(int(end_overload - window), int(end_overload))
    ratio = sum(sent[s] for s in last) / max(1, sum(accepted[s] for s in last))
    recovery_time = float("inf")
    for s in range(int(end_overload), seconds):
        if offered[s] and rejected[s] / offered[s] < 0.05:
            recovery_time = s + 1 - end_overload
            break
    probe = int(end_overload + window)
    after = rejected[probe] / max(1, offered[probe])
    return Result(
        overload,
        window,
        ratio,
        recovery_time,
        after,
        [float(s) for s in range(seconds)],
        offered,
        sent,
        accepted,
        rejected,
    )


def simulate(
    overload: float, *, offered: float = 100.0, window: float = 120.0, seed: int = 1
) -> Result:
    """Run one scenario on an autojump MockClock and return its figures."""
    return trio.run(
        _simulate,
        overload,
        offered,
        window,
        seed,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(9, 3.2 * len(results)), sharex=True)
    for ax, r in zip(axes, results, strict=True):
        ax.plot(r.seconds, r.offered, label="offered", color="0.6", lw=1)
        ax.plot(r.seconds, r.sent, label="reached the backend", color="tab:red", lw=1)
        ax.plot(r.seconds, r.accepted, label="accepted", color="tab:green", lw=1)
        ax.plot(r.seconds, r.rejected, label="rejected locally", color="tab:blue", lw=1)
        ax.set_yscale("log")
        ax.set_ylabel("requests / s")
        ax.set_title(
            f"{r.overload:g}x overload: backend sees {r.ratio:.2f}x its accepts; "
            f"rejections < 5% {r.recovery_time:.0f} s after recovery"
        )
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("seconds (Trio's clock)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    results = [simulate(2.0), simulate(10.0)]
    for r in results:
        print(
            f"{r.overload:g}x overload, window {r.window:g}s: backend traffic = "
            f"{r.ratio:.3f}x its accepts (target <= 2.1x); rejections < 5% after "
            f"{r.recovery_time:.0f}s (target <= {r.window:g}s); rejection share one "
            f"window after recovery: {r.rejection_after_window:.1%}"
        )
    out = Path(__file__).parent.parent / "docs" / "_static" / "throttle.png"
    out.parent.mkdir(exist_ok=True)
    plot(results, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
