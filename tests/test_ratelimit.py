"""RateLimiter: the GCRA bound, FIFO waits, fail-fast, cancellation and the remote port."""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

import pytest
import trio
import trio.testing

from trio_resilience import (
    Pipeline,
    RateLimiter,
    RateLimiterStatistics,
    RateLimitExceeded,
    _live,
    open_guarded_nursery,
)


async def cancel_after(scope: trio.CancelScope, seconds: float) -> None:
    """Cancel ``scope`` after ``seconds`` (with cancel(), not a deadline)."""
    await trio.sleep(seconds)
    scope.cancel()


def assert_bound(times: list[float], costs: list[float], limiter: RateLimiter) -> None:
    """Admitted cost over every interval [t_i, t_j] is <= rate * t / period + burst."""
    for i in range(len(times)):
        total = 0.0
        for j in range(i, len(times)):
            total += costs[j]
            allowed = limiter.rate * (times[j] - times[i]) / limiter.period + limiter.burst
            assert total <= allowed + 1e-6, (i, j, total, allowed)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rate": 0}, ValueError, r"^rate must be > 0, got 0$"),
        ({"rate": math.nan}, ValueError, r"^rate must not be NaN, got nan$"),
        ({"rate": True}, TypeError, r"^rate must be a number, got True$"),
        ({"rate": 1, "period": -1}, ValueError, r"^period must be > 0, got -1$"),
        ({"rate": 1, "burst": 0}, ValueError, r"^burst must be >= 1, got 0$"),
        ({"rate": 1, "max_wait": -1}, ValueError, r"^max_wait must be >= 0, got -1$"),
        ({"rate": 1, "name": ""}, ValueError, r"^name must not be empty, got ''$"),
        ({"rate": 1, "logger": object()}, TypeError, r"^logger must have"),
        ({"rate": 1e-320, "period": 1e300}, ValueError, r"^period / rate must be"),
    ],
)
def test_constructor_validates(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    """Bad arguments are refused at construction with a message naming them."""
    with pytest.raises(error, match=match):
        RateLimiter(**kwargs)


def test_defaults_and_registration() -> None:
    """burst defaults to max(1, rate); the limiter is listed as a live rate_limiter."""
    assert RateLimiter(10).burst == 10
    assert RateLimiter(0.5).burst == 1
    limiter = RateLimiter(5, period=2.0, name="api")
    assert (limiter.rate, limiter.period, limiter.max_wait, limiter.name) == (5, 2.0, None, "api")
    assert limiter in _live.live("rate_limiter")
    assert repr(limiter) == "<RateLimiter 'api' 5/2s burst=5 0 waiting>"


async def test_burst_then_one_per_emission_interval(autojump_clock: Any) -> None:
    """A full bucket admits burst at once, then one unit every period / rate."""
    limiter = RateLimiter(4, period=1.0, burst=2)
    times = []
    for _ in range(6):
        await limiter.acquire()
        times.append(trio.current_time())
    assert times == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0]


async def test_cost_is_validated_per_acquire() -> None:
    """A cost must be a positive number no larger than burst."""
    limiter = RateLimiter(10, burst=3)
    with pytest.raises(ValueError, match=r"^cost must be <= burst \(3\), got 4$"):
        await limiter.acquire(4)
    with pytest.raises(ValueError, match=r"^cost must be > 0, got 0$"):
        limiter.acquire_nowait(0)
    with pytest.raises(TypeError, match=r"^cost must be a number, got '1'$"):
        await limiter.acquire("1")  # type: ignore[arg-type]
    await limiter.acquire(2.5)
    assert limiter.statistics().admitted_cost == 2.5


async def test_fast_path_is_a_checkpoint(autojump_clock: Any) -> None:
    """An acquire admitted at once still checkpoints, as CapacityLimiter does."""
    limiter = RateLimiter(10)
    with trio.testing.assert_checkpoints():
        await limiter.acquire()


async def test_random_arrivals_respect_the_bound(autojump_clock: Any) -> None:
    """Many tasks with random costs and arrival times never exceed rate*t/period + burst."""
    rng = random.Random(7)
    limiter = RateLimiter(20, period=2.0, burst=5)
    times: list[float] = []
    costs: list[float] = []

    async def client(delay: float, cost: float) -> None:
        await trio.sleep(delay)
        await limiter.acquire(cost)
        times.append(trio.current_time())
        costs.append(cost)

    async with trio.open_nursery() as nursery:
        for _ in range(300):
            nursery.start_soon(client, rng.uniform(0, 20), rng.choice([1, 1, 2, 0.5, 5]))
    assert_bound(times, costs, limiter)
    # And it is not wasteful: the whole demand went through at about the rate.
    assert sum(costs) <= 10 * trio.current_time() + 5 + 1e-6


async def test_waiters_are_served_fifo(autojump_clock: Any) -> None:
    """Waiters are admitted in arrival order, whatever their costs."""
    limiter = RateLimiter(1, burst=3)
    await limiter.acquire(3)
    order: list[int] = []

    async def waiter(i: int, cost: float) -> None:
        await limiter.acquire(cost)
        order.append(i)

    async with trio.open_nursery() as nursery:
        for i, cost in enumerate([3, 1, 2, 1]):
            nursery.start_soon(waiter, i, cost)
            await trio.testing.wait_all_tasks_blocked()
        # A nowait acquire never jumps the queue.
        with pytest.raises(trio.WouldBlock):
            limiter.acquire_nowait(1)
    assert order == [0, 1, 2, 3]
    assert trio.current_time() == 7.0


async def test_max_wait_boundary(autojump_clock: Any) -> None:
    """Waits up to max_wait are made; longer ones fail at once."""
    limiter = RateLimiter(2, burst=1, max_wait=0.5)
    await limiter.acquire()
    await limiter.acquire()
    assert trio.current_time() == 0.5
    strict = RateLimiter(2, burst=1, max_wait=0.4, name="strict")
    await strict.acquire()
    with pytest.raises(RateLimitExceeded) as info:
        await strict.acquire()
    assert info.value.retry_after == pytest.approx(0.5)
    assert info.value.name == "strict"
    assert trio.current_time() == 0.5  # no time passed on the refusal
    assert strict.statistics().rejected == 1


async def test_queued_cost_counts_towards_the_wait(autojump_clock: Any) -> None:
    """A newcomer's wait includes everyone queued before it."""
    limiter = RateLimiter(1, burst=1, max_wait=2.5)
    await limiter.acquire()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.acquire)  # admitted at 1.0
        nursery.start_soon(limiter.acquire)  # admitted at 2.0
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(RateLimitExceeded) as info:
            await limiter.acquire()  # would be admitted at 3.0 > 2.5
        assert info.value.retry_after == pytest.approx(3.0)
        assert trio.current_time() == 0.0


async def test_deadline_fails_fast(autojump_clock: Any) -> None:
    """A wait that would end at or past the caller's deadline raises at once."""
    limiter = RateLimiter(1, burst=1)
    await limiter.acquire()
    with trio.move_on_after(0.9) as scope:
        with pytest.raises(RateLimitExceeded) as info:
            await limiter.acquire()
    assert not scope.cancelled_caught
    assert info.value.retry_after == pytest.approx(1.0)
    assert trio.current_time() == 0.0
    with trio.move_on_after(1.5):
        await limiter.acquire()
    assert trio.current_time() == 1.0


async def test_acquire_nowait(autojump_clock: Any) -> None:
    """acquire_nowait admits what conforms and raises trio.WouldBlock otherwise."""
    limiter = RateLimiter(2, burst=2)
    limiter.acquire_nowait()
    limiter.acquire_nowait()
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait()
    await trio.sleep(0.5)
    limiter.acquire_nowait()
    stats = limiter.statistics()
    assert (stats.admitted, stats.would_block) == (3, 1)


async def test_cancelled_waiter_leaves_no_reservation(autojump_clock: Any) -> None:
    """Cancelling a queued waiter frees its cost for those behind it."""
    limiter = RateLimiter(1, burst=1)
    await limiter.acquire()
    admitted: dict[str, float] = {}

    async def waiter(label: str, cost: float) -> None:
        await limiter.acquire(cost)
        admitted[label] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "a", 1)
        await trio.testing.wait_all_tasks_blocked()
        async with trio.open_nursery() as inner:
            inner.start_soon(waiter, "b", 1)
            await trio.testing.wait_all_tasks_blocked()
            inner.cancel_scope.cancel()
        nursery.start_soon(waiter, "c", 1)
    # "b" was cancelled: "c" takes its place, admitted 1 s after "a".
    assert admitted == {"a": 1.0, "c": 2.0}
    stats = limiter.statistics()
    assert stats.cancelled == 1
    assert stats.waiting == 0 and stats.queued_cost == 0
    assert stats.wakeups <= stats.admitted + stats.cancelled


async def test_cancelled_head_hands_over(autojump_clock: Any) -> None:
    """When the head of the queue is cancelled, the next waiter is served at its time."""
    limiter = RateLimiter(1, burst=1)
    await limiter.acquire()
    done: list[float] = []

    async def waiter() -> None:
        await limiter.acquire()
        done.append(trio.current_time())

    async with trio.open_nursery() as nursery, trio.open_nursery() as head:
        head.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter)
        await trio.sleep(0.5)
        head.cancel_scope.cancel()
    assert done == [1.0]
    assert limiter.statistics().cancelled == 1


async def test_cancellation_storm_leaks_nothing(autojump_clock: Any) -> None:
    """10,000 waiters cancelled at random leave no reservation and no needless wake-up."""
    rng = random.Random(3)
    limiter = RateLimiter(100, burst=10)
    admitted = 0

    async def waiter(patience: float) -> None:
        nonlocal admitted
        # A cancel() at a random time, not a deadline (a deadline makes acquire fail fast).
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_after, nursery.cancel_scope, patience)
            await limiter.acquire()
            admitted += 1
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for _ in range(10_000):
            nursery.start_soon(waiter, rng.uniform(0, 60))
    stats = limiter.statistics()
    assert stats.waiting == 0 and stats.queued_cost == 0
    assert stats.admitted == admitted
    assert stats.admitted + stats.cancelled == 10_000
    assert stats.wakeups <= stats.admitted + stats.cancelled
    # What the cancelled left behind is nothing: the bucket refills on schedule.
    await trio.sleep(0.1)
    assert stats.cancelled > 1000
    assert limiter.statistics().available == pytest.approx(10)


async def test_call_decorator_pipeline_and_guarded_nursery(autojump_clock: Any) -> None:
    """RateLimiter is a policy: call, @limiter, Pipeline and guarded nurseries."""
    limiter = RateLimiter(10, burst=1)
    seen: list[float] = []

    async def work(x: int, *, y: int = 0) -> int:
        seen.append(trio.current_time())
        return x + y

    assert await limiter.call(work, 1, y=2) == 3

    @limiter
    async def decorated(x: int) -> int:
        return await work(x)

    assert await decorated(5) == 5
    assert decorated.__name__ == "decorated"
    assert await Pipeline(limiter).call(work, 2) == 2
    async with open_guarded_nursery(limiter) as nursery:
        for i in range(3):
            nursery.start_soon(work, i)
    assert seen == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    with pytest.raises(TypeError, match="async functions"):
        limiter(lambda: None)  # type: ignore[arg-type, return-value]


async def test_statistics_are_frozen(autojump_clock: Any) -> None:
    """statistics() returns a frozen snapshot."""
    limiter = RateLimiter(1, burst=2)
    await limiter.acquire()
    stats = limiter.statistics()
    assert isinstance(stats, RateLimiterStatistics)
    assert stats.available == pytest.approx(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.admitted = 5  # type: ignore[misc]


def test_statistics_outside_a_run() -> None:
    """statistics() works at module scope, outside trio.run."""
    assert RateLimiter(3).statistics().available == 3


def test_a_new_run_starts_with_a_full_bucket() -> None:
    """Reservations of an earlier trio.run never carry over."""
    limiter = RateLimiter(1, burst=1)

    async def main() -> float:
        await trio.sleep(100)
        await limiter.acquire()
        await limiter.acquire()
        return trio.current_time()

    clock = trio.testing.MockClock(autojump_threshold=0)
    assert trio.run(main, clock=clock) == 101.0
    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == 101.0


async def test_exceeded_is_logged_at_most_once_a_second(
    autojump_clock: Any, logs: list[dict[str, Any]]
) -> None:
    """Refusals are logged as rate-limited summaries, never once per call."""
    limiter = RateLimiter(1, burst=1, max_wait=0, name="api")
    await limiter.acquire()
    for _ in range(5):
        with pytest.raises(RateLimitExceeded):
            await limiter.acquire()
    await trio.sleep(1.0)
    await limiter.acquire()
    for _ in range(3):
        with pytest.raises(RateLimitExceeded):
            await limiter.acquire()
    events = [e for e in logs if e["event"].startswith("trio_resilience.rate_limiter")]
    assert events == [
        {
            "event": "trio_resilience.rate_limiter.exceeded",
            "log_level": "warning",
            "rate_limiter": "api",
            "rejected": 1,
            "retry_after": pytest.approx(1.0),
        },
        {
            "event": "trio_resilience.rate_limiter.exceeded",
            "log_level": "warning",
            "rate_limiter": "api",
            "rejected": 5,
            "retry_after": pytest.approx(1.0),
        },
    ]


# -- the remote port ------------------------------------------------------------------


async def test_remote_admits(autojump_clock: Any) -> None:
    """A remote verdict of 0 admits at once; the local bucket is charged too."""
    limiter = RateLimiter(1, burst=2)
    asked: list[float] = []

    async def decide(cost: float) -> float:
        asked.append(cost)
        await trio.sleep(0.01)
        return 0.0

    limiter.attach_remote(decide)
    assert limiter.remote_attached
    await limiter.acquire(2)
    await limiter.acquire(1)  # the remote says yes; the local bucket stays capped
    stats = limiter.statistics()
    assert asked == [2, 1]
    assert (stats.remote_decisions, stats.remote_fallbacks, stats.admitted) == (2, 0, 2)
    limiter.detach_remote()
    assert not limiter.remote_attached
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait(1)


async def test_remote_wait_then_ask_again(autojump_clock: Any) -> None:
    """A positive verdict makes the head sleep that long and ask again."""
    limiter = RateLimiter(1, burst=1)
    answers = iter([0.75, 0.75, 0.0])

    async def decide(cost: float) -> float:
        return next(answers)

    limiter.attach_remote(decide)
    await limiter.acquire()
    assert trio.current_time() == 1.5


async def test_remote_wait_past_max_wait_fails(autojump_clock: Any) -> None:
    """A remote wait past max_wait raises RateLimitExceeded with the remote's figure."""
    limiter = RateLimiter(1, burst=1, max_wait=0.5)

    async def decide(cost: float) -> float:
        return 0.8

    limiter.attach_remote(decide)
    with pytest.raises(RateLimitExceeded) as info:
        await limiter.acquire()
    assert info.value.retry_after == 0.8
    assert limiter.statistics().waiting == 0


@pytest.mark.parametrize("answer", [None, math.nan, math.inf, -math.inf, True, "0", [0], object()])
async def test_remote_garbage_falls_back_to_local(autojump_clock: Any, answer: object) -> None:
    """Any answer that is not a finite number is ignored: the local GCRA decides."""
    limiter = RateLimiter(1, burst=1)

    async def decide(cost: float) -> object:
        return answer

    limiter.attach_remote(decide)
    await limiter.acquire()
    await limiter.acquire()
    assert trio.current_time() == 1.0
    stats = limiter.statistics()
    assert (stats.remote_decisions, stats.remote_fallbacks) == (0, 2)


async def test_remote_failure_and_timeout_fall_back(
    autojump_clock: Any, logs: list[dict[str, Any]]
) -> None:
    """A raising or hanging hook costs at most the timeout; the degradation is logged once."""
    limiter = RateLimiter(100, name="shared")
    mode = "raise"

    async def decide(cost: float) -> float:
        if mode == "raise":
            raise ConnectionError("down")
        if mode == "hang":
            await trio.sleep_forever()
        return 0.0

    limiter.attach_remote(decide, timeout=0.2)
    await limiter.acquire()
    assert trio.current_time() == 0.0
    mode = "hang"
    await limiter.acquire()
    assert trio.current_time() == pytest.approx(0.2)
    mode = "ok"
    await limiter.acquire()
    events = [e for e in logs if e["event"].startswith("trio_resilience.rate_limiter")]
    assert events == [
        {
            "event": "trio_resilience.rate_limiter.remote_failed",
            "log_level": "warning",
            "rate_limiter": "shared",
            "error": "ConnectionError('down')",
        },
        {
            "event": "trio_resilience.rate_limiter.remote_recovered",
            "log_level": "info",
            "rate_limiter": "shared",
        },
    ]
    assert limiter.statistics().remote_fallbacks == 2


def test_attach_remote_validates() -> None:
    """The hook must be callable and the timeout a positive finite number."""
    limiter = RateLimiter(1)
    with pytest.raises(TypeError, match=r"^decide must be an async callable"):
        limiter.attach_remote(42)  # type: ignore[arg-type]

    async def decide(cost: float) -> float:
        return 0.0

    with pytest.raises(ValueError, match=r"^timeout must be > 0, got 0$"):
        limiter.attach_remote(decide, timeout=0)


async def test_remote_cancellation_storm_leaks_nothing(autojump_clock: Any) -> None:
    """Cancelled while the remote decides: the queue empties and the next caller goes on."""
    limiter = RateLimiter(1000, burst=10)

    async def decide(cost: float) -> float:
        await trio.sleep(0.01)
        return 0.0

    limiter.attach_remote(decide)
    rng = random.Random(5)

    async def caller() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_after, nursery.cancel_scope, rng.uniform(0, 1))
            await limiter.acquire()
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for _ in range(10_000):
            nursery.start_soon(caller)
    stats = limiter.statistics()
    assert stats.waiting == 0 and stats.queued_cost == 0
    assert stats.admitted + stats.cancelled == 10_000
    assert stats.wakeups <= stats.admitted + stats.cancelled


async def test_remote_error_with_a_broken_repr_is_survived(
    autojump_clock: Any, logs: list[dict[str, Any]]
) -> None:
    """A hook's exception whose repr raises still falls back, and is logged by type."""

    class Nasty(Exception):
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    limiter = RateLimiter(10)

    async def decide(cost: float) -> float:
        raise Nasty

    limiter.attach_remote(decide)
    await limiter.acquire()
    assert limiter.statistics().remote_fallbacks == 1
    assert [e["error"] for e in logs if "remote_failed" in e["event"]] == ["<Nasty>"]


def test_a_burst_below_one_unit_is_refused() -> None:
    """A burst under the default cost of 1 would refuse every call(): refused at once."""
    with pytest.raises(ValueError, match=r"^burst must be >= 1, got 0.5$"):
        RateLimiter(1, burst=0.5)
