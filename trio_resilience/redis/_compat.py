"""A stand-in for ``CircuitBreaker.sharing`` until the breaker's sharing port lands.

It offers the subset of the documented ``BreakerSharing`` view that the Redis layer
uses, on the wave-1 hooks. Deleted once ``breaker.sharing`` exists everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .._backoff import Backoff
from .._breaker import CircuitBreaker, CircuitState, StateChange


def port_of(breaker: CircuitBreaker) -> Any:
    """``breaker.sharing`` when the breaker has it, else the stand-in."""
    sharing = getattr(breaker, "sharing", None)
    return sharing if sharing is not None else _Port(breaker)


class _Port:
    def __init__(self, breaker: CircuitBreaker) -> None:
        self._b = breaker
        self._listeners: list[Callable[[StateChange], None]] = []
        self._observer = self._observe

    failure_window = property(lambda self: self._b.failure_window)
    failure_threshold = property(lambda self: self._b.failure_threshold)
    failure_rate_threshold = property(lambda self: self._b.failure_rate_threshold)
    minimum_calls = property(lambda self: self._b.minimum_calls)
    half_open_max_calls = property(lambda self: self._b.half_open_max_calls)

    @property
    def longest_open_period(self) -> float:
        timeout = self._b.recovery_timeout
        if not isinstance(timeout, Backoff):
            return float(timeout)
        delay = getattr(timeout, "delay", None)
        if delay is not None:
            return float(delay) * (1 + float(getattr(timeout, "jitter_factor", 0.0)))
        return float(getattr(timeout, "max_delay", math.inf))

    @property
    def state(self) -> CircuitState:
        return self._b._state

    @property
    def open_deadline(self) -> float | None:
        return self._b._open_until if self._b._state is CircuitState.OPEN else None

    @property
    def owner(self) -> Any:
        return self._b._cluster

    def counted(self) -> tuple[int, int]:
        b = self._b
        return b._total_failures, b._total_failures + b._total_successes

    def would_trip(self, failures: int, calls: int) -> bool:
        b = self._b
        threshold, rate = b.failure_threshold, b.failure_rate_threshold
        return (threshold is not None and failures >= threshold) or (
            rate is not None and calls >= b.minimum_calls and failures >= rate * calls
        )

    def open_until(self, deadline: float, reason: str = "remote_trip") -> bool:
        import trio

        now = trio.current_time()
        if not math.isfinite(deadline) or deadline <= now:
            return False
        deadline = min(deadline, now + self.longest_open_period)
        state = self._b._state
        if state is CircuitState.CLOSED or state is CircuitState.HALF_OPEN:
            self._b._transition(CircuitState.OPEN, reason, now)
            self._b._open_until = deadline
            return True
        if state is CircuitState.OPEN and deadline > self._b._open_until:
            self._b._open_until = deadline
            return True
        return False

    def trip(self, reason: str = "shared_failures") -> bool:
        import trio

        if self._b._state is not CircuitState.CLOSED:
            return False
        self._b._transition(CircuitState.OPEN, reason, trio.current_time())
        return True

    def close_remote(self, reason: str = "remote_close") -> bool:
        import trio

        if self._b._state in (CircuitState.OPEN, CircuitState.HALF_OPEN):
            self._b._transition(CircuitState.CLOSED, reason, trio.current_time())
            return True
        return False

    def attach(self, owner: Any) -> None:
        if self._b._cluster is not None:
            raise RuntimeError(f"breaker {self._b.name!r} is already shared; share it once")
        self._b._cluster = _NoSource
        self._b._observers.append(self._observer)

    def detach(self, owner: Any) -> None:
        if self._observer in self._b._observers:
            self._b._observers.remove(self._observer)
        self._b._cluster = None

    def add_listener(self, fn: Callable[[StateChange], None]) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[StateChange], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def set_permit_source(self, source: Any) -> None:
        self._b._cluster = source if source is not None else _NoSource

    def _observe(self, breaker: Any, old: Any, new: Any, reason: str) -> None:
        import trio

        change = StateChange(breaker.name, old, new, reason, trio.current_time())
        for fn in list(self._listeners):
            fn(change)


class _NoSourceType:
    async def acquire(self, breaker: Any) -> None:
        return None

    def release(self, breaker: Any, lease: str) -> None:
        pass


_NoSource = _NoSourceType()
