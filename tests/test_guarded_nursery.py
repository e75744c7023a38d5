"""Guarded nurseries run the policies' duties; Bulkhead's max_wait; statistics."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_resilience import (
    Bulkhead,
    BulkheadFullError,
    BulkheadStatistics,
    CircuitBreaker,
    CircuitState,
    FailAfter,
    Pipeline,
    Retry,
    StateChange,
    _live,
    open_guarded_nursery,
)
from trio_resilience._pipeline import duties_of

from .conftest import Boom


class DutyPolicy:
    """A fake policy with a duty: counts ticks of its serve() loop."""

    def __init__(self, name: str = "duty", fail_at: float | None = None) -> None:
        self.name = name
        self.fail_at = fail_at
        self.ticks: list[float] = []
        self.running = 0
        self.stopped_at: float | None = None

    async def call(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    async def serve(self) -> None:
        self.running += 1
        try:
            while True:
                await trio.sleep(1.0)
                self.ticks.append(trio.current_time())
                if self.fail_at is not None and trio.current_time() >= self.fail_at:
                    raise Boom("duty failed")
        finally:
            self.running -= 1
            self.stopped_at = trio.current_time()


async def test_duties_run_while_children_run_and_stop_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """serve() starts with the nursery and is cancelled when the last child is done."""
    duty = DutyPolicy()
    async with open_guarded_nursery(duty) as nursery:
        assert duty.running == 1
        nursery.start_soon(trio.sleep, 3.5)
    assert duty.ticks == [1.0, 2.0, 3.0]
    assert duty.stopped_at == 3.5
    assert duty.running == 0


async def test_duties_stop_when_the_body_ends_with_no_children(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A body that finishes with no children closes the nursery at once."""
    duty = DutyPolicy()
    async with open_guarded_nursery(duty):
        await trio.sleep(2.5)
    assert trio.current_time() == 2.5
    assert duty.ticks == [1.0, 2.0]
    assert duty.running == 0


async def test_child_tasks_list_only_the_users_children(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The duties' tasks never show in child_tasks; duty_tasks lists them."""
    duty = DutyPolicy()
    async with open_guarded_nursery(duty) as nursery:
        assert nursery.child_tasks == frozenset()
        assert len(nursery.duty_tasks) == 1
        nursery.start_soon(trio.sleep, 1, name="child")
        await trio.testing.wait_all_tasks_blocked()
        assert [t.name for t in nursery.child_tasks] == ["child"]
        assert [t.name for t in nursery.duty_tasks] == ["DutyPolicy('duty').serve"]


async def test_duties_inside_pipelines_start_once_each(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A policy in nested Pipelines (or named twice) gets one duty."""
    a, b = DutyPolicy("a"), DutyPolicy("b")
    policies = (a, Pipeline(b, Pipeline(a)), Retry(), b)
    assert [d.__self__.name for d in duties_of(policies)] == ["a", "b"]  # type: ignore[attr-defined]
    async with open_guarded_nursery(*policies) as nursery:
        assert (a.running, b.running) == (1, 1)
        assert len(nursery.duty_tasks) == 2


async def test_a_failing_duty_cancels_the_nursery_like_a_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An error in serve() cancels the children and propagates as from a Trio nursery."""
    duty = DutyPolicy(fail_at=2.0)
    cancelled = []

    async def child() -> None:
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            cancelled.append(trio.current_time())
            raise

    with pytest.RaisesGroup(pytest.RaisesExc(Boom, match="^duty failed$")):
        async with open_guarded_nursery(duty) as nursery:
            nursery.start_soon(child)
    assert cancelled == [2.0]


async def test_a_failing_child_propagates_exactly_as_from_a_trio_nursery(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A child's error comes out in one group, the duty cancelled with the rest."""
    duty = DutyPolicy()

    async def fail() -> None:
        await trio.sleep(1.5)
        raise Boom("child")

    with pytest.RaisesGroup(pytest.RaisesExc(Boom, match="^child$")):
        async with open_guarded_nursery(duty) as nursery:
            nursery.start_soon(fail)
            nursery.start_soon(trio.sleep_forever)
    assert duty.running == 0
    assert trio.current_time() == 1.5


async def test_a_failing_body_cancels_children_and_duties(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An error in the body cancels everything and comes out as from a Trio nursery."""
    duty = DutyPolicy()
    with pytest.RaisesGroup(pytest.RaisesExc(Boom)):
        async with open_guarded_nursery(duty) as nursery:
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep(1)
            raise Boom()
    assert duty.running == 0


async def test_started_children_keep_duties_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A child started with start() counts until it finishes."""
    duty = DutyPolicy()

    async def service(task_status: trio.TaskStatus[str]) -> None:
        task_status.started("ready")
        await trio.sleep(2.5)

    async with open_guarded_nursery(duty) as nursery:
        assert await nursery.start(service) == "ready"
    assert duty.stopped_at == 2.5


async def test_cancel_scope_cancels_children_and_duties(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelling the guarded nursery's scope stops everything."""
    duty = DutyPolicy()
    async with open_guarded_nursery(duty) as nursery:
        nursery.start_soon(trio.sleep_forever)
        await trio.sleep(1.5)
        nursery.cancel_scope.cancel()
    assert duty.running == 0
    assert nursery.parent_task is trio.lowlevel.current_task()


async def test_policies_without_duty_behave_as_in_wave_1(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No duty: no extra task, children guarded as before."""
    async with open_guarded_nursery(Retry(), FailAfter(1)) as nursery:
        nursery.start_soon(trio.sleep, 0.5)
        assert nursery.duty_tasks == frozenset()


async def test_a_sync_serve_attribute_is_not_a_duty() -> None:
    """Only an async serve() is a duty."""

    class Odd(DutyPolicy):
        def serve(self) -> None:  # type: ignore[override]
            raise AssertionError("never called")

    assert duties_of((Odd(),)) == []


# ------------------------------------------------------------------ Bulkhead


async def test_bulkhead_max_wait_zero_rejects_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """max_wait=0 raises BulkheadFullError with no wait when every token is taken."""
    bulkhead = Bulkhead(1, max_wait=0, name="db")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bulkhead.call, trio.sleep, 5)
        await trio.testing.wait_all_tasks_blocked()
        with trio.testing.assert_checkpoints(), pytest.raises(BulkheadFullError) as info:
            await bulkhead.call(trio.sleep, 1)
        assert (info.value.name, info.value.max_concurrent) == ("db", 1)
        assert trio.current_time() == 0.0
    assert await bulkhead.call(trio.sleep, 0) is None


async def test_bulkhead_positive_max_wait_waits_at_most_that_long(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A positive max_wait waits for a token, then gives up with BulkheadFullError."""
    bulkhead = Bulkhead(1, max_wait=2.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bulkhead.call, trio.sleep, 5)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(BulkheadFullError):
            await bulkhead.call(trio.sleep, 1)
        assert trio.current_time() == 2.0
        await trio.sleep(2.0)
        await bulkhead.call(trio.sleep, 1)  # waits from 4.0, admitted at 5.0
        assert trio.current_time() == 6.0
    stats = bulkhead.statistics()
    assert stats == BulkheadStatistics(
        max_concurrent=1,
        in_flight=0,
        waiting=0,
        total_admitted=2,
        total_rejected=1,
        total_cancelled=0,
        max_wait=2.0,
    )


async def test_bulkhead_statistics_show_in_flight_and_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """statistics() reports running and waiting calls; wave-1 names still read."""
    bulkhead = Bulkhead(2, name="pool")
    assert bulkhead in _live.live("bulkhead")
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(bulkhead.call, trio.sleep, 1)
        await trio.testing.wait_all_tasks_blocked()
        stats = bulkhead.statistics()
        assert (stats.in_flight, stats.waiting, stats.total_admitted) == (2, 1, 2)
        assert (stats.borrowed_tokens, stats.tasks_waiting, stats.total_tokens) == (2, 1, 2)
        nursery.cancel_scope.cancel()
    stats = bulkhead.statistics()
    assert (stats.in_flight, stats.total_cancelled) == (0, 1)


async def test_bulkhead_cancellation_storm_returns_every_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """2,000 callers waiting with max_wait, cancelled at random points: no token leaks."""
    bulkhead = Bulkhead(5, max_wait=3.0)
    async with trio.open_nursery() as nursery:
        for i in range(2000):
            nursery.start_soon(bulkhead.call, trio.sleep, 0.1 * (i % 7))
        await trio.sleep(0.35)
        nursery.cancel_scope.cancel()
    stats = bulkhead.statistics()
    assert (stats.in_flight, stats.waiting) == (0, 0)
    assert stats.total_admitted + stats.total_rejected + stats.total_cancelled == 2000
    assert stats.total_cancelled > 0


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (-1, ValueError, r"^max_wait must be >= 0, got -1$"),
        (float("nan"), ValueError, r"^max_wait must not be NaN, got nan$"),
        ("1", TypeError, r"^max_wait must be a number, got '1'$"),
    ],
)
def test_bulkhead_max_wait_is_validated(value: object, error: type[Exception], match: str) -> None:
    """max_wait is None or a number >= 0."""
    with pytest.raises(error, match=match):
        Bulkhead(1, max_wait=value)  # type: ignore[arg-type]
    assert Bulkhead(1, max_wait=float("inf")).max_wait is None


# ------------------------------------------------------------------ the real breaker's duty

needs_breaker_duty = pytest.mark.skipif(
    not hasattr(CircuitBreaker, "serve"), reason="CircuitBreaker.serve comes with wave 2"
)


@needs_breaker_duty
async def test_guarded_nursery_runs_the_breakers_duty_inside_a_pipeline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A breaker inside Pipeline(Retry, breaker) moves to half-open on time, no call needed."""
    changes: list[StateChange] = []
    breaker = CircuitBreaker(
        "db", failure_threshold=1, recovery_timeout=5.0, on_state_change=changes.append
    )

    async def fail() -> None:
        raise Boom()

    async with open_guarded_nursery(Pipeline(Retry(), breaker)) as nursery:
        assert len(nursery.duty_tasks) == 1
        assert nursery.child_tasks == frozenset()
        with pytest.raises(Boom):
            await breaker.call(fail)
        await trio.sleep(6.0)
        assert [(c.new_state, c.at) for c in changes] == [
            (CircuitState.OPEN, 0.0),
            (CircuitState.HALF_OPEN, 5.0),
        ]
    assert trio.current_time() == 6.0  # the duty did not keep the nursery open


@needs_breaker_duty
async def test_without_a_duty_the_transition_waits_for_a_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Outside a guarded nursery the breaker stays lazy, as in wave 1."""
    changes: list[StateChange] = []
    breaker = CircuitBreaker(
        failure_threshold=1, recovery_timeout=5.0, on_state_change=changes.append
    )

    async def fail() -> None:
        raise Boom()

    with pytest.raises(Boom):
        await breaker.call(fail)
    await trio.sleep(6.0)
    assert breaker.state is CircuitState.HALF_OPEN
    assert [c.new_state for c in changes] == [CircuitState.OPEN]


async def test_fallback_with_a_raising_predicate_keeps_the_callers_error() -> None:
    """An `on` predicate that raises means no fallback: the original error comes out."""
    from trio_resilience import Fallback

    def on(exc: BaseException) -> bool:
        raise KeyError("predicate bug")

    async def fail() -> None:
        raise Boom("original")

    with pytest.raises(Boom, match=r"^original$"):
        await Fallback("spare", on=on).call(fail)
