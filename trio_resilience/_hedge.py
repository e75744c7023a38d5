"""Hedge: when a call is slow, start another attempt; the first success wins.

``Hedge.call`` opens a nursery and runs the first attempt in the caller's task; a
timer child waits ``delay`` and, if no attempt has finished by then, starts another
as a child (up to ``max_hedges`` more, one ``delay`` apart), each paid from a
:class:`RetryBudget` when one is given. When the first attempt finishes in time the
timer ends at its first step, so the fast path costs what a nursery with one trivial
task costs. The first attempt to succeed
wins and the others are cancelled; a failed attempt lets the others go on; when
every attempt started has failed, the last error is raised. Every attempt is a
child of a nursery inside ``call``, so no task outlives it.

With ``delay=None`` the delay is the 95th percentile of the latencies of recent
successful calls (a ring of the last 200, re-sorted every 20 calls), available
after 20 calls; before that calls are not hedged. Memory is fixed.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import trio

from . import _live
from ._classify import leaves
from ._decorate import decorate
from ._log import get_logger
from ._retry import RetryBudget
from ._validate import check_int, check_logger, check_optional_number, check_str

P = ParamSpec("P")
T = TypeVar("T")

HEDGE_BUDGET_EXHAUSTED = "trio_resilience.hedge.budget_exhausted"

_SAMPLES = 200
_MIN_SAMPLES = 20
_REFRESH = 20
_QUANTILE = 0.95
_LOG_INTERVAL = 1.0
# Task names given up front: Trio would otherwise derive one per spawn.
_TIMER_NAME = "trio_resilience.Hedge timer"
_ATTEMPT_NAME = "trio_resilience.Hedge attempt"


@dataclass(frozen=True, slots=True)
class HedgeStatistics:
    """A snapshot of a :class:`Hedge`."""

    calls: int
    """Calls made through the hedge."""
    attempts: int
    """Attempts started (first attempts and hedges)."""
    hedges: int
    """Extra attempts started."""
    hedge_wins: int
    """Calls won by an extra attempt."""
    budget_refused: int
    """Extra attempts not started for want of a budget token."""
    failures: int
    """Calls that raised (every attempt failed)."""
    delay: float | None
    """The hedging delay in force (None: not enough samples yet)."""


class _Race:
    """The shared state of one hedged call's attempts."""

    __slots__ = ("done", "error", "nursery", "running", "timer", "value", "waiter", "winner")

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.running = 1
        self.waiter: trio.lowlevel.Task | None = None  # the caller, waiting on others
        self.timer: trio.lowlevel.Task | None = None  # the timer task, parked
        self.winner = 0

    @property
    def finished(self) -> bool:
        return self.done or not self.running

    def won(self, number: int, value: Any) -> None:
        self.running -= 1
        if self.done:
            return
        self.done = True
        self.value = value
        self.winner = number
        if self.running:
            self.nursery.cancel_scope.cancel()  # the losers (the caller's attempt included)
        else:
            self._wake_timer()
            self._wake_waiter()  # the caller's own attempt failed earlier

    def failed(self, exc: BaseException) -> None:
        self.running -= 1
        self.error = exc
        if not self.running and not self.done:
            self._wake_timer()
            self._wake_waiter()

    def _wake_waiter(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            trio.lowlevel.reschedule(waiter)

    def _wake_timer(self) -> None:
        timer = self.timer
        if timer is not None:
            self.timer = None
            trio.lowlevel.reschedule(timer)

    def abort_waiter(self, _: object) -> trio.lowlevel.Abort:
        self.waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def abort_timer(self, _: object) -> trio.lowlevel.Abort:
        self.timer = None
        return trio.lowlevel.Abort.SUCCEEDED


class Hedge:
    """Start extra attempts of a slow call; the first success wins.

    Args:
        delay: seconds to wait before each extra attempt (>= 0); None: the p95 of
            recent latencies, after 20 calls.
        max_hedges: the most extra attempts per call (>= 0).
        budget: a :class:`RetryBudget` paying for extra attempts (each call deposits,
            each hedge withdraws); None: unlimited.
        name: a label for logs, statistics and metrics.
        logger: a structlog-like logger.

    Use ``await hedge.call(fn, *args)`` or ``@hedge``. Only hedge idempotent calls:
    several attempts may reach the service.
    """

    __slots__ = (
        "__weakref__",
        "_budget_refused",
        "_calls",
        "_count",
        "_estimate",
        "_failures",
        "_fresh",
        "_hedge_wins",
        "_hedges",
        "_index",
        "_last_log",
        "_logger",
        "_refused_since_log",
        "_samples",
        "budget",
        "delay",
        "max_hedges",
        "name",
    )

    def __init__(
        self,
        *,
        delay: float | None = None,
        max_hedges: int = 1,
        budget: RetryBudget | None = None,
        name: str = "default",
        logger: Any = None,
    ) -> None:
        self.delay = check_optional_number("delay", delay, ge=0)
        self.max_hedges = check_int("max_hedges", max_hedges, minimum=0, maximum=1000)
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget or None, got {budget!r}")
        self.budget = budget
        self.name = check_str("name", name)
        self._logger = get_logger(check_logger(logger))
        self._samples = [0.0] * _SAMPLES
        self._index = 0
        self._count = 0
        self._fresh = 0
        self._estimate: float | None = None
        self._calls = 0
        self._hedges = 0
        self._hedge_wins = 0
        self._budget_refused = 0
        self._refused_since_log = 0
        self._failures = 0
        self._last_log = -math.inf
        _live.register("hedge", self)

    # -- the latency estimate ---------------------------------------------------------

    def _record(self, latency: float) -> None:
        self._samples[self._index] = latency
        self._index = (self._index + 1) % _SAMPLES
        if self._count < _SAMPLES:
            self._count += 1
        self._fresh += 1
        if self._fresh >= _REFRESH and self._count >= _MIN_SAMPLES:
            self._fresh = 0
            count = self._count
            ordered = sorted(self._samples[:count] if count < _SAMPLES else self._samples)
            # The nearest-rank p95: the smallest sample with 95% of them at or below it.
            self._estimate = ordered[max(0, math.ceil(_QUANTILE * count) - 1)]

    def current_delay(self) -> float | None:
        """The delay before an extra attempt now (None: calls are not hedged yet)."""
        if self.delay is not None:
            return self.delay
        return self._estimate

    # -- the call ---------------------------------------------------------------------

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)``, hedged with extra attempts when slow.

        Raises:
            Exception: the last attempt's error, when every attempt started failed.

        **Cancellation**: every attempt runs in a nursery inside this call; a
        cancelled caller cancels them all. Losing attempts are cancelled as soon as
        one succeeds.
        """
        self._calls += 1
        budget = self.budget
        if budget is not None:
            budget.deposit()
        delay = self.delay
        if delay is None:
            delay = self._estimate
        start = trio.current_time()
        if delay is None or not self.max_hedges:
            try:
                result = await fn(*args, **kwargs)
            except Exception:
                self._failures += 1
                raise
            self._record(trio.current_time() - start)
            return result
        try:
            async with trio.open_nursery() as nursery:
                race = _Race(nursery)
                # The first attempt runs right here; a timer child starts the hedges.
                nursery.start_soon(
                    self._timer, race, start, delay, fn, args, kwargs, name=_TIMER_NAME
                )
                try:
                    value = await fn(*args, **kwargs)
                except Exception as exc:
                    race.failed(exc)
                    if not race.finished:
                        # Others are running: wait for a winner (it cancels us) or for
                        # all of them to fail (they wake us).
                        race.waiter = trio.lowlevel.current_task()
                        await trio.lowlevel.wait_task_rescheduled(race.abort_waiter)
                else:
                    race.won(0, value)
        except BaseExceptionGroup as group:
            # A KeyboardInterrupt, Cancelled or other BaseException of one attempt
            # comes out as itself, as it would without hedging, not in a group.
            only = _single_leaf(group)
            if only is None:
                raise
            raise only from None
        if race.done:
            if race.winner:
                self._hedge_wins += 1
            self._record(trio.current_time() - start)
            return race.value  # type: ignore[no-any-return]
        self._failures += 1
        error = race.error
        assert error is not None
        try:
            raise error
        finally:
            del error, race

    async def _timer(
        self,
        race: _Race,
        start: float,
        delay: float,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Start an extra attempt each ``delay`` until one finishes or none are left."""
        hedges = 0
        budget = self.budget
        while not (race.done or not race.running) and hedges < self.max_hedges:
            race.timer = trio.lowlevel.current_task()
            with trio.CancelScope(deadline=start + (hedges + 1) * delay):
                await trio.lowlevel.wait_task_rescheduled(race.abort_timer)
            if race.finished:
                return
            if budget is not None and not budget.try_withdraw():
                self._refuse()
                return
            hedges += 1
            self._hedges += 1
            race.running += 1
            race.nursery.start_soon(
                self._attempt, race, hedges, fn, args, kwargs, name=_ATTEMPT_NAME
            )

    async def _attempt(
        self,
        race: _Race,
        number: int,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        try:
            value = await fn(*args, **kwargs)
        except Exception as exc:
            race.failed(exc)
            return
        race.won(number, value)

    def _refuse(self) -> None:
        self._budget_refused += 1
        self._refused_since_log += 1
        now = trio.current_time()
        if now - self._last_log >= _LOG_INTERVAL or now < self._last_log:
            self._logger.warning(
                HEDGE_BUDGET_EXHAUSTED, hedge=self.name, refused=self._refused_since_log
            )
            self._last_log = now
            self._refused_since_log = 0

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        return decorate("Hedge", self.call, fn)

    def statistics(self) -> HedgeStatistics:
        """Return a frozen snapshot."""
        return HedgeStatistics(
            calls=self._calls,
            attempts=self._calls + self._hedges,
            hedges=self._hedges,
            hedge_wins=self._hedge_wins,
            budget_refused=self._budget_refused,
            failures=self._failures,
            delay=self.current_delay(),
        )

    def __repr__(self) -> str:
        delay = self.current_delay()
        shown = "learning" if delay is None else f"{delay:.4g}s"
        return f"<Hedge {self.name!r} delay={shown} max_hedges={self.max_hedges}>"


def _single_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside ``group`` (nested groups flattened), else None."""
    found = list(leaves(group))
    return found[0] if len(found) == 1 else None
