"""Adaptive throttling: a client stops hammering a backend that refuses most requests.

The backend accepts 1 request in 10 for a minute, then recovers. The throttle rejects
locally so that only about twice what the backend accepts reaches it.

Run: ``python examples/adaptive_throttle.py``.
"""

from __future__ import annotations

import random

import trio

from trio_resilience import AdaptiveThrottle, ThrottledError


class Overloaded(Exception):
    pass


throttle = AdaptiveThrottle(k=2.0, window=30.0, failure_on=Overloaded, rng=random.Random(1))


async def main() -> dict[str, int]:
    counts = {"sent": 0, "accepted": 0, "rejected_locally": 0}
    calls = 0
    start = trio.current_time()

    async def backend() -> None:
        counts["sent"] += 1
        if trio.current_time() - start < 60 and counts["sent"] % 10:
            raise Overloaded
        counts["accepted"] += 1

    while trio.current_time() - start < 120:
        calls += 1
        try:
            await throttle.call(backend)
        except ThrottledError:
            counts["rejected_locally"] += 1
        except Overloaded:
            pass
        await trio.sleep(0.1)
    print(f"{calls} calls: {counts}")
    print(f"now: {throttle.statistics()}")
    return counts


if __name__ == "__main__":
    trio.run(main)
