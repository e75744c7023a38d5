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


async def assert_settled(breaker: CircuitBreaker) -> None:
    """Every entry of the breaker was settled: one more exit has nothing to settle."""
    with pytest.raises(RuntimeError, match=r"^breaker exited more often than it was entered$"):
        await breaker.__aexit__(None, None, None)
    assert breaker.statistics().half_open_in_flight == 0


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


async def test_failure_memory_does_not_grow_with_failures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """However many failures arrive and expire, the breaker's memory stays flat."""
    import gc
    import tracemalloc

    b = CircuitBreaker(failure_threshold=1000, failure_window=1.0)

    async def spell(n: int) -> None:
        for _ in range(n):
            await fail_times(b, 1)
            await trio.sleep(0.1)  # ten failures per window, each expiring in turn

    await spell(200)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await spell(2000)
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert b.statistics().failures_in_window == 10
    assert growth < 16 * 1024, growth  # flat: 2,000 failures leave only noise


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


async def test_rejection_checks_for_cancellation_first() -> None:
    """A refusal raises as Trio's own APIs do: a cancelled caller gets Cancelled."""
    b = open_breaker()
    await fail_times(b, 2)
    with pytest.raises(CircuitOpenError), trio.testing.assert_checkpoints():
        await b.call(ok)
    with pytest.raises(CircuitOpenError), trio.testing.assert_checkpoints():
        async with b:
            pass
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
    await assert_settled(b)


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
    await assert_settled(b)


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
    await assert_settled(b)


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
        ({"failure_window": 0}, ValueError, r"^failure_window must be >= 0.001, got 0$"),
        ({"failure_window": "1"}, TypeError, r"^failure_window must be a number, got '1'$"),
        (
            {"failure_rate_threshold": 1.5},
            ValueError,
            r"^failure_rate_threshold must be <= 1, got 1.5$",
        ),
        ({"failure_rate_threshold": 0}, ValueError, r"^failure_rate_threshold must be > 0, got 0$"),
        ({"minimum_calls": 0}, ValueError, r"^minimum_calls must be >= 1, got 0$"),
        ({"slow_call_duration": -1}, ValueError, r"^slow_call_duration must be > 0, got -1$"),
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
        assert b.statistics().total_calls == 1
    for n in range(1, 80):
        async with b:
            pass
        assert b.statistics().calls_in_window == n + 1
    stats = b.statistics()
    assert (stats.total_calls, stats.total_successes) == (80, 80)
    await assert_settled(b)


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
            assert b.statistics().half_open_in_flight == 2
        assert b.statistics().half_open_in_flight == 1
        assert b.statistics().consecutive_successes == 2
    assert b.statistics().consecutive_successes == 3
    await assert_settled(b)


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
        b.reset()  # a new generation: both entries are now stale
        async with b:  # recorded while stale entries are in flight
            assert b.statistics().total_calls == 3
        release.set()
    stats = b.statistics()
    assert stats.calls_in_window == 1  # only the entry of the new generation
    assert stats.total_successes == 3
    await assert_settled(b)
    async with b:
        assert b.statistics().total_calls == 4


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


# ------------------------------------------------------------------ the duty and wait_ready


async def test_serve_moves_open_to_half_open_at_the_recovery_time(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """With the duty running, the move to half-open happens on time with no call."""
    changes: list[StateChange] = []
    b = open_breaker(on_state_change=changes.append)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.serve)
        await fail_times(b, 2)
        assert b.state_value.value is CircuitState.OPEN
        await b.state_value.wait_value(CircuitState.HALF_OPEN)
        assert trio.current_time() == 10.0
        nursery.cancel_scope.cancel()
    assert [(c.new_state, c.reason, c.at) for c in changes] == [
        ("open", "failure_threshold", 0.0),
        ("half_open", "recovery_timeout", 10.0),
    ]
    assert [e["new_state"] for e in logs if e["event"].endswith("state_changed")] == [
        "open",
        "half_open",
    ]
    assert b.statistics().total_calls == 2  # no call was needed


async def test_serve_applies_the_half_open_timeout_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A half-open period that has not closed re-opens at its timeout, duty or not."""
    changes: list[StateChange] = []
    b = open_breaker(half_open_max_duration=5.0, on_state_change=changes.append)
    await fail_times(b, 2)
    with trio.move_on_after(40):
        await b.serve()
    assert [(c.new_state, c.reason, c.at) for c in changes][:4] == [
        ("open", "failure_threshold", 0.0),
        ("half_open", "recovery_timeout", 10.0),
        ("open", "half_open_timeout", 15.0),
        ("half_open", "recovery_timeout", 25.0),
    ]


async def test_without_a_duty_transitions_stay_lazy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No duty: state reads half-open on time, but the move is applied by the next call."""
    changes: list[StateChange] = []
    b = open_breaker(on_state_change=changes.append)
    await fail_times(b, 2)
    await trio.sleep(12)
    assert b.state is CircuitState.HALF_OPEN
    assert b.state_value.value is CircuitState.OPEN
    assert len(changes) == 1
    await b.call(ok)
    assert changes[-1].at == 12.0 and changes[-1].reason == "recovery_timeout"


async def test_serve_follows_an_extended_remote_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A deadline moved while the duty sleeps is the one it keeps."""
    changes: list[StateChange] = []
    b = CircuitBreaker(recovery_timeout=30.0, on_state_change=changes.append)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.serve)
        b.sharing.open_until(10.0)
        await trio.sleep(5)
        b.sharing.open_until(20.0)
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    assert [(c.new_state, c.at) for c in changes] == [("open", 0.0), ("half_open", 20.0)]


async def test_wait_ready_sleeps_until_the_recovery_time_without_a_duty(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """wait_ready on an open breaker returns at its recovery time, no duty needed."""
    b = open_breaker()
    await fail_times(b, 2)
    await b.wait_ready()
    assert trio.current_time() == 10.0
    assert b.state_value.value is CircuitState.HALF_OPEN
    assert await b.call(ok) == "ok"


async def test_wait_ready_is_a_checkpoint_when_ready() -> None:
    """A closed breaker is ready at once, and wait_ready is still a checkpoint."""
    b = CircuitBreaker()
    with trio.testing.assert_checkpoints():
        await b.wait_ready()
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await b.wait_ready()


async def test_wait_ready_waits_for_a_free_probe_permit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Half-open with every permit busy: wait_ready returns when a probe ends."""
    b = open_breaker(half_open_max_calls=1, success_threshold=3)
    await fail_times(b, 2)
    await trio.sleep(10)

    async def probe() -> None:
        async with b:
            await trio.sleep(4)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await trio.testing.wait_all_tasks_blocked()
        await b.wait_ready()
        assert trio.current_time() == 14.0
    assert b.statistics().consecutive_successes == 1


async def test_wait_ready_on_a_forced_open_breaker_waits_for_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Forced open never becomes ready on time; reset() wakes the waiter."""
    b = CircuitBreaker()
    b.force_open()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.wait_ready)
        await trio.sleep(1000)
        assert len(nursery.child_tasks) == 1
        b.reset()
    assert trio.current_time() == 1000.0


@pytest.mark.parametrize("duty", [False, True])
async def test_tasks_that_all_wait_ready_then_call_never_deadlock(
    autojump_clock: trio.testing.MockClock, duty: bool
) -> None:
    """Twenty tasks loop on wait_ready() and call; every one gets through."""
    b = open_breaker(half_open_max_calls=2, success_threshold=2)
    await fail_times(b, 2)
    done: list[float] = []
    rejected = 0
    all_done = trio.Event()

    async def worker() -> None:
        nonlocal rejected
        while True:
            await b.wait_ready()
            try:
                await b.call(trio.sleep, 1)
            except CircuitOpenError:
                rejected += 1
                continue
            done.append(trio.current_time())
            if len(done) == 20:
                all_done.set()
            return

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            if duty:
                nursery.start_soon(b.serve)
            for _ in range(20):
                nursery.start_soon(worker)
            await all_done.wait()
            nursery.cancel_scope.cancel()
    assert len(done) == 20
    assert b.state is CircuitState.CLOSED
    assert max(done) <= 12.0  # two probes close it at 11; the rest pass at once
    assert rejected < 40  # refused ones waited for a permit rather than spinning


async def test_wait_closed_applies_the_recovery_move_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """wait_closed wakes at the recovery time and returns once probes close it."""
    b = open_breaker(success_threshold=1)
    await fail_times(b, 2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.wait_closed)
        await b.wait_ready()
        assert trio.current_time() == 10.0
        await b.call(ok)
    assert b.state is CircuitState.CLOSED


# ------------------------------------------------------------------ runs change


def test_a_second_trio_run_starts_with_an_empty_window() -> None:
    """Failures of an earlier trio.run never count in the next one."""
    b = CircuitBreaker(failure_threshold=3, failure_window=60.0)

    async def two_failures() -> None:
        await fail_times(b, 2)
        assert b.statistics().failures_in_window == 2

    trio.run(two_failures, clock=trio.testing.MockClock())

    async def one_more() -> None:
        assert b.statistics().failures_in_window == 0
        assert b.statistics().calls_in_window == 0
        await fail_times(b, 1)
        assert b.state is CircuitState.CLOSED

    trio.run(one_more, clock=trio.testing.MockClock())


def test_an_open_breaker_stays_open_its_period_from_first_use_in_a_new_run() -> None:
    """An open breaker carried into a new run is open for its period from first use."""
    b = CircuitBreaker(failure_threshold=1, recovery_timeout=30.0)

    async def trip() -> None:
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, trio.testing.MockClock)
        clock.jump(1000.0)
        await fail_times(b, 1)

    trio.run(trip, clock=trio.testing.MockClock())

    async def later() -> None:
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, trio.testing.MockClock)
        clock.jump(5.0)
        with pytest.raises(CircuitOpenError) as info:
            await b.call(ok)
        assert info.value.retry_after == 30.0
        await trio.sleep(30.0)
        assert await b.call(ok) == "ok"

    trio.run(later, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_clock_reused_across_runs_still_starts_a_fresh_window() -> None:
    """The same MockClock passed to two runs: the second run's first failure starts anew."""
    clock = trio.testing.MockClock()
    b = CircuitBreaker(failure_threshold=2, failure_window=60.0)

    async def one_failure() -> None:
        await fail_times(b, 1)

    trio.run(one_failure, clock=clock)
    trio.run(one_failure, clock=clock)

    async def check() -> None:
        assert b.state is CircuitState.CLOSED

    trio.run(check, clock=clock)


def test_half_open_in_a_new_run_has_fresh_permits() -> None:
    """A half-open breaker carried into a new run starts a fresh half-open period."""
    b = CircuitBreaker(failure_threshold=1, recovery_timeout=1.0, half_open_max_calls=1)

    async def to_half_open() -> None:
        await fail_times(b, 1)
        await trio.sleep(1)
        assert b.state is CircuitState.HALF_OPEN
        await b.wait_ready()

    trio.run(to_half_open, clock=trio.testing.MockClock(autojump_threshold=0))

    async def probe() -> None:
        assert await b.call(ok) == "ok"
        assert b.statistics().consecutive_successes == 1

    trio.run(probe, clock=trio.testing.MockClock(autojump_threshold=0))


# ------------------------------------------------------------------ hardening (issue 14)


class Stop(BaseException):
    """A BaseException that is not an Exception, named by nobody."""


class Unprintable(Exception):
    """An error whose __repr__ and __str__ raise."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __str__(self) -> str:
        raise RuntimeError("no str")


async def test_raising_predicate_during_a_probe_counts_a_failure_and_returns_the_permit(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """A failure_on predicate that raises: the probe fails, its permit comes back,
    classify_failed is logged and the caller gets its own exception."""

    def broken(exc: BaseException) -> bool:
        raise ValueError("predicate bug")

    b = open_breaker(failure_on=broken, half_open_max_calls=1)
    b.force_open()
    b.reset()
    from trio_resilience.testing import set_breaker_state

    set_breaker_state(b, "half_open")
    err = Boom("down")

    async def raiser() -> None:
        raise err

    with pytest.raises(Boom) as info:
        await b.call(raiser)
    assert info.value is err
    assert b.state is CircuitState.OPEN  # counted as a failure
    assert b.half_open_limiter.borrowed_tokens == 0
    stats = b.statistics()
    assert (stats.total_failures, stats.half_open_in_flight) == (1, 0)
    failed = [e for e in logs if e["event"] == "trio_resilience.classify_failed"]
    assert len(failed) == 1
    assert failed[0]["breaker"] == "t" and "predicate bug" in failed[0]["error"]


@pytest.mark.parametrize("timed", [False, True])
async def test_raising_predicate_in_an_async_with_probe_returns_the_permit(
    autojump_clock: trio.testing.MockClock, timed: bool
) -> None:
    """The same through async with, on the short and the ticketed probe paths."""
    from trio_resilience.testing import set_breaker_state

    def broken(exc: BaseException) -> bool:
        raise ValueError("predicate bug")

    extra: dict[str, Any] = {"slow_call_duration": 5.0} if timed else {}
    b = open_breaker(ignore_on=broken, half_open_max_calls=1, **extra)
    set_breaker_state(b, "half_open")
    with pytest.raises(Boom):
        async with b:
            raise Boom
    assert b.state is CircuitState.OPEN
    assert b.half_open_limiter.borrowed_tokens == 0
    await assert_settled(b)


async def test_raising_ignore_on_predicate_in_async_with_counts_a_failure() -> None:
    """The same through async with and ignore_on in the closed state."""

    def broken(exc: BaseException) -> bool:
        raise ValueError("predicate bug")

    b = CircuitBreaker(failure_threshold=1, ignore_on=broken)
    with pytest.raises(Boom):
        async with b:
            raise Boom
    assert b.statistics().total_failures == 1
    assert b.state is CircuitState.OPEN


async def test_async_with_exited_in_another_task_returns_the_permit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An async generator entered in one task and finalized in another gives its permit back."""
    from collections.abc import AsyncGenerator

    from trio_resilience.testing import set_breaker_state

    b = CircuitBreaker(half_open_max_calls=1, success_threshold=5)
    set_breaker_state(b, "half_open")

    async def stream() -> AsyncGenerator[int, None]:
        async with b:
            yield 1
            yield 2

    agen = stream()

    async def first_item() -> None:
        assert await agen.__anext__() == 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first_item)
    assert b.statistics().half_open_in_flight == 1
    await agen.aclose()  # exits the async with here, in the main task
    stats = b.statistics()
    assert stats.half_open_in_flight == 0
    assert b.half_open_limiter.borrowed_tokens == 0
    assert (stats.total_ignored, stats.total_cancelled) == (1, 0)  # GeneratorExit: nothing
    assert await b.call(ok) == "ok"  # the permit is free for the next probe
    await assert_settled(b)


async def test_async_with_through_an_exit_stack_returns_the_permit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Entered through AsyncExitStack (another frame exits it), the probe still settles."""
    import contextlib

    from trio_resilience.testing import set_breaker_state

    b = CircuitBreaker(half_open_max_calls=1, success_threshold=1)
    set_breaker_state(b, "half_open")
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(b)
        assert b.statistics().half_open_in_flight == 1
    assert b.state is CircuitState.CLOSED
    await assert_settled(b)


async def test_rate_rule_trips_exactly_at_the_threshold() -> None:
    """55 failures of 100 calls trip a 0.55 rate rule (no float error)."""
    b = CircuitBreaker(failure_threshold=None, failure_rate_threshold=0.55, minimum_calls=100)
    for _ in range(45):
        await b.call(ok)
    await fail_times(b, 54)
    assert b.state is CircuitState.CLOSED
    await fail_times(b, 1)
    assert b.state is CircuitState.OPEN
    assert b.statistics().times_opened == 1


async def test_rate_rule_stays_closed_just_under_the_threshold() -> None:
    """54 of 100 at 0.55 stays closed; a success that reaches minimum_calls can trip."""
    b = CircuitBreaker(failure_threshold=None, failure_rate_threshold=0.55, minimum_calls=100)
    await fail_times(b, 54)
    for _ in range(46):
        await b.call(ok)
    assert b.state is CircuitState.CLOSED
    c = CircuitBreaker(failure_threshold=None, failure_rate_threshold=0.5, minimum_calls=10)
    await fail_times(c, 9)
    assert c.state is CircuitState.CLOSED
    await c.call(ok)  # the tenth call: 9 of 10 failed
    assert c.state is CircuitState.OPEN


async def test_unnamed_base_exception_counts_as_ignored_even_in_a_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A non-Exception BaseException not in failure_on is nothing: a probe raising it
    does not close the breaker; named in failure_on, it is a failure."""
    from trio_resilience.testing import set_breaker_state

    async def stop() -> None:
        raise Stop

    b = CircuitBreaker(half_open_max_calls=1, success_threshold=1)
    set_breaker_state(b, "half_open")
    with pytest.raises(Stop):
        await b.call(stop)
    stats = b.statistics()
    assert stats.state is CircuitState.HALF_OPEN
    assert (stats.total_ignored, stats.total_successes, stats.half_open_in_flight) == (1, 0, 0)
    named = CircuitBreaker(failure_threshold=1, failure_on=(Exception, Stop))
    with pytest.raises(Stop):
        await named.call(stop)
    assert named.state is CircuitState.OPEN


async def test_errors_and_results_whose_repr_raises_change_nothing(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """An unprintable error trips the breaker and comes out as itself; so do results."""
    err = Unprintable()

    async def raiser() -> None:
        raise err

    b = CircuitBreaker("u", failure_threshold=2, on_state_change=lambda change: None)
    for _ in range(2):
        with pytest.raises(Unprintable) as info:
            await b.call(raiser)
        assert info.value is err
    with pytest.raises(CircuitOpenError) as rejected:
        await b.call(ok)
    assert rejected.value.last_failure is err

    class Odd:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    odd = Odd()

    async def odd_result() -> Odd:
        return odd

    judged = CircuitBreaker(failure_threshold=1, failure_if_result=lambda value: False)
    assert await judged.call(odd_result) is odd
    assert judged.statistics().total_successes == 1


HUGE_INPUTS = [10**400, -(10**400), 2**1024, 1e308, -1e308, 2**63, 10**30]


@pytest.mark.parametrize(
    "parameter",
    [
        "failure_threshold",
        "failure_window",
        "failure_rate_threshold",
        "minimum_calls",
        "slow_call_duration",
        "recovery_timeout",
        "success_threshold",
        "half_open_max_calls",
        "half_open_max_duration",
    ],
)
async def test_constructor_inputs_never_raise_overflow_error(parameter: str) -> None:
    """Huge ints and floats are refused with ValueError or work; never OverflowError."""
    for value in HUGE_INPUTS:
        try:
            b = CircuitBreaker(**{parameter: value})
        except (TypeError, ValueError):
            continue
        await b.call(ok)
        await fail_times(b, 1)
        b.statistics()
        repr(b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_window": 5e-324}, r"^failure_window must be >= 0.001, got 5e-324$"),
        ({"failure_window": 0.0009}, r"^failure_window must be >= 0.001, got 0.0009$"),
        ({"slow_call_duration": 0}, r"^slow_call_duration must be > 0, got 0$"),
        ({"half_open_max_duration": 0}, r"^half_open_max_duration must be > 0, got 0$"),
        ({"half_open_max_duration": math.inf}, r"^half_open_max_duration must be finite"),
        ({"failure_window": 10**400}, r"^failure_window must be a finite number of seconds"),
    ],
)
def test_tiny_and_unusable_durations_are_refused_at_construction(
    kwargs: dict[str, Any], message: str
) -> None:
    """Windows too small for a bucket, zero durations and giant ints are ValueErrors."""
    with pytest.raises(ValueError, match=message):
        CircuitBreaker(**kwargs)


async def _async_predicate(value: object) -> bool:
    return True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_on": int}, r"^failure_on must be an exception type.*got the class int$"),
        ({"ignore_on": str}, r"^ignore_on must be an exception type.*got the class str$"),
        ({"failure_on": _async_predicate}, r"^failure_on must be a sync predicate"),
        ({"ignore_on": _async_predicate}, r"^ignore_on must be a sync predicate"),
        ({"failure_on": (Boom, int)}, r"^failure_on must be .*item 1 is <class 'int'>$"),
        ({"on_state_change": _async_predicate}, r"^on_state_change must be a sync callable"),
        ({"failure_if_result": _async_predicate}, r"^failure_if_result must be a sync callable"),
        ({"failure_if_result": 3}, r"^failure_if_result must be callable or None, got 3$"),
        ({"recovery_timeout": "30"}, r"^recovery_timeout must be a number or a Backoff"),
    ],
)
def test_non_exception_classes_and_async_functions_are_refused(
    kwargs: dict[str, Any], message: str
) -> None:
    """Predicates are exception types or sync callables; callbacks are sync."""
    with pytest.raises(TypeError, match=message):
        CircuitBreaker(**kwargs)


async def test_forced_open_logs_retry_after_as_none(logs: list[dict[str, Any]]) -> None:
    """Log values are JSON-safe: a forced-open retry_after is None, not inf."""
    import json

    b = CircuitBreaker("f")
    b.force_open()
    event = next(e for e in logs if e["event"] == "trio_resilience.breaker.state_changed")
    assert event["retry_after"] is None
    json.dumps(event, allow_nan=False, default=str)
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert info.value.retry_after == math.inf
    assert info.value.last_failure is None


def test_registry_remove_forgets_a_name() -> None:
    """remove(name) returns the breaker; the next get() makes a new one."""
    registry = BreakerRegistry(failure_threshold=2)
    db = registry.get("db")
    assert registry.remove("db") is db
    assert "db" not in registry and len(registry) == 0
    assert registry.get("db") is not db
    with pytest.raises(KeyError):
        registry.remove("nope")


def _weigh(make: Any, n: int = 500) -> float:
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [make(i) for i in range(n)]
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(kept) == n
    return (after - before) / n


def test_a_breaker_weighs_at_most_2_kb_until_half_open_use() -> None:
    """A fresh breaker, and one used in the closed state, weigh <= 2 KB (an open one
    also holds its last_failure, which belongs to the caller)."""
    registry = BreakerRegistry()
    assert _weigh(lambda i: registry.get(f"name-{i}")) <= 2048
    assert _weigh(lambda i: CircuitBreaker(failure_rate_threshold=0.5)) <= 2048

    def used(i: int) -> CircuitBreaker:
        b = CircuitBreaker(failure_threshold=3)

        async def main() -> None:
            for _ in range(20):
                await b.call(ok)
            await fail_times(b, 2)
            async with b:
                pass
            b.statistics()

        trio.run(main)
        return b

    assert _weigh(used, n=50) <= 2048


# ------------------------------------------------------------------ breaker additions


async def test_failure_if_result_counts_a_failure_and_returns_the_value(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A rejected result is a failure, but the caller still gets it."""

    async def status(code: int) -> int:
        await trio.lowlevel.checkpoint()
        return code

    b = CircuitBreaker(failure_threshold=2, failure_if_result=lambda code: code >= 500)
    assert await b.call(status, 200) == 200
    assert await b.call(status, 503) == 503
    assert b.statistics().failures_in_window == 1
    assert await b.call(status, 500) == 500
    assert b.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        await b.call(status, 200)
    assert info.value.last_failure is None  # opened by results, not by an exception
    stats = b.statistics()
    assert (stats.total_successes, stats.total_failures) == (1, 2)


async def test_failure_if_result_that_raises_counts_a_failure(
    logs: list[dict[str, Any]],
) -> None:
    """A raising result check is a failure (logged); the caller still gets its value."""

    def broken(value: object) -> bool:
        raise ValueError("check bug")

    b = CircuitBreaker(failure_threshold=1, failure_if_result=broken)
    assert await b.call(ok) == "ok"
    assert b.state is CircuitState.OPEN
    assert [e["predicate"] for e in logs if e["event"] == "trio_resilience.classify_failed"] == [
        "failure_if_result"
    ]


async def test_failure_if_result_judges_half_open_probes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A probe whose result is rejected re-opens the breaker."""
    b = open_breaker(failure_if_result=lambda value: value == "bad")
    await fail_times(b, 2)
    await trio.sleep(10)

    async def bad() -> str:
        return "bad"

    assert await b.call(bad) == "bad"
    assert b.state is CircuitState.OPEN
    assert b.half_open_limiter.borrowed_tokens == 0


async def test_half_open_timeout_reopens_lazily_and_its_probes_become_stale(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No duty: the next call after the timeout re-opens it; the old probe's late
    success changes nothing."""
    changes: list[StateChange] = []
    b = open_breaker(
        half_open_max_calls=1,
        success_threshold=1,
        half_open_max_duration=5.0,
        on_state_change=changes.append,
    )
    await fail_times(b, 2)
    await trio.sleep(10)

    async def hung_probe() -> None:
        async with b:
            await trio.sleep(100)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hung_probe)
        await trio.sleep(6)  # t = 16: past the half-open timeout
        with pytest.raises(CircuitOpenError) as info:
            await b.call(ok)
        assert info.value.state is CircuitState.OPEN
        assert info.value.retry_after == 10.0
        assert changes[-1].reason == "half_open_timeout"
        assert changes[-1].at == 16.0
    assert b.state is CircuitState.HALF_OPEN  # t = 110, the stale probe did not close it
    assert b.statistics().total_successes == 1
    assert [c.reason for c in changes] == [
        "failure_threshold",
        "recovery_timeout",
        "half_open_timeout",
    ]


async def test_last_failure_is_the_exception_that_opened_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CircuitOpenError.last_failure: the tripping error, the failed probe's error."""
    b = open_breaker()
    errors = [Boom("one"), Boom("two"), Boom("probe")]

    async def raise_next() -> None:
        raise errors.pop(0)

    for _ in range(2):
        with pytest.raises(Boom):
            await b.call(raise_next)
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert str(info.value.last_failure) == "two"
    await trio.sleep(10)
    with pytest.raises(Boom):
        await b.call(raise_next)
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert str(info.value.last_failure) == "probe"
    b.reset()
    b.sharing.open_until(trio.current_time() + 5)
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert info.value.last_failure is None


def test_breakers_are_listed_as_live_policies() -> None:
    """Every breaker registers itself for the metrics exporters, weakly."""
    import gc

    from trio_resilience import _live

    b = CircuitBreaker("listed")
    assert b in _live.live("breaker")
    del b
    gc.collect()
    assert all(x.name != "listed" for x in _live.live("breaker"))


def test_a_new_run_noticed_mid_flight_keeps_the_entries_of_this_run() -> None:
    """Entries made in a new run before it was noticed still exit cleanly."""
    clock = trio.testing.MockClock()
    b = CircuitBreaker(failure_threshold=5)

    async def warm() -> None:
        await b.call(ok)

    trio.run(warm, clock=clock)

    async def two_entries() -> None:
        release = trio.Event()

        async def holder() -> None:
            async with b:
                await release.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(Boom):
                async with b:
                    raise Boom  # the failure reads the clock: the new run is noticed
            release.set()
        await assert_settled(b)
        assert b.statistics().failures_in_window == 1

    trio.run(two_entries, clock=clock)


def test_a_second_run_never_trips_on_the_first_runs_rate_counts() -> None:
    """Nine failures of an earlier run plus one success now do not reach the rate rule."""
    b = CircuitBreaker(failure_threshold=None, failure_rate_threshold=0.5, minimum_calls=10)

    async def nine_failures() -> None:
        await fail_times(b, 9)

    trio.run(nine_failures, clock=trio.testing.MockClock())

    async def one_success() -> None:
        await b.call(ok)
        assert b.state is CircuitState.CLOSED
        assert b.statistics().calls_in_window == 1  # the window started afresh

    trio.run(one_success, clock=trio.testing.MockClock())


async def test_a_loop_of_refusals_still_lets_other_tasks_run() -> None:
    """A task that retries refusals at once yields every 64 refusals."""
    b = CircuitBreaker(failure_threshold=1)
    await fail_times(b, 1)
    refusals = 0
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:

            async def stopper() -> None:
                scope.cancel()

            nursery.start_soon(stopper)
            for _ in range(1000):
                try:
                    await b.call(ok)
                except CircuitOpenError:
                    refusals += 1
    assert scope.cancelled_caught
    # The stopper runs at the first yield (64) or, when Trio's batch runs this task
    # first, at the second (128); never a thousand refusals later.
    assert refusals in (64, 128)


# ------------------------------------------------------------------ review fixes


async def test_error_logs_are_json_safe_and_keep_the_traceback(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """classify_failed, listener_failed, sharing_failed log exc_info=True, not the exception."""
    import io
    import json

    import structlog

    def broken_predicate(exc: BaseException) -> bool:
        raise ZeroDivisionError("predicate bug")

    def broken_listener(change: StateChange) -> None:
        raise RuntimeError("listener bug")

    b = CircuitBreaker(failure_threshold=1, failure_on=broken_predicate)
    b.on_state_change = broken_listener
    b.sharing.add_listener(broken_listener)
    with pytest.raises(Boom):
        await b.call(fail)
    events = [e["event"] for e in logs if e.get("exc_info") is not None]
    assert events == [
        "trio_resilience.classify_failed",
        "trio_resilience.breaker.listener_failed",
        "trio_resilience.breaker.sharing_failed",
    ]
    for entry in logs:
        json.dumps(entry, allow_nan=False)  # raises on an exception object or inf
        if "exc_info" in entry:
            assert entry["exc_info"] is True

    # A real configuration still renders the traceback of the exception handled.
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
    )
    rendered = CircuitBreaker("real", failure_on=broken_predicate, logger=logger)
    with pytest.raises(Boom):
        await rendered.call(fail)
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "trio_resilience.classify_failed"
    assert "Traceback" in record["exception"]
    assert "ZeroDivisionError: predicate bug" in record["exception"]


async def test_last_failure_of_a_rate_trip_on_a_success_is_the_last_failure_seen(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A rate-rule trip on a success reports the window's last failure, not None."""
    b = CircuitBreaker(failure_threshold=None, failure_rate_threshold=0.5, minimum_calls=10)
    errors = [Boom(f"e{i}") for i in range(5)]
    for error in errors:

        async def raise_it(error: Boom = error) -> None:
            raise error

        with pytest.raises(Boom):
            await b.call(raise_it)
        await trio.sleep(0.1)
    for _ in range(5):
        await b.call(ok)
    assert b.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert info.value.last_failure is errors[-1]


async def test_last_failure_of_a_slow_call_trip_is_the_last_failure_in_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A trip by a slow call reports the window's last exception; none left in it: None."""

    async def slow() -> None:
        await trio.sleep(2)

    b = CircuitBreaker(failure_threshold=2, failure_window=10, slow_call_duration=1)
    err = Boom("real")

    async def raise_err() -> None:
        raise err

    with pytest.raises(Boom):
        await b.call(raise_err)
    await b.call(slow)
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert info.value.last_failure is err

    b.reset()
    with pytest.raises(Boom):
        await b.call(raise_err)
    await trio.sleep(10)  # the failure leaves the window
    await b.call(slow)
    await b.call(slow)
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert info.value.last_failure is None  # only slow calls opened it


async def test_half_open_timeout_and_slow_probe_keep_the_failure_that_opened_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A half-open timeout (lazy or by serve) or a slow probe re-opens keeping last_failure."""
    b = open_breaker(half_open_max_duration=5.0, slow_call_duration=1.0)
    err = Boom("opened it")

    async def raise_err() -> None:
        raise err

    for _ in range(2):
        with pytest.raises(Boom):
            await b.call(raise_err)
    await trio.sleep(10)
    await b.call(ok)  # one probe of two: still half-open
    await trio.sleep(6)
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)  # the half-open timeout re-opens it
    assert info.value.last_failure is err

    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.serve)
        await trio.sleep(10.5)
        assert b.state_value.value is CircuitState.HALF_OPEN
        await trio.sleep(5)
        assert b.state_value.value is CircuitState.OPEN  # serve applied the timeout
        nursery.cancel_scope.cancel()
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert info.value.last_failure is err

    await trio.sleep(10)

    async def slow() -> None:
        await trio.sleep(2)

    await b.call(slow)  # a slow probe re-opens it
    assert b.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert info.value.last_failure is err


async def test_trips_without_an_exception_have_no_last_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A sharing layer's trip() and a forced open report last_failure None."""
    b = CircuitBreaker(failure_threshold=5)
    await fail_times(b, 1)
    assert b.sharing.trip()
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert info.value.last_failure is None
    b.reset()
    await fail_times(b, 1)
    b.force_open()
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert info.value.last_failure is None


def _raiser(kind: str) -> Any:
    async def body() -> None:
        await trio.lowlevel.checkpoint()
        if kind == "group":
            raise BaseExceptionGroup("g", [KeyboardInterrupt(), SystemExit(1)])
        raise {"KeyboardInterrupt": KeyboardInterrupt, "SystemExit": SystemExit}.get(
            kind, GeneratorExit
        )()

    return body


@pytest.mark.parametrize("kind", ["KeyboardInterrupt", "SystemExit", "GeneratorExit", "group"])
@pytest.mark.parametrize("state", ["closed", "half_open", "half_open_timed", "async_with"])
async def test_interrupts_and_exits_count_as_ignored_not_cancelled(
    autojump_clock: trio.testing.MockClock, kind: str, state: str
) -> None:
    """KeyboardInterrupt, SystemExit, GeneratorExit count in total_ignored, never as failures."""
    from trio_resilience.testing import set_breaker_state

    timed = {"slow_call_duration": 100.0} if state == "half_open_timed" else {}
    b = CircuitBreaker(failure_threshold=1, failure_on=BaseException, **timed)
    if state.startswith("half_open"):
        set_breaker_state(b, "half_open")
    body = _raiser(kind)
    for _ in range(2):
        with pytest.raises(BaseException) as info:
            if state == "async_with":
                async with b:
                    await body()
            else:
                await b.call(body)
        assert not isinstance(info.value, Exception)
    stats = b.statistics()
    assert (stats.total_ignored, stats.total_cancelled, stats.total_failures) == (2, 0, 0)
    closed = state in ("closed", "async_with")
    assert stats.state is (CircuitState.CLOSED if closed else CircuitState.HALF_OPEN)
    assert stats.half_open_in_flight == 0


async def test_trio_cancelled_still_counts_as_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """trio.Cancelled, alone or in a group with an interrupt, counts in total_cancelled."""
    b = CircuitBreaker(failure_threshold=1, failure_on=BaseException)
    with trio.move_on_after(1):
        await b.call(trio.sleep_forever)

    async def group() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled as cancelled:
            raise BaseExceptionGroup("g", [cancelled, KeyboardInterrupt()]) from None

    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(BaseExceptionGroup):
            await b.call(group)
    stats = b.statistics()
    assert (stats.total_cancelled, stats.total_ignored, stats.total_failures) == (2, 0, 0)
    assert b.state is CircuitState.CLOSED
