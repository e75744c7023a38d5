"""trio_resilience.testing: the fault injector, breaker state helpers and zero_backoff."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from trio_resilience import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConstantBackoff,
    LoopBudget,
    Retry,
)
from trio_resilience.testing import (
    FaultInjector,
    InjectedFault,
    set_breaker_state,
    zero_backoff,
)


async def test_fault_injector_latency_and_outages(autojump_clock: trio.testing.MockClock) -> None:
    """Calls take the latency; every call inside an outage window fails."""
    service = FaultInjector(latency=0.5, outages=[(2.0, 4.0)])
    await service()
    assert trio.current_time() == 0.5
    await trio.sleep(1.5)
    with pytest.raises(InjectedFault):
        await service()  # lands at 2.5: in the outage
    await trio.sleep(1.5)
    await service()  # lands at 4.5
    stats = service.statistics()
    assert (stats.calls, stats.failures, stats.outage_failures) == (3, 1, 1)
    assert service.in_outage(3.0)
    assert not service.in_outage(4.0)


async def test_fault_injector_is_seeded(autojump_clock: trio.testing.MockClock) -> None:
    """The same seed fails the same calls; the rate is roughly the failure_rate."""

    async def pattern(seed: int) -> list[bool]:
        service = FaultInjector(failure_rate=0.3, latency=(0.0, 0.1), seed=seed)
        out = []
        for _ in range(400):
            try:
                await service()
                out.append(True)
            except InjectedFault:
                out.append(False)
        return out

    first, again, other = await pattern(1), await pattern(1), await pattern(2)
    assert first == again
    assert first != other
    assert 80 < first.count(False) < 160


async def test_fault_injector_errors_and_wrap(autojump_clock: trio.testing.MockClock) -> None:
    """Errors may be types, instances or a list; wrap() puts the faults before a function."""
    instance = ConnectionResetError("reset")
    service = FaultInjector(failure_rate=1.0, errors=instance)
    with pytest.raises(ConnectionResetError) as info:
        await service()
    assert info.value is not instance  # a fresh copy each time (wave 2)
    assert info.value.args == ("reset",)
    mixed = FaultInjector(failure_rate=1.0, errors=[KeyError, OSError], rng=random.Random(4))
    raised = set()
    for _ in range(20):
        try:
            await mixed()
        except (KeyError, OSError) as exc:
            raised.add(type(exc))
    assert raised == {KeyError, OSError}

    async def real(x: int) -> int:
        return x * 2

    healthy = FaultInjector(latency=lambda r: 0.25).wrap(real)
    assert await healthy(4) == 8
    assert trio.current_time() == 0.25
    with pytest.raises(TypeError, match=r"^wrap\(\) takes an async function"):
        service.wrap(lambda: 1)  # type: ignore[arg-type, return-value]
    assert repr(service).startswith("<FaultInjector failure_rate=1 outages=[] 1/1 failed>")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"failure_rate": 2}, ValueError, r"^failure_rate must be <= 1, got 2$"),
        ({"latency": -1}, ValueError, r"^latency must be >= 0, got -1$"),
        ({"latency": (1, 2, 3)}, ValueError, r"^latency must be a \(low, high\) pair"),
        ({"latency": (2, 1)}, ValueError, r"^latency high must be >= 2, got 1$"),
        ({"outages": [(5, 1)]}, ValueError, r"^an outage must end after it starts"),
        ({"outages": [5]}, TypeError, r"^outages must hold \(start, end\) pairs, got 5$"),
        ({"errors": "boom"}, TypeError, r"^errors must be exception types or instances"),
        ({"errors": []}, ValueError, r"^errors must not be empty$"),
        ({"rng": 5}, TypeError, r"^rng must be a random.Random or None, got 5$"),
    ],
)
def test_fault_injector_bad_arguments(kwargs: dict[str, object], error: type, message: str) -> None:
    """Bad arguments raise at construction, naming the parameter."""
    with pytest.raises(error, match=message):
        FaultInjector(**kwargs)  # type: ignore[arg-type]


async def test_set_breaker_state_reaches_every_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each state is reached at once; OPEN starts a full recovery timeout."""
    breaker = CircuitBreaker(recovery_timeout=10.0, half_open_max_calls=1)
    set_breaker_state(breaker, CircuitState.OPEN)
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == 10.0
    with pytest.raises(CircuitOpenError):
        await breaker.call(trio.sleep, 0)
    set_breaker_state(breaker, "half_open")
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.half_open_limiter.total_tokens == 1
    for state in ("forced_open", "disabled", "closed"):
        set_breaker_state(breaker, state)
        assert breaker.state == state
    with pytest.raises(ValueError, match="state must be one of"):
        set_breaker_state(breaker, "ajar")
    with pytest.raises(TypeError, match="breaker must be a CircuitBreaker"):
        set_breaker_state(object(), "open")  # type: ignore[arg-type]


async def test_zero_backoff_skips_retry_sleeps(autojump_clock: trio.testing.MockClock) -> None:
    """Inside zero_backoff() retries happen at once; attempts still limit them."""
    service = FaultInjector(failure_rate=1.0)
    retry = Retry(attempts=4, backoff=ConstantBackoff(30.0))
    with zero_backoff(), pytest.raises(InjectedFault):
        await retry.call(service)
    assert trio.current_time() == 0.0
    assert service.statistics().calls == 4
    with pytest.raises(InjectedFault):  # outside the block the delays are back
        await retry.call(service)
    assert trio.current_time() == 60.0  # 0, 30, 60: the next would pass 60 s in total


async def test_zero_backoff_skips_loop_budget_throttling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Inside zero_backoff() throttled ticks pass at once (and are still counted)."""
    with zero_backoff(), LoopBudget(2, window=10.0, max_iterations=6) as budget:
        async for _ in budget:
            pass
    assert trio.current_time() == 0.0
    assert budget.statistics().throttled == 4
    assert budget.exhausted


async def test_fault_injector_raises_a_fresh_copy_of_an_instance_each_time() -> None:
    """Notes added to one raised error never pile up on the next; tracebacks are fresh."""
    template = ConnectionResetError("reset")
    template.add_note("from the test")
    service = FaultInjector(failure_rate=1.0, errors=template)
    raised = []
    for _ in range(3):
        try:
            await service()
        except ConnectionResetError as exc:
            exc.add_note("added by a caller")
            raised.append(exc)
    assert len({id(e) for e in raised}) == 3
    for exc in raised:
        assert exc.__notes__ == ["from the test", "added by a caller"]
        assert exc.__traceback__ is not None
    assert template.__notes__ == ["from the test"]


def test_fault_injector_validates_errors_at_construction() -> None:
    """A type that cannot be raised without arguments is refused at once."""

    class NeedsMessage(Exception):
        def __init__(self, message: str) -> None:
            super().__init__(message)

    with pytest.raises(TypeError, match=r"^errors must be exception types callable without"):
        FaultInjector(errors=[NeedsMessage])
    with pytest.raises(TypeError, match=r"^errors must be exception types or instances, got 3$"):
        FaultInjector(errors=[KeyError, 3])
    with pytest.raises(TypeError, match=r"^latency must be a sync callable"):

        async def slow(rng: random.Random) -> float:
            return 1.0

        FaultInjector(latency=slow)  # type: ignore[arg-type]
    assert FaultInjector(errors=[NeedsMessage("boom")]).errors[0].args == ("boom",)
