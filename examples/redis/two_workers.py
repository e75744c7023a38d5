"""Two worker processes share one circuit breaker through Redis.

Run it against a Redis you have (needs the ``redis`` extra)::

    python examples/redis/two_workers.py redis://127.0.0.1:6379/0

 Worker "a" meets a failing dependency and trips the
breaker; worker "b" never saw a failure, yet stops calling within the sync interval and
waits out the same recovery deadline.
"""

from __future__ import annotations

import subprocess
import sys
import time

import structlog
import trio

from trio_resilience import CircuitBreaker, CircuitOpenError
from trio_resilience.redis import open_shared_state


class Unavailable(Exception):
    pass


async def worker(url: str, name: str) -> None:
    breaker = CircuitBreaker(
        "payments", failure_threshold=3, recovery_timeout=20.0, logger=structlog.ReturnLogger()
    )

    async def call_payments() -> str:
        await trio.sleep(0.01)
        if name == "a":
            raise Unavailable("payments is down")  # only worker a sees the outage
        return "paid"

    # trip_quorum=1: one process's trip opens the others (the default, 2, would need a
    # second process to see the outage before a healthy one stops calling).
    async with open_shared_state(url, breaker, prefix="example", sync_interval=0.1, trip_quorum=1):
        start = time.monotonic()
        outcomes: dict[str, int] = {"paid": 0, "failed": 0, "rejected": 0}
        while time.monotonic() - start < 2.0:
            if name == "b" or time.monotonic() - start > 0.5:  # a starts after 0.5 s
                try:
                    await breaker.call(call_payments)
                    outcomes["paid"] += 1
                except Unavailable:
                    outcomes["failed"] += 1
                except CircuitOpenError:
                    outcomes["rejected"] += 1
            await trio.sleep(0.05)
        print(
            f"worker {name}: {outcomes}, breaker {breaker.state}, "
            f"retry after {breaker.retry_after:.1f}s",
            flush=True,
        )


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"
    if len(sys.argv) > 2:  # a child process: run one worker
        trio.run(worker, url, sys.argv[2])
        return
    children = [subprocess.Popen([sys.executable, __file__, url, name]) for name in "ab"]
    for child in children:
        child.wait()


if __name__ == "__main__":
    main()
