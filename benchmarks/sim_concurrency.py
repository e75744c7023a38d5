"""Simulation: AdaptiveConcurrency against a server of true capacity C, beside Netflix's Gradient2.

The server runs at most ``C`` requests at once (a FIFO ``trio.CapacityLimiter``), each
taking ``service`` seconds (+-20%, seeded); more requests queue at the server, so
latency grows with the excess. An open-loop client sends ``load * C / service``
requests per second (1.25: a 25% overload) through the limit under test, which
rejects at once when full (``max_wait=0``). Runs on Trio's autojump clock.

Compared: our ``aimd``, ``gradient2`` and ``vegas``, and a port of Netflix's
``Gradient2Limit`` as shipped (``concurrency-limits`` 0.3.x: ``rttTolerance`` 1.5,
``queueSize`` 4, ``smoothing`` 0.2, long RTT an exponential average over 600 samples
after 10 warm-up samples, fed by ``WindowedLimit`` with 1 s windows of at least 10
calls, min limit 20) on the same load.

Run: ``python benchmarks/sim_concurrency.py`` (writes docs/_static/concurrency.png).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio.testing

from trio_resilience import AdaptiveConcurrency, BulkheadFullError

STEP = 0.01  # seconds between two bursts of arrivals
PROBE = 0.1  # seconds between two readings of the limit


class NetflixGradient2:
    """A port of Netflix's Gradient2Limit behind its WindowedLimit (for comparison only)."""

    def __init__(
        self,
        initial_limit: int = 20,
        min_limit: int = 20,
        max_limit: int = 200,
        tolerance: float = 1.5,
        queue_size: float = 4,
        smoothing: float = 0.2,
        long_window: int = 600,
        warmup: int = 10,
        window_time: float = 1.0,
        window_size: int = 10,
    ) -> None:
        self.estimate = float(initial_limit)
        self.limit = initial_limit
        self.min_limit, self.max_limit = min_limit, max_limit
        self.tolerance, self.queue_size, self.smoothing = tolerance, queue_size, smoothing
        self.long_factor = 2.0 / (long_window + 1)
        self.warmup = warmup
        self.long_count = 0
        self.long_sum = 0.0
        self.long_rtt = 0.0
        self.window_time, self.window_size = window_time, window_size
        self.next_update = 0.0
        self._new_window()
        self.inflight = 0

    def _new_window(self) -> None:
        self.w_sum = 0.0
        self.w_count = 0
        self.w_inflight = 0
        self.w_drop = False

    def _add_long(self, rtt: float) -> float:
        if self.long_count < self.warmup:
            self.long_count += 1
            self.long_sum += rtt
            self.long_rtt = self.long_sum / self.long_count
        else:
            f = self.long_factor
            self.long_rtt = self.long_rtt * (1 - f) + rtt * f
        return self.long_rtt

    def _update(self, rtt: float, inflight: int) -> None:
        queue = self.queue_size
        short = rtt
        long = self._add_long(rtt)
        if long / short > 2:
            self.long_rtt *= 0.95
        if inflight < self.estimate / 2:
            return
        gradient = max(0.5, min(1.0, self.tolerance * long / short))
        new = self.estimate * gradient + queue
        new = self.estimate * (1 - self.smoothing) + new * self.smoothing
        self.estimate = max(self.min_limit, min(self.max_limit, new))
        self.limit = int(self.estimate)

    def on_sample(self, end: float, rtt: float, inflight: int, dropped: bool) -> None:
        self.w_sum += rtt
        self.w_count += 1
        self.w_inflight = max(self.w_inflight, inflight)
        self.w_drop = self.w_drop or dropped
        if end > self.next_update:
            average = self.w_sum / self.w_count
            count, peak = self.w_count, self.w_inflight
            self._new_window()
            self.next_update = end + min(max(average * 2, self.window_time), self.window_time)
            if count >= self.window_size:
                self._update(average, peak)

    async def call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        if self.inflight >= self.limit:
            await trio.lowlevel.checkpoint()
            raise BulkheadFullError("netflix", self.limit)
        self.inflight += 1
        start = trio.current_time()
        try:
            return await fn()
        finally:
            inflight = self.inflight
            self.inflight -= 1
            now = trio.current_time()
            self.on_sample(now, now - start, inflight, False)


@dataclass
class Result:
    name: str
    capacity: int
    load: float
    duration: float
    reached: float  # first time the limit is within 0.6-1.5x C (inf: never)
    in_band_after_10s: float  # share of readings within 0.6-1.5x C after 10 s
    max_limit: int
    max_ratio: float  # max limit / C
    goodput: float  # completed per second / server capacity per second
    mean_latency: float
    times: list[float] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)


async def _simulate(
    name: str, capacity: int, service: float, load: float, duration: float, seed: int
) -> Result:
    rng = random.Random(seed)
    server = trio.CapacityLimiter(capacity)
    policy: Any
    if name == "netflix gradient2":
        policy = NetflixGradient2()

        def limit() -> int:
            return int(policy.limit)
    else:
        policy = AdaptiveConcurrency(algorithm=name, max_wait=0, name=name)

        def limit() -> int:
            return int(policy.limit)

    completed = 0
    latency_sum = 0.0
    times: list[float] = []
    limits: list[int] = []

    async def request() -> None:
        async with server:
            await trio.sleep(service * rng.uniform(0.8, 1.2))

    async def client() -> None:
        nonlocal completed, latency_sum
        start = trio.current_time()
        try:
            await policy.call(request)
        except BulkheadFullError:
            return
        completed += 1
        latency_sum += trio.current_time() - start

    async def watch() -> None:
        while True:
            times.append(trio.current_time())
            limits.append(limit())
            await trio.sleep(PROBE)

    rate = load * capacity / service
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        carry = 0.0
        while trio.current_time() < duration:
            carry += rate * STEP
            arrivals = int(carry)
            carry -= arrivals
            for _ in range(arrivals):
                nursery.start_soon(client)
            await trio.sleep(STEP)
        nursery.cancel_scope.cancel()

    low, high = 0.6 * capacity, 1.5 * capacity
    reached = next((t for t, v in zip(times, limits, strict=True) if low <= v <= high), 1e9)
    late = [v for t, v in zip(times, limits, strict=True) if t >= 10.0]
    in_band = sum(low <= v <= high for v in late) / max(1, len(late))
    return Result(
        name=name,
        capacity=capacity,
        load=load,
        duration=duration,
        reached=reached,
        in_band_after_10s=in_band,
        max_limit=max(limits),
        max_ratio=max(limits) / capacity,
        goodput=completed / duration / (capacity / service),
        mean_latency=latency_sum / max(1, completed),
        times=times,
        limits=limits,
    )


def simulate(
    name: str,
    *,
    capacity: int = 50,
    service: float = 0.1,
    load: float = 1.25,
    duration: float = 60.0,
    seed: int = 1,
) -> Result:
    """Run one algorithm (or ``"netflix gradient2"``) on an autojump MockClock."""
    return trio.run(
        _simulate,
        name,
        capacity,
        service,
        load,
        duration,
        seed,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )


NAMES = ("aimd", "gradient2", "vegas", "netflix gradient2")


def plot(results: list[Result], long_run: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(9, 7.5))
    styles = {"netflix gradient2": ("tab:red", "-"), "gradient2": ("tab:blue", "-")}
    for ax, group in zip(axes, (results, long_run), strict=True):
        capacity = group[0].capacity
        ax.axhspan(
            0.6 * capacity, 1.5 * capacity, color="tab:green", alpha=0.08, label="0.6-1.5x C"
        )
        ax.axhline(
            capacity, color="tab:green", lw=1, ls="--", label=f"true capacity C = {capacity}"
        )
        for r in group:
            color, style = styles.get(r.name, (None, ":"))
            ax.plot(r.times, r.limits, label=r.name, color=color, ls=style, lw=1.3)
        ax.set_ylabel("concurrency limit")
        ax.set_title(
            f"{group[0].load:g}x overload of a server of capacity {capacity}, "
            f"{group[0].duration:g} s"
        )
        ax.legend(fontsize=8, loc="upper left")
    axes[-1].set_xlabel("seconds (Trio's clock)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def describe(r: Result) -> str:
    return (
        f"{r.name:<18} {r.duration:4.0f}s: reaches 0.6-1.5x C at {r.reached:5.1f}s; in band "
        f"after 10s {r.in_band_after_10s:6.1%}; max limit {r.max_limit} ({r.max_ratio:.2f}x C); "
        f"goodput {r.goodput:.2f}x capacity; mean latency {r.mean_latency * 1000:.0f} ms"
    )


def main() -> None:
    results = [simulate(name) for name in NAMES]
    long_run = [simulate(name, duration=300.0) for name in ("gradient2", "netflix gradient2")]
    for r in results + long_run:
        print(describe(r))
    out = Path(__file__).parent.parent / "docs" / "_static" / "concurrency.png"
    out.parent.mkdir(exist_ok=True)
    plot(results, long_run, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    import logging

    import structlog

    # The limit_changed events would drown the figures: show warnings only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    main()
