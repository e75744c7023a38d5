"""Hedge: extra attempts for slow calls, the first success wins, nothing outlives call."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
import trio
import trio.testing

from trio_resilience import (
    Hedge,
    HedgeStatistics,
    Pipeline,
    RetryBudget,
    _live,
    open_guarded_nursery,
)

from .conftest import Boom, load_sim


class Service:
    """Attempt i sleeps latencies[i] then returns i, or raises when errors[i]."""

    def __init__(self, latencies: list[float], errors: dict[int, Exception] | None = None):
        self.latencies = latencies
        self.errors = errors or {}
        self.started = 0
        self.finished = 0
        self.cancelled = 0

    async def __call__(self) -> int:
        i = self.started
        self.started += 1
        try:
            await trio.sleep(self.latencies[i])
        except trio.Cancelled:
            self.cancelled += 1
            raise
        self.finished += 1
        if i in self.errors:
            raise self.errors[i]
        return i


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"delay": -1}, ValueError, r"^delay must be >= 0, got -1$"),
        ({"delay": float("inf")}, ValueError, r"^delay must be finite, got inf$"),
        ({"max_hedges": -1}, ValueError, r"^max_hedges must be >= 0, got -1$"),
        ({"max_hedges": True}, TypeError, r"^max_hedges must be an int, got True$"),
        ({"budget": 3}, TypeError, r"^budget must be a RetryBudget or None, got 3$"),
        ({"name": ""}, ValueError, r"^name must not be empty"),
    ],
)
def test_constructor_validates(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    """Bad arguments are refused at construction with a message naming them."""
    with pytest.raises(error, match=match):
        Hedge(**kwargs)


def test_defaults() -> None:
    """Defaults are the contract's; the hedge is a live policy."""
    hedge = Hedge()
    assert (hedge.delay, hedge.max_hedges, hedge.budget, hedge.name) == (None, 1, None, "default")
    assert hedge in _live.live("hedge")
    assert repr(hedge) == "<Hedge 'default' delay=learning max_hedges=1>"


async def test_fast_call_is_not_hedged(autojump_clock: Any) -> None:
    """A call that finishes before the delay runs once."""
    service = Service([0.5])
    hedge = Hedge(delay=1.0)
    assert await hedge.call(service) == 0
    assert service.started == 1
    assert trio.current_time() == 0.5


async def test_slow_call_is_hedged_and_the_first_success_wins(autojump_clock: Any) -> None:
    """After the delay a second attempt starts; it wins and the first is cancelled."""
    service = Service([10.0, 0.5])
    hedge = Hedge(delay=1.0)
    assert await hedge.call(service) == 1
    assert trio.current_time() == 1.5
    assert (service.started, service.finished, service.cancelled) == (2, 1, 1)
    stats = hedge.statistics()
    assert (stats.calls, stats.attempts, stats.hedges, stats.hedge_wins) == (1, 2, 1, 1)


async def test_first_attempt_can_still_win(autojump_clock: Any) -> None:
    """A hedge is a race: the original attempt wins if it finishes first."""
    service = Service([1.2, 5.0])
    assert await Hedge(delay=1.0).call(service) == 0
    assert trio.current_time() == 1.2
    assert service.cancelled == 1


async def test_failed_attempt_lets_the_others_go_on(autojump_clock: Any) -> None:
    """An attempt that fails does not end the call while another runs."""
    service = Service([3.0, 0.5], errors={1: Boom("hedge failed")})
    assert await Hedge(delay=1.0).call(service) == 0
    assert trio.current_time() == 3.0


async def test_hedge_wins_after_the_first_attempt_failed(autojump_clock: Any) -> None:
    """The first attempt fails while a hedge runs: the hedge's success is returned."""
    service = Service([1.5, 1.0], errors={0: Boom("first")})
    hedge = Hedge(delay=1.0)
    assert await hedge.call(service) == 1
    assert trio.current_time() == 2.0
    assert hedge.statistics().hedge_wins == 1


async def test_all_failed_raises_the_last_error(autojump_clock: Any) -> None:
    """When every attempt fails, the last error is raised (unwrapped)."""
    first, last = Boom("first"), Boom("last")
    service = Service([2.0, 1.5, 1.0], errors={0: first, 1: last, 2: Boom("never")})
    with pytest.raises(Boom) as info:
        await Hedge(delay=1.0, max_hedges=1).call(service)
    assert info.value is last
    assert trio.current_time() == 2.5
    assert service.started == 2


async def test_early_failure_is_not_hedged(autojump_clock: Any) -> None:
    """A first attempt that fails before the delay raises at once: hedging is no retry."""
    service = Service([0.1, 0.1], errors={0: Boom()})
    with pytest.raises(Boom):
        await Hedge(delay=1.0).call(service)
    assert service.started == 1
    assert trio.current_time() == 0.1


async def test_max_hedges_starts_one_per_delay(autojump_clock: Any) -> None:
    """Up to max_hedges extra attempts start, one per delay."""
    service = Service([10.0, 10.0, 10.0, 0.5])
    hedge = Hedge(delay=1.0, max_hedges=3)
    assert await hedge.call(service) == 3
    assert trio.current_time() == 3.5
    assert service.cancelled == 3


async def test_budget_pays_for_hedges(autojump_clock: Any, logs: list[dict[str, Any]]) -> None:
    """Each call deposits, each hedge withdraws; with no token no hedge is made."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.1, window=10.0)  # 1 token
    hedge = Hedge(delay=1.0, budget=budget, name="h")
    for _ in range(3):
        await hedge.call(Service([2.0, 0.1]))
    stats = hedge.statistics()
    assert (stats.hedges, stats.budget_refused) == (1, 2)
    assert budget.statistics().deposits == 3
    events = [e for e in logs if e["event"].startswith("trio_resilience.hedge")]
    assert events == [
        {
            "event": "trio_resilience.hedge.budget_exhausted",
            "log_level": "warning",
            "hedge": "h",
            "refused": 1,
        },
        {
            "event": "trio_resilience.hedge.budget_exhausted",
            "log_level": "warning",
            "hedge": "h",
            "refused": 1,
        },
    ]


async def test_delay_is_the_p95_after_20_samples(autojump_clock: Any) -> None:
    """With delay=None calls are not hedged until 20 latencies give a p95."""
    hedge = Hedge()
    for i in range(19):
        await hedge.call(trio.sleep, 0.01 * (i + 1))
    assert hedge.current_delay() is None
    await hedge.call(trio.sleep, 0.2)
    assert hedge.current_delay() == pytest.approx(0.19)  # nearest rank: the 19th of 20
    # Now a slow call is hedged at the p95.
    service = Service([5.0, 0.1])
    start = trio.current_time()
    assert await hedge.call(service) == 1
    assert trio.current_time() - start == pytest.approx(0.29)


async def test_estimate_memory_is_fixed(autojump_clock: Any) -> None:
    """The latency ring never grows, whatever the number of calls."""
    hedge = Hedge()
    rng = random.Random(1)
    for _ in range(1000):
        await hedge.call(trio.sleep, rng.uniform(0, 0.01))
    assert len(hedge._samples) == 200
    delay = hedge.current_delay()
    assert delay is not None and 0.009 <= delay <= 0.01


async def test_caller_cancellation_cancels_every_attempt(autojump_clock: Any) -> None:
    """A cancelled caller leaves no attempt running."""
    service = Service([10.0, 10.0])
    with trio.move_on_after(2.0):
        await Hedge(delay=1.0).call(service)
    assert (service.started, service.cancelled) == (2, 2)


async def test_cancellation_storm_leaves_no_task(autojump_clock: Any) -> None:
    """10,000 hedged calls cancelled at random times leave no task behind."""
    rng = random.Random(9)
    hedge = Hedge(delay=0.05, max_hedges=2, budget=RetryBudget())
    running = 0

    async def service() -> None:
        nonlocal running
        running += 1
        try:
            await trio.sleep(rng.randint(1, 20) / 100)  # few distinct wake-up times
        finally:
            running -= 1

    async def caller() -> None:
        with trio.move_on_after(rng.randint(0, 20) / 100):
            await hedge.call(service)

    async with trio.open_nursery() as nursery:
        for _ in range(10_000):
            nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
    assert running == 0
    assert hedge.statistics().hedges > 0


async def test_policy_forms(autojump_clock: Any) -> None:
    """call with args, decorator, Pipeline and guarded nursery all hedge."""
    hedge = Hedge(delay=1.0)

    async def work(x: int, *, y: int = 0) -> int:
        await trio.sleep(0.1)
        return x + y

    @hedge
    async def decorated(x: int) -> int:
        return await work(x)

    assert await hedge.call(work, 1, y=2) == 3
    assert await decorated(4) == 4
    assert await Pipeline(hedge).call(work, 5) == 5
    async with open_guarded_nursery(hedge) as nursery:
        nursery.start_soon(work, 1)
    assert hedge.statistics().calls == 4


async def test_no_hedging_without_delay_or_hedges(autojump_clock: Any) -> None:
    """max_hedges=0 runs the call once; its failures are counted."""
    hedge = Hedge(delay=0.0, max_hedges=0)
    service = Service([1.0], errors={0: Boom()})
    with pytest.raises(Boom):
        await hedge.call(service)
    assert hedge.statistics().failures == 1


def test_statistics_are_frozen() -> None:
    """statistics() is a frozen snapshot."""
    stats = Hedge(delay=0.5).statistics()
    assert isinstance(stats, HedgeStatistics)
    assert stats.delay == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.calls = 1  # type: ignore[misc]


def test_simulated_tail_drops_for_few_extra_attempts() -> None:
    """With 1% of attempts 100x slower, p99.9 drops >= 80% for <= 6% extra attempts."""
    sim = load_sim("sim_hedge")
    plain = sim.simulate("plain", hedged=False, calls=4000, seed=4)
    hedged = sim.simulate("hedged", calls=4000, seed=4)
    assert hedged.p999 <= 0.2 * plain.p999
    assert hedged.extra <= 0.06


def test_simulated_brownout_is_held_by_the_budget() -> None:
    """In a brownout with a fixed delay, the budget holds extra attempts <= 15%."""
    sim = load_sim("sim_hedge")
    free = sim.simulate("free", calls=6000, brownout=True, delay=0.02, seed=5)
    held = sim.simulate(
        "held", calls=6000, brownout=True, budget=True, budget_window=1.0, delay=0.02, seed=5
    )
    assert free.brownout_extra > 0.5  # without a budget nearly every call hedges
    assert held.brownout_extra <= 0.15


def reference(latencies: list[float], fails: list[bool], delay: float, hedges: int) -> Any:
    """When and how a hedged call ends: ("ok", attempt, time) or ("error", attempt, time)."""
    finish: dict[int, float] = {0: latencies[0]}
    failed: set[int] = set()
    while True:
        next_start = len(finish) * delay if len(finish) <= hedges else float("inf")
        pending = {i: t for i, t in finish.items() if i not in failed}
        first = min(pending, key=pending.__getitem__)
        if pending[first] < next_start:
            if not fails[first]:
                return ("ok", first, pending[first])
            failed.add(first)
            if len(failed) == len(finish):
                return ("error", first, pending[first])
        else:
            finish[len(finish)] = next_start + latencies[len(finish)]


def test_hedge_matches_a_reference_model() -> None:
    """Random latencies, failures, delays and hedge counts end as the model says."""
    rng = random.Random(11)
    for _ in range(300):
        hedges = rng.randint(0, 3)
        delay = rng.uniform(0.1, 2.0)
        latencies = [rng.uniform(0.01, 5.0) for _ in range(hedges + 1)]
        fails = [rng.random() < 0.4 for _ in range(hedges + 1)]
        errors = {i: Boom(i) for i in range(hedges + 1) if fails[i]}
        service = Service(latencies, errors)
        hedge = Hedge(delay=delay, max_hedges=hedges)

        async def main(hedge: Hedge = hedge, service: Service = service) -> Any:
            try:
                value = await hedge.call(service)
            except Boom as exc:
                return ("error", exc.args[0], trio.current_time())
            return ("ok", value, trio.current_time())

        got = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        want = reference(latencies, fails, delay, hedges)
        assert got[:2] == want[:2], (latencies, fails, delay, hedges)
        assert got[2] == pytest.approx(want[2])
        assert service.started == service.finished + service.cancelled


async def test_one_outlier_does_not_set_the_delay(autojump_clock: Any) -> None:
    """Nineteen latencies of 0.1 and one of 5.0: the p95 is 0.1, not the outlier."""
    hedge = Hedge()
    for latency in [0.1] * 19 + [5.0]:
        await hedge.call(trio.sleep, latency)
    assert hedge.current_delay() == pytest.approx(0.1)


class Halt(BaseException):
    """A BaseException that is not an Exception."""


async def test_a_base_exception_of_a_hedged_attempt_comes_out_bare(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With hedging active, a BaseException raised by an attempt is not wrapped in a group."""
    hedge = Hedge(delay=1.0)

    async def halts() -> None:
        raise Halt

    with pytest.raises(Halt):
        await hedge.call(halts)
