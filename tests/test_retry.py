"""Retry and RetryBudget: the contract in API.md, on an autojump clock with exact times."""

from __future__ import annotations

import inspect
import math
import random
from typing import Any

import outcome
import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_resilience import (
    CircuitBreaker,
    CircuitOpenError,
    ConstantBackoff,
    ExponentialBackoff,
    LinearBackoff,
    LoadShedError,
    Retry,
    RetryBudget,
    RetryError,
)

from .conftest import Boom


class Flaky:
    """Fails the first ``failures`` calls, recording the Trio time of each call."""

    def __init__(self, failures: int, exc: type[BaseException] = Boom) -> None:
        self.failures = failures
        self.exc = exc
        self.times: list[float] = []

    async def __call__(self, value: str = "ok") -> str:
        self.times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if len(self.times) <= self.failures:
            raise self.exc(f"failure {len(self.times)}")
        return value


def constant(delay: float = 1.0, **kwargs: Any) -> Retry:
    return Retry(backoff=ConstantBackoff(delay), **kwargs)


async def test_defaults_follow_the_seed() -> None:
    """3 attempts, exponential 100 ms x 2 up to 30 s with jitter 0.3, 60 s in total."""
    r = Retry()
    assert r.attempts == 3
    assert r.max_total_duration == 60.0
    assert r.backoff == ExponentialBackoff(0.1, 2.0, 30.0, 0.3)
    assert r.retry_on is Exception
    assert r.retry_if_result is None
    assert r.budget is None
    assert r.delay_hint is None
    assert r.name == "default"


async def test_retries_until_success_at_exact_times(autojump_clock: trio.testing.MockClock) -> None:
    """Each retry waits the backoff's delay on Trio's clock."""
    flaky = Flaky(2)
    r = Retry(backoff=LinearBackoff(1.0), attempts=5)
    assert await r.call(flaky, "v") == "v"
    assert flaky.times == [0.0, 1.0, 3.0]


async def test_first_try_success_adds_no_checkpoint() -> None:
    """A first-try success costs only the call itself."""
    r = Retry()

    async def no_checkpoint() -> int:
        return 5

    with trio.testing.assert_no_checkpoints():
        assert await r.call(no_checkpoint) == 5


async def test_exhaustion_reraises_the_same_exception_with_a_note(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The last error comes out unchanged but for a PEP 678 note."""
    errors: list[BaseException] = []

    async def failing() -> None:
        await trio.sleep(0.5)
        errors.append(Boom(len(errors)))
        raise errors[-1]

    with pytest.raises(Boom) as info:
        await constant(1.0, name="db").call(failing)
    assert info.value is errors[-1]
    assert len(errors) == 3
    assert info.value.__notes__ == [
        "trio_resilience: Retry 'db' gave up after 3 attempts over 3.500s: no attempts left"
    ]
    assert info.traceback[-1].name == "failing"


async def test_result_predicate_and_retry_error(autojump_clock: trio.testing.MockClock) -> None:
    """retry_if_result retries rejected results; exhaustion raises RetryError."""
    values = iter([None, None, 3, None, None, None])

    async def produce() -> int | None:
        return next(values)

    r = constant(0.5, retry_if_result=lambda v: v is None)
    assert await r.call(produce) == 3
    assert trio.current_time() == 1.0
    with pytest.raises(RetryError) as info:
        await r.call(produce)
    assert info.value.attempts == 3
    assert isinstance(info.value.last_outcome, outcome.Value)
    assert info.value.last_outcome.unwrap() is None


async def test_not_retryable_errors_propagate_at_once() -> None:
    """An error outside retry_on is raised after one attempt, with no note."""
    flaky = Flaky(5, exc=KeyError)
    with pytest.raises(KeyError) as info:
        await constant(retry_on=OSError).call(flaky)
    assert len(flaky.times) == 1
    assert not hasattr(info.value, "__notes__")


async def test_own_rejections_are_retried_only_when_named(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CircuitOpenError and LoadShedError are not retried unless retry_on names them."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=1.5)
    with pytest.raises(Boom):
        await breaker.call(Flaky(1))
    calls = Flaky(0)
    with pytest.raises(CircuitOpenError):
        await constant(1.0).call(breaker.call, calls)
    assert calls.times == []
    named = constant(1.0, retry_on=(CircuitOpenError, Boom))
    assert await named.call(breaker.call, calls) == "ok"
    assert calls.times == [1.5]  # waited max(backoff 1.0, retry_after 1.5)
    shed = Flaky(1, exc=lambda msg: LoadShedError(msg, "buffer_full"))  # type: ignore[arg-type]
    with pytest.raises(LoadShedError):
        await constant(1.0).call(shed)


async def test_cancellation_is_never_retried(autojump_clock: trio.testing.MockClock) -> None:
    """Cancelling an attempt or a backoff sleep ends the retry at once."""
    attempts: list[float] = []

    async def hang() -> None:
        attempts.append(trio.current_time())
        await trio.sleep_forever()

    with trio.move_on_after(5):
        await constant(1.0, attempts=None).call(hang)
    assert attempts == [0.0]
    flaky = Flaky(10)
    with trio.CancelScope() as scope:  # no deadline: cancelled from outside while sleeping

        async def cancel_later() -> None:
            await trio.sleep(2.5)
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_later)
            await Retry(backoff=ConstantBackoff(10.0), max_total_duration=None).call(flaky)
    assert flaky.times == [5.0]  # the backoff sleep was cancelled, not retried
    assert trio.current_time() == 7.5


async def test_cancelled_inside_a_group_is_never_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A group holding a Cancelled is not retried even if another leaf is retryable."""
    count = 0

    async def mixed() -> None:
        nonlocal count
        count += 1
        raise BaseExceptionGroup("g", [Boom(), KeyboardInterrupt()])

    with pytest.raises(BaseExceptionGroup):
        await constant().call(mixed)
    assert count == 1


async def test_exception_groups_are_retried_by_their_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A nursery's ExceptionGroup with a retryable leaf is retried."""
    count = 0

    async def nursery_call() -> str:
        nonlocal count
        count += 1
        if count < 3:
            async with trio.open_nursery() as n:
                n.start_soon(Flaky(1))
        return "done"

    assert await constant(retry_on=Boom).call(nursery_call) == "done"
    assert count == 3


async def test_never_sleeps_past_max_total_duration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """It gives up at once when now + delay would pass start + max_total_duration."""
    flaky = Flaky(100)
    with pytest.raises(Boom) as info:
        await Retry(backoff=ConstantBackoff(4.0), attempts=None, max_total_duration=10.0).call(
            flaky
        )
    assert flaky.times == [0.0, 4.0, 8.0]
    assert trio.current_time() == 8.0
    assert info.value.__notes__[-1].endswith("the next delay would pass the deadline")


async def test_delay_ending_exactly_at_max_total_duration_is_allowed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """now + delay == start + max_total_duration still retries (the rule is strict >)."""
    flaky = Flaky(100)
    with pytest.raises(Boom):
        await Retry(backoff=ConstantBackoff(5.0), attempts=None, max_total_duration=10.0).call(
            flaky
        )
    assert flaky.times == [0.0, 5.0, 10.0]


async def test_never_sleeps_past_the_callers_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Under a cancel scope's deadline it raises the last error instead of Cancelled."""
    flaky = Flaky(100)
    with trio.fail_after(2.5), pytest.raises(Boom):
        await constant(1.0, attempts=None).call(flaky)
    assert flaky.times == [0.0, 1.0, 2.0]
    assert trio.current_time() == 2.0
    flaky = Flaky(100)
    with trio.move_on_after(2.0), pytest.raises(Boom):  # now + delay >= deadline: give up
        await constant(1.0, attempts=None).call(flaky)
    assert flaky.times == [2.0, 3.0]


async def test_delay_hint_replaces_the_backoff_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A number from delay_hint is the delay; None keeps the backoff's."""

    class Throttled(Exception):
        def __init__(self, retry_after: float | None) -> None:
            self.retry_after = retry_after

    hints = iter([7.0, None, -3.0])
    times: list[float] = []

    async def throttled() -> str:
        times.append(trio.current_time())
        hint = next(hints, "done")
        if hint == "done":
            return "ok"
        raise Throttled(hint)  # type: ignore[arg-type]

    r = Retry(
        backoff=ConstantBackoff(1.0),
        attempts=5,
        delay_hint=lambda e: getattr(e, "retry_after", None),
    )
    assert await r.call(throttled) == "ok"
    assert times == [0.0, 7.0, 8.0, 8.0]


async def test_delay_hint_is_still_clamped_to_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A hint that would end past max_total_duration gives up at once."""
    flaky = Flaky(5)
    r = constant(1.0, max_total_duration=30.0, delay_hint=lambda e: 100.0)
    with pytest.raises(Boom):
        await r.call(flaky)
    assert flaky.times == [0.0]


async def test_decorator_keeps_signature_and_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """@retry wraps an async function, keeping name, doc and signature."""
    flaky = Flaky(1)
    r = constant(0.25)

    @r
    async def fetch(key: str, *, default: int = 0) -> str:
        """Fetch a key."""
        return await flaky(key)

    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch a key."
    assert inspect.signature(fetch) == inspect.signature(fetch.__wrapped__)  # type: ignore[attr-defined]
    assert list(inspect.signature(fetch).parameters) == ["key", "default"]
    assert await fetch("k") == "k"
    assert flaky.times == [0.0, 0.25]
    with pytest.raises(TypeError, match=r"^@Retry decorates async functions"):
        r(lambda: None)  # type: ignore[arg-type]


async def test_async_for_attempts(autojump_clock: trio.testing.MockClock) -> None:
    """async for attempt in retry: with attempt: ... retries the block."""
    flaky = Flaky(2)
    numbers: list[int] = []
    async for attempt in constant(2.0):
        with attempt:
            numbers.append(attempt.number)
            result = await flaky()
    assert result == "ok"
    assert numbers == [1, 2, 3]
    assert flaky.times == [0.0, 2.0, 4.0]


async def test_async_for_exhaustion_raises_with_note(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The last error of the block propagates, noted; non-retryable errors at once."""
    flaky = Flaky(10)
    with pytest.raises(Boom) as info:
        async for attempt in constant(1.0):
            with attempt:
                await flaky()
    assert len(flaky.times) == 3
    assert "gave up after 3 attempts over 2.000s" in info.value.__notes__[0]
    count = 0
    with pytest.raises(KeyError):
        async for attempt in constant(1.0, retry_on=Boom):
            with attempt:
                count += 1
                raise KeyError
    assert count == 1


async def test_async_for_stops_when_a_block_is_not_entered() -> None:
    """An attempt that is never entered ends the loop; entering one twice is an error."""
    seen = []
    async for attempt in constant():
        seen.append(attempt)
    assert len(seen) == 1
    assert repr(seen[0]) == "<Attempt 1>"
    with seen[0]:
        pass
    with pytest.raises(RuntimeError, match="entered once"), seen[0]:
        pass


async def test_logs_scheduled_and_gave_up(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """scheduled names the attempt that failed; gave_up carries the reason."""
    flaky = Flaky(10)
    with pytest.raises(Boom):
        await constant(1.5, name="api", attempts=2).call(flaky)
    assert logs == [
        {
            "event": "trio_resilience.retry.scheduled",
            "log_level": "warning",
            "retry": "api",
            "attempt": 1,
            "delay": 1.5,
            "error": "Boom('failure 1')",
        },
        {
            "event": "trio_resilience.retry.gave_up",
            "log_level": "error",
            "retry": "api",
            "attempts": 2,
            "elapsed": 1.5,
            "error": "Boom('failure 2')",
            "reason": "attempts",
        },
    ]


async def test_gave_up_reasons(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """Each way of giving up is logged with its own reason."""
    with pytest.raises(Boom):
        await constant(100.0).call(Flaky(10))
    flaky = Flaky(1, exc=Boom)

    async def then_key_error() -> None:
        await flaky()
        raise KeyError

    with pytest.raises(KeyError) as info:
        await constant(1.0, retry_on=Boom).call(then_key_error)
    assert info.value.__notes__[0].endswith("the error is not retryable")
    with pytest.raises(RetryError):
        await constant(1.0, retry_if_result=lambda v: True, attempts=2).call(Flaky(0))
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.0)
    with pytest.raises(Boom):
        await constant(1.0, budget=budget).call(Flaky(10))
    reasons = [e["reason"] for e in logs if e["event"] == "trio_resilience.retry.gave_up"]
    assert reasons == ["deadline", "not_retryable", "result", "budget"]


async def test_no_log_for_a_first_try_success(logs: list[dict[str, Any]]) -> None:
    """A call that needs no retry logs nothing."""
    await Retry().call(Flaky(0))
    assert logs == []


# ------------------------------------------------------------------ retry budget


async def test_budget_caps_retries_at_a_share_of_first_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ratio=0.5 without reserve: two first attempts buy one retry."""
    budget = RetryBudget(ratio=0.5, min_retries_per_second=0.0, window=10.0)
    r = constant(0.1, budget=budget, attempts=10)
    flaky = Flaky(100)
    with pytest.raises(Boom) as info:
        await r.call(flaky)
    assert len(flaky.times) == 1  # 0.5 tokens: no retry
    assert info.value.__notes__[0].endswith("the retry budget had no token")
    with pytest.raises(Boom):
        await r.call(flaky)
    assert len(flaky.times) == 3  # 1.0 token: one retry
    stats = budget.statistics()
    assert (stats.deposits, stats.withdrawals, stats.rejected) == (2, 1, 2)
    assert stats.balance == 0.0


async def test_budget_is_shared_and_forgets_after_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two Retry objects draw on one budget; tokens expire after the window."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, window=10.0)
    a = constant(0.1, budget=budget, attempts=2, name="a")
    b = constant(0.1, budget=budget, attempts=2, name="b")
    assert await a.call(Flaky(0)) == "ok"  # deposits 1
    flaky = Flaky(1)
    assert await b.call(flaky) == "ok"  # deposits 1, withdraws 1
    assert budget.statistics().balance == 1.0
    await trio.sleep(11)
    assert budget.statistics().balance == 0.0


async def test_budget_reserve_allows_min_retries_per_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """min_retries_per_second * window retries are always available."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.5, window=10.0)
    assert budget.statistics().balance == 5.0
    taken = [budget.try_withdraw() for _ in range(7)]
    assert taken == [True] * 5 + [False] * 2
    await trio.sleep(10)
    assert budget.try_withdraw()


def test_budget_defaults_and_repr() -> None:
    """The seed defaults: 10% of first attempts, 10 retries/s, a 10 s window."""
    budget = RetryBudget()
    assert (budget.ratio, budget.min_retries_per_second, budget.window) == (0.1, 10.0, 10.0)
    assert repr(budget) == "<RetryBudget ratio=0.1 min_retries_per_second=10 window=10>"
    assert budget.statistics().balance == 100.0


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"attempts": 0}, ValueError, r"^attempts must be >= 1, got 0$"),
        ({"attempts": 2.0}, TypeError, r"^attempts must be an int, got 2.0$"),
        ({"backoff": 1.0}, TypeError, r"^backoff must be a Backoff, got 1.0$"),
        ({"retry_on": "x"}, TypeError, r"^retry_on must be an exception type"),
        ({"retry_if_result": 1}, TypeError, r"^retry_if_result must be callable or None, got 1$"),
        ({"max_total_duration": 0}, ValueError, r"^max_total_duration must be > 0, got 0$"),
        ({"max_total_duration": -1.0}, ValueError, r"^max_total_duration must be > 0, got -1.0$"),
        ({"budget": 3}, TypeError, r"^budget must be a RetryBudget or None, got 3$"),
        ({"delay_hint": "x"}, TypeError, r"^delay_hint must be callable or None, got 'x'$"),
        ({"name": 5}, TypeError, r"^name must be a str, got 5$"),
    ],
)
def test_bad_retry_arguments(kwargs: dict[str, Any], error: type, message: str) -> None:
    """Bad arguments raise at construction with the parameter named."""
    with pytest.raises(error, match=message):
        Retry(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": -0.1}, r"^ratio must be >= 0, got -0.1$"),
        ({"min_retries_per_second": -1}, r"^min_retries_per_second must be >= 0, got -1$"),
        ({"window": 0}, r"^window must be > 0, got 0$"),
    ],
)
def test_bad_budget_arguments(kwargs: dict[str, Any], message: str) -> None:
    """RetryBudget validates its arguments too."""
    with pytest.raises(ValueError, match=message):
        RetryBudget(**kwargs)


def test_retry_is_built_outside_trio_and_has_a_repr() -> None:
    """A Retry needs no running Trio; its repr shows its limits."""
    r = Retry(name="db", attempts=None, max_total_duration=math.inf)
    assert repr(r).startswith("<Retry 'db' attempts=None backoff=ExponentialBackoff(")


# ------------------------------------------------------------------ property


@settings(deadline=None, max_examples=60)
@given(
    seed=st.integers(0, 2**32),
    attempts=st.integers(1, 12),
    total=st.floats(0.5, 20.0),
    caller_deadline=st.none() | st.floats(0.1, 20.0),
)
def test_sleeps_are_the_backoff_delays_truncated_by_the_deadline(
    seed: int, attempts: int, total: float, caller_deadline: float | None
) -> None:
    """The gaps between attempts equal the backoff's delays, cut where a deadline stops."""
    backoff = ExponentialBackoff(base=0.2, multiplier=1.7, max_delay=5.0, rng=random.Random(seed))
    expected_delays = ExponentialBackoff(
        base=0.2, multiplier=1.7, max_delay=5.0, rng=random.Random(seed)
    ).delays()
    times: list[float] = []

    async def always_fails() -> None:
        times.append(trio.current_time())
        raise Boom

    async def main() -> None:
        r = Retry(backoff=backoff, attempts=attempts, max_total_duration=total)
        deadline = math.inf if caller_deadline is None else caller_deadline
        with trio.move_on_at(deadline), pytest.raises(Boom):
            await r.call(always_fails)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    deadline = math.inf if caller_deadline is None else caller_deadline
    expected = [0.0]
    while len(expected) < attempts:
        delay = next(expected_delays)
        now = expected[-1]
        if now + delay > total or now + delay >= deadline:
            break
        expected.append(now + delay)
    assert times == pytest.approx(expected)


async def test_attempt_iterator_numbers_and_budget(autojump_clock: trio.testing.MockClock) -> None:
    """async for deposits once in the budget, numbers attempts from 1 and times them."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0)
    retry = Retry(attempts=3, backoff=ConstantBackoff(0.5), budget=budget)
    numbers: list[tuple[int, float]] = []
    with pytest.raises(Boom):
        async for attempt in retry:
            with attempt:
                numbers.append((attempt.number, trio.current_time()))
                raise Boom
    assert numbers == [(1, 0.0), (2, 0.5)]  # one deposit funds exactly one retry
    stats = budget.statistics()
    assert (stats.deposits, stats.withdrawals, stats.rejected) == (1, 1, 1)


async def test_retry_error_carries_the_last_rejected_value(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """RetryError's last_outcome holds the last rejected result; the log says it."""
    values = iter(["pending-1", "pending-2"])

    async def status() -> str:
        return next(values)

    retry = constant(0.5, attempts=2, retry_if_result=lambda v: v.startswith("pending"))
    with pytest.raises(RetryError) as info:
        await retry.call(status)
    assert info.value.last_outcome.unwrap() == "pending-2"
    assert info.value.attempts == 2
    gave_up = [e for e in logs if e["event"] == "trio_resilience.retry.gave_up"]
    assert gave_up[0]["error"] == "rejected result 'pending-2'"
    scheduled = [e for e in logs if e["event"] == "trio_resilience.retry.scheduled"]
    assert scheduled[0]["error"] == "rejected result 'pending-1'"


async def test_budget_tokens_expire_bucket_by_bucket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Deposits and withdrawals each leave the 10 s window with their own 1 s bucket."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, window=10.0)
    budget.deposit()
    budget.deposit()  # bucket 0: +2
    await trio.sleep(3)
    budget.deposit()  # bucket 3: +1
    await trio.sleep(2)
    assert budget.try_withdraw()  # bucket 5: -1
    assert budget.statistics().balance == 2.0
    await trio.sleep(4.99)
    assert budget.statistics().balance == 2.0  # t = 9.99
    await trio.sleep(0.01)
    assert budget.statistics().balance == 0.0  # t = 10: bucket 0 left (+1 -1)
    assert not budget.try_withdraw()
    await trio.sleep(3)  # t = 13: bucket 3 left; the failed withdrawal took nothing
    stats = budget.statistics()
    assert (stats.deposits_in_window, stats.withdrawals_in_window) == (0, 1)
    await trio.sleep(2)  # t = 15: bucket 5 left
    stats = budget.statistics()
    assert (stats.deposits_in_window, stats.withdrawals_in_window) == (0, 0)
    budget.deposit()
    assert budget.try_withdraw()
    await trio.sleep(100)
    stats = budget.statistics()
    assert (stats.deposits_in_window, stats.withdrawals_in_window) == (0, 0)


async def test_budget_counts_bounds_and_cluster_offset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Withdrawals are counted one by one; ratio is bounded; other processes' tokens add."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0)
    for _ in range(3):
        budget.deposit()
    assert budget.try_withdraw()
    assert budget.try_withdraw()
    assert budget.statistics().withdrawals == 2
    # Other processes' counts, through the sharing port: 4 more first attempts.
    assert budget.apply_remote_counts(4, 0, includes_local=False)
    assert budget.statistics().balance == 5.0
    assert budget.apply_remote_counts(0, 2, includes_local=False)
    assert budget.statistics().balance == 0.0
    assert not budget.try_withdraw()
    with pytest.raises(ValueError, match=r"^ratio must be <= 1000, got 1001$"):
        RetryBudget(ratio=1001)
