"""A send that is not shed, against a raw Trio memory channel send in the same run.

Run: ``python benchmarks/bench_shedding.py``.
"""

from __future__ import annotations

import trio
from _common import ratio_row, report, time_loops

from trio_resilience import DropNewest, ShedSendChannel, open_shedding_channel


async def main() -> None:
    async def raw(n: int) -> None:
        send, _receive = trio.open_memory_channel[int](n)
        s = send.send
        for i in range(n):
            await s(i)

    async def shedding(n: int) -> None:
        send, _receive = open_shedding_channel(n)
        s = send.send
        for i in range(n):
            await s(i)

    async def drop_newest(n: int) -> None:
        send, _receive = open_shedding_channel(n, policy=DropNewest())
        s = send.send
        for i in range(n):
            await s(i)

    async def wrapper(n: int) -> None:
        raw_send, _receive = trio.open_memory_channel[int](n)
        s = ShedSendChannel(raw_send).send
        for i in range(n):
            await s(i)

    async def raw_nowait(n: int) -> None:
        send, _receive = trio.open_memory_channel[int](n)
        s = send.send_nowait
        for i in range(n):
            s(i)

    async def shedding_nowait(n: int) -> None:
        send, _receive = open_shedding_channel(n)
        s = send.send_nowait
        for i in range(n):
            s(i)

    times = await time_loops(
        {
            "trio memory channel send": raw,
            "shedding channel send (probabilistic)": shedding,
            "shedding channel send (drop newest)": drop_newest,
            "ShedSendChannel around trio's channel": wrapper,
            "trio memory channel send_nowait": raw_nowait,
            "shedding channel send_nowait": shedding_nowait,
        },
        n=50_000,
    )
    base = "trio memory channel send"
    report(
        "load shedding",
        [
            ratio_row("shedding channel send (probabilistic)", base, times, at_most=1.2),
            ratio_row("shedding channel send (drop newest)", base, times, at_most=1.2),
            ratio_row("ShedSendChannel around trio's channel", base, times),
            ratio_row("shedding channel send_nowait", "trio memory channel send_nowait", times),
        ],
    )


if __name__ == "__main__":
    trio.run(main)
