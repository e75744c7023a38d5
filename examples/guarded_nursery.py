"""Fan out many calls to a flaky service through a guarded nursery.

Every child runs through Fallback -> Retry -> CircuitBreaker -> Bulkhead -> FailAfter:
the usual recipe, retry outside the breaker outside the per-call timeout, and a
fallback outermost so that one failed child does not cancel its siblings.
Run it: ``python examples/guarded_nursery.py`` (it runs in virtual time).
"""

from __future__ import annotations

import random
from collections import Counter

import trio
import trio.testing

from trio_resilience import (
    Bulkhead,
    CircuitBreaker,
    DecorrelatedJitterBackoff,
    FailAfter,
    Fallback,
    Retry,
    RetryBudget,
    open_guarded_nursery,
)


class ServiceError(Exception):
    pass


async def main() -> list[str]:
    rng = random.Random(3)
    breaker = CircuitBreaker("profiles", failure_threshold=20, recovery_timeout=2.0)
    bulkhead = Bulkhead(10)  # at most 10 requests in flight
    fetched: list[int] = []
    gave_up: Counter[str] = Counter()

    async def fetch_profile(user_id: int) -> None:
        await trio.sleep(rng.uniform(0.05, 0.3))
        roll = rng.random()
        if roll < 0.15:
            raise ServiceError(f"500 for {user_id}")
        if roll < 0.2:
            await trio.sleep(10)  # a hung request: FailAfter cuts it
        fetched.append(user_id)

    async def serve_from_cache(exc: BaseException) -> None:
        gave_up[type(exc).__name__] += 1

    start = trio.current_time()
    async with open_guarded_nursery(
        Fallback(serve_from_cache),
        Retry(
            attempts=3,
            backoff=DecorrelatedJitterBackoff(base=0.05, max_delay=1.0, rng=rng),
            retry_on=(ServiceError, trio.TooSlowError),
            budget=RetryBudget(ratio=0.2, min_retries_per_second=5.0),
        ),
        breaker,
        bulkhead,
        FailAfter(1.0),
    ) as nursery:
        for user_id in range(200):
            nursery.start_soon(fetch_profile, user_id)
    stats = breaker.statistics()
    lines = [
        f"fetched {len(fetched)} of 200 profiles in {trio.current_time() - start:.1f}s "
        f"(virtual); fell back for {sum(gave_up.values())}: {dict(gave_up)}",
        f"breaker: {stats.total_calls} calls, {stats.total_failures} failures, "
        f"{stats.total_rejected} rejected, state {stats.state}",
        f"bulkhead tokens still borrowed: {bulkhead.limiter.borrowed_tokens}",
    ]
    for line in lines:
        print(line)
    return lines


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
