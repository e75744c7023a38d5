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


class OneShot:
    """The least an async iterator can do: yield once, then stop (the floor of async for)."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def __aiter__(self) -> OneShot:
        return self

    async def __anext__(self) -> OneShot:
        if self.done:
            raise StopAsyncIteration
        self.done = True
        return self


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

    async def one_shot(n: int) -> None:
        for _ in range(n):
            async for _shot in OneShot():
                await work()

    async def attempt_loop(n: int) -> None:
        for _ in range(n):
            async for attempt in retry:
                with attempt:
                    await work()

    loops: dict[str, Loop] = {
        "minimal call wrapper": wrapper,
        "Retry.call first-try success": retry_call,
        "Retry.call with RetryBudget": budget_call,
        "async for attempt in retry (first try)": attempt_loop,
        "one-shot async for (no policy)": one_shot,
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
        ratio_row(
            "async for attempt in retry (first try)", "minimal call wrapper", times, at_most=4
        ),
        ratio_row("one-shot async for (no policy)", "minimal call wrapper", times),
        ratio_row(
            "async for attempt in retry (first try)", "one-shot async for (no policy)", times
        ),
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
