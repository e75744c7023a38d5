"""The demo's wave-2 scenes: adaptive concurrency against a fixed limit, and hedging a long tail.

Both are written against the public API of wave 2 (``AdaptiveConcurrency``, ``Hedge``)
and each runs only when the installed trio_resilience has the class it needs; otherwise
the scene reports why it was skipped. Nothing here is imported by the core package.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing

import trio_resilience
from trio_resilience import FailAfter, Pipeline

from ._scenes import QUIET, _quantile


def _quiet(cls: Any, **options: Any) -> Any:
    """Build a policy that logs nowhere (the demo prints its own report), if it takes a logger."""
    try:
        return cls(**options, logger=QUIET)
    except TypeError:
        return cls(**options)


def available(feature: str) -> bool:
    """True when the installed trio_resilience exports ``feature`` (a wave-2 class)."""
    return hasattr(trio_resilience, feature)


@dataclass(frozen=True)
class Wave2Config:
    """Sizes of the two wave-2 scenes."""

    seed: int = 1
    capacity: int = 10  # upstream workers
    service_time: float = 0.1  # seconds per request: 100 requests/s by default
    overload: float = 1.5  # offered load as a multiple of the capacity
    deadline: float = 1.0  # a caller gives up after this long
    fixed_limit: int = 200  # a hand-picked in-flight limit, sized for a good day
    duration: float = 60.0
    tail_rate: float = 100.0  # requests/s to the long-tail upstream
    tail_duration: float = 20.0
    tail_share: float = 0.01  # share of calls that hit a 1-2 s pause
    hedge_delay: float = 0.05

    @property
    def upstream_rate(self) -> float:
        return self.capacity / self.service_time


@dataclass
class AdmissionFigures:
    """One run of the overload scene."""

    name: str
    requests: int = 0
    served: int = 0
    rejected: int = 0
    timed_out: int = 0
    upstream_work: int = 0  # requests the upstream processed, abandoned ones included
    latencies: list[float] = field(default_factory=list)
    limits: list[float] = field(default_factory=list)  # the limit once a second

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "requests": self.requests,
            "served": self.served,
            "rejected": self.rejected,
            "timed_out": self.timed_out,
            "upstream_work": self.upstream_work,
            "wasted_work": self.upstream_work - self.served,
            "p99_latency": _quantile(lat, 0.99),
            "limit_min": min(self.limits) if self.limits else None,
            "limit_max": max(self.limits) if self.limits else None,
            "limit_end": self.limits[-1] if self.limits else None,
        }


@dataclass
class HedgeFigures:
    """One run of the long-tail scene."""

    name: str
    requests: int = 0
    upstream_calls: int = 0
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "requests": self.requests,
            "upstream_calls": self.upstream_calls,
            "p50_latency": _quantile(lat, 0.50),
            "p99_latency": _quantile(lat, 0.99),
            "p999_latency": _quantile(lat, 0.999),
        }


class _Rejected(Exception):
    """The fixed limit is full."""


class _FixedLimit:
    """A hand-picked in-flight limit that rejects at once when full."""

    def __init__(self, limit: int) -> None:
        self.limiter = trio.CapacityLimiter(limit)

    @property
    def limit(self) -> float:
        return float(self.limiter.total_tokens)

    async def call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        token = object()
        try:
            self.limiter.acquire_on_behalf_of_nowait(token)
        except trio.WouldBlock:
            raise _Rejected from None
        try:
            return await fn(*args)
        finally:
            self.limiter.release_on_behalf_of(token)


class _QueueingUpstream:
    """``capacity`` workers over an unbounded queue; a caller that left is still served.

    That is what makes a too-high limit collapse: the queue fills with work nobody waits
    for any more, and every answer comes too late.
    """

    def __init__(self, config: Wave2Config, figures: AdmissionFigures, rng: random.Random):
        self.config = config
        self.figures = figures
        self.rng = rng
        self.send, self.receive = trio.open_memory_channel[trio.Event](math.inf)

    async def worker(self) -> None:
        async for done in self.receive:
            await trio.sleep(self.config.service_time * self.rng.uniform(0.8, 1.2))
            self.figures.upstream_work += 1
            done.set()

    async def request(self) -> str:
        done = trio.Event()
        self.send.send_nowait(done)
        await done.wait()
        return "ok"


async def _admission_run(config: Wave2Config, adaptive: bool) -> AdmissionFigures:
    figures = AdmissionFigures("AdaptiveConcurrency" if adaptive else f"fixed {config.fixed_limit}")
    rng = random.Random(config.seed)
    upstream = _QueueingUpstream(config, figures, rng)
    limit: Any
    if adaptive:
        limit = _quiet(
            trio_resilience.AdaptiveConcurrency,
            algorithm="gradient2",
            initial_limit=20,
            max_limit=200,
            max_wait=0.0,
            name="demo-upstream",
        )
        rejected: tuple[type[BaseException], ...] = (trio_resilience.BulkheadFullError,)
    else:
        limit = _FixedLimit(config.fixed_limit)
        rejected = (_Rejected,)
    policy = Pipeline(limit, FailAfter(config.deadline))

    async def one() -> None:
        start = trio.current_time()
        try:
            await policy.call(upstream.request)
        except rejected:
            figures.rejected += 1
        except trio.TooSlowError:
            figures.timed_out += 1
        else:
            figures.served += 1
            figures.latencies.append(trio.current_time() - start)

    async def watch_limit() -> None:
        while True:
            await trio.sleep(1.0)
            figures.limits.append(float(limit.limit))

    arrivals = random.Random(config.seed + 1)
    async with trio.open_nursery() as outer:
        for _ in range(config.capacity):
            outer.start_soon(upstream.worker)
        outer.start_soon(watch_limit)
        async with trio.open_nursery() as callers:
            while trio.current_time() < config.duration:
                figures.requests += 1
                callers.start_soon(one)
                await trio.sleep(arrivals.expovariate(config.overload * config.upstream_rate))
        outer.cancel_scope.cancel()
    return figures


async def _hedge_run(config: Wave2Config, hedged: bool) -> HedgeFigures:
    figures = HedgeFigures(f"Hedge {config.hedge_delay * 1000:g} ms" if hedged else "no hedge")
    rng = random.Random(config.seed)

    async def upstream() -> str:
        figures.upstream_calls += 1
        if rng.random() < config.tail_share:
            await trio.sleep(rng.uniform(1.0, 2.0))  # a pause: GC, a cold cache, a bad disk
        else:
            await trio.sleep(rng.uniform(0.015, 0.025))
        return "ok"

    hedge: Any = None
    if hedged:
        hedge = _quiet(
            trio_resilience.Hedge,
            delay=config.hedge_delay,
            max_hedges=1,
            name="demo-tail",
        )

    async def one() -> None:
        start = trio.current_time()
        if hedge is None:
            await upstream()
        else:
            await hedge.call(upstream)
        figures.latencies.append(trio.current_time() - start)

    arrivals = random.Random(config.seed + 1)
    async with trio.open_nursery() as callers:
        while trio.current_time() < config.tail_duration:
            figures.requests += 1
            callers.start_soon(one)
            await trio.sleep(arrivals.expovariate(config.tail_rate))
    return figures


@dataclass
class Wave2Result:
    """Both wave-2 scenes; a scene whose feature is missing holds the reason instead."""

    config: Wave2Config
    admission: tuple[AdmissionFigures, AdmissionFigures] | None
    hedge: tuple[HedgeFigures, HedgeFigures] | None
    skipped: dict[str, str]

    def sentences(self) -> list[str]:
        """One sentence per scene, computed from the figures."""
        lines = []
        if self.admission is not None:
            fixed, adaptive = (f.summary() for f in self.admission)
            lines.append(
                f"AdaptiveConcurrency: offered {self.config.overload:g}x the capacity, it "
                f"served {adaptive['served']:,} requests within {self.config.deadline:g} s "
                f"against {fixed['served']:,} under a fixed limit of "
                f"{self.config.fixed_limit}, whose queue filled with "
                f"{fixed['wasted_work']:,} answers nobody waited for; its limit ended at "
                f"{adaptive['limit_end']:g}."
            )
        if self.hedge is not None:
            plain, hedged = (f.summary() for f in self.hedge)
            extra = hedged["upstream_calls"] - plain["upstream_calls"]
            share = 100 * extra / max(plain["upstream_calls"], 1)
            lines.append(
                f"Hedge: a second attempt after {self.config.hedge_delay * 1000:g} ms cut "
                f"p99.9 latency from {plain['p999_latency']:.2f} s to "
                f"{hedged['p999_latency']:.2f} s for {extra:,} extra upstream calls "
                f"({share:.1f}% more)."
            )
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "config": {k: getattr(self.config, k) for k in self.config.__dataclass_fields__},
            "admission": (
                {f.name: f.summary() for f in self.admission} if self.admission else None
            ),
            "hedge": {f.name: f.summary() for f in self.hedge} if self.hedge else None,
            "skipped": self.skipped,
            "summary": self.sentences(),
        }


def _run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def run_wave2(config: Wave2Config | None = None) -> Wave2Result:
    """Run each wave-2 scene whose feature is available, in virtual time."""
    config = config or Wave2Config()
    skipped = {}
    admission = hedge = None
    if available("AdaptiveConcurrency"):
        admission = (_run(_admission_run, config, False), _run(_admission_run, config, True))
    else:
        skipped["admission"] = "needs trio_resilience.AdaptiveConcurrency (wave 2)"
    if available("Hedge"):
        hedge = (_run(_hedge_run, config, False), _run(_hedge_run, config, True))
    else:
        skipped["hedge"] = "needs trio_resilience.Hedge (wave 2)"
    return Wave2Result(config, admission, hedge, skipped)


__all__ = ["Wave2Config", "Wave2Result", "available", "run_wave2"]
