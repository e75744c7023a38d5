"""CircuitBreaker: the contract in API.md, on an autojump clock with exact times."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from trio_resilience import (
    BreakerRegistry,
    CircuitBreaker,
    CircuitBreakerStatistics,
    CircuitOpenError,
    CircuitState,
    ExponentialBackoff,
    LinearBackoff,
    StateChange,
)

from .conftest import Boom


async def ok() -> str:
    await trio.lowlevel.checkpoint()
    return "ok"


async def fail() -> None:
    await trio.lowlevel.checkpoint()
    raise Boom("down")


async def fail_times(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(Boom):
            await breaker.call(fail)


def open_breaker(**kwargs: Any) -> CircuitBreaker:
    kwargs.setdefault("failure_threshold", 2)
    kwargs.setdefault("recovery_timeout", 10.0)
    kwargs.setdefault("success_threshold", 2)
    kwargs.setdefault("half_open_max_calls", 2)
    return CircuitBreaker("t", **kwargs)


# ------------------------------------------------------------------ closed state


async def test_defaults_follow_the_seed() -> None:
    """Defaults are the seed's: 5 failures in 60 s, 30 s open, 3 successes, 3 probes."""
    b = CircuitBreaker()
    assert b.name == "default"
    assert b.failure_threshold == 5
    assert b.failure_window == 60.0
    assert b.recovery_timeout == 30.0
    assert b.success_threshold == 3
    assert b.half_open_max_calls == 3
    assert b.failure_rate_threshold is None
    assert b.minimum_calls == 10
    assert b.slow_call_duration is None
    assert b.failure_on is Exception
    assert b.ignore_on == ()
    assert b.state is CircuitState.CLOSED


async def test_closed_breaker_passes_results_and_errors_through() -> None:
    """A closed breaker returns the result and re-raises the very same exception."""
    b = CircuitBreaker()
    assert await b.call(ok) == "ok"
    err = Boom("x")

    async def raiser() -> None:
        raise err

    with pytest.raises(Boom) as info:
        await b.call(raiser)
    assert info.value is err


async def test_call_passes_args_and_kwargs() -> None:
    """call(fn, *args, **kwargs) forwards both."""
    b = CircuitBreaker()

    async def add(a: int, b: int = 0) -> int:
        return a + b

    assert await b.call(add, 1, b=2) == 3


async def test_trips_at_failure_threshold(autojump_clock: trio.testing.MockClock) -> None:
    """The threshold-th failure within the window opens the breaker."""
    b = CircuitBreaker(failure_threshold=3)
    await fail_times(b, 2)
    assert b.state is CircuitState.CLOSED
    await fail_times(b, 1)
    assert b.state is CircuitState.OPEN
    assert b.statistics().times_opened == 1


async def test_window_is_a_true_sliding_window(autojump_clock: trio.testing.MockClock) -> None:
    """A failure at t counts until t + failure_window and not at that instant."""
    b = CircuitBreaker(failure_threshold=3, failure_window=60.0)
    await fail_times(b, 1)  # t=0
    await trio.sleep(30)
    await fail_times(b, 1)  # t=30
    await trio.sleep(30)  # t=60: the first failure no longer counts
    assert trio.current_time() == 60.0
    assert b.statistics().failures_in_window == 1
    await fail_times(b, 1)  # t=60: 30 and 60 count
    assert b.state is CircuitState.CLOSED
    await trio.sleep(29.5)
    await fail_times(b, 1)  # t=89.5: 30, 60, 89.5
    assert b.state is CircuitState.OPEN


async def test_success_does_not_erase_failures(autojump_clock: trio.testing.MockClock) -> None:
    """Successes between failures leave the earlier failures counted."""
    b = CircuitBreaker(failure_threshold=3)
    for _ in range(2):
        await fail_times(b, 1)
        for _ in range(50):
            await b.call(ok)
    assert b.statistics().failures_in_window == 2
    await fail_times(b, 1)
    assert b.state is CircuitState.OPEN


async def test_calls_in_window_counts_successes_and_failures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """calls_in_window counts both outcomes and forgets them after the window."""
    b = CircuitBreaker(failure_threshold=10, failure_window=10.0)
    for _ in range(100):
        await b.call(ok)
    await fail_times(b, 2)
    stats = b.statistics()
    assert stats.calls_in_window == 102
    assert stats.failures_in_window == 2
    await trio.sleep(11)
    stats = b.statistics()
    assert stats.calls_in_window == 0
    assert stats.failures_in_window == 0


async def test_failure_memory_is_bounded_by_threshold() -> None:
    """However many failures arrive, at most failure_threshold timestamps are kept."""
    b = CircuitBreaker(failure_threshold=3, failure_window=1e9, recovery_timeout=0.0)
    for _ in range(100):
        await fail_times(b, 1)
        b.reset()
    assert len(b._failures) <= 3


# ------------------------------------------------------------------ open state


async def test_open_rejects_at_once_without_running_the_body(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Open: CircuitOpenError with name, state and exact retry_after; body never runs."""
    b = open_breaker(recovery_timeout=30.0)
    await fail_times(b, 2)
    await trio.sleep(12.5)
    ran = []

    async def body() -> None:
        ran.append(1)

    with pytest.raises(CircuitOpenError) as info:
        await b.call(body)
    assert ran == []
    assert info.value.name == "t"
    assert info.value.state is CircuitState.OPEN
    assert info.value.retry_after == 17.5
    assert trio.current_time() == 12.5
    assert b.statistics().total_rejected == 1
    assert b.statistics().total_calls == 2


async def test_rejection_is_a_checkpoint() -> None:
    """A refused call is still a checkpoint, as every Trio async API."""
    b = open_breaker()
    await fail_times(b, 2)
    with trio.testing.assert_checkpoints(), pytest.raises(CircuitOpenError):
        await b.call(ok)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await b.call(ok)


async def test_state_reads_half_open_from_recovery_deadline_inclusive(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """From opened_at + recovery_timeout on, state is HALF_OPEN; the next call applies it."""
    b = open_breaker(recovery_timeout=10.0)
    await fail_times(b, 2)
    await trio.sleep(9.999)
    assert b.state is CircuitState.OPEN
    await trio.sleep(0.001)
    assert trio.current_time() == pytest.approx(10.0)
    await trio.sleep(10.0 - trio.current_time())
    assert b.state is CircuitState.HALF_OPEN
    assert b.statistics().state is CircuitState.HALF_OPEN
    assert b.state_value.value is CircuitState.OPEN  # not applied yet
    assert [e["new_state"] for e in logs] == ["open"]
    assert await b.call(ok) == "ok"
    assert b.state_value.value is CircuitState.HALF_OPEN
    assert [e["new_state"] for e in logs] == ["open", "half_open"]


# ------------------------------------------------------------------ half-open state


async def test_half_open_storm_admits_only_max_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Ten callers right after the timeout: half_open_max_calls pass, the rest are refused."""
    b = open_breaker(half_open_max_calls=3, success_threshold=5)
    await fail_times(b, 2)
    await trio.sleep(10)
    reached = 0
    rejected: list[CircuitOpenError] = []

    async def upstream() -> None:
        nonlocal reached
        reached += 1
        await trio.sleep(1)

    async def caller() -> None:
        try:
            await b.call(upstream)
        except CircuitOpenError as exc:
            rejected.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        assert b.statistics().half_open_in_flight == 3
    assert reached == 3
    assert len(rejected) == 7
    assert all(e.retry_after == 0.0 and e.state is CircuitState.HALF_OPEN for e in rejected)
    assert b.half_open_limiter.borrowed_tokens == 0


async def test_success_threshold_closes_with_an_empty_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """success_threshold consecutive probe successes close the breaker, window empty."""
    b = open_breaker(success_threshold=3)
    await fail_times(b, 2)
    await trio.sleep(10)
    await b.call(ok)
    await b.call(ok)
    assert b.state is CircuitState.HALF_OPEN
    assert b.statistics().consecutive_successes == 2
    await b.call(ok)
    assert b.state is CircuitState.CLOSED
    stats = b.statistics()
    assert stats.failures_in_window == 0
    assert stats.calls_in_window == 0
    await fail_times(b, 1)
    assert b.state is CircuitState.CLOSED


async def test_half_open_failure_reopens(autojump_clock: trio.testing.MockClock) -> None:
    """Any probe failure re-opens the breaker for another recovery_timeout."""
    b = open_breaker()
    await fail_times(b, 2)
    await trio.sleep(10)
    await b.call(ok)
    await fail_times(b, 1)
    assert b.state is CircuitState.OPEN
    assert b.retry_after == 10.0
    assert b.statistics().times_opened == 2


async def test_backoff_recovery_timeout_grows_and_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A Backoff gives its first delay on a trip, the next on each re-trip, anew after close."""
    b = open_breaker(recovery_timeout=LinearBackoff(5.0), success_threshold=1)
    await fail_times(b, 2)
    assert b.retry_after == 5.0
    await trio.sleep(5)
    await fail_times(b, 1)  # probe fails: re-trip
    assert b.retry_after == 10.0
    await trio.sleep(10)
    await fail_times(b, 1)
    assert b.retry_after == 15.0
    await trio.sleep(15)
    await b.call(ok)  # closes
    assert b.state is CircuitState.CLOSED
    await fail_times(b, 2)
    assert b.retry_after == 5.0


async def test_cancelled_probe_returns_its_permit_and_counts_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A cancelled half-open probe gives its permit back and changes no counter."""
    b = open_breaker(half_open_max_calls=1)
    await fail_times(b, 2)
    await trio.sleep(10)
    with trio.move_on_after(1):
        await b.call(trio.sleep_forever)
    stats = b.statistics()
    assert stats.state is CircuitState.HALF_OPEN
    assert stats.half_open_in_flight == 0
    assert stats.consecutive_successes == 0
    assert stats.total_cancelled == 1
    assert stats.total_failures == 2
    assert await b.call(ok) == "ok"  # the permit is free again


async def test_cancellation_in_closed_counts_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelled closed-state calls are neither failures nor successes."""
    b = CircuitBreaker(failure_threshold=1)
    for _ in range(5):
        with trio.move_on_after(1):
            await b.call(trio.sleep_forever)
        with trio.move_on_after(1):
            async with b:
                await trio.sleep_forever()
    stats = b.statistics()
    assert stats.state is CircuitState.CLOSED
    assert stats.total_cancelled == 10
    assert stats.total_failures == 0
    assert stats.total_successes == 0
    assert stats.calls_in_window == 0


async def test_cancelled_group_counts_nothing_but_real_failures_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A group of only cancellations is nothing; a group with a failure leaf is a failure."""
    b = CircuitBreaker(failure_threshold=1)

    async def group_of_cancelled() -> None:
        raise BaseExceptionGroup("g", [KeyboardInterrupt()])

    with pytest.raises(BaseExceptionGroup):
        await b.call(group_of_cancelled)
    assert b.state is CircuitState.CLOSED

    async def nursery_failure() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(trio.sleep_forever)
            await fail()

    with pytest.raises(ExceptionGroup):
        await b.call(nursery_failure)
    assert b.state is CircuitState.OPEN


# ------------------------------------------------------------------ generations


async def test_closed_call_finishing_in_half_open_is_stale(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A call admitted while closed that fails during half-open never re-opens it."""
    b = open_breaker(failure_threshold=2)
    release = trio.Event()

    async def slow_fail() -> None:
        await release.wait()
        raise Boom

    async def slow_caller() -> None:
        with pytest.raises(Boom):
            await b.call(slow_fail)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_caller)
        await trio.testing.wait_all_tasks_blocked()
        await fail_times(b, 2)  # opens
        await trio.sleep(10)
        await b.call(ok)  # half-open, 1/2 successes
        release.set()
    stats = b.statistics()
    assert stats.state is CircuitState.HALF_OPEN
    assert stats.consecutive_successes == 1
    assert stats.total_failures == 3  # lifetime totals see the stale failure


async def test_async_with_stale_closed_call_never_touches_later_generation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The same generation rule holds for async with entered in the fast path."""
    b = open_breaker(failure_threshold=2, success_threshold=1)
    release = trio.Event()

    async def slow_failer() -> None:
        with pytest.raises(Boom):
            async with b:
                await release.wait()
                raise Boom

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_failer)
        await trio.testing.wait_all_tasks_blocked()
        await fail_times(b, 2)
        await trio.sleep(10)
        async with b:  # the probe closes it: a new closed generation
            pass
        assert b.state is CircuitState.CLOSED
        async with b:  # entered while the stale entry is still in flight
            release.set()
            await trio.lowlevel.checkpoint()
    stats = b.statistics()
    assert stats.state is CircuitState.CLOSED
    assert stats.failures_in_window == 0
    assert stats.total_failures == 3
    assert b._entries == {}


async def test_probe_of_earlier_half_open_period_is_stale(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A probe from an earlier half-open period touches neither counters nor permits."""
    b = open_breaker(half_open_max_calls=1, success_threshold=1)
    await fail_times(b, 2)
    await trio.sleep(10)
    release = trio.Event()
    first_limiter = b.half_open_limiter

    async def slow_ok() -> str:
        await release.wait()
        return "late"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.call, slow_ok)  # probe 1 of period 1
        await trio.testing.wait_all_tasks_blocked()
        # Reopen through a second path: force and reset the generation to a new period.
        b.force_open()
        b.reset()
        await fail_times(b, 2)
        await trio.sleep(10)
        assert await b.call(ok) == "ok"  # period 2's permit was free
        assert b.state is CircuitState.CLOSED
        release.set()
    assert first_limiter.borrowed_tokens == 0
    assert b.state is CircuitState.CLOSED
    assert b.statistics().total_successes == 2


# ------------------------------------------------------------------ classification


async def test_ignore_on_counts_nothing_and_wins_over_failure_on() -> None:
    """An exception matching ignore_on is neither failure nor success."""
    b = CircuitBreaker(failure_threshold=1, failure_on=Exception, ignore_on=KeyError)

    async def key_error() -> None:
        raise KeyError("k")

    for _ in range(3):
        with pytest.raises(KeyError):
            await b.call(key_error)
    stats = b.statistics()
    assert stats.state is CircuitState.CLOSED
    assert stats.total_ignored == 3
    assert stats.total_successes == 0


async def test_exceptions_outside_failure_on_are_successes() -> None:
    """Any exception that failure_on does not match counts as a success."""
    b = CircuitBreaker(failure_threshold=1, failure_on=(OSError, TimeoutError))
    with pytest.raises(Boom):
        await b.call(fail)
    assert b.state is CircuitState.CLOSED
    assert b.statistics().total_successes == 1


async def test_predicate_specs_see_group_leaves() -> None:
    """Predicates are applied to the leaves of an ExceptionGroup."""
    seen: list[BaseException] = []

    def is_boom(exc: BaseException) -> bool:
        seen.append(exc)
        return isinstance(exc, Boom)

    b = CircuitBreaker(failure_threshold=1, failure_on=is_boom)

    async def group() -> None:
        raise ExceptionGroup("g", [ValueError(), ExceptionGroup("h", [Boom()])])

    with pytest.raises(ExceptionGroup):
        await b.call(group)
    assert b.state is CircuitState.OPEN
    assert all(not isinstance(e, BaseExceptionGroup) for e in seen)


async def test_group_is_ignored_only_when_every_leaf_is_ignored() -> None:
    """A group with one ignored leaf and one failing leaf is a failure."""
    b = CircuitBreaker(failure_threshold=1, ignore_on=KeyError)

    async def mixed() -> None:
        raise ExceptionGroup("g", [KeyError(), Boom()])

    async def all_ignored() -> None:
        raise ExceptionGroup("g", [KeyError(), KeyError()])

    with pytest.raises(ExceptionGroup):
        await b.call(all_ignored)
    assert b.statistics().total_ignored == 1
    with pytest.raises(ExceptionGroup):
        await b.call(mixed)
    assert b.state is CircuitState.OPEN


async def test_slow_success_is_a_failure(autojump_clock: trio.testing.MockClock) -> None:
    """A success slower than slow_call_duration (strictly) counts as a failure."""
    b = CircuitBreaker(failure_threshold=2, slow_call_duration=1.0)

    async def take(seconds: float) -> str:
        await trio.sleep(seconds)
        return "done"

    assert await b.call(take, 1.0) == "done"  # exactly the limit: not slow
    assert b.statistics().total_failures == 0
    assert await b.call(take, 1.5) == "done"
    async with b:
        await trio.sleep(2)
    stats = b.statistics()
    assert stats.total_failures == 2
    assert stats.state is CircuitState.OPEN


# ------------------------------------------------------------------ rate rule


async def test_failure_rate_trips_once_minimum_calls_seen(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The rate rule needs minimum_calls calls and a rate at or above the threshold."""
    b = CircuitBreaker(
        failure_threshold=None, failure_rate_threshold=0.5, minimum_calls=10, failure_window=10
    )
    await fail_times(b, 6)
    assert b.state is CircuitState.CLOSED  # only 6 calls
    for _ in range(3):
        await b.call(ok)
    assert b.state is CircuitState.CLOSED  # 9 calls
    await b.call(ok)  # 10 calls, 6 failures: 60% >= 50%
    assert b.state is CircuitState.OPEN


async def test_failure_rate_window_forgets_old_buckets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Calls older than the window (to one bucket) leave the rate computation."""
    b = CircuitBreaker(
        failure_threshold=None, failure_rate_threshold=0.5, minimum_calls=4, failure_window=10
    )
    await fail_times(b, 3)
    await trio.sleep(11)
    assert b.statistics().calls_in_window == 0
    for _ in range(4):
        await b.call(ok)
    await fail_times(b, 3)  # 3 / 7 < 0.5
    assert b.state is CircuitState.CLOSED
    await fail_times(b, 1)  # 4 / 8
    assert b.state is CircuitState.OPEN


# ------------------------------------------------------------------ controls


async def test_force_open_disable_reset(autojump_clock: trio.testing.MockClock) -> None:
    """force_open rejects with inf; disable passes and counts nothing; reset closes."""
    b = CircuitBreaker(failure_threshold=1)
    b.force_open()
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert info.value.retry_after == math.inf
    assert info.value.state is CircuitState.FORCED_OPEN
    await trio.sleep(10_000)
    assert b.state is CircuitState.FORCED_OPEN
    b.disable()
    await fail_times(b, 5)
    assert await b.call(ok) == "ok"
    async with b:
        pass
    stats = b.statistics()
    assert stats.state is CircuitState.DISABLED
    assert stats.total_failures == 0
    assert stats.total_calls == 0
    b.reset()
    assert b.state is CircuitState.CLOSED
    await fail_times(b, 1)
    assert b.state is CircuitState.OPEN


async def test_wait_closed_returns_on_close(autojump_clock: trio.testing.MockClock) -> None:
    """wait_closed blocks while open and returns when a probe closes the breaker."""
    b = open_breaker(success_threshold=1)
    await b.wait_closed()  # closed: returns at once
    await fail_times(b, 2)
    closed_at: list[float] = []

    async def waiter() -> None:
        await b.wait_closed()
        closed_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(15)
        assert closed_at == []
        await b.call(ok)
    assert closed_at == [15.0]


async def test_state_change_listener_receives_every_transition(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """on_state_change sees each transition with reason and Trio time."""
    changes: list[StateChange] = []
    b = open_breaker(on_state_change=changes.append, success_threshold=1)
    await fail_times(b, 2)
    await trio.sleep(10)
    await b.call(ok)
    b.force_open()
    b.disable()
    b.reset()
    assert [(c.old_state, c.new_state, c.reason, c.at) for c in changes] == [
        ("closed", "open", "failure_threshold", 0.0),
        ("open", "half_open", "recovery_timeout", 10.0),
        ("half_open", "closed", "success_threshold", 10.0),
        ("closed", "forced_open", "force_open", 10.0),
        ("forced_open", "disabled", "disable", 10.0),
        ("disabled", "closed", "reset", 10.0),
    ]
    assert all(c.name == "t" for c in changes)


async def test_listener_errors_are_logged_and_never_change_the_outcome(
    logs: list[dict[str, Any]],
) -> None:
    """A raising listener is logged as listener_failed; the call's own error stands."""

    def broken(change: StateChange) -> None:
        raise RuntimeError("listener bug")

    b = CircuitBreaker("x", failure_threshold=1, on_state_change=broken)
    with pytest.raises(Boom):
        await b.call(fail)
    assert b.state is CircuitState.OPEN
    failed = [e for e in logs if e["event"] == "trio_resilience.breaker.listener_failed"]
    assert len(failed) == 1
    assert failed[0]["breaker"] == "x"
    assert "listener bug" in failed[0]["error"]


async def test_state_change_is_logged_with_every_key(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """One state_changed event per transition, nothing for calls that change no state."""
    b = CircuitBreaker("db", failure_threshold=2, recovery_timeout=30.0)
    for _ in range(100):
        await b.call(ok)
    assert logs == []
    await fail_times(b, 2)
    assert logs == [
        {
            "event": "trio_resilience.breaker.state_changed",
            "log_level": "warning",
            "breaker": "db",
            "old_state": CircuitState.CLOSED,
            "new_state": CircuitState.OPEN,
            "reason": "failure_threshold",
            "failures_in_window": 2,
            "retry_after": 30.0,
        }
    ]


async def test_statistics_is_a_frozen_snapshot(autojump_clock: trio.testing.MockClock) -> None:
    """statistics() has every contract field and cannot be mutated."""
    b = CircuitBreaker(failure_threshold=3)
    await b.call(ok)
    await fail_times(b, 1)
    stats = b.statistics()
    assert isinstance(stats, CircuitBreakerStatistics)
    assert (stats.total_calls, stats.total_successes, stats.total_failures) == (2, 1, 1)
    assert stats.retry_after == 0.0
    assert stats.half_open_in_flight == 0
    with pytest.raises(AttributeError):
        stats.total_calls = 5  # type: ignore[misc]


async def test_repr_shows_live_state(autojump_clock: trio.testing.MockClock) -> None:
    """The repr names the breaker, its state and the failure count."""
    b = CircuitBreaker("db", failure_threshold=5)
    assert repr(b) == "<CircuitBreaker 'db' closed 0/5 failures>"
    await fail_times(b, 5)
    assert repr(b) == "<CircuitBreaker 'db' open 0/5 failures>"


# ------------------------------------------------------------------ three uses, one engine


async def test_decorator_keeps_metadata_and_uses_the_breaker() -> None:
    """@breaker wraps an async function, keeping its name and doc."""
    b = CircuitBreaker(failure_threshold=1)

    @b
    async def fetch(x: int) -> int:
        """Fetch x."""
        if x < 0:
            raise Boom
        return x * 2

    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch x."
    assert await fetch(2) == 4
    with pytest.raises(Boom):
        await fetch(-1)
    with pytest.raises(CircuitOpenError):
        await fetch(2)


def test_decorator_refuses_sync_functions() -> None:
    """Decorating a sync function is a TypeError at decoration time."""
    b = CircuitBreaker()
    with pytest.raises(TypeError, match=r"^@CircuitBreaker decorates async functions"):
        b(lambda: 1)  # type: ignore[arg-type]


async def test_async_with_shares_the_engine(autojump_clock: trio.testing.MockClock) -> None:
    """async with counts exactly like call()."""
    b = open_breaker()
    for _ in range(2):
        with pytest.raises(Boom):
            async with b:
                raise Boom
    with pytest.raises(CircuitOpenError):
        async with b:
            pytest.fail("body must not run")
    await trio.sleep(10)
    async with b:
        pass
    async with b:
        pass
    assert b.state is CircuitState.CLOSED
    assert b._entries == {}


async def test_async_with_nested_in_one_task(autojump_clock: trio.testing.MockClock) -> None:
    """Entering the same breaker twice in one task settles each entry once."""
    b = open_breaker(half_open_max_calls=2, success_threshold=3)
    await fail_times(b, 2)
    await trio.sleep(10)
    async with b:
        async with b:
            assert b.statistics().half_open_in_flight == 2
        assert b.statistics().half_open_in_flight == 1
    assert b.statistics().consecutive_successes == 2
    assert b._entries == {}


async def test_exit_without_enter_is_an_error() -> None:
    """__aexit__ without a matching __aenter__ raises RuntimeError."""
    b = CircuitBreaker()
    with pytest.raises(RuntimeError, match=r"^breaker exited more often than it was entered$"):
        await b.__aexit__(None, None, None)


async def test_breaker_built_at_module_scope_works_in_two_runs() -> None:
    """A breaker needs no running Trio to be built and works in any run."""
    assert repr(MODULE_BREAKER).startswith("<CircuitBreaker 'module' closed")
    assert await MODULE_BREAKER.call(ok) == "ok"


MODULE_BREAKER = CircuitBreaker("module")


# ------------------------------------------------------------------ registry


async def test_registry_returns_one_breaker_per_name() -> None:
    """get() creates on first use with defaults and overrides, then returns the same one."""
    reg = BreakerRegistry(failure_threshold=7)
    a = reg.get("a", recovery_timeout=5.0)
    assert reg.get("a", recovery_timeout=99.0) is a
    assert a.failure_threshold == 7
    assert a.recovery_timeout == 5.0
    assert reg.get("b").recovery_timeout == 30.0
    assert set(reg.statistics()) == {"a", "b"}
    assert "a" in reg
    assert len(reg) == 2
    assert [b.name for b in reg] == ["a", "b"]
    assert repr(reg) == "<BreakerRegistry 2 breakers>"


def test_registry_validates_defaults_at_once() -> None:
    """Bad defaults fail when the registry is built, not on first use."""
    with pytest.raises(ValueError, match=r"^failure_threshold must be >= 1, got 0$"):
        BreakerRegistry(failure_threshold=0)
    with pytest.raises(TypeError, match=r"^BreakerRegistry defaults cannot include name$"):
        BreakerRegistry(name="x")


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"failure_threshold": 0}, ValueError, r"^failure_threshold must be >= 1, got 0$"),
        ({"failure_threshold": 1.5}, TypeError, r"^failure_threshold must be an int, got 1.5$"),
        ({"failure_threshold": True}, TypeError, r"^failure_threshold must be an int, got True$"),
        ({"failure_window": 0}, ValueError, r"^failure_window must be > 0, got 0$"),
        ({"failure_window": "1"}, TypeError, r"^failure_window must be a number, got '1'$"),
        (
            {"failure_rate_threshold": 1.5},
            ValueError,
            r"^failure_rate_threshold must be <= 1, got 1.5$",
        ),
        ({"failure_rate_threshold": 0}, ValueError, r"^failure_rate_threshold must be > 0, got 0$"),
        ({"minimum_calls": 0}, ValueError, r"^minimum_calls must be >= 1, got 0$"),
        ({"slow_call_duration": -1}, ValueError, r"^slow_call_duration must be >= 0, got -1$"),
        ({"recovery_timeout": -1.0}, ValueError, r"^recovery_timeout must be >= 0, got -1.0$"),
        ({"recovery_timeout": "x"}, TypeError, r"^recovery_timeout must be a number or a Backoff"),
        ({"success_threshold": 0}, ValueError, r"^success_threshold must be >= 1, got 0$"),
        ({"half_open_max_calls": 0}, ValueError, r"^half_open_max_calls must be >= 1, got 0$"),
        ({"failure_on": 3}, TypeError, r"^failure_on must be an exception type"),
        ({"ignore_on": (KeyError, 1)}, TypeError, r"^ignore_on must be .* item 1 is 1$"),
        ({"on_state_change": 1}, TypeError, r"^on_state_change must be callable or None, got 1$"),
        ({"logger": object()}, TypeError, r"^logger must have sync info/warning/error methods"),
        ({"failure_window": math.nan}, ValueError, r"^failure_window must not be NaN, got nan$"),
    ],
)
def test_bad_arguments_are_rejected_at_construction(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Every bad argument raises at construction with the parameter and value named."""
    with pytest.raises(error, match=message):
        CircuitBreaker(**kwargs)


def test_bad_name_is_rejected() -> None:
    """The name must be a non-empty str."""
    with pytest.raises(TypeError, match=r"^name must be a str, got 1$"):
        CircuitBreaker(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("name must not be empty, got ''")):
        CircuitBreaker("")


async def test_recovery_backoff_accepts_exponential(autojump_clock: trio.testing.MockClock) -> None:
    """An ExponentialBackoff without jitter doubles the open period on re-trips."""
    b = open_breaker(
        recovery_timeout=ExponentialBackoff(base=1.0, multiplier=2.0, jitter_factor=0.0)
    )
    await fail_times(b, 2)
    assert b.retry_after == 1.0
    await trio.sleep(1)
    await fail_times(b, 1)
    assert b.retry_after == 2.0


# ------------------------------------------------------------------ async with bookkeeping


async def test_async_with_fast_path_counts_exactly(autojump_clock: trio.testing.MockClock) -> None:
    """Closed entries are counted without per-task records; every exit is counted once."""
    b = CircuitBreaker(failure_threshold=100)
    async with b:
        assert b._untracked == 1
        assert b._entries == {}
    for n in range(1, 80):
        async with b:
            pass
        assert b.statistics().calls_in_window == n + 1
    assert b._untracked == 0
    stats = b.statistics()
    assert (stats.total_calls, stats.total_successes) == (80, 80)


async def test_async_with_triple_nesting_in_half_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three nested entries in one task each hold and return their own permit."""
    b = open_breaker(half_open_max_calls=3, success_threshold=5)
    await fail_times(b, 2)
    await trio.sleep(10)
    async with b:
        async with b:
            async with b:
                assert b.statistics().half_open_in_flight == 3
                assert len(next(iter(b._entries.values()))) == 3
            assert b.statistics().half_open_in_flight == 2
            assert len(next(iter(b._entries.values()))) == 2
        assert b.statistics().half_open_in_flight == 1
        assert b.statistics().consecutive_successes == 2
    assert b.statistics().consecutive_successes == 3
    assert b._entries == {}


async def test_stale_untracked_entries_drain_and_fast_path_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Entries in flight across a transition are stale; once they exit, the fast path is back."""
    b = CircuitBreaker(failure_threshold=1)
    release = trio.Event()

    async def long_entry() -> None:
        async with b:
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(long_entry)
        nursery.start_soon(long_entry)
        await trio.testing.wait_all_tasks_blocked()
        assert b._untracked == 2
        b.reset()  # a new generation: both entries are now stale
        assert (b._untracked, b._untracked_stale) == (0, 2)
        assert b._fast_with is False
        async with b:  # tracked per task while stale entries are in flight
            assert len(b._entries) == 1
        release.set()
    assert (b._untracked, b._untracked_stale) == (0, 0)
    assert b._fast_with is True
    stats = b.statistics()
    assert stats.calls_in_window == 1  # only the entry of the new generation
    assert stats.total_successes == 3
    async with b:
        assert b._untracked == 1


# ------------------------------------------------------------------ hooks for shared state


class FakeCluster:
    """Stands in for trio_resilience.redis: grants leases from a fixed count."""

    def __init__(self, permits: int, answer: object = "lease") -> None:
        self.permits = permits
        self.answer = answer
        self.acquired: list[str] = []
        self.released: list[str] = []

    async def acquire(self, breaker: CircuitBreaker) -> object:
        await trio.lowlevel.checkpoint()
        if self.answer != "lease":
            return self.answer
        if self.permits == 0:
            return False
        self.permits -= 1
        lease = f"lease-{len(self.acquired)}"
        self.acquired.append(lease)
        return lease

    def release(self, breaker: CircuitBreaker, lease: str) -> None:
        self.permits += 1
        self.released.append(lease)


async def test_cluster_permits_gate_half_open_probes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A probe needs a cluster lease too; refused, it gives back its local permit."""
    from trio_resilience.testing import set_breaker_state

    b = CircuitBreaker(half_open_max_calls=2, success_threshold=5)
    cluster = FakeCluster(permits=1)
    b.sharing.set_permit_source(cluster)
    set_breaker_state(b, "half_open")
    release = trio.Event()

    async def holder() -> None:
        async with b:
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await trio.testing.wait_all_tasks_blocked()
        assert cluster.acquired == ["lease-0"]
        with pytest.raises(CircuitOpenError) as info:
            await b.call(trio.sleep, 0)  # local permit free, cluster full
        assert info.value.retry_after == 0.0
        stats = b.statistics()
        assert stats.half_open_in_flight == 1
        assert (stats.total_calls, stats.total_rejected) == (1, 1)
        release.set()
    assert cluster.released == ["lease-0"]
    await b.call(trio.sleep, 0)  # the lease came back: admitted
    assert cluster.released == ["lease-0", "lease-1"]
    assert b.statistics().consecutive_successes == 2


async def test_cluster_without_answer_falls_back_to_the_local_limiter() -> None:
    """An acquire that returns None (Redis slow or down) lets the local limiter decide."""
    from trio_resilience.testing import set_breaker_state

    b = CircuitBreaker(half_open_max_calls=1, success_threshold=1)
    cluster = FakeCluster(permits=0, answer=None)
    b.sharing.set_permit_source(cluster)
    set_breaker_state(b, "half_open")
    await b.call(trio.sleep, 0)
    assert b.state is CircuitState.CLOSED
    assert cluster.released == []


async def test_cancelled_cluster_wait_gives_back_the_local_permit() -> None:
    """Cancelled while waiting for a lease, the probe takes nothing and counts nothing."""
    from trio_resilience.testing import set_breaker_state

    class Hanging(FakeCluster):
        async def acquire(self, breaker: CircuitBreaker) -> object:
            await trio.sleep_forever()

    b = CircuitBreaker(half_open_max_calls=1)
    b.sharing.set_permit_source(Hanging(permits=1))
    set_breaker_state(b, "half_open")
    with trio.move_on_after(0.01):
        await b.call(trio.sleep, 0)
    stats = b.statistics()
    assert stats.half_open_in_flight == 0
    assert (stats.total_calls, stats.total_rejected, stats.total_cancelled) == (0, 0, 0)
    assert b.half_open_limiter.borrowed_tokens == 0


async def test_failed_probe_releases_its_lease(autojump_clock: trio.testing.MockClock) -> None:
    """Failures, like successes, give the cluster lease back."""
    from trio_resilience.testing import set_breaker_state

    b = CircuitBreaker(half_open_max_calls=1)
    cluster = FakeCluster(permits=1)
    b.sharing.set_permit_source(cluster)
    set_breaker_state(b, "half_open")
    await fail_times(b, 1)
    assert cluster.released == ["lease-0"]
    assert b.state is CircuitState.OPEN


async def test_remote_open_and_close(autojump_clock: trio.testing.MockClock) -> None:
    """Remote trips open until the shared deadline (only ever extending it); remote
    closes close an open or half-open breaker; neither touches forced or disabled."""
    from trio_resilience.testing import set_breaker_state

    changes: list[StateChange] = []
    b = CircuitBreaker(recovery_timeout=30.0, on_state_change=changes.append)
    port = b.sharing
    assert port.open_until(20.0) is True
    assert b.state is CircuitState.OPEN
    assert b.retry_after == 20.0
    assert port.open_deadline == 20.0
    assert port.open_until(10.0) is False  # an earlier deadline never shortens it
    assert b.retry_after == 20.0
    assert port.open_until(25.0) is True
    assert b.retry_after == 25.0
    assert b.statistics().times_opened == 1
    assert port.close_remote() is True
    assert b.state is CircuitState.CLOSED
    assert port.open_deadline is None
    assert port.close_remote() is False  # closed already: nothing happens
    assert [(c.new_state, c.reason) for c in changes] == [
        ("open", "remote_trip"),
        ("closed", "remote_close"),
    ]
    b.force_open()
    assert port.open_until(50.0) is False
    assert port.close_remote() is False
    assert b.state is CircuitState.FORCED_OPEN
    b.reset()
    set_breaker_state(b, "half_open")
    assert port.open_until(40.0, reason="peer_trip") is True
    assert b.state is CircuitState.OPEN
    assert changes[-1].reason == "peer_trip"
    set_breaker_state(b, "half_open")
    assert port.close_remote("peer_close") is True
    assert b.state is CircuitState.CLOSED


async def test_listeners_see_every_transition() -> None:
    """Port listeners get a StateChange for each transition, after on_state_change."""
    seen: list[tuple[str, str, str]] = []
    order: list[str] = []
    b = CircuitBreaker(
        "obs", failure_threshold=1, on_state_change=lambda change: order.append("callback")
    )

    def listener(change: StateChange) -> None:
        order.append("listener")
        seen.append((change.old_state, change.new_state, change.reason))

    b.sharing.add_listener(listener)
    await fail_times(b, 1)
    b.reset()
    assert seen == [("closed", "open", "failure_threshold"), ("open", "closed", "reset")]
    assert order == ["callback", "listener"] * 2
    b.sharing.remove_listener(listener)
    b.sharing.remove_listener(listener)  # not a listener any more: nothing happens
    b.force_open()
    assert len(seen) == 2


def test_repr_in_half_open_and_rate_only(autojump_clock: trio.testing.MockClock) -> None:
    """The repr shows probes in half-open and call counts for a rate-only breaker."""
    from trio_resilience.testing import set_breaker_state

    async def main() -> None:
        b = CircuitBreaker("h", half_open_max_calls=2, success_threshold=3)
        set_breaker_state(b, "half_open")
        assert repr(b) == "<CircuitBreaker 'h' half_open 0/3 successes, 0/2 probes>"
        r = CircuitBreaker("r", failure_threshold=None, failure_rate_threshold=0.5)
        await r.call(trio.sleep, 0)
        await fail_times(r, 1)
        assert repr(r) == "<CircuitBreaker 'r' closed 1/2 failed calls>"

    trio.run(main, clock=autojump_clock)


def test_task_context_fallback_reads_the_current_task() -> None:
    """The fallback run-context reader returns the current task."""
    from trio_resilience._breaker import _run_context, _TaskContext

    async def main() -> None:
        assert _TaskContext().task is trio.lowlevel.current_task()
        assert _run_context().task is trio.lowlevel.current_task()

    trio.run(main)


async def test_rate_window_expires_bucket_by_bucket(autojump_clock: trio.testing.MockClock) -> None:
    """With a 10 s window (1 s buckets), counts leave the window one bucket at a time."""
    b = CircuitBreaker(
        failure_threshold=None, failure_rate_threshold=0.9, minimum_calls=100, failure_window=10
    )

    def window() -> tuple[int, int]:
        stats = b.statistics()
        return stats.calls_in_window, stats.failures_in_window

    for _ in range(3):
        await b.call(trio.sleep, 0)  # bucket 0
    await trio.sleep(2.5)
    await fail_times(b, 2)  # bucket 2
    await trio.sleep(3.0)
    await b.call(trio.sleep, 0)  # bucket 5
    assert window() == (6, 2)
    await trio.sleep(9.99 - trio.current_time())
    assert window() == (6, 2)  # t = 9.99: bucket 0 still counts
    await trio.sleep(10.0 - trio.current_time())
    assert window() == (3, 2)  # t = 10: bucket 0 left
    await trio.sleep(2.5)
    assert window() == (1, 0)  # t = 12.5: bucket 2 left
    await trio.sleep(3.0)
    assert window() == (0, 0)  # t = 15.5: bucket 5 left
    await b.call(trio.sleep, 0)
    await trio.sleep(30)  # a jump over the whole window clears everything at once
    assert window() == (0, 0)


async def test_count_window_calls_expire_per_bucket(autojump_clock: trio.testing.MockClock) -> None:
    """The count-only breaker's calls_in_window expires the same way."""
    b = CircuitBreaker(failure_threshold=50, failure_window=10)
    for _ in range(3):
        await b.call(trio.sleep, 0)
    assert b.statistics().calls_in_window == 3
    await trio.sleep(4)
    for _ in range(2):
        await b.call(trio.sleep, 0)
    await fail_times(b, 1)
    assert b.statistics().calls_in_window == 6
    await trio.sleep(6)  # t = 10: the first 3 left
    stats = b.statistics()
    assert (stats.calls_in_window, stats.failures_in_window) == (3, 1)
    await trio.sleep(4)  # t = 14
    stats = b.statistics()
    assert (stats.calls_in_window, stats.failures_in_window) == (0, 0)


# ------------------------------------------------------------------ the sharing port


def test_sharing_port_reads_the_configuration_sharers_validate_against() -> None:
    """The port exposes window, thresholds, probes and the longest open period."""
    from trio_resilience import ConstantBackoff

    b = CircuitBreaker(
        failure_threshold=4,
        failure_window=12.0,
        failure_rate_threshold=0.5,
        minimum_calls=7,
        half_open_max_calls=2,
        recovery_timeout=9.0,
    )
    port = b.sharing
    assert (port.failure_window, port.failure_threshold, port.half_open_max_calls) == (12.0, 4, 2)
    assert (port.failure_rate_threshold, port.minimum_calls) == (0.5, 7)
    assert port.longest_open_period == 9.0
    assert port.state is CircuitState.CLOSED
    assert port.owner is None and port.permit_source is None
    grows = CircuitBreaker(recovery_timeout=ExponentialBackoff(base=1.0, max_delay=120.0))
    assert grows.sharing.longest_open_period == 120.0
    constant = CircuitBreaker(recovery_timeout=ConstantBackoff(10.0, jitter_factor=0.5))
    assert constant.sharing.longest_open_period == 15.0
    assert repr(port) == "<BreakerSharing of <CircuitBreaker 'default' closed 0/4 failures>>"


async def test_remote_deadline_is_capped_at_the_longest_open_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A remote deadline never keeps a breaker open longer than its own longest period."""
    b = CircuitBreaker(recovery_timeout=30.0)
    await trio.sleep(100)
    assert b.sharing.open_until(100.0 + 86_400.0) is True
    assert b.retry_after == 30.0
    assert b.sharing.open_deadline == 130.0


async def test_remote_deadlines_that_are_garbage_change_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """NaN, inf, past deadlines and non-numbers are refused with False, never raised."""
    b = CircuitBreaker()
    await trio.sleep(5)
    port = b.sharing
    for bad in (math.nan, math.inf, -math.inf, 5.0, 1.0, "9", None, True):
        assert port.open_until(bad) is False  # type: ignore[arg-type]
    assert b.state is CircuitState.CLOSED
    assert b.statistics().generation == 0


def test_remote_open_outside_a_run_changes_nothing() -> None:
    """Without a Trio clock there is no deadline to compare: nothing happens."""
    b = CircuitBreaker()
    assert b.sharing.open_until(10.0) is False
    assert b.sharing.trip() is False
    assert b.state is CircuitState.CLOSED


async def test_remote_trip_has_no_last_failure_and_counts_as_an_opening(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A remote trip rejects like a local one; times_opened counts it."""
    b = CircuitBreaker("db")
    b.sharing.open_until(12.0)
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert info.value.retry_after == 12.0
    assert b.statistics().times_opened == 1
    await trio.sleep(12)
    assert await b.call(ok) == "ok"  # half-open: a probe is admitted


async def test_trip_opens_a_closed_breaker_for_its_own_recovery_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """trip() opens like a local trip, with the given reason; not when already open."""
    changes: list[StateChange] = []
    b = CircuitBreaker(recovery_timeout=7.0, on_state_change=changes.append)
    assert b.sharing.trip() is True
    assert b.retry_after == 7.0
    assert b.sharing.trip("quorum") is False
    assert [(c.new_state, c.reason) for c in changes] == [("open", "shared_failures")]
    b.reset()
    assert b.sharing.trip("quorum") is True
    assert changes[-1].reason == "quorum"


def test_would_trip_applies_the_breakers_own_rule() -> None:
    """The count and rate rules decide on foreign counts; garbage answers False."""
    counts = CircuitBreaker(failure_threshold=5).sharing
    assert counts.would_trip(5, 5) is True
    assert counts.would_trip(4, 100) is False
    rate = CircuitBreaker(
        failure_threshold=None, failure_rate_threshold=0.55, minimum_calls=100
    ).sharing
    assert rate.would_trip(55, 100) is True
    assert rate.would_trip(54, 100) is False
    assert rate.would_trip(60, 99) is False  # under minimum_calls
    for bad in ((-1, 10), (True, 1), (1.5, 10), ("5", 10), (200, 100)):
        assert rate.would_trip(*bad) is False  # type: ignore[arg-type]


async def test_counted_reports_monotonic_window_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """counted() grows with the outcomes that entered the window, even as they expire."""
    b = CircuitBreaker(failure_threshold=10, failure_window=5.0)
    assert b.sharing.counted() == (0, 0)
    for _ in range(3):
        await b.call(ok)
    await fail_times(b, 2)
    assert b.sharing.counted() == (2, 5)
    await trio.sleep(10)  # the window is empty again; the totals stay
    assert b.statistics().calls_in_window == 0
    await b.call(ok)
    assert b.sharing.counted() == (2, 6)


def test_attach_claims_the_breaker_for_one_sharer() -> None:
    """A second owner is refused; detach drops the owner's listeners and permit source."""
    b = CircuitBreaker("db")
    port = b.sharing
    owner, other = object(), object()
    port.attach(owner)
    port.attach(owner)  # the same owner again: fine
    with pytest.raises(RuntimeError, match=r"^breaker 'db' is already shared; share it once"):
        port.attach(other)
    cluster = FakeCluster(permits=1)
    port.set_permit_source(cluster)
    port.add_listener(lambda change: None)
    port.detach(other)  # not the owner: nothing happens
    assert port.owner is owner and port.permit_source is cluster
    port.detach(owner)
    assert port.owner is None and port.permit_source is None
    port.attach(other)
    assert b.sharing.owner is other


def test_port_refuses_async_listeners_and_sources_without_methods() -> None:
    """Listeners are sync callables; a permit source has acquire and release."""
    port = CircuitBreaker().sharing

    async def async_listener(change: StateChange) -> None: ...

    with pytest.raises(TypeError, match=r"^listener must be a sync callable"):
        port.add_listener(async_listener)
    with pytest.raises(TypeError, match=r"^listener must be a sync callable"):
        port.add_listener("nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^source must have acquire"):
        port.set_permit_source(object())  # type: ignore[arg-type]


async def test_raising_listener_and_permit_source_never_reach_the_caller() -> None:
    """A listener, acquire or release that raises is logged; the probe goes on locally."""
    from structlog.testing import capture_logs

    from trio_resilience.testing import set_breaker_state

    class Broken:
        async def acquire(self, breaker: CircuitBreaker) -> object:
            raise OSError("redis down")

        def release(self, breaker: CircuitBreaker, lease: str) -> None:
            raise OSError("redis down")

    class Leasing(Broken):
        async def acquire(self, breaker: CircuitBreaker) -> object:
            return "lease-1"

    def bad_listener(change: StateChange) -> None:
        raise ValueError("listener bug")

    b = CircuitBreaker("db", half_open_max_calls=1, success_threshold=2)
    b.sharing.set_permit_source(Broken())
    b.sharing.add_listener(bad_listener)
    with capture_logs() as logs:
        set_breaker_state(b, "half_open")
        assert await b.call(ok) == "ok"  # acquire raised: the local limiter decided
        b.sharing.set_permit_source(Leasing())
        assert await b.call(ok) == "ok"  # release raised: logged, the call is fine
    assert b.state is CircuitState.CLOSED
    failed = [e for e in logs if e["event"] == "trio_resilience.breaker.sharing_failed"]
    assert [e["hook"] for e in failed] == ["listener", "acquire", "release", "listener"]
    assert b.statistics().half_open_in_flight == 0
