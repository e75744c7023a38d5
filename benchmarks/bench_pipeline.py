"""Pipeline(Retry(), CircuitBreaker()) against a minimal call wrapper.

Run: ``python benchmarks/bench_pipeline.py``.
"""

from __future__ import annotations

import trio
from _common import ratio_row, report, time_loops

from trio_resilience import Bulkhead, CircuitBreaker, FailAfter, Pipeline, Retry


async def work() -> int:
    return 1


async def minimal_wrapper(fn):  # type: ignore[no-untyped-def]
    return await fn()


async def main() -> None:
    pipeline = Pipeline(Retry(), CircuitBreaker())
    full = Pipeline(Retry(), CircuitBreaker(), Bulkhead(100), FailAfter(10))

    async def wrapper(n: int) -> None:
        for _ in range(n):
            await minimal_wrapper(work)

    async def retry_breaker(n: int) -> None:
        call = pipeline.call
        for _ in range(n):
            await call(work)

    async def four(n: int) -> None:
        call = full.call
        for _ in range(n):
            await call(work)

    times = await time_loops(
        {
            "minimal call wrapper": wrapper,
            "Pipeline(Retry(), CircuitBreaker())": retry_breaker,
            "Pipeline(Retry, Breaker, Bulkhead, FailAfter)": four,
        },
        n=50_000,
    )
    report(
        "pipelines",
        [
            ratio_row(
                "Pipeline(Retry(), CircuitBreaker())", "minimal call wrapper", times, at_most=8
            ),
            ratio_row(
                "Pipeline(Retry, Breaker, Bulkhead, FailAfter)", "minimal call wrapper", times
            ),
        ],
    )


if __name__ == "__main__":
    trio.run(main)
