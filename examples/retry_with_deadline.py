"""Retry a flaky call with decorrelated jitter, a retry budget and the caller's deadline.

Run it: ``python examples/retry_with_deadline.py`` (it runs in virtual time).
"""

from __future__ import annotations

import random

import trio
import trio.testing

from trio_resilience import DecorrelatedJitterBackoff, Retry, RetryBudget


class Throttled(Exception):
    """The service asks us to come back later."""

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


async def main() -> list[str]:
    rng = random.Random(7)
    lines: list[str] = []
    budget = RetryBudget(ratio=0.2, min_retries_per_second=1.0)
    retry = Retry(
        attempts=6,
        backoff=DecorrelatedJitterBackoff(base=0.1, max_delay=2.0, rng=rng),
        retry_on=(Throttled, ConnectionError),
        delay_hint=lambda exc: getattr(exc, "retry_after", None),
        budget=budget,
        name="search",
    )
    calls = 0

    @retry
    async def search(query: str) -> str:
        nonlocal calls
        calls += 1
        await trio.sleep(0.05)
        if calls == 1:
            raise Throttled(retry_after=1.0)  # the server's Retry-After wins
        if calls < 4:
            raise ConnectionError("reset by peer")
        return f"results for {query!r}"

    start = trio.current_time()
    lines.append(await search("trio"))
    lines.append(f"after {calls} calls in {trio.current_time() - start:.2f}s of virtual time")

    # The caller's deadline bounds the whole thing: no sleep that cannot finish in time.
    async def always_down() -> None:
        await trio.sleep(0.05)
        raise ConnectionError("down")

    with trio.move_on_after(0.5) as scope:
        try:
            await retry.call(always_down)
        except ConnectionError as exc:
            lines.append(f"gave up before the deadline: {exc.__notes__[-1]}")
    lines.append(f"deadline reached: {scope.cancelled_caught}")
    stats = budget.statistics()
    lines.append(f"budget: {stats.withdrawals} retries taken, {stats.balance:.1f} tokens left")
    for line in lines:
        print(line)
    return lines


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
