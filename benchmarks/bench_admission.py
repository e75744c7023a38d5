"""Admission control against its baselines: RateLimiter, AdaptiveConcurrency, Hedge, throttle.

- ``RateLimiter.acquire()`` under the limit against ``trio.lowlevel.checkpoint()``.
- ``AdaptiveConcurrency.call`` against a ``trio.CapacityLimiter`` held around the
  call (what a Bulkhead does).
- ``Hedge.call`` that needs no hedge against opening a nursery and starting one task.
- ``AdaptiveThrottle.call`` against a minimal call wrapper (no target).

Run: ``python benchmarks/bench_admission.py``.
"""

from __future__ import annotations

import trio
from _common import memory_growth, ratio_row, report, time_loops

from trio_resilience import AdaptiveConcurrency, AdaptiveThrottle, Hedge, RateLimiter


async def work() -> int:
    return 1


class _Borrower:
    __slots__ = ()


async def main() -> None:
    limiter = RateLimiter(1e12, burst=1e12)
    concurrency = AdaptiveConcurrency(initial_limit=100)
    capacity = trio.CapacityLimiter(100)
    hedge = Hedge(delay=10.0)
    throttle = AdaptiveThrottle()

    async def checkpoint(n: int) -> None:
        cp = trio.lowlevel.checkpoint
        for _ in range(n):
            await cp()

    async def acquire(n: int) -> None:
        acq = limiter.acquire
        for _ in range(n):
            await acq()

    async def limiter_around(n: int) -> None:
        for _ in range(n):
            token = _Borrower()
            await capacity.acquire_on_behalf_of(token)
            try:
                await work()
            finally:
                capacity.release_on_behalf_of(token)

    async def adaptive(n: int) -> None:
        call = concurrency.call
        for _ in range(n):
            await call(work)

    async def nursery_one_task(n: int) -> None:
        for _ in range(n):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(work)

    async def hedged(n: int) -> None:
        call = hedge.call
        for _ in range(n):
            await call(work)

    async def wrapper(n: int) -> None:
        async def minimal(fn):  # type: ignore[no-untyped-def]
            return await fn()

        for _ in range(n):
            await minimal(work)

    async def throttled(n: int) -> None:
        call = throttle.call
        for _ in range(n):
            await call(work)

    times = await time_loops(
        {
            "trio.lowlevel.checkpoint()": checkpoint,
            "RateLimiter.acquire() under limit": acquire,
            "trio.CapacityLimiter around the call": limiter_around,
            "AdaptiveConcurrency.call": adaptive,
            "nursery + start one task": nursery_one_task,
            "Hedge.call, no hedge needed": hedged,
            "minimal call wrapper": wrapper,
            "AdaptiveThrottle.call": throttled,
        },
        n=20_000,
    )
    growth = await memory_growth(acquire, 200_000)
    growth_concurrency = await memory_growth(adaptive, 200_000)
    report(
        "admission control",
        [
            ratio_row(
                "RateLimiter.acquire() under limit",
                "trio.lowlevel.checkpoint()",
                times,
                at_most=1.3,
            ),
            ratio_row(
                "AdaptiveConcurrency.call",
                "trio.CapacityLimiter around the call",
                times,
                at_most=1.3,
            ),
            ratio_row(
                "Hedge.call, no hedge needed", "nursery + start one task", times, at_most=1.2
            ),
            ratio_row("AdaptiveThrottle.call", "minimal call wrapper", times),
        ],
        {
            "memory growth over 200,000 RateLimiter.acquire (bytes)": growth,
            "memory growth over 200,000 AdaptiveConcurrency.call (bytes)": growth_concurrency,
        },
    )


if __name__ == "__main__":
    trio.run(main)
