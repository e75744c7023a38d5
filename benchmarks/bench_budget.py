"""A LoopBudget tick under its limit against a bare trio.lowlevel.checkpoint().

Run: ``python benchmarks/bench_budget.py``.
"""

from __future__ import annotations

import trio
from _common import ratio_row, report, time_loops

from trio_resilience import LoopBudget


async def main() -> None:
    budget = LoopBudget(10**9)

    async def checkpoint(n: int) -> None:
        cp = trio.lowlevel.checkpoint
        for _ in range(n):
            await cp()

    async def tick(n: int) -> None:
        t = budget.tick
        for _ in range(n):
            await t()

    with budget:
        times = await time_loops(
            {"trio.lowlevel.checkpoint()": checkpoint, "LoopBudget.tick() under limit": tick},
            n=50_000,
        )
    report(
        "loop budget",
        [
            ratio_row(
                "LoopBudget.tick() under limit", "trio.lowlevel.checkpoint()", times, at_most=1.3
            )
        ],
    )


if __name__ == "__main__":
    trio.run(main)
