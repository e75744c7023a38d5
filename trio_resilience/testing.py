"""Helpers for testing code that uses trio-resilience (public, opt-in).

``from trio_resilience.testing import FaultInjector, set_breaker_state, zero_backoff``

- :class:`FaultInjector`: a seeded flaky service (failure probability, latency
  distribution, outage windows on Trio's clock, errors to raise).
- :func:`set_breaker_state`: put a breaker into any state at once.
- :func:`zero_backoff`: make every Retry and LoopBudget skip its sleeps.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import trio

from ._breaker import CircuitBreaker, CircuitState
from ._log import safe_repr
from ._testing_flags import ZERO_BACKOFF
from ._validate import check_number, check_sync_callable

__all__ = [
    "FaultInjector",
    "FaultInjectorStatistics",
    "InjectedFault",
    "set_breaker_state",
    "zero_backoff",
]

P = ParamSpec("P")
T = TypeVar("T")

Latency = float | tuple[float, float] | Callable[[random.Random], float]


class InjectedFault(Exception):
    """The default error a :class:`FaultInjector` raises."""


@dataclass(frozen=True, slots=True)
class FaultInjectorStatistics:
    """What a :class:`FaultInjector` did."""

    calls: int
    """Calls made through it."""
    failures: int
    """Calls it failed (outages included)."""
    outage_failures: int
    """Calls it failed because they fell in an outage window."""


class FaultInjector:
    """A seeded flaky service for tests: latency, random failures and outage windows.

    Each call first waits a latency (on Trio's clock), then fails if the current Trio
    time is inside an outage window or with probability ``failure_rate``; otherwise it
    returns (``await injector()`` returns None; a wrapped function's result comes back).

    Args:
        failure_rate: probability, 0..1, that a call outside outages fails.
        latency: seconds per call: a number, a ``(low, high)`` uniform range, or a
            callable drawing from the injector's ``random.Random``.
        outages: ``(start, end)`` windows of Trio time in which every call fails.
        errors: what to raise: an exception type, an instance, or a sequence of them
            to pick from at random. Default :class:`InjectedFault`.
        seed: seed of the injector's ``random.Random`` (or pass ``rng``).
        rng: a ``random.Random`` to draw from.
    """

    def __init__(
        self,
        *,
        failure_rate: float = 0.0,
        latency: Latency = 0.0,
        outages: Sequence[tuple[float, float]] = (),
        errors: Any = InjectedFault,
        seed: int | None = 0,
        rng: random.Random | None = None,
    ) -> None:
        self.failure_rate = check_number("failure_rate", failure_rate, ge=0, le=1)
        if isinstance(latency, tuple):
            if len(latency) != 2:
                raise ValueError(f"latency must be a (low, high) pair, got {latency!r}")
            low = check_number("latency low", latency[0], ge=0)
            high = check_number("latency high", latency[1], ge=low)
            self._latency: Callable[[random.Random], float] = lambda r: r.uniform(low, high)
        elif callable(latency):
            self._latency = check_sync_callable("latency", latency, optional=False)
        else:
            constant = check_number("latency", latency, ge=0)
            self._latency = lambda r: constant
        self.latency = latency
        if not isinstance(outages, list | tuple):
            raise TypeError(f"outages must be a list of (start, end) pairs, got {outages!r}")
        checked = []
        for window in outages:
            if not (isinstance(window, tuple) and len(window) == 2):
                raise TypeError(f"outages must hold (start, end) pairs, got {window!r}")
            start = check_number("outage start", window[0], allow_inf=True)
            end = check_number("outage end", window[1], allow_inf=True)
            if end <= start:
                raise ValueError(f"an outage must end after it starts, got {window!r}")
            checked.append((start, end))
        self.outages = tuple(checked)
        choices = list(errors) if isinstance(errors, list | tuple) else [errors]
        if not choices:
            raise ValueError("errors must not be empty")
        self._choices = [_check_error(choice) for choice in choices]
        self.errors = errors
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random or None, got {rng!r}")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.rng = rng if rng is not None else random.Random(seed)
        self._calls = 0
        self._failures = 0
        self._outage_failures = 0

    def in_outage(self, now: float | None = None) -> bool:
        """Whether Trio time ``now`` (default: the current time) is in an outage window."""
        when = trio.current_time() if now is None else now
        return any(start <= when < end for start, end in self.outages)

    def _error(self) -> BaseException:
        """A fresh exception: a new instance of a type, or a copy of a given instance
        (fresh traceback, the instance's own notes only: nothing piles up)."""
        choice = self._choices[0] if len(self._choices) == 1 else self.rng.choice(self._choices)
        if isinstance(choice, type):
            return choice()
        return _fresh_copy(choice)

    async def __call__(self, *args: Any, **kwargs: Any) -> None:
        """One request to the flaky service: wait the latency, then maybe fail.

        **Cancellation**: the latency is a ``trio.sleep``; cancel it as any sleep.
        """
        self._calls += 1
        delay = self._latency(self.rng)
        if delay > 0:
            await trio.sleep(delay)
        else:
            await trio.lowlevel.checkpoint()
        if self.in_outage():
            self._failures += 1
            self._outage_failures += 1
            raise self._error()
        if self.failure_rate and self.rng.random() < self.failure_rate:
            self._failures += 1
            raise self._error()

    def wrap(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Return ``fn`` with this injector's latency and faults in front of every call."""
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"wrap() takes an async function, got {fn!r}")

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            await self()
            return await fn(*args, **kwargs)

        return wrapper

    def statistics(self) -> FaultInjectorStatistics:
        """Return what the injector did so far."""
        return FaultInjectorStatistics(self._calls, self._failures, self._outage_failures)

    def __repr__(self) -> str:
        return (
            f"<FaultInjector failure_rate={self.failure_rate:g} outages={list(self.outages)} "
            f"{self._failures}/{self._calls} failed>"
        )


def _fresh_copy(error: BaseException) -> BaseException:
    fresh = copy.copy(error)
    fresh.__traceback__ = None
    fresh.__cause__ = fresh.__context__ = None
    notes = getattr(error, "__notes__", None)
    if notes is not None:
        fresh.__notes__ = list(notes)
    return fresh


def _check_error(choice: object) -> BaseException | type[BaseException]:
    """An exception type that can be raised as ``T()``, or an instance that copies."""
    if isinstance(choice, type) and issubclass(choice, BaseException):
        try:
            choice()
        except Exception as exc:
            raise TypeError(
                f"errors must be exception types callable without arguments, or "
                f"instances; {choice.__name__}() raised {safe_repr(exc)}: pass an "
                f"instance such as {choice.__name__}('...') instead"
            ) from None
        return choice
    if isinstance(choice, BaseException):
        try:
            _fresh_copy(choice)
        except Exception as exc:
            raise TypeError(
                f"errors must be instances that copy.copy() can copy; "
                f"{safe_repr(choice)} raised {safe_repr(exc)}"
            ) from None
        # Keep a pristine template: notes added to raised copies never come back.
        return _fresh_copy(choice)
    raise TypeError(f"errors must be exception types or instances, got {choice!r}")


def set_breaker_state(breaker: CircuitBreaker, state: CircuitState | str) -> None:
    """Put ``breaker`` into ``state`` at once, as a transition with reason ``"testing"``.

    OPEN starts a full ``recovery_timeout`` from now; HALF_OPEN admits probes at once;
    CLOSED, FORCED_OPEN and DISABLED are ``reset()``, ``force_open()`` and
    ``disable()``. Must be called inside ``trio.run``.
    """
    if not isinstance(breaker, CircuitBreaker):
        raise TypeError(f"breaker must be a CircuitBreaker, got {breaker!r}")
    try:
        target = CircuitState(state)
    except ValueError:
        raise ValueError(
            f"state must be one of {[s.value for s in CircuitState]}, got {state!r}"
        ) from None
    if target is CircuitState.CLOSED:
        breaker.reset()
    elif target is CircuitState.FORCED_OPEN:
        breaker.force_open()
    elif target is CircuitState.DISABLED:
        breaker.disable()
    else:
        breaker._transition(target, "testing", trio.current_time())


@contextlib.contextmanager
def zero_backoff() -> Iterator[None]:
    """Within the block, Retry delays are zero and throttled LoopBudget ticks pass at once.

    Attempt limits, budgets and hard limits still apply; only the waiting goes. The
    switch is a context variable: it covers the current task and the tasks it starts.
    """
    token = ZERO_BACKOFF.set(True)
    try:
        yield
    finally:
        ZERO_BACKOFF.reset(token)
