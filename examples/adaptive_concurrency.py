"""Adaptive concurrency: the limit finds a server's capacity from latency alone.

The server runs 16 requests at once (more wait in its queue); 40 clients call it in a
loop through an AdaptiveConcurrency limit that starts at 4.

Run: ``python examples/adaptive_concurrency.py``.
"""

from __future__ import annotations

import trio

from trio_resilience import AdaptiveConcurrency

server = trio.CapacityLimiter(16)
limit = AdaptiveConcurrency(algorithm="gradient2", initial_limit=4, name="server")


async def request() -> None:
    async with server:
        await trio.sleep(0.05)


async def main() -> list[int]:
    seen = []
    end = trio.current_time() + 10

    async def client() -> None:
        while trio.current_time() < end:
            await limit.call(request)

    async def watch() -> None:
        while trio.current_time() < end:
            seen.append(limit.limit)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        for _ in range(40):
            nursery.start_soon(client)
    print(f"limit each second: {seen}")
    print(limit.statistics())
    return seen


if __name__ == "__main__":
    trio.run(main)
