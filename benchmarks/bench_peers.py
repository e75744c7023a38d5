"""Peer libraries, each against its own baseline in the same process.

tenacity and stamina run under Trio; pybreaker's sync ``call`` runs against a bare sync
call; aiobreaker and purgatory run under asyncio against a bare asyncio await. The
peers come with the ``bench`` extra; a missing one is reported, not an error.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Callable

import trio
from _common import ROUNDS, Row, ratio_row, report, time_loops

from trio_resilience import CircuitBreaker, Retry


async def work() -> int:
    return 1


async def minimal_wrapper(fn):  # type: ignore[no-untyped-def]
    return await fn()


def _median_sync(loops: dict[str, Callable[[int], None]], n: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(ROUNDS):
        for name, loop in loops.items():
            gc.collect()
            start = time.perf_counter()
            loop(n)
            samples[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(v) for name, v in samples.items()}


def _asyncio_times(n: int) -> dict[str, float]:
    loops = {}

    async def bare(n: int) -> None:
        for _ in range(n):
            await work()

    loops["bare asyncio await"] = bare
    try:
        import aiobreaker

        breaker = aiobreaker.CircuitBreaker(fail_max=5)

        async def aio(n: int) -> None:
            for _ in range(n):
                await breaker.call_async(work)

        loops["aiobreaker call_async (asyncio)"] = aio
    except ImportError:
        pass
    try:
        from purgatory import AsyncCircuitBreakerFactory

        factory = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)

        async def purg(n: int) -> None:
            circuit = await factory.get_breaker("bench")
            for _ in range(n):
                async with circuit:
                    await work()

        loops["purgatory async with (asyncio)"] = purg
    except ImportError:
        pass

    async def run() -> dict[str, float]:
        samples: dict[str, list[float]] = {name: [] for name in loops}
        for loop in loops.values():
            await loop(1000)
        for _ in range(ROUNDS):
            for name, loop in loops.items():
                gc.collect()
                start = time.perf_counter()
                await loop(n)
                samples[name].append((time.perf_counter() - start) / n)
        return {name: statistics.median(v) for name, v in samples.items()}

    return asyncio.run(run())


async def main() -> None:
    rows: list[Row] = []
    breaker, retry = CircuitBreaker("bench"), Retry()

    async def wrapper(n: int) -> None:
        for _ in range(n):
            await minimal_wrapper(work)

    async def ours_breaker(n: int) -> None:
        for _ in range(n):
            await breaker.call(work)

    async def ours_retry(n: int) -> None:
        for _ in range(n):
            await retry.call(work)

    loops = {
        "minimal call wrapper": wrapper,
        "trio_resilience CircuitBreaker.call": ours_breaker,
        "trio_resilience Retry.call": ours_retry,
    }
    missing: list[str] = []
    try:
        import stamina

        @stamina.retry(on=ValueError, attempts=3)
        async def stamina_work() -> int:
            return 1

        async def stamina_loop(n: int) -> None:
            for _ in range(n):
                await stamina_work()

        loops["stamina @retry (Trio)"] = stamina_loop
    except ImportError:
        missing.append("stamina")
    try:
        from tenacity import AsyncRetrying, stop_after_attempt

        tenacity = AsyncRetrying(sleep=trio.sleep, stop=stop_after_attempt(3))

        async def tenacity_loop(n: int) -> None:
            for _ in range(n):
                await tenacity(work)

        loops["tenacity AsyncRetrying (Trio)"] = tenacity_loop
    except ImportError:
        missing.append("tenacity")
    times = await time_loops(loops, n=20_000)
    base = "minimal call wrapper"
    rows.append(ratio_row("trio_resilience CircuitBreaker.call", base, times))
    rows.append(ratio_row("trio_resilience Retry.call", base, times))
    for name in ("stamina @retry (Trio)", "tenacity AsyncRetrying (Trio)"):
        if name in times:
            rows.append(ratio_row(name, base, times))

    try:
        import pybreaker

        sync_breaker = pybreaker.CircuitBreaker(fail_max=5)

        def sync_work() -> int:
            return 1

        def bare_sync(n: int) -> None:
            for _ in range(n):
                sync_work()

        def pybreaker_loop(n: int) -> None:
            for _ in range(n):
                sync_breaker.call(sync_work)

        sync_times = _median_sync(
            {"bare sync call": bare_sync, "pybreaker call (sync)": pybreaker_loop}, 50_000
        )
        rows.append(ratio_row("pybreaker call (sync)", "bare sync call", sync_times))
    except ImportError:
        missing.append("pybreaker")
    aio_times = _asyncio_times(20_000)
    for name in ("aiobreaker call_async (asyncio)", "purgatory async with (asyncio)"):
        if name in aio_times:
            rows.append(ratio_row(name, "bare asyncio await", aio_times))
        else:
            missing.append(name.split()[0])
    report("peers (each against its own baseline)", rows, {"missing peers": missing or "none"})


if __name__ == "__main__":
    trio.run(main)
