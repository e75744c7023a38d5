"""Type-checks of the breaker's wave-2 surface (``mypy --strict tests/typing``)."""

from __future__ import annotations

from typing import assert_type

import trio

from trio_resilience import CircuitBreaker, CircuitOpenError, CircuitState, StateChange
from trio_resilience._breaker import BreakerSharing, PermitSource

breaker = CircuitBreaker(
    "db", failure_if_result=lambda value: value is None, half_open_max_duration=5.0
)


def listener(change: StateChange) -> None:
    assert_type(change.new_state, CircuitState)


class Permits:
    async def acquire(self, breaker: CircuitBreaker, /) -> str | bool | None:
        return True

    def release(self, breaker: CircuitBreaker, lease: str, /) -> None:
        return None


async def check() -> None:
    await breaker.wait_ready()
    await breaker.wait_closed()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(breaker.serve)
        nursery.cancel_scope.cancel()
    port = breaker.sharing
    assert_type(port, BreakerSharing)
    assert_type(port.open_until(1.0), bool)
    assert_type(port.open_until(1.0, "remote_trip"), bool)
    assert_type(port.trip(), bool)
    assert_type(port.close_remote(), bool)
    assert_type(port.counted(), tuple[int, int])
    assert_type(port.would_trip(1, 2), bool)
    assert_type(port.longest_open_period, float)
    assert_type(port.open_deadline, float | None)
    assert_type(port.state, CircuitState)
    port.attach(object())
    port.add_listener(listener)
    source: PermitSource = Permits()
    port.set_permit_source(source)
    assert_type(port.permit_source, PermitSource | None)
    try:
        await breaker.call(trio.sleep, 0)
    except CircuitOpenError as exc:
        assert_type(exc.last_failure, BaseException | None)
