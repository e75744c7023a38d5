"""A hypothesis state machine drives the breaker and compares it with a reference model."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from trio_resilience import CircuitBreaker, CircuitOpenError

from .conftest import Boom

THRESHOLD = 3
WINDOW = 10.0
RECOVERY = 5.0
SUCCESSES = 2


class Model:
    """The contract, written as plainly as possible (sequential calls only)."""

    def __init__(self, slow: float | None) -> None:
        self.slow = slow
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

    def admit(self, now: float) -> bool:
        state = self.effective(now)
        if state in ("open", "forced_open"):
            self.totals["rejected"] += 1
            return False
        if state == "half_open" and self.state == "open":
            self.state = "half_open"
            self.consecutive = 0
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


class BreakerMachine(RuleBasedStateMachine):
    slow: float | None = None

    def __init__(self) -> None:
        super().__init__()
        self.clock = trio.testing.MockClock()
        self.breaker = CircuitBreaker(
            "model",
            failure_threshold=THRESHOLD,
            failure_window=WINDOW,
            recovery_timeout=RECOVERY,
            success_threshold=SUCCESSES,
            half_open_max_calls=1,
            slow_call_duration=self.slow,
            ignore_on=KeyError,
        )
        self.model = Model(self.slow)

    def run(self, fn: Callable[[], Awaitable[Any]]) -> None:
        trio.run(fn, clock=self.clock)

    @rule(
        kind=st.sampled_from(["success", "failure", "ignored", "cancelled"]),
        duration=st.sampled_from([0.0, 1.0, 2.0, 3.0]),
        use_with=st.booleans(),
    )
    def call(self, kind: str, duration: float, use_with: bool) -> None:
        model, clock = self.model, self.clock

        async def body() -> None:
            clock.jump(duration)
            if kind == "failure":
                raise Boom
            if kind == "ignored":
                raise KeyError
            if kind == "cancelled":
                await trio.lowlevel.checkpoint()

        async def main() -> None:
            now = trio.current_time()
            admitted = model.admit(now)
            with trio.CancelScope() as scope:
                if kind == "cancelled":
                    scope.cancel()
                try:
                    if use_with:
                        async with self.breaker:
                            await body()
                    else:
                        await self.breaker.call(body)
                except CircuitOpenError:
                    assert not admitted
                    return
                except (Boom, KeyError):
                    pass
            if not admitted:  # a refusal under a cancelled scope ends in Cancelled
                assert kind == "cancelled"
                return
            model.settle(kind, trio.current_time(), duration)

        self.run(main)

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.5, 5.0, 9.99, 10.0, 30.0]))
    def advance(self, seconds: float) -> None:
        self.clock.jump(seconds)

    @rule(action=st.sampled_from(["force_open", "disable", "reset"]))
    def control(self, action: str) -> None:
        async def main() -> None:
            getattr(self.breaker, action)()

        self.run(main)
        self.model.state = {"force_open": "forced_open", "disable": "disabled"}.get(
            action, "closed"
        )
        self.model.consecutive = 0
        if action == "reset":
            self.model.failures = []

    @invariant()
    def agrees_with_the_model(self) -> None:
        async def main() -> None:
            stats = self.breaker.statistics()
            now = trio.current_time()
            model = self.model
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
            assert self.breaker.half_open_limiter.borrowed_tokens == 0

        self.run(main)


class FastPathMachine(BreakerMachine):
    slow = None


class TimedMachine(BreakerMachine):
    slow = 2.0


TestFastPathBreaker = FastPathMachine.TestCase
TestFastPathBreaker.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestTimedBreaker = TimedMachine.TestCase
TestTimedBreaker.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
