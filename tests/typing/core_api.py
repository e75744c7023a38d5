"""Checked by mypy --strict (make typecheck): the wave-2 core surface keeps its types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import assert_type

import trio

from trio_resilience import (
    Bulkhead,
    BulkheadStatistics,
    GuardedNursery,
    LoopBudget,
    Retry,
    RetryBudget,
    RetryBudgetDelta,
    RetryStatistics,
    ShedMemoryReceiveChannel,
    ShedMemorySendChannel,
    open_guarded_nursery,
    open_shedding_channel,
)


async def check() -> None:
    send, receive = open_shedding_channel[int](3)
    assert_type(send, ShedMemorySendChannel[int])
    assert_type(receive, ShedMemoryReceiveChannel[int])
    await send.send(1)
    assert_type(await receive.receive(), int)
    retry = Retry(hint_jitter=0.1)
    stats = retry.statistics()
    assert_type(stats, RetryStatistics)
    assert_type(stats.gave_up, Mapping[str, int])
    budget = RetryBudget(name="api")
    assert_type(budget.take_sync_delta(), RetryBudgetDelta)
    assert_type(budget.apply_remote_counts(1, 0), bool)
    budget.give_back()
    budget.clear_remote()
    bulkhead = Bulkhead(2, max_wait=0)
    assert_type(bulkhead.statistics(), BulkheadStatistics)
    async with open_guarded_nursery(retry, bulkhead) as nursery:
        assert_type(nursery, GuardedNursery)
        nursery.start_soon(trio.sleep, 0)
        assert_type(nursery.duty_tasks, frozenset[trio.lowlevel.Task])
        nursery.nursery.start_soon(send.serve)
        nursery.cancel_scope.cancel()
    with LoopBudget(10) as loop:
        await loop.tick()
