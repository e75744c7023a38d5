"""Breaker overhead: closed, open and half-open, against a minimal wrapper and a bare await.

Run: ``python benchmarks/bench_breaker.py`` (``make bench`` runs every benchmark).
"""

from __future__ import annotations

import structlog
import trio
from _common import Row, memory_growth, ratio_row, report, time_loops

from trio_resilience import CircuitBreaker, CircuitOpenError


async def work() -> int:
    return 1


async def minimal_wrapper(fn):  # type: ignore[no-untyped-def]
    return await fn()


class NoopContext:
    async def __aenter__(self) -> NoopContext:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


async def main() -> None:
    breaker = CircuitBreaker("bench")
    rate_breaker = CircuitBreaker("bench-rate", failure_rate_threshold=0.5)
    noop = NoopContext()
    quiet = structlog.ReturnLogger()
    open_breaker = CircuitBreaker(
        "bench-open", failure_threshold=1, recovery_timeout=1e9, logger=quiet
    )
    probing = CircuitBreaker(
        "bench-probe",
        failure_threshold=1,
        recovery_timeout=0.0,
        success_threshold=2**62,
        logger=quiet,
    )

    async def down() -> None:
        raise RuntimeError("down")

    for tripped in (open_breaker, probing):
        try:
            await tripped.call(down)
        except RuntimeError:
            pass

    async def bare(n: int) -> None:
        for _ in range(n):
            await work()

    async def wrapper(n: int) -> None:
        for _ in range(n):
            await minimal_wrapper(work)

    async def breaker_call(n: int) -> None:
        call = breaker.call
        for _ in range(n):
            await call(work)

    async def rate_call(n: int) -> None:
        call = rate_breaker.call
        for _ in range(n):
            await call(work)

    async def rejected(n: int) -> None:
        call = open_breaker.call
        for _ in range(n):
            try:
                await call(work)
            except CircuitOpenError:
                pass

    async def probe(n: int) -> None:
        call = probing.call
        for _ in range(n):
            await call(work)

    async def noop_with(n: int) -> None:
        for _ in range(n):
            async with noop:
                pass

    async def breaker_with(n: int) -> None:
        for _ in range(n):
            async with breaker:
                pass

    times = await time_loops(
        {
            "bare await": bare,
            "minimal call wrapper": wrapper,
            "breaker.call (closed)": breaker_call,
            "rate breaker.call (closed)": rate_call,
            "no-op async with": noop_with,
            "async with breaker (closed)": breaker_with,
            "open breaker rejection": rejected,
            "half-open probe breaker.call": probe,
        },
        n=200_000,
    )
    rows: list[Row] = [
        ratio_row("minimal call wrapper", "bare await", times),
        ratio_row("breaker.call (closed)", "minimal call wrapper", times, at_most=3),
        ratio_row("async with breaker (closed)", "no-op async with", times, at_most=2),
        ratio_row("rate breaker.call (closed)", "minimal call wrapper", times, at_most=5),
        ratio_row("open breaker rejection", "bare await", times, at_most=40),
        ratio_row("half-open probe breaker.call", "minimal call wrapper", times, at_most=6),
    ]
    growth = await memory_growth(breaker_call, 1_000_000)
    rate_growth = await memory_growth(rate_call, 1_000_000)
    report(
        "circuit breaker",
        rows,
        {
            "memory growth over 1,000,000 breaker.call (bytes)": growth,
            "memory growth over 1,000,000 rate breaker.call (bytes)": rate_growth,
        },
    )


if __name__ == "__main__":
    trio.run(main)
