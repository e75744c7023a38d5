"""Retry, wave 2: breakers it wraps, hints, statistics, cancellation and hostile objects."""

from __future__ import annotations

import random
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
    RetryStatistics,
    _live,
)
from trio_resilience.testing import set_breaker_state

from .conftest import Boom


class Calls:
    """Raises ``errors`` in turn (then returns "ok"), recording the Trio time of each call."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.times: list[float] = []

    async def __call__(self) -> str:
        self.times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def constant(delay: float = 1.0, **kwargs: Any) -> Retry:
    return Retry(backoff=ConstantBackoff(delay), **kwargs)


class BadRepr(Exception):
    """An error whose repr and str raise."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __str__(self) -> str:
        raise RuntimeError("no str")


# ------------------------------------------------------------------ Retry over breakers


async def test_retry_outside_an_open_breaker_gives_up_at_once_with_the_upstream_error(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """The failure that trips the breaker ends retries: no sleep into a rejection."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30)
    retry = constant(1.0, attempts=5, name="api")
    calls = Calls(Boom("down"))
    with pytest.raises(Boom) as info:
        await Pipeline(retry, breaker).call(calls)
    assert calls.times == [0.0]
    assert trio.current_time() == 0.0
    assert info.value.__notes__[-1].endswith("(circuit_open)")
    gave_up = [e for e in logs if e["event"] == "trio_resilience.retry.gave_up"]
    assert gave_up == [
        {
            "event": "trio_resilience.retry.gave_up",
            "log_level": "error",
            "retry": "api",
            "attempts": 1,
            "elapsed": 0.0,
            "error": "Boom('down')",
            "reason": "circuit_open",
        }
    ]
    assert retry.statistics().gave_up == {"circuit_open": 1}


async def test_retry_sleeps_when_the_breaker_admits_by_the_end_of_the_sleep(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An open period shorter than the backoff delay does not stop the retry."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=0.5, success_threshold=1)
    calls = Calls(Boom())
    assert await Pipeline(constant(1.0), breaker).call(calls) == "ok"
    assert calls.times == [0.0, 1.0]


async def test_one_retry_serves_pipelines_with_and_without_breakers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Breakers are passed per call: the same Retry alone still retries normally."""
    retry = constant(1.0, attempts=3)
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30)
    with pytest.raises(Boom):
        await Pipeline(retry, breaker).call(Calls(Boom()))
    calls = Calls(Boom(), Boom())
    assert await Pipeline(retry).call(calls) == "ok"
    assert await retry.call(Calls(Boom())) == "ok"
    assert calls.times == [0.0, 1.0, 2.0]


async def test_breakers_in_nested_pipelines_count_for_the_outer_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Pipeline(Retry, Pipeline(breaker)) still knows the breaker inside."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30)
    calls = Calls(Boom())
    with pytest.raises(Boom):
        await Pipeline(constant(1.0), Pipeline(breaker)).call(calls)
    assert calls.times == [0.0]


async def test_forced_open_breaker_ends_retries_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A breaker forced open (retry_after inf) while retrying ends retries: no sleep."""
    breaker = CircuitBreaker()

    async def fail_and_force_open() -> None:
        breaker.force_open()
        raise Boom()

    with pytest.raises(Boom):
        await Pipeline(constant(1.0), breaker).call(fail_and_force_open)
    assert trio.current_time() == 0.0


async def test_retried_circuit_open_error_waits_at_least_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """retry_on=CircuitOpenError waits max(backoff, retry_after), whatever delay_hint says."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=5.0, success_threshold=1)
    with pytest.raises(Boom):
        await breaker.call(Calls(Boom()))
    retry = constant(1.0, retry_on=CircuitOpenError, delay_hint=lambda e: 0.0, attempts=3)
    calls = Calls()
    assert await retry.call(breaker.call, calls) == "ok"
    assert calls.times == [5.0]


async def test_half_open_busy_rejections_never_spin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """retry_after 0 (busy probes) still waits the backoff delay: no busy loop."""
    breaker = CircuitBreaker(half_open_max_calls=1, success_threshold=1)
    set_breaker_state(breaker, "half_open")
    release = trio.Event()
    attempts: list[float] = []

    async def probe() -> None:
        await release.wait()

    async def caller() -> str:
        attempts.append(trio.current_time())
        return "ok"

    retry = constant(0.5, retry_on=CircuitOpenError, attempts=None, max_total_duration=None)
    retry_hinted = constant(0.5, retry_on=CircuitOpenError, attempts=None, delay_hint=lambda e: 0.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(breaker.call, probe)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(2.0), pytest.raises(CircuitOpenError):
            await retry_hinted.call(breaker.call, caller)
        # Rejected at 0, 0.5, 1.0 and 1.5 (then the deadline): 4 attempts, not thousands.
        assert retry_hinted.statistics().attempts == 4
        assert trio.current_time() == 1.5
        release.set()
    assert await retry.call(breaker.call, caller) == "ok"
    assert attempts == [1.5]


# ------------------------------------------------------------------ delay_hint


async def test_delay_hint_is_not_called_after_the_final_attempt() -> None:
    """delay_hint runs only when a retry follows."""
    seen: list[BaseException] = []

    def hint(exc: BaseException) -> float:
        seen.append(exc)
        return 0.0

    with pytest.raises(Boom):
        await constant(0.0, attempts=2, delay_hint=hint).call(Calls(Boom("a"), Boom("b")))
    assert [str(e) for e in seen] == ["a"]


async def test_a_raising_delay_hint_never_replaces_the_service_error(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """The hint's failure is logged and noted; the backoff delay is used."""

    def hint(exc: BaseException) -> float:
        raise ValueError("bad header")

    calls = Calls(Boom("x"))
    assert await constant(1.0, delay_hint=hint, name="h").call(calls) == "ok"
    assert calls.times == [0.0, 1.0]
    failed = [e for e in logs if e["event"] == "trio_resilience.retry.hint_failed"]
    assert failed == [
        {
            "event": "trio_resilience.retry.hint_failed",
            "log_level": "warning",
            "retry": "h",
            "attempt": 1,
            "error": "ValueError('bad header')",
        }
    ]
    error = Boom("y")
    with pytest.raises(Boom) as info:
        await constant(1.0, delay_hint=hint, attempts=2).call(Calls(error, Boom("z")))
    assert error.__notes__[0].startswith("trio_resilience: Retry 'default': delay_hint raised")
    assert str(info.value) == "z"


async def test_a_delay_hint_returning_garbage_keeps_the_backoff_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A non-number from delay_hint is a hint failure, not a crash."""
    calls = Calls(Boom())
    assert await constant(2.0, delay_hint=lambda e: "soon").call(calls) == "ok"  # type: ignore[arg-type,return-value]
    assert calls.times == [0.0, 2.0]


async def test_hint_jitter_draws_between_the_hint_and_hint_times_one_plus_jitter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """hint_jitter=0.5 turns a 2 s hint into a draw in [2, 3] from the injected rng."""
    rng = random.Random(7)
    expected = random.Random(7).uniform(2.0, 3.0)
    calls = Calls(Boom())
    retry = constant(0.1, delay_hint=lambda e: 2.0, hint_jitter=0.5, rng=rng)
    assert await retry.call(calls) == "ok"
    assert calls.times == [0.0, expected]
    assert 2.0 <= expected <= 3.0


async def test_hint_jitter_uses_the_backoffs_rng_by_default(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Without rng=, hint jitter draws from the backoff's rng."""
    expected = random.Random(3).uniform(4.0, 4.4)
    calls = Calls(Boom())
    retry = Retry(
        backoff=ConstantBackoff(0.1, rng=random.Random(3)),
        delay_hint=lambda e: 4.0,
        hint_jitter=0.1,
    )
    assert await retry.call(calls) == "ok"
    assert calls.times == [0.0, expected]


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (1.5, ValueError, r"^hint_jitter must be <= 1, got 1.5$"),
        (-0.1, ValueError, r"^hint_jitter must be >= 0, got -0.1$"),
        (float("nan"), ValueError, r"^hint_jitter must not be NaN, got nan$"),
        (True, TypeError, r"^hint_jitter must be a number, got True$"),
    ],
)
def test_hint_jitter_is_validated(value: object, error: type[Exception], match: str) -> None:
    """hint_jitter must be a number in [0, 1]."""
    with pytest.raises(error, match=match):
        Retry(hint_jitter=value)  # type: ignore[arg-type]


def test_rng_must_be_a_random_instance() -> None:
    """rng= takes a random.Random."""
    with pytest.raises(TypeError, match=r"^rng must be a random.Random or None, got 3$"):
        Retry(rng=3)  # type: ignore[arg-type]


# ------------------------------------------------------------------ statistics


async def test_statistics_count_calls_attempts_retries_and_give_ups(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """statistics() is a frozen RetryStatistics with counts by give-up reason."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.1, window=10.0)  # one token
    retry = constant(1.0, attempts=3, budget=budget, name="stats")
    assert await retry.call(Calls()) == "ok"
    assert await retry.call(Calls(Boom())) == "ok"  # takes the one token
    with pytest.raises(Boom):
        await retry.call(Calls(Boom(), Boom()))  # refused by the budget
    async for attempt in retry:
        with attempt:
            pass
    stats = retry.statistics()
    assert stats == RetryStatistics(
        calls=4, attempts=5, retries=1, gave_up={"budget": 1}, budget_refused=1
    )
    with pytest.raises(TypeError):
        stats.gave_up["budget"] = 2  # type: ignore[index]
    assert retry in _live.live("retry")


# ------------------------------------------------------------------ cancellation


async def test_error_in_a_cancelled_scope_gives_cancelled_not_the_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelled during an attempt (no checkpoint since), Retry lets Cancelled out."""
    with trio.CancelScope() as scope:

        async def fail() -> None:
            scope.cancel()
            raise Boom()

        await constant(1.0).call(fail)
    assert scope.cancelled_caught

    with trio.move_on_after(5) as outer:
        async for attempt in constant(1.0):
            with attempt:
                outer.cancel()
                raise Boom()
    assert outer.cancelled_caught


async def _cancel_at(scope: trio.CancelScope, when: float) -> None:
    await trio.sleep_until(when)
    scope.cancel()


async def test_cancelled_backoff_sleep_gives_the_budget_token_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A token taken for a retry whose sleep is cancelled returns to the budget."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.1, window=10.0)  # one token
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(_cancel_at, scope, 0.5)
            await constant(1.0, budget=budget).call(Calls(Boom()))
    assert scope.cancelled_caught
    stats = budget.statistics()
    assert (stats.balance, stats.given_back, stats.withdrawals) == (1.0, 1, 0)
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(_cancel_at, scope, 1.0)
            async for attempt in constant(1.0, budget=budget):
                with attempt:
                    raise Boom()
    assert scope.cancelled_caught
    stats = budget.statistics()
    assert (stats.balance, stats.given_back) == (1.0, 2)


async def test_cancellation_storm_leaves_the_budget_whole(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """1,000 retrying tasks cancelled mid-sleep give every token back."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=100.0, window=10.0)
    retry = constant(1.0, budget=budget, attempts=10)

    async def worker() -> None:
        await retry.call(Calls(*[Boom() for _ in range(10)]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_at, nursery.cancel_scope, 0.5)
        for _ in range(1000):
            nursery.start_soon(worker)
    stats = budget.statistics()
    assert (stats.withdrawals, stats.given_back, stats.balance) == (0, 1000, 1000.0)
    assert (retry.statistics().attempts, retry.statistics().retries) == (1000, 0)  # never made


# ------------------------------------------------------------------ hostile objects


async def test_errors_with_raising_repr_are_retried_and_reraised_as_themselves(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """An error whose __repr__/__str__ raise changes nothing: retried, then re-raised."""
    first, last = BadRepr(), BadRepr()
    calls = Calls(first, last)
    with pytest.raises(BadRepr) as info:
        await constant(1.0, attempts=2).call(calls)
    assert info.value is last
    assert calls.times == [0.0, 1.0]
    assert [e["error"] for e in logs] == ["<unrepresentable BadRepr>"] * 2


async def test_results_with_raising_repr_are_returned_as_themselves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A rejected result whose repr raises is retried, and accepted ones come back."""

    class Odd:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    values = [Odd(), Odd()]

    async def produce() -> Odd:
        return values.pop(0)

    result = values[1]
    retry = constant(1.0, retry_if_result=lambda v: len(values) == 1)
    assert await retry.call(produce) is result


async def test_a_raising_retry_on_predicate_means_not_retryable(
    logs: list[dict[str, Any]],
) -> None:
    """A retry_on predicate that raises ends retries with the caller's own error."""

    def predicate(exc: BaseException) -> bool:
        raise KeyError("oops")

    error = Boom()
    with pytest.raises(Boom) as info:
        await constant(0.0, retry_on=predicate).call(Calls(error))
    assert info.value is error
    assert logs[0]["event"] == "trio_resilience.classify_failed"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"retry_on": int}, r"^retry_on must be an exception type.*non-exception class"),
        ({"retry_on": (Boom, str)}, r"^retry_on must be an exception type.*item 1 is"),
        ({"delay_hint": Calls()}, r"^delay_hint must be a sync callable"),
        ({"retry_if_result": Calls.__call__}, r"^retry_if_result must be a sync callable"),
    ],
)
def test_non_exception_classes_and_async_callables_are_refused(
    kwargs: dict[str, Any], match: str
) -> None:
    """retry_on refuses classes that are not exceptions; callbacks must be sync."""

    async def async_predicate(exc: BaseException) -> bool:
        return True

    with pytest.raises(TypeError, match=match):
        Retry(**kwargs)
    with pytest.raises(TypeError, match=r"^retry_on must be a sync predicate"):
        Retry(retry_on=async_predicate)  # type: ignore[arg-type]


async def test_retry_logs_are_json_safe(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """Scheduled, gave-up and hint-failed events serialize as strict JSON."""
    import json

    def hint(exc: BaseException) -> float:
        raise ValueError("nope")

    breaker = CircuitBreaker(failure_threshold=2)
    with pytest.raises(Boom):
        await Pipeline(constant(1.0, delay_hint=hint), breaker).call(Calls(Boom(), Boom()))
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        await constant(1.0, retry_on=CircuitOpenError).call(breaker.call, Calls())
    events = {e["event"] for e in logs}
    assert {
        "trio_resilience.retry.scheduled",
        "trio_resilience.retry.gave_up",
        "trio_resilience.retry.hint_failed",
    } <= events
    for event in logs:
        if event["event"].startswith("trio_resilience.retry."):
            json.dumps(event, allow_nan=False)


def test_safe_repr_cuts_long_reprs_and_survives_odd_ones() -> None:
    """Log values: long reprs are cut, a non-str __repr__ result is unrepresentable."""
    from trio_resilience._log import safe_repr

    class NotStr:
        def __repr__(self) -> str:
            return 3  # type: ignore[return-value]

    assert safe_repr("x" * 2000).endswith("...")
    assert len(safe_repr("x" * 2000)) == 1000
    assert safe_repr(NotStr()) == "<unrepresentable NotStr>"
    assert safe_repr(BadRepr()) == "<unrepresentable BadRepr>"


async def test_huge_and_infinite_hints_never_produce_nan_delays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A hint of 1e308 with jitter (overflowing d * (1 + j)) or inf gives up, never NaN."""
    for hint in (1e308, float("inf")):
        calls = Calls(Boom())
        with pytest.raises(Boom) as info:
            await constant(1.0, delay_hint=lambda e, h=hint: h, hint_jitter=1.0).call(calls)
        assert info.value.__notes__[-1].endswith("the next delay would pass the deadline")
        assert trio.current_time() == 0.0


async def test_bulkhead_rejecting_at_once_is_a_cancel_point() -> None:
    """A cancelled caller gets Cancelled from max_wait=0, not a token."""
    from trio_resilience import Bulkhead

    bulkhead = Bulkhead(1, max_wait=0)
    ran = []

    async def work() -> None:
        ran.append(1)

    with trio.CancelScope() as scope:
        scope.cancel()
        await bulkhead.call(work)
    assert ran == []
    assert bulkhead.statistics().in_flight == 0


async def test_a_forced_open_breaker_in_the_pipeline_is_reported_as_circuit_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Even a retried CircuitOpenError (retry_after inf) gives up as circuit_open, at once."""
    breaker = CircuitBreaker()
    breaker.force_open()
    retry = constant(1.0, retry_on=CircuitOpenError)
    with pytest.raises(CircuitOpenError) as info:
        await Pipeline(retry, breaker).call(Calls())
    assert info.value.__notes__[-1].endswith("(circuit_open)")
    assert retry.statistics().gave_up == {"circuit_open": 1}
    assert trio.current_time() == 0.0
