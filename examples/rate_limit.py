"""Rate limiting: 5 requests per second with bursts of 2, failing fast past a deadline.

Run: ``python examples/rate_limit.py``.
"""

from __future__ import annotations

import trio

from trio_resilience import RateLimiter, RateLimitExceeded

limiter = RateLimiter(5, period=1.0, burst=2, name="api")


@limiter
async def fetch(i: int) -> str:
    return f"response {i}"


async def main() -> list[str]:
    lines = []
    start = trio.current_time()
    for i in range(6):
        answer = await fetch(i)
        lines.append(f"{trio.current_time() - start:4.1f}s {answer}")
    # A caller with 0.1 s left is told at once how long it would have had to wait.
    with trio.move_on_after(0.1):
        try:
            await limiter.acquire()
        except RateLimitExceeded as exc:
            lines.append(f"refused at once: retry after {exc.retry_after:.1f}s")
    stats = limiter.statistics()
    lines.append(f"admitted {stats.admitted}, rejected {stats.rejected}")
    for line in lines:
        print(line)
    return lines


if __name__ == "__main__":
    trio.run(main)
