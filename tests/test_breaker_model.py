"""Hypothesis programs drive the breaker in one Trio run and compare it with a reference model."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st

from trio_resilience import CircuitBreaker, CircuitOpenError

from .conftest import Boom

THRESHOLD = 3
WINDOW = 10.0
RECOVERY = 5.0
SUCCESSES = 2


class Model:
    """The contract, written as plainly as possible (sequential calls only)."""

    def __init__(self, slow: float | None, half_open_max: float | None = None) -> None:
        self.slow = slow
        self.half_open_max = half_open_max
        self.half_open_until = 0.0
        self.state = "closed"
        self.failures: list[float] = []
        self.open_until = 0.0
        self.consecutive = 0
        self.totals = {"calls": 0, "successes": 0, "failures": 0, "rejected": 0}
        self.totals.update(ignored=0, cancelled=0)

    def effective(self, now: float) -> str:
        if self.state == "open" and now >= self.open_until:
            return "half_open"
        return self.state

    def admit(self, now: float, cancelled: bool = False) -> bool:
        state = self.effective(now)
        if state in ("open", "forced_open"):
            if not cancelled:  # a cancelled caller is not refused: it gets Cancelled
                self.totals["rejected"] += 1
            return False
        if state == "half_open" and self.state == "open":
            self.state = "half_open"
            self.consecutive = 0
            if self.half_open_max is not None:
                self.half_open_until = now + self.half_open_max
        elif (
            self.state == "half_open"
            and self.half_open_max is not None
            and now >= self.half_open_until
        ):
            self.open(now)  # the half-open timeout, applied by this call: refused
            if not cancelled:
                self.totals["rejected"] += 1
            return False
        if state != "disabled":
            self.totals["calls"] += 1
        return True

    def settle(self, kind: str, end: float, duration: float) -> None:
        if self.state == "disabled":
            return
        if kind == "success" and self.slow is not None and duration > self.slow:
            kind = "failure"
        self.totals[{"success": "successes", "failure": "failures"}.get(kind, kind)] += 1
        if kind == "failure":
            if self.state == "closed":
                self.failures = [t for t in self.failures if t + WINDOW > end] + [end]
                if len(self.failures) >= THRESHOLD:
                    self.open(end)
            elif self.state == "half_open":
                self.open(end)
        elif kind == "success" and self.state == "half_open":
            self.consecutive += 1
            if self.consecutive >= SUCCESSES:
                self.state = "closed"
                self.failures = []

    def open(self, now: float) -> None:
        self.state = "open"
        self.open_until = now + RECOVERY
        self.failures = []


Step = tuple[Any, ...]

steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("call"),
            st.sampled_from(["success", "failure", "ignored", "cancelled"]),
            st.sampled_from([0.0, 1.0, 2.0, 3.0]),
            st.booleans(),
        ),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 2.5, 5.0, 9.99, 10.0, 30.0])),
        st.tuples(st.just("control"), st.sampled_from(["force_open", "disable", "reset"])),
    ),
    max_size=40,
)


async def call_step(
    breaker: CircuitBreaker, model: Model, kind: str, duration: float, use_with: bool
) -> None:
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, trio.testing.MockClock)

    async def body() -> None:
        clock.jump(duration)
        if kind == "failure":
            raise Boom
        if kind == "ignored":
            raise KeyError
        if kind == "cancelled":
            await trio.lowlevel.checkpoint()

    now = trio.current_time()
    with trio.CancelScope() as scope:
        if kind == "cancelled":
            scope.cancel()
        admitted = model.admit(now, cancelled=kind == "cancelled")
        try:
            if use_with:
                async with breaker:
                    await body()
            else:
                await breaker.call(body)
        except CircuitOpenError:
            assert not admitted
            return
        except (Boom, KeyError):
            pass
    if not admitted:  # a refusal under a cancelled scope ends in Cancelled, uncounted
        assert kind == "cancelled"
        return
    model.settle(kind, trio.current_time(), duration)


def check(breaker: CircuitBreaker, model: Model) -> None:
    stats = breaker.statistics()
    now = trio.current_time()
    assert stats.state == model.effective(now)
    if model.state == "closed":
        expected = sum(1 for t in model.failures if t + WINDOW > now)
        assert stats.failures_in_window == expected
    totals = model.totals
    assert stats.total_calls == totals["calls"]
    assert stats.total_successes == totals["successes"]
    assert stats.total_failures == totals["failures"]
    assert stats.total_rejected == totals["rejected"]
    assert stats.total_ignored == totals["ignored"]
    assert stats.total_cancelled == totals["cancelled"]
    assert stats.half_open_in_flight == 0


def run_model(slow: float | None, program: list[Step], half_open_max: float | None = None) -> None:
    breaker = CircuitBreaker(
        "model",
        failure_threshold=THRESHOLD,
        failure_window=WINDOW,
        recovery_timeout=RECOVERY,
        success_threshold=SUCCESSES,
        half_open_max_calls=1,
        slow_call_duration=slow,
        half_open_max_duration=half_open_max,
        ignore_on=KeyError,
    )
    model = Model(slow, half_open_max)

    async def main() -> None:
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, trio.testing.MockClock)
        check(breaker, model)
        for step in program:
            if step[0] == "call":
                await call_step(breaker, model, *step[1:])
            elif step[0] == "advance":
                clock.jump(step[1])
            else:
                action = step[1]
                getattr(breaker, action)()
                model.state = {"force_open": "forced_open", "disable": "disabled"}.get(
                    action, "closed"
                )
                model.consecutive = 0
                if action == "reset":
                    model.failures = []
            check(breaker, model)

    trio.run(main, clock=trio.testing.MockClock())


@settings(max_examples=300, deadline=None)
@given(program=steps)
def test_fast_path_breaker_agrees_with_the_model(program: list[Step]) -> None:
    """Random calls, waits and controls: the closed fast path behaves as the model."""
    run_model(None, program)


@settings(max_examples=200, deadline=None)
@given(program=steps)
def test_timed_breaker_agrees_with_the_model(program: list[Step]) -> None:
    """The same with a slow-call check (the ticketed path)."""
    run_model(2.0, program)


STUCK_HALF_OPEN: list[Step] = [
    *[("call", "failure", 0.0, False)] * 3,
    ("advance", 5.0),
    ("call", "success", 0.0, False),  # half-open: one success of two
    ("advance", 5.0),  # past the half-open timeout
    ("call", "success", 0.0, True),  # refused: the timeout re-opens it
    ("call", "success", 0.0, False),
]


@settings(max_examples=200, deadline=None)
@example(program=STUCK_HALF_OPEN)
@given(program=steps)
def test_half_open_timeout_breaker_agrees_with_the_model(program: list[Step]) -> None:
    """With half_open_max_duration, a stuck half-open period re-opens at the next call."""
    run_model(None, program, half_open_max=4.0)


@settings(max_examples=400, deadline=None)
@given(
    calls=st.sampled_from([1, 3, 7, 20, 50, 100, 200]),
    percent=st.integers(min_value=1, max_value=100),
    delta=st.sampled_from([-1, 0, 0, 0, 1]),
    successes_last=st.booleans(),
)
def test_rate_rule_agrees_with_exact_fractions(
    calls: int, percent: int, delta: int, successes_last: bool
) -> None:
    """With minimum_calls = every call, the breaker trips iff failures/calls >= rate,
    the rate read as the decimal written (no float error at the boundary)."""
    from fractions import Fraction

    failures = min(calls, max(0, calls * percent // 100 + delta))
    successes = calls - failures
    breaker = CircuitBreaker(
        failure_threshold=None, failure_rate_threshold=percent / 100, minimum_calls=calls
    )

    async def ok() -> None: ...

    async def fail() -> None:
        raise Boom

    async def main() -> None:
        order = [fail] * failures + [ok] * successes
        if not successes_last:
            order.reverse()
        for fn in order:
            try:
                await breaker.call(fn)
            except (Boom, CircuitOpenError):
                pass

    trio.run(main, clock=trio.testing.MockClock())
    expected = Fraction(failures, calls) >= Fraction(percent, 100)
    assert (breaker.statistics().times_opened == 1) is expected
