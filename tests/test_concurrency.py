"""AdaptiveConcurrency: the limiter, its algorithms, probes, logs and the simulated server."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import trio
import trio.testing

from trio_resilience import (
    AdaptiveConcurrency,
    AdaptiveConcurrencyStatistics,
    BulkheadFullError,
    Pipeline,
    _live,
    open_guarded_nursery,
)
from trio_resilience._concurrency_algorithms import aimd, gradient2, vegas

from .conftest import Boom, load_sim


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"algorithm": "bbr"}, ValueError, r"^algorithm must be one of 'aimd', 'gradient2', "),
        ({"algorithm": 1}, TypeError, r"^algorithm must be a str, got 1$"),
        ({"min_limit": 0}, ValueError, r"^min_limit must be >= 1, got 0$"),
        ({"max_limit": 0}, ValueError, r"^max_limit must be >= 1, got 0$"),
        ({"initial_limit": 500}, ValueError, r"^initial_limit must be <= 200, got 500$"),
        ({"initial_limit": 2.5}, TypeError, r"^initial_limit must be an int, got 2.5$"),
        ({"max_wait": -1}, ValueError, r"^max_wait must be >= 0, got -1$"),
        ({"failure_on": "x"}, TypeError, r"^failure_on must be an exception type"),
        ({"name": ""}, ValueError, r"^name must not be empty"),
    ],
)
def test_constructor_validates(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    """Bad arguments are refused at construction with a message naming them."""
    with pytest.raises(error, match=match):
        AdaptiveConcurrency(**kwargs)


def test_defaults() -> None:
    """Defaults are the contract's; the limit is the limiter's total_tokens."""
    policy = AdaptiveConcurrency()
    assert (policy.algorithm, policy.initial_limit, policy.min_limit, policy.max_limit) == (
        "gradient2",
        20,
        1,
        200,
    )
    assert policy.max_wait is None
    assert policy.limit == 20 == policy.limiter.total_tokens
    assert policy in _live.live("concurrency")
    assert repr(policy) == "<AdaptiveConcurrency 'default' gradient2 limit=20 0 in flight>"


@pytest.mark.parametrize("algorithm", [aimd, gradient2, vegas])
def test_every_algorithm_backs_off_on_latency_alone(algorithm: Any) -> None:
    """With no failure, doubled latency at full use shrinks the limit."""
    assert algorithm(100.0, 0.2, 0.1, 100, False) < 100.0


@pytest.mark.parametrize("algorithm", [aimd, gradient2, vegas])
def test_every_algorithm_grows_when_latency_is_flat(algorithm: Any) -> None:
    """At the baseline latency and full use, the limit grows."""
    assert algorithm(20.0, 0.1, 0.1, 20, False) > 20.0


@pytest.mark.parametrize("algorithm", [aimd, gradient2, vegas])
def test_no_growth_while_the_limit_is_unused(algorithm: Any) -> None:
    """With fewer than half the slots used, the limit does not grow."""
    assert algorithm(20.0, 0.1, 0.1, 5, False) == 20.0


def test_aimd_and_vegas_back_off_on_failure() -> None:
    """A failed call in the window is a congestion signal."""
    assert aimd(20.0, 0.1, 0.1, 20, True) == pytest.approx(18.0)
    assert vegas(20.0, 0.1, 0.1, 20, True) < 20.0


def test_gradient2_tolerance_is_below_netflixs() -> None:
    """A 30% latency rise already shrinks gradient2 (Netflix's 1.5 tolerance would grow)."""
    assert gradient2(60.0, 0.13, 0.1, 60, False) < 60.0
    assert gradient2(60.0, 0.11, 0.1, 60, False) >= 60.0  # within the settling band


async def test_max_wait_zero_rejects_at_once(autojump_clock: Any) -> None:
    """max_wait=0 raises BulkheadFullError when no slot is free, without waiting."""
    policy = AdaptiveConcurrency(initial_limit=1, max_wait=0, name="db")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(policy.call, trio.sleep, 5)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(BulkheadFullError) as info:
            await policy.call(trio.sleep, 1)
        assert (info.value.name, info.value.max_concurrent) == ("db", 1)
        assert trio.current_time() == 0.0
    assert policy.statistics().total_rejected == 1


async def test_max_wait_bound_then_rejects(autojump_clock: Any) -> None:
    """A positive max_wait waits that long for a slot, then raises BulkheadFullError."""
    policy = AdaptiveConcurrency(initial_limit=1, max_wait=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(policy.call, trio.sleep, 5)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(BulkheadFullError):
            await policy.call(trio.sleep, 1)
        assert trio.current_time() == 2.0
        await trio.sleep(1.5)
        await policy.call(trio.sleep, 1)  # a slot frees at 5.0, within 2 s of 3.5
    assert trio.current_time() == 6.0


async def test_max_wait_none_waits(autojump_clock: Any) -> None:
    """max_wait=None waits as long as it takes."""
    policy = AdaptiveConcurrency(initial_limit=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(policy.call, trio.sleep, 50)
        await trio.testing.wait_all_tasks_blocked()
        await policy.call(trio.sleep, 1)
        assert trio.current_time() == 51.0


async def test_cancellation_storm_returns_every_slot(autojump_clock: Any) -> None:
    """10,000 callers cancelled while waiting or running leave every slot free."""
    # (Trio's CapacityLimiter makes a cancelled crowd of waiters cost O(n) each: the
    # full 10,000 only where waiting is unbounded, to keep the test fast.)
    for max_wait, tasks in ((None, 10_000), (0.5, 2_000), (0, 10_000)):
        policy = AdaptiveConcurrency(initial_limit=50, max_wait=max_wait)

        async def caller(p: AdaptiveConcurrency = policy) -> None:
            try:
                await p.call(trio.sleep, 10)
            except BulkheadFullError:
                pass

        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(caller)
            await trio.sleep(0.25)
            nursery.cancel_scope.cancel()
        stats = policy.statistics()
        assert (stats.in_flight, stats.waiting, stats.total_calls) == (0, 0, 0)


async def test_failures_are_counted_and_propagate(autojump_clock: Any) -> None:
    """A failing call frees its slot, reaches the caller unchanged and is a signal."""
    policy = AdaptiveConcurrency(algorithm="aimd", initial_limit=10)

    async def fail() -> None:
        await trio.sleep(0.01)
        raise Boom

    for _ in range(30):
        with pytest.raises(Boom):
            await policy.call(fail)
    stats = policy.statistics()
    assert stats.total_failures == 30
    assert stats.in_flight == 0


async def test_limit_adapts_and_logs_at_most_once_a_second(
    autojump_clock: Any, logs: list[dict[str, Any]]
) -> None:
    """A loaded, flat-latency service grows the limit; changes are rate-limited logs."""
    policy = AdaptiveConcurrency(algorithm="aimd", initial_limit=5, name="svc")

    async def work() -> None:
        await trio.sleep(0.01)

    async def loop() -> None:
        while trio.current_time() < 3:
            await policy.call(work)

    async with trio.open_nursery() as nursery:
        for _ in range(40):
            nursery.start_soon(loop)
    assert policy.limit > 5
    events = [e for e in logs if e["event"] == "trio_resilience.concurrency.limit_changed"]
    assert 1 <= len(events) <= 4
    first = events[0]
    assert set(first) == {
        "event",
        "log_level",
        "concurrency",
        "algorithm",
        "old_limit",
        "new_limit",
        "baseline_latency",
        "recent_latency",
    }
    assert (first["concurrency"], first["algorithm"], first["old_limit"]) == ("svc", "aimd", 5)
    assert first["new_limit"] > 5


async def test_policy_forms(autojump_clock: Any) -> None:
    """call, decorator, Pipeline and guarded nursery all go through the limit."""
    policy = AdaptiveConcurrency(initial_limit=2)
    peak = 0

    async def work(x: int = 0, *, y: int = 0) -> int:
        nonlocal peak
        peak = max(peak, policy.statistics().in_flight)
        await trio.sleep(1)
        return x + y

    @policy
    async def decorated(x: int) -> int:
        return await work(x)

    assert await decorated(2) == 2
    assert await policy.call(work, 1, y=1) == 2
    assert await Pipeline(policy).call(work) == 0
    async with open_guarded_nursery(policy) as nursery:
        for _ in range(6):
            nursery.start_soon(work)
    assert peak == 2
    assert trio.current_time() == 6.0


def test_statistics_are_frozen() -> None:
    """statistics() is a frozen snapshot, readable outside trio.run."""
    stats = AdaptiveConcurrency(algorithm="vegas").statistics()
    assert isinstance(stats, AdaptiveConcurrencyStatistics)
    assert (stats.algorithm, stats.limit, stats.baseline_latency) == ("vegas", 20, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.limit = 3  # type: ignore[misc]


def test_a_new_run_forgets_latencies() -> None:
    """Windows and baselines of an earlier trio.run never carry over."""
    policy = AdaptiveConcurrency(algorithm="aimd", initial_limit=4)

    async def main() -> float | None:
        for _ in range(30):
            await policy.call(trio.sleep, 0.05)
        return policy.statistics().baseline_latency

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == pytest.approx(0.05)

    async def fresh() -> float | None:
        await trio.sleep(0.5)
        for _ in range(10):
            await policy.call(trio.sleep, 0.2)
        return policy.statistics().baseline_latency

    # The old run's 50 ms baseline is forgotten: the new run measures its own.
    assert trio.run(fresh, clock=trio.testing.MockClock(autojump_threshold=0)) == pytest.approx(0.2)


@pytest.mark.parametrize("name", ["aimd", "gradient2", "vegas"])
def test_simulated_server_limit_reaches_capacity(name: str) -> None:
    """Under a 1.25x overload each limit is within 0.6-1.5x C by 10 s; gradient2 stays <= 1.5x."""
    sim = load_sim("sim_concurrency")
    result = sim.simulate(name, capacity=20, service=0.05, duration=15.0, seed=3)
    assert result.reached <= 10.0
    assert result.in_band_after_10s == 1.0
    if name == "gradient2":
        assert result.max_ratio <= 1.5


async def test_a_raising_predicate_counts_a_failure(
    autojump_clock: Any, logs: list[dict[str, Any]]
) -> None:
    """A failure_on predicate that raises: the slot is freed, the caller gets its error."""

    def broken(exc: BaseException) -> bool:
        raise ValueError("bad predicate")

    policy = AdaptiveConcurrency(failure_on=broken, name="p")

    async def fail() -> None:
        raise Boom

    with pytest.raises(Boom):
        await policy.call(fail)
    stats = policy.statistics()
    assert (stats.in_flight, stats.total_failures) == (0, 1)
    (event,) = [e for e in logs if e["event"] == "trio_resilience.classify_failed"]
    assert event["concurrency"] == "p"
    assert event["exc_info"] is True  # JSON-safe: renderers read the exception handled
    json.dumps(event, allow_nan=False)


async def test_probes_let_the_baseline_follow_a_slower_service(autojump_clock: Any) -> None:
    """Every 15 s a probe halves the limit briefly and re-measures the baseline."""
    policy = AdaptiveConcurrency(algorithm="gradient2", initial_limit=10, max_wait=0)
    server = trio.CapacityLimiter(20)
    service = 0.05
    lowest = policy.limit

    async def request() -> None:
        async with server:
            await trio.sleep(service)

    async def client() -> None:
        while trio.current_time() < 60:
            try:
                await policy.call(request)
            except BulkheadFullError:
                await trio.sleep(0.02)

    async def watch() -> None:
        nonlocal lowest, service
        while trio.current_time() < 60:
            await trio.sleep(0.05)
            if trio.current_time() >= 20:
                service = 0.15  # the service really became slower
            if trio.current_time() >= 10:
                lowest = min(lowest, policy.limit)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        for _ in range(40):
            nursery.start_soon(client)
    stats = policy.statistics()
    assert stats.probes >= 3
    assert stats.baseline_latency is not None
    assert 0.12 <= stats.baseline_latency <= 0.2  # followed the slower service
    assert 12 <= stats.limit <= 30  # neither collapsed nor run away (capacity 20)
    assert lowest <= stats.limit / 2 + 1  # a probe halved it


async def test_limit_stays_within_min_and_max(autojump_clock: Any) -> None:
    """The limit never leaves [min_limit, max_limit], whatever the algorithm says."""
    policy = AdaptiveConcurrency(algorithm="aimd", initial_limit=5, min_limit=4, max_limit=6)

    async def loop(latency: float) -> None:
        end = trio.current_time() + 3
        while trio.current_time() < end:
            await policy.call(trio.sleep, latency)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(loop, 0.01)
    assert policy.limit == 6
    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(loop, 0.5)  # latency far past the band: back off
    assert policy.limit == 4
    assert 4 <= policy.statistics().estimated_limit <= 6


@pytest.mark.parametrize("algorithm", ["gradient2", "vegas"])
def test_instant_windows_never_divide_by_zero(algorithm: str) -> None:
    """A window whose calls all took no time (mean latency 0) means no queue, no crash."""
    step = {"gradient2": gradient2, "vegas": vegas}[algorithm]
    assert step(20.0, 0.0, 0.0, 20, False) > 20.0
    assert step(20.0, 0.0, 0.0, 2, False) == 20.0  # unused limit: no growth


@pytest.mark.parametrize("algorithm", ["gradient2", "vegas"])
def test_latency_shrinks_an_unused_limit(algorithm: str) -> None:
    """Latency far over the baseline lowers the limit even when under half is in flight."""
    step = {"gradient2": gradient2, "vegas": vegas}[algorithm]
    assert step(128.0, 0.05, 0.01, 60, False) < 128.0
    assert step(128.0, 0.01, 0.01, 60, False) == 128.0  # no queue, unused: unchanged


async def test_instant_calls_through_the_policy_return_their_results(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Calls that take no virtual time never make the gradient algorithms crash."""
    for algorithm in ("gradient2", "vegas"):
        limit = AdaptiveConcurrency(algorithm=algorithm, initial_limit=1)
        for i in range(300):
            assert await limit.call(trio.sleep, 0) is None
            if i % 10 == 0:
                await trio.sleep(0.1)
        assert limit.statistics().updates > 0
