"""Checked by mypy --strict (make typecheck): the public API keeps callers' types."""

from __future__ import annotations

from typing import assert_type

import trio

from trio_resilience import (
    Bulkhead,
    CircuitBreaker,
    FailAfter,
    Pipeline,
    Retry,
    open_shedding_channel,
)

breaker = CircuitBreaker("db")
retry = Retry()
pipeline = Pipeline(retry, breaker, Bulkhead(3), FailAfter(1.0))


@breaker
async def by_breaker(x: int, *, y: str = "") -> float:
    return float(x)


@retry
async def by_retry(x: int) -> list[int]:
    return [x]


@pipeline
async def by_pipeline(name: str) -> bytes:
    return name.encode()


async def check() -> None:
    assert_type(await by_breaker(1, y="a"), float)
    assert_type(await by_retry(2), list[int])
    assert_type(await by_pipeline("x"), bytes)
    assert_type(await breaker.call(by_retry, 3), list[int])
    assert_type(await retry.call(by_breaker, 3), float)
    assert_type(await pipeline.call(by_pipeline, "y"), bytes)
    send, receive = open_shedding_channel(10)
    await send.send(1)
    await receive.receive()
    async for attempt in retry:
        with attempt:
            await trio.sleep(0)
