"""AdaptiveThrottle: SRE client-side throttling, its counts, logs and simulated overloads."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from typing import Any

import pytest
import trio
import trio.testing

from trio_resilience import (
    AdaptiveThrottle,
    AdaptiveThrottleStatistics,
    Pipeline,
    ThrottledError,
    _live,
    open_guarded_nursery,
)

from .conftest import Boom, load_sim


async def ok() -> str:
    return "ok"


async def fail() -> None:
    raise Boom


class AlwaysReject(random.Random):
    def random(self) -> float:
        return 0.0


class NeverReject(random.Random):
    def random(self) -> float:
        return 0.999999


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0.5}, ValueError, r"^k must be >= 1, got 0.5$"),
        ({"k": math.inf}, ValueError, r"^k must be finite, got inf$"),
        ({"window": 0}, ValueError, r"^window must be >= 1e-06, got 0$"),
        ({"window": 5e-324}, ValueError, r"^window must be >= 1e-06, got 5e-324$"),
        ({"max_reject": 1.5}, ValueError, r"^max_reject must be <= 1, got 1.5$"),
        ({"max_reject": True}, TypeError, r"^max_reject must be a number, got True$"),
        ({"rng": 3}, TypeError, r"^rng must be a random.Random or None, got 3$"),
        ({"failure_on": 3}, TypeError, r"^failure_on must be an exception type"),
        ({"name": 3}, TypeError, r"^name must be a str, got 3$"),
    ],
)
def test_constructor_validates(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    """Bad arguments are refused at construction with a message naming them."""
    with pytest.raises(error, match=match):
        AdaptiveThrottle(**kwargs)


def test_defaults_and_registration() -> None:
    """Defaults are the contract's; the throttle is a live policy of kind 'throttle'."""
    throttle = AdaptiveThrottle()
    assert (throttle.k, throttle.window, throttle.max_reject) == (2.0, 120.0, 0.9)
    assert throttle in _live.live("throttle")
    assert repr(throttle) == "<AdaptiveThrottle 'default' k=2 0/0 accepted>"


async def test_probability_follows_the_formula(autojump_clock: Any) -> None:
    """p = min(max_reject, max(0, (requests - k*accepts) / (requests + 1)))."""
    throttle = AdaptiveThrottle(k=2.0, rng=NeverReject())
    for _ in range(10):
        await throttle.call(ok)
    for _ in range(30):
        with pytest.raises(Boom):
            await throttle.call(fail)
    stats = throttle.statistics()
    assert (stats.requests, stats.accepts) == (40, 10)
    assert stats.reject_probability == pytest.approx((40 - 20) / 41)
    assert stats.throttling
    for _ in range(300):
        with pytest.raises(Boom):
            await throttle.call(fail)
    assert throttle.reject_probability() == pytest.approx(0.9)  # capped at max_reject


async def test_local_rejection_counts_as_a_request(autojump_clock: Any) -> None:
    """A call rejected locally is counted as a request, never sent, never an accept."""
    throttle = AdaptiveThrottle(k=1.0, rng=AlwaysReject(), name="api")
    with pytest.raises(Boom):
        await throttle.call(fail)
    sent: list[int] = []

    async def backend() -> None:
        sent.append(1)

    with pytest.raises(ThrottledError) as info:
        await throttle.call(backend)
    assert info.value.name == "api"
    assert info.value.probability == pytest.approx(1 / 2)
    assert sent == []
    stats = throttle.statistics()
    assert (stats.requests, stats.accepts, stats.total_rejected, stats.total_calls) == (
        2,
        0,
        1,
        2,
    )


async def test_no_rejection_while_accepting(autojump_clock: Any) -> None:
    """With every request accepted p stays 0 and the rng is never drawn."""

    class Exploding(random.Random):
        def random(self) -> float:
            raise AssertionError("drawn")

    throttle = AdaptiveThrottle(rng=Exploding())
    for _ in range(50):
        assert await throttle.call(ok) == "ok"
    assert throttle.statistics().reject_probability == 0.0


async def test_errors_not_in_failure_on_are_accepts(autojump_clock: Any) -> None:
    """An exception outside failure_on still means the backend answered."""
    throttle = AdaptiveThrottle(failure_on=ConnectionError)
    with pytest.raises(Boom):
        await throttle.call(fail)
    stats = throttle.statistics()
    assert (stats.requests, stats.accepts, stats.total_failures) == (1, 1, 0)


async def test_window_expires_old_counts(autojump_clock: Any) -> None:
    """Counts older than the window are forgotten."""
    throttle = AdaptiveThrottle(window=10.0, rng=NeverReject())
    for _ in range(20):
        with pytest.raises(Boom):
            await throttle.call(fail)
    assert throttle.reject_probability() > 0.9 - 1e-9
    await trio.sleep(10.0)
    assert throttle.statistics().requests == 0
    assert throttle.reject_probability() == 0.0


async def test_cancellation_counts_nothing(autojump_clock: Any) -> None:
    """A storm of 10,000 cancelled calls adds no request and no accept."""
    throttle = AdaptiveThrottle()

    async def slow() -> None:
        await trio.sleep(10)

    async with trio.open_nursery() as nursery:
        for _ in range(10_000):
            nursery.start_soon(throttle.call, slow)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    stats = throttle.statistics()
    assert (stats.requests, stats.accepts, stats.total_accepts, stats.total_failures) == (
        0,
        0,
        0,
        0,
    )


async def test_rejection_is_a_cancel_point(autojump_clock: Any) -> None:
    """A cancelled caller gets Cancelled, not ThrottledError, on the rejection path."""
    throttle = AdaptiveThrottle(k=1.0, rng=AlwaysReject())
    with pytest.raises(Boom):
        await throttle.call(fail)
    with trio.CancelScope() as scope:
        scope.cancel()
        await throttle.call(ok)
    assert scope.cancelled_caught


async def test_started_and_stopped_are_logged_once(
    autojump_clock: Any, logs: list[dict[str, Any]]
) -> None:
    """Throttling logs when it starts and when it stops, never per call."""
    throttle = AdaptiveThrottle(window=10.0, rng=NeverReject(), name="db")
    for _ in range(5):
        with pytest.raises(Boom):
            await throttle.call(fail)
    await trio.sleep(10.0)
    for _ in range(5):
        await throttle.call(ok)
    events = [e for e in logs if e["event"].startswith("trio_resilience.throttle")]
    assert events == [
        {
            "event": "trio_resilience.throttle.started",
            "log_level": "warning",
            "throttle": "db",
            "requests": 1,
            "accepts": 0,
            "reject_probability": 0.5,
        },
        {
            "event": "trio_resilience.throttle.stopped",
            "log_level": "info",
            "throttle": "db",
            "requests": 0,
            "accepts": 0,
            "reject_probability": 0.0,
        },
    ]


async def test_policy_forms(autojump_clock: Any) -> None:
    """call, decorator, Pipeline and guarded nursery all go through the throttle."""
    throttle = AdaptiveThrottle()

    @throttle
    async def decorated(x: int, *, y: int) -> int:
        return x * y

    assert await decorated(3, y=4) == 12
    assert await Pipeline(throttle).call(ok) == "ok"
    async with open_guarded_nursery(throttle) as nursery:
        nursery.start_soon(ok)
    assert throttle.statistics().total_accepts == 3


def test_statistics_frozen_and_outside_a_run() -> None:
    """statistics() is a frozen snapshot, readable outside trio.run."""
    stats = AdaptiveThrottle().statistics()
    assert isinstance(stats, AdaptiveThrottleStatistics)
    assert stats.reject_probability == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.requests = 1  # type: ignore[misc]


def test_new_run_forgets_the_window() -> None:
    """Counts of an earlier trio.run never carry over."""
    throttle = AdaptiveThrottle(rng=NeverReject())

    async def fail_many() -> float:
        for _ in range(10):
            with pytest.raises(Boom):
                await throttle.call(fail)
        return throttle.reject_probability()

    clock = trio.testing.MockClock(autojump_threshold=0)
    assert trio.run(fail_many, clock=clock) > 0.8

    async def fresh() -> float:
        return throttle.reject_probability()

    assert trio.run(fresh, clock=trio.testing.MockClock(autojump_threshold=0)) == 0.0


@pytest.mark.parametrize("overload", [2.0, 10.0])
def test_simulated_overload_settles_at_twice_the_accepts(overload: float) -> None:
    """At 2x and 10x overload the backend sees <= 2.1x its accepts (k = 2)."""
    sim = load_sim("sim_throttle")
    result = sim.simulate(overload, offered=200.0, window=10.0, seed=2)
    assert 1.5 <= result.ratio <= 2.1
    if overload == 2.0:
        assert result.recovery_time <= result.window
    else:
        # The formula's own dynamics: about W * ln(0.95 * 10 - 1) / k = 1.07 windows.
        assert result.recovery_time <= 1.5 * result.window


async def test_a_raising_predicate_counts_a_failure(
    autojump_clock: Any, logs: list[dict[str, Any]]
) -> None:
    """A failure_on predicate that raises: the caller still gets its own error."""

    def broken(exc: BaseException) -> bool:
        raise ValueError("bad predicate")

    throttle = AdaptiveThrottle(failure_on=broken, name="p")
    with pytest.raises(Boom):
        await throttle.call(fail)
    stats = throttle.statistics()
    assert (stats.requests, stats.accepts, stats.total_failures) == (1, 0, 1)
    (event,) = [e for e in logs if e["event"] == "trio_resilience.classify_failed"]
    assert (event["throttle"], event["error"]) == ("p", "ValueError('bad predicate')")
    assert event["exc_info"] is True  # JSON-safe: renderers read the exception handled
    json.dumps(event, allow_nan=False)


class Halt(BaseException):
    """A BaseException that is not an Exception."""


async def test_a_base_exception_counts_as_nothing(autojump_clock: trio.testing.MockClock) -> None:
    """A BaseException that is not an Exception is neither a request nor an accept."""
    throttle = AdaptiveThrottle()

    async def halts() -> None:
        raise Halt

    with pytest.raises(Halt):
        await throttle.call(halts)
    stats = throttle.statistics()
    assert (stats.requests, stats.accepts) == (0, 0)
