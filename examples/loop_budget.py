"""A gossip loop under a LoopBudget: throttled when it spins, stopped when it runs too long.

Run it: ``python examples/loop_budget.py`` (it runs in virtual time).
"""

from __future__ import annotations

import trio
import trio.testing

from trio_resilience import ConstantBackoff, LoopBudget, budgeted


async def main() -> list[str]:
    lines: list[str] = []

    # 1. A loop with nothing to wait for would spin: the budget holds it to 50/s.
    with LoopBudget(50, window=1.0, max_duration=3.0, name="gossip") as budget:
        async for _round in budget:
            pass  # send a gossip round; returns at once
    stats = budget.statistics()
    lines.append(
        f"gossip: {stats.iterations} rounds in 3 s (50/s allowed), "
        f"throttled {stats.throttled} times, exhausted by {stats.exhausted_by}"
    )

    # 2. A hard limit stops a body that is blocked in an await, like move_on_after.
    with LoopBudget.maintenance(max_duration=1.0) as stuck:
        await stuck.tick()
        await trio.sleep_forever()  # a hung dependency
    lines.append(f"stuck loop stopped after 1 s: exhausted={stuck.exhausted}")

    # 3. Drain a queue under a budget, ending cleanly when the producer closes it.
    send, receive = trio.open_memory_channel[int](100)
    async with send:
        for job in range(30):
            send.send_nowait(job)
    start = trio.current_time()
    with LoopBudget(10, window=1.0, backoff=ConstantBackoff(0.1), name="jobs") as jobs:
        handled = [job async for job in budgeted(receive, jobs)]
    lines.append(
        f"jobs: {len(handled)} handled at 10/s in {trio.current_time() - start:.1f} s, "
        f"exhausted={jobs.exhausted}"
    )
    for line in lines:
        print(line)
    return lines


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
