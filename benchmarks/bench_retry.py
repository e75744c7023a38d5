"""A first-try success through Retry against a minimal call wrapper and against tenacity.

Run: ``python benchmarks/bench_retry.py`` (tenacity comes with the ``bench`` extra).
"""

from __future__ import annotations

import trio
from _common import Loop, Row, ratio_row, report, time_loops

from trio_resilience import Retry, RetryBudget


async def work() -> int:
    return 1


async def minimal_wrapper(fn):  # type: ignore[no-untyped-def]
    return await fn()


async def main() -> None:
    retry = Retry()
    budgeted = Retry(budget=RetryBudget())

    async def wrapper(n: int) -> None:
        for _ in range(n):
            await minimal_wrapper(work)

    async def retry_call(n: int) -> None:
        call = retry.call
        for _ in range(n):
            await call(work)

    async def budget_call(n: int) -> None:
        call = budgeted.call
        for _ in range(n):
            await call(work)

    loops: dict[str, Loop] = {
        "minimal call wrapper": wrapper,
        "Retry.call first-try success": retry_call,
        "Retry.call with RetryBudget": budget_call,
    }
    try:
        from tenacity import AsyncRetrying, stop_after_attempt
    except ImportError:  # pragma: no cover - the bench extra is missing
        tenacity = None
    else:
        tenacity = AsyncRetrying(sleep=trio.sleep, stop=stop_after_attempt(3))

        async def tenacity_call(n: int) -> None:
            for _ in range(n):
                await tenacity(work)

        loops["tenacity AsyncRetrying(sleep=trio.sleep)"] = tenacity_call

    times = await time_loops(loops, n=100_000)
    rows: list[Row] = [
        ratio_row("Retry.call first-try success", "minimal call wrapper", times, at_most=4),
        ratio_row("Retry.call with RetryBudget", "minimal call wrapper", times),
    ]
    if tenacity is not None:
        rows.append(
            ratio_row(
                "Retry.call first-try success",
                "tenacity AsyncRetrying(sleep=trio.sleep)",
                times,
                at_least=20,
            )
        )
    report("retry", rows)


if __name__ == "__main__":
    trio.run(main)
