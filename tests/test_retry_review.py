"""Retry and RetryBudget, review 1: hints, runs, nested pipelines, counts and loggers."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
import trio
import trio.testing

from trio_resilience import (
    CircuitBreaker,
    CircuitOpenError,
    ConstantBackoff,
    Pipeline,
    Retry,
    RetryBudget,
)
from trio_resilience._retry import BUSY_PROBE_FLOOR

from .conftest import Boom
from .test_retry_v2 import Calls, constant


class RaisingLogger:
    """A structlog-like logger whose every method raises."""

    def __getattr__(self, name: str) -> Any:
        def method(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError(f"logger.{name} is broken")

        return method


async def test_a_huge_int_delay_hint_gives_up_on_the_deadline_not_overflow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """delay_hint returning 10**400 is an infinite delay: the service's error, reason deadline."""
    retry = Retry(attempts=2, delay_hint=lambda e: 10**400)
    with pytest.raises(Boom) as info:
        await retry.call(Calls(Boom("down"), Boom("again")))
    assert info.value.__notes__[-1].endswith("the next delay would pass the deadline")
    assert dict(retry.statistics().gave_up) == {"deadline": 1}


@pytest.mark.parametrize("hint", [Fraction(1, 2), Decimal("0.5")])
async def test_a_fraction_or_decimal_delay_hint_is_a_number(
    autojump_clock: trio.testing.MockClock, hint: object
) -> None:
    """Fraction and Decimal hints are delays like floats, not hint failures."""
    calls = Calls(Boom())
    assert await constant(5.0, delay_hint=lambda e: hint).call(calls) == "ok"  # type: ignore[arg-type,return-value]
    assert calls.times == [0.0, 0.5]


async def test_a_huge_fraction_delay_hint_gives_up_on_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Fraction(10**400) overflows float(): it counts as an infinite delay."""
    retry = constant(1.0, delay_hint=lambda e: Fraction(10**400))  # type: ignore[arg-type,return-value]
    with pytest.raises(Boom):
        await retry.call(Calls(Boom(), Boom()))
    assert dict(retry.statistics().gave_up) == {"deadline": 1}


budget_across_runs = RetryBudget(ratio=1.0, min_retries_per_second=0)
retry_across_runs = Retry(attempts=2, backoff=ConstantBackoff(0), budget=budget_across_runs)


def test_a_budget_keeps_the_first_deposit_of_a_new_run() -> None:
    """Module-level budget: the second trio.run's call earns its own retry."""
    results = []

    async def once() -> None:
        results.append(await retry_across_runs.call(Calls(Boom())))

    trio.run(once, clock=trio.testing.MockClock(autojump_threshold=0))
    trio.run(once, clock=trio.testing.MockClock(autojump_threshold=0))
    assert results == ["ok", "ok"]
    stats = budget_across_runs.statistics()
    assert (stats.rejected, stats.withdrawals) == (0, 2)


def test_a_third_of_a_retry_per_call_is_kept_across_runs() -> None:
    """ratio=1/3: three calls of a new run earn one retry, none of an earlier run's count."""
    budget = RetryBudget(ratio=1 / 3, min_retries_per_second=0)
    retry = Retry(attempts=2, backoff=ConstantBackoff(0), budget=budget)

    async def three_calls() -> None:
        assert await retry.call(Calls()) == "ok"
        assert await retry.call(Calls()) == "ok"
        assert await retry.call(Calls(Boom())) == "ok"

    trio.run(three_calls, clock=trio.testing.MockClock(autojump_threshold=0))
    trio.run(three_calls, clock=trio.testing.MockClock(autojump_threshold=0))
    assert retry.statistics().retries == 2
    assert budget.statistics().rejected == 0


async def test_a_retry_in_a_nested_pipeline_knows_the_outer_breakers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Pipeline(Pipeline(Retry), breaker) gives up at once with the service's error."""
    for nested in (
        lambda r: Pipeline(r),
        lambda r: Pipeline(Pipeline(r)),
        lambda r: Pipeline(Pipeline(r, Pipeline())),
    ):
        breaker = CircuitBreaker(failure_threshold=1)
        retry = constant(1.0, attempts=3)
        calls = Calls(Boom("down"))
        with pytest.raises(Boom) as info:
            await Pipeline(nested(retry), breaker).call(calls)
        assert calls.times == [trio.current_time()]
        assert info.value.__notes__[-1].endswith("(circuit_open)")
        assert dict(retry.statistics().gave_up) == {"circuit_open": 1}


async def test_a_nested_pipeline_still_runs_its_own_policies_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Recomposing a nested Pipeline keeps its retries and the outer tail per attempt."""
    breaker = CircuitBreaker(failure_threshold=5)
    retry = constant(1.0, attempts=3)
    calls = Calls(Boom(), Boom())
    assert await Pipeline(Pipeline(retry), breaker).call(calls) == "ok"
    assert calls.times == [0.0, 1.0, 2.0]
    assert breaker.statistics().total_failures == 2


async def test_a_retry_whose_sleep_is_cancelled_is_not_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelled at t=1 in a 5 s backoff: one attempt, no retry, the token given back."""
    budget = RetryBudget()
    retry = constant(5.0, attempts=3, budget=budget)
    calls = Calls(Boom(), Boom())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(retry.call, calls)
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()  # no deadline: Retry would not sleep past one
    stats = retry.statistics()
    assert (stats.calls, stats.attempts, stats.retries) == (1, 1, 0)
    assert calls.times == [0.0]
    assert budget.statistics().given_back == 1


async def test_a_raising_logger_never_breaks_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A logger whose methods raise: retries, give-ups and hint failures work as usual."""

    def hint(exc: BaseException) -> float:
        raise ValueError("bad header")

    retry = constant(1.0, attempts=3, logger=RaisingLogger(), delay_hint=hint)
    calls = Calls(Boom(), Boom())
    assert await retry.call(calls) == "ok"
    assert calls.times == [0.0, 1.0, 2.0]
    with pytest.raises(Boom, match="last"):
        await retry.call(Calls(Boom(), Boom(), Boom("last")))
    assert dict(retry.statistics().gave_up) == {"attempts": 1}


async def test_delay_hint_is_not_called_before_a_give_up_that_needs_no_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No hint for the last attempt, an empty budget or a forced-open breaker."""
    seen: list[BaseException] = []

    def hint(exc: BaseException) -> float:
        seen.append(exc)
        return 1.0

    with pytest.raises(Boom):
        await constant(1.0, attempts=1, delay_hint=hint).call(Calls(Boom()))
    empty = RetryBudget(ratio=0.0, min_retries_per_second=0.0)
    with pytest.raises(Boom) as info:
        await constant(1.0, budget=empty, delay_hint=hint).call(Calls(Boom()))
    assert info.value.__notes__[-1].endswith("the retry budget had no token")
    breaker = CircuitBreaker(failure_threshold=100)
    breaker.force_open()
    retry = constant(1.0, delay_hint=hint, retry_on=(Boom, CircuitOpenError))
    with pytest.raises(CircuitOpenError):
        await Pipeline(retry, breaker).call(Calls())
    assert seen == []
    assert empty.statistics().rejected == 1


async def test_a_give_up_after_the_hint_returns_the_budget_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The hint's delay passes the deadline: the token taken for that retry is not spent."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=1.0, window=10.0)
    retry = constant(1.0, budget=budget, delay_hint=lambda e: 1000.0)
    with pytest.raises(Boom):
        await retry.call(Calls(Boom()))
    stats = budget.statistics()
    assert (stats.balance, stats.withdrawals, stats.given_back) == (10.0, 0, 0)


async def test_every_delay_hint_failure_note_reaches_the_final_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each attempt raises a fresh error: the final one carries the hint failures' notes."""

    def hint(exc: BaseException) -> float:
        raise ValueError("bad header")

    last = Boom("last")
    with pytest.raises(Boom) as info:
        await constant(1.0, attempts=3, delay_hint=hint).call(Calls(Boom(), Boom(), last))
    assert info.value is last
    notes = info.value.__notes__
    assert [n for n in notes if "delay_hint raised" in n] == [
        "trio_resilience: Retry 'default': delay_hint raised ValueError('bad header'); "
        f"the backoff's delay was used after attempt {n}"
        for n in (1, 2)
    ]
    assert notes[-1].startswith("trio_resilience: Retry 'default' gave up after 3 attempts")


async def _busy_half_open(breaker: CircuitBreaker, nursery: trio.Nursery) -> None:
    """Trip ``breaker``, let it go half-open, and hold its one probe for 5 s."""
    with pytest.raises(Boom):
        await breaker.call(Calls(Boom()))
    await trio.sleep(1.0)
    nursery.start_soon(breaker.call, trio.sleep, 5.0)
    await trio.sleep(0.1)


async def test_a_busy_half_open_breaker_in_a_pipeline_is_waited_for_not_spun_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """retry_after 0 and a zero backoff: one wait on wait_ready(), then the call passes."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=1.0, half_open_max_calls=1)
    retry = Retry(attempts=None, backoff=ConstantBackoff(0), retry_on=CircuitOpenError, name="busy")
    calls = Calls()
    async with trio.open_nursery() as nursery:
        await _busy_half_open(breaker, nursery)
        assert await Pipeline(retry, breaker).call(calls) == "ok"
    assert calls.times == [pytest.approx(6.0)]  # the probe ends at 1 + 5
    assert retry.statistics().retries == 1


async def test_waiting_for_a_busy_breaker_stops_at_max_total_duration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The wait for wait_ready() is bounded: the retry then gives up on the deadline."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=1.0, half_open_max_calls=1)
    retry = Retry(
        attempts=None,
        backoff=ConstantBackoff(0),
        retry_on=CircuitOpenError,
        max_total_duration=2.0,
    )
    async with trio.open_nursery() as nursery:
        await _busy_half_open(breaker, nursery)
        with pytest.raises(CircuitOpenError):
            await Pipeline(retry, breaker).call(Calls())
        assert trio.current_time() == pytest.approx(3.1)
    assert dict(retry.statistics().gave_up) == {"deadline": 1}


async def test_a_busy_breaker_outside_a_pipeline_waits_at_least_the_floor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Outside a Pipeline a zero backoff on busy probes sleeps BUSY_PROBE_FLOOR each time."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=1.0, half_open_max_calls=1)
    retry = Retry(attempts=4, backoff=ConstantBackoff(0), retry_on=CircuitOpenError)
    async with trio.open_nursery() as nursery:
        await _busy_half_open(breaker, nursery)
        start = trio.current_time()
        with pytest.raises(CircuitOpenError):
            await retry.call(breaker.call, Calls())
        assert trio.current_time() - start == pytest.approx(3 * BUSY_PROBE_FLOOR)
    assert BUSY_PROBE_FLOOR > 0 and math.isfinite(BUSY_PROBE_FLOOR)
