"""Reliability: cancellation storms, load, and exceptions' identity through every policy."""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog
import trio
import trio.testing

from trio_resilience import (
    Bulkhead,
    CircuitBreaker,
    CircuitOpenError,
    ConstantBackoff,
    FailAfter,
    Fallback,
    LoadShedError,
    Pipeline,
    Retry,
    open_guarded_nursery,
    open_shedding_channel,
)
from trio_resilience.testing import set_breaker_state

from .conftest import Boom

STORM = 10_000


async def storm(
    make_call: Callable[[int], Awaitable[Any]], rng: random.Random, seen: Counter[str]
) -> None:
    """Run STORM callers, each cancelled at a random point, and tally what each saw."""

    async def caller(i: int) -> None:
        with trio.move_on_after(rng.random() * 2) as scope:
            try:
                await make_call(i)
                seen["ok"] += 1
            except Boom:
                seen["failed"] += 1
            except CircuitOpenError:
                seen["rejected"] += 1
            except trio.TooSlowError:
                seen["too_slow"] += 1
            except LoadShedError:
                seen["shed"] += 1
        if scope.cancelled_caught:
            seen["cancelled"] += 1

    async with trio.open_nursery() as nursery:
        for i in range(STORM):
            nursery.start_soon(caller, i)
            if i % 100 == 0:
                await trio.sleep(rng.random() * 0.2)


async def upstream_work(rng: random.Random) -> str:
    await trio.sleep(rng.random())
    if rng.random() < 0.2:
        raise Boom
    return "ok"


async def test_breaker_storm_leaks_no_permit_and_agrees_with_callers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """10,000 callers at a half-open breaker, cancelled at random: statistics add up."""
    rng = random.Random(1)
    breaker = CircuitBreaker(
        "storm",
        failure_threshold=5,
        recovery_timeout=0.3,
        half_open_max_calls=5,
        success_threshold=3,
    )
    set_breaker_state(breaker, "half_open")
    limiters = {id(breaker.half_open_limiter): breaker.half_open_limiter}
    seen: Counter[str] = Counter()

    async def call(i: int) -> Any:
        limiters[id(breaker.half_open_limiter)] = breaker.half_open_limiter
        if i % 2:
            return await breaker.call(upstream_work, rng)
        async with breaker:
            return await upstream_work(rng)

    await storm(call, rng, seen)
    stats = breaker.statistics()
    assert all(limiter.borrowed_tokens == 0 for limiter in limiters.values())
    assert len(limiters) > 1  # the storm went through several half-open periods
    assert breaker.statistics().half_open_in_flight == 0
    assert stats.total_successes == seen["ok"]
    assert stats.total_failures == seen["failed"]
    assert stats.total_rejected + stats.total_cancelled == seen["rejected"] + seen["cancelled"]
    assert stats.total_calls == (
        stats.total_successes + stats.total_failures + stats.total_ignored + stats.total_cancelled
    )
    assert sum(seen.values()) == STORM
    assert seen["cancelled"] > 100
    assert seen["rejected"] > 100


async def test_bulkhead_and_pipeline_storms_leak_no_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A Bulkhead alone and inside a Pipeline give every token back."""
    rng = random.Random(2)
    bulkhead = Bulkhead(50)
    seen: Counter[str] = Counter()
    await storm(lambda i: bulkhead.call(upstream_work, rng), rng, seen)
    assert bulkhead.statistics().borrowed_tokens == 0
    assert bulkhead.statistics().tasks_waiting == 0

    breaker = CircuitBreaker(failure_threshold=20, recovery_timeout=0.5, half_open_max_calls=4)
    inner = Bulkhead(30)
    pipeline = Pipeline(
        Retry(attempts=2, backoff=ConstantBackoff(0.05)), breaker, inner, FailAfter(0.7)
    )
    limiters = []

    async def through_pipeline(i: int) -> Any:
        limiters.append(breaker.half_open_limiter)
        return await pipeline.call(upstream_work, rng)

    seen = Counter()
    await storm(through_pipeline, rng, seen)
    assert inner.statistics().borrowed_tokens == 0
    assert all(limiter.borrowed_tokens == 0 for limiter in limiters)
    assert sum(seen.values()) == STORM


async def test_shedding_channel_storm_keeps_its_accounting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """10,000 senders and many receivers cancelled at random: nothing is lost."""
    rng = random.Random(3)
    fates: Counter[str] = Counter()
    send, receive = open_shedding_channel(
        20, on_shed=lambda item, reason: fates.__setitem__(reason, fates[reason] + 1)
    )
    got = 0

    async def consumer() -> None:
        nonlocal got
        while True:
            with trio.move_on_after(rng.random()):
                await receive.receive()
                got += 1
                await trio.sleep(0.01)

    seen: Counter[str] = Counter()
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(consumer)
        await storm(lambda i: send.send(i), rng, seen)
        nursery.cancel_scope.cancel()
    stats = send.statistics()
    assert stats.sent == stats.received + stats.evicted + stats.current_buffer_used
    assert stats.received == got
    assert stats.shed == seen["shed"] == fates["probabilistic"]
    assert stats.sent == seen["ok"]
    assert seen["cancelled"] > 0
    assert stats.tasks_waiting_send == 0
    receive.close()
    assert send.statistics().evicted == fates["receiver_closed"] == stats.current_buffer_used


async def test_load_through_a_pipeline_memory_is_flat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """200,000 calls from 2,000 tasks through a Pipeline: flat memory, no task left."""
    rng = random.Random(4)
    quiet = structlog.ReturnLogger()
    breaker = CircuitBreaker("load", failure_threshold=None, logger=quiet)  # never trips
    retry = Retry(attempts=2, backoff=ConstantBackoff(0.01), logger=quiet)
    pipeline = Pipeline(retry, breaker, Bulkhead(5_000))
    done = 0

    async def service() -> None:
        await trio.lowlevel.checkpoint()  # 2,000 tasks interleave at every call
        if rng.random() < 0.01:
            raise Boom

    async def client(calls: int) -> None:
        nonlocal done
        for _ in range(calls):
            try:
                await pipeline.call(service)
            except Boom:
                pass
            done += 1

    async def wave() -> None:  # 2,000 concurrent tasks, 50,000 calls
        async with trio.open_nursery() as nursery:
            for _ in range(2_000):
                nursery.start_soon(client, 25)

    await wave()
    gc.collect()
    tracemalloc.start()
    try:
        await wave()
        gc.collect()
        after_second = tracemalloc.get_traced_memory()[0]
        await wave()
        await wave()
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - after_second
    finally:
        tracemalloc.stop()
    assert done == 200_000
    # Flat: over the last 100,000 calls, less than 2 bytes a call. One leaked object per
    # call would add megabytes; what remains is a bounded table resize (the limiter's
    # set of 2,000 borrowers).
    assert growth < 192 * 1024, growth
    assert breaker.statistics().total_calls >= 200_000
    assert breaker.statistics().half_open_in_flight == 0
    assert pipeline.policies[2].limiter.borrowed_tokens == 0  # type: ignore[attr-defined]


# ------------------------------------------------------------------ exception identity


class Flaky:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def __call__(self) -> None:
        await trio.lowlevel.checkpoint()
        raise self.error


def policies() -> list[tuple[str, Any]]:
    return [
        ("breaker", CircuitBreaker()),
        ("retry", Retry(attempts=2, backoff=ConstantBackoff(0.1))),
        ("bulkhead", Bulkhead(2)),
        ("fail_after", FailAfter(10)),
        ("fallback_other", Fallback("x", on=KeyError)),
        ("pipeline", Pipeline(Retry(attempts=2, backoff=ConstantBackoff(0)), CircuitBreaker())),
    ]


@pytest.mark.parametrize(("name", "policy"), policies(), ids=[n for n, _ in policies()])
async def test_user_exceptions_keep_identity_and_traceback(
    name: str, policy: Any, autojump_clock: trio.testing.MockClock
) -> None:
    """The very exception raised by user code comes out, its traceback reaching the raise."""
    error = Boom("mine")
    with pytest.raises(Boom) as info:
        await policy.call(Flaky(error))
    assert info.value is error
    frames = [entry.name for entry in info.traceback]
    assert frames[-1] == "__call__"  # the user's raise is the innermost frame
    tb = error.__traceback__
    names = []
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "__call__" in names


async def test_nursery_groups_inside_guarded_calls_are_classified_by_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An ExceptionGroup from a nursery inside a call counts by its leaves everywhere."""

    async def fan_out(error: type[BaseException]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            nursery.start_soon(Flaky(error()))

    breaker = CircuitBreaker(failure_threshold=1, ignore_on=KeyError)
    with pytest.raises(ExceptionGroup):
        await breaker.call(fan_out, KeyError)  # only an ignored leaf: nothing counted
    assert breaker.statistics().total_ignored == 1
    with pytest.raises(ExceptionGroup) as info:
        await Retry(retry_on=Boom, backoff=ConstantBackoff(0.5)).call(fan_out, Boom)
    assert info.value.__notes__[-1].startswith("trio_resilience: Retry 'default' gave up after 3")
    assert trio.current_time() == 1.0
    assert await Fallback("ok", on=Boom).call(fan_out, Boom) == "ok"
    guard = CircuitBreaker(failure_threshold=1)
    with pytest.RaisesGroup(pytest.RaisesGroup(Boom)):
        async with open_guarded_nursery(guard) as nursery:
            nursery.start_soon(fan_out, Boom)
    assert guard.statistics().times_opened == 1
