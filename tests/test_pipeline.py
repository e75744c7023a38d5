"""Policies composed: Bulkhead, FailAfter, Fallback, Pipeline and guarded nurseries."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from trio_resilience import (
    Bulkhead,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConstantBackoff,
    FailAfter,
    Fallback,
    GuardedNursery,
    Pipeline,
    Policy,
    Retry,
    open_guarded_nursery,
)

from .conftest import Boom


async def ok(value: Any = "ok") -> Any:
    await trio.sleep(0)
    return value


async def boom() -> None:
    await trio.sleep(0)
    raise Boom


def test_library_policies_satisfy_the_protocol() -> None:
    """CircuitBreaker, Retry, Bulkhead, FailAfter, Fallback and Pipeline are policies."""
    for policy in (
        CircuitBreaker(),
        Retry(),
        Bulkhead(2),
        FailAfter(1),
        Fallback(0),
        Pipeline(),
    ):
        assert isinstance(policy, Policy)


# ------------------------------------------------------------------ bulkhead


async def test_bulkhead_limits_concurrency(autojump_clock: trio.testing.MockClock) -> None:
    """At most max_concurrent calls run at once; the others wait their turn."""
    bulkhead = Bulkhead(2)
    running = peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(1)
        running -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(bulkhead.call, work)
    assert peak == 2
    assert trio.current_time() == 3.0
    assert bulkhead.statistics().borrowed_tokens == 0
    assert bulkhead.max_concurrent == 2


async def test_bulkhead_shares_an_existing_limiter_and_allows_nesting() -> None:
    """A passed limiter is used as is; one task may hold two permits of it."""
    limiter = trio.CapacityLimiter(2)
    bulkhead = Bulkhead(limiter, name="db")
    assert bulkhead.limiter is limiter

    async def nested() -> int:
        assert limiter.borrowed_tokens == 2
        return 7

    assert await bulkhead.call(bulkhead.call, nested) == 7
    assert limiter.borrowed_tokens == 0
    assert repr(bulkhead) == "<Bulkhead 'db' 0/2 in use>"


async def test_bulkhead_returns_tokens_on_errors_and_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Errors and cancellations give the token back."""
    bulkhead = Bulkhead(1)
    with pytest.raises(Boom):
        await bulkhead.call(boom)
    with trio.move_on_after(1):
        await bulkhead.call(trio.sleep_forever)
    assert bulkhead.limiter.borrowed_tokens == 0


# ------------------------------------------------------------------ fail after, fallback


async def test_fail_after_raises_too_slow(autojump_clock: trio.testing.MockClock) -> None:
    """Each call runs under trio.fail_after(seconds)."""
    policy = FailAfter(2.5)
    assert await policy.call(ok) == "ok"
    with pytest.raises(trio.TooSlowError):
        await policy.call(trio.sleep, 3)
    assert trio.current_time() == 2.5
    assert repr(policy) == "FailAfter(2.5)"


async def test_fallback_value_and_async_function(autojump_clock: trio.testing.MockClock) -> None:
    """A value is returned on a matching error; an async function gets the error."""
    assert await Fallback("cached").call(boom) == "cached"
    assert await Fallback("cached").call(ok, 1) == 1

    async def from_error(exc: BaseException) -> str:
        return type(exc).__name__

    assert await Fallback(from_error).call(boom) == "Boom"
    with pytest.raises(Boom):
        await Fallback("x", on=KeyError).call(boom)


async def test_fallback_catches_circuit_open_but_never_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CircuitOpenError triggers the fallback; Cancelled never does."""
    breaker = CircuitBreaker(failure_threshold=1)
    guarded = Pipeline(Fallback("degraded"), breaker)
    assert await guarded.call(boom) == "degraded"  # the failure itself
    assert breaker.state is CircuitState.OPEN
    assert await guarded.call(ok) == "degraded"  # CircuitOpenError
    with trio.move_on_after(1) as scope:
        await Fallback("x", on=BaseException).call(trio.sleep_forever)
    assert scope.cancelled_caught


async def test_fallback_matches_groups_by_leaves() -> None:
    """An ExceptionGroup from a nursery triggers the fallback by its leaves."""

    async def nursery_failure() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(boom)

    assert await Fallback("x", on=Boom).call(nursery_failure) == "x"
    with pytest.raises(ExceptionGroup):
        await Fallback("x", on=KeyError).call(nursery_failure)


def test_fallback_refuses_sync_callables() -> None:
    """A sync callable is ambiguous: a TypeError says to use a value or an async function."""
    with pytest.raises(TypeError, match=r"^value_or_async_fn must be a value or an async"):
        Fallback(lambda exc: 1)


# ------------------------------------------------------------------ pipeline


async def test_pipeline_order_first_is_outermost(autojump_clock: trio.testing.MockClock) -> None:
    """Pipeline(Retry, breaker): retries calls that each pass through the breaker."""
    breaker = CircuitBreaker(failure_threshold=5)
    retry = Retry(attempts=3, backoff=ConstantBackoff(1.0))
    pipeline = Pipeline(retry, breaker)
    with pytest.raises(Boom):
        await pipeline.call(boom)
    assert breaker.statistics().total_failures == 3
    assert trio.current_time() == 2.0


async def test_pipeline_recipe_retry_breaker_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Retry outside the breaker outside the per-call timeout: two timeouts open it, and
    Retry gives up with the last timeout instead of sleeping into a rejection."""
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=60)
    pipeline = Pipeline(
        Retry(attempts=5, backoff=ConstantBackoff(0.5), retry_on=trio.TooSlowError),
        breaker,
        FailAfter(1.0),
    )
    with pytest.raises(trio.TooSlowError) as info:
        await pipeline.call(trio.sleep_forever)
    assert trio.current_time() == 2.5  # 1 s, 0.5 s, 1 s: open for 60 s, so no more sleep
    assert info.value.__notes__[-1].endswith("(circuit_open)")
    assert breaker.statistics().total_failures == 2
    assert breaker.statistics().total_rejected == 0


async def test_pipeline_passes_args_kwargs_and_decorates() -> None:
    """Arguments reach the function through every layer; @pipeline works."""
    pipeline = Pipeline(Bulkhead(1), FailAfter(10), CircuitBreaker())

    async def add(a: int, *, b: int) -> int:
        return a + b

    assert await pipeline.call(add, 1, b=2) == 3

    @pipeline
    async def mul(a: int, b: int) -> int:
        return a * b

    assert await mul(3, 4) == 12
    assert mul.__name__ == "mul"
    assert await Pipeline().call(add, 2, b=2) == 4
    nested = Pipeline(Pipeline(FailAfter(5)), Bulkhead(2))
    assert await nested.call(add, 1, b=1) == 2
    assert repr(Pipeline(FailAfter(1))) == "Pipeline(FailAfter(1.0))"
    with pytest.raises(TypeError, match=r"^@Pipeline decorates async functions"):
        pipeline(lambda: 1)  # type: ignore[arg-type]


def test_pipeline_names_the_position_of_a_non_policy() -> None:
    """A non-policy argument is a TypeError naming its position."""
    with pytest.raises(TypeError, match=r"^policy 1 \(of Pipeline\) must be a policy"):
        Pipeline(Retry(), 5)  # type: ignore[arg-type]

    class SyncCall:
        def call(self, fn: Any) -> Any:
            return fn()

    with pytest.raises(TypeError, match=r"^policy 0 \(of Pipeline\)"):
        Pipeline(SyncCall())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("factory", "error", "message"),
    [
        (lambda: Bulkhead(0), ValueError, r"^max_concurrent must be >= 1, got 0$"),
        (lambda: Bulkhead("2"), TypeError, r"^max_concurrent must be an int, got '2'$"),
        (lambda: FailAfter(0), ValueError, r"^seconds must be > 0, got 0$"),
        (lambda: FailAfter(None), TypeError, r"^seconds must be a number, got None$"),
        (lambda: Fallback(1, on=3), TypeError, r"^on must be an exception type"),
    ],
)
def test_bad_arguments(factory: Any, error: type, message: str) -> None:
    """Bad arguments raise at construction with the parameter named."""
    with pytest.raises(error, match=message):
        factory()


# ------------------------------------------------------------------ guarded nurseries


async def test_guarded_nursery_runs_children_through_the_pipeline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """start_soon children are retried and limited by the nursery's policies."""
    attempts: dict[int, int] = {}
    bulkhead = Bulkhead(3)
    results: list[int] = []

    async def flaky(i: int) -> None:
        attempts[i] = attempts.get(i, 0) + 1
        await trio.sleep(1)
        if attempts[i] < 2:
            raise Boom
        results.append(i)

    async with open_guarded_nursery(
        Retry(attempts=3, backoff=ConstantBackoff(0.5)), bulkhead
    ) as nursery:
        assert isinstance(nursery, GuardedNursery)
        for i in range(6):
            nursery.start_soon(flaky, i)
    assert sorted(results) == list(range(6))
    assert attempts == dict.fromkeys(range(6), 2)
    assert bulkhead.limiter.borrowed_tokens == 0


async def test_guarded_start_passes_task_status(autojump_clock: trio.testing.MockClock) -> None:
    """start() waits for started(); task_status reaches the child, even after a retry."""
    tries = 0

    async def server(port: int, *, task_status: trio.TaskStatus[int]) -> None:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise Boom  # fails before it started: retried
        task_status.started(port)
        task_status.started(port + 1)  # a second call is ignored
        await trio.sleep(5)

    async with open_guarded_nursery(Retry(backoff=ConstantBackoff(1))) as nursery:
        assert await nursery.start(server, 8080, name="server") == 8080
        assert trio.current_time() == 1.0
        assert len(nursery.child_tasks) == 1
    assert tries == 2


async def test_guarded_nursery_errors_propagate_as_from_trio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A child's error cancels the siblings and comes out in an ExceptionGroup."""
    cancelled = []

    async def sibling() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(True)
            raise

    with pytest.RaisesGroup(Boom):
        async with open_guarded_nursery(FailAfter(10)) as nursery:
            nursery.start_soon(sibling)
            nursery.start_soon(boom)
    assert cancelled == [True]


async def test_guarded_nursery_cancel_scope_is_the_nurserys(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """cancel_scope cancels every guarded child."""
    async with open_guarded_nursery(Bulkhead(2)) as nursery:
        nursery.start_soon(trio.sleep_forever)
        await trio.sleep(1)
        assert nursery.cancel_scope is nursery.nursery.cancel_scope
        nursery.cancel_scope.cancel()
    assert trio.current_time() == 1.0


async def test_thousands_of_cancelled_children_leak_no_permit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Children cancelled at random points leave every limiter with no borrowed token."""
    rng = random.Random(11)
    breaker = CircuitBreaker(
        failure_threshold=3, recovery_timeout=0.5, half_open_max_calls=2, success_threshold=2
    )
    bulkhead = Bulkhead(20)
    limiters = set()

    async def child(i: int) -> None:
        limiters.add(breaker.half_open_limiter)
        await trio.sleep(rng.random())
        if rng.random() < 0.3:
            raise Boom

    async def run_one(nursery: GuardedNursery, i: int) -> None:
        with trio.move_on_after(rng.random() * 2):
            try:
                await nursery.pipeline.call(child, i)
            except (Boom, CircuitOpenError, trio.TooSlowError):
                pass

    async with (
        open_guarded_nursery(
            Retry(attempts=2, backoff=ConstantBackoff(0.1)), breaker, bulkhead, FailAfter(0.8)
        ) as guarded,
        trio.open_nursery() as plain,
    ):
        for i in range(3000):
            plain.start_soon(run_one, guarded, i)
            if i % 50 == 0:
                await trio.sleep(0.3)
    assert bulkhead.limiter.borrowed_tokens == 0
    assert all(limiter.borrowed_tokens == 0 for limiter in limiters)
    assert breaker.half_open_limiter.borrowed_tokens == 0
    stats = breaker.statistics()
    assert stats.total_calls == (
        stats.total_successes + stats.total_failures + stats.total_ignored + stats.total_cancelled
    )
    assert stats.times_opened > 0
    assert stats.total_cancelled > 0


async def test_fallback_takes_on_positionally() -> None:
    """Fallback(value, on) as in the contract: `on` may be passed by position."""
    fallback = Fallback("x", KeyError)
    assert fallback.on is KeyError
    with pytest.raises(Boom):
        await fallback.call(boom)
