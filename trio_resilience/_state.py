"""The circuit breaker's vocabulary: its states, transitions, statistics and event names.

Kept apart from ``_breaker.py`` so that every module that speaks of a breaker's state
(``_exceptions``, ``redis``, ``testing``, the metrics exporters) imports this small,
dependency-free module instead of the engine: no import circle.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CircuitState(enum.StrEnum):
    """The state of a :class:`CircuitBreaker` (members compare equal to their names)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


#: Reasons of the transitions a breaker makes on its own (``StateChange.reason``).
REASONS = frozenset(
    {
        "failure_threshold",
        "failure_rate",
        "recovery_timeout",
        "success_threshold",
        "half_open_failure",
        "half_open_timeout",
        "force_open",
        "disable",
        "reset",
    }
)

#: Default reasons of the transitions a sharing layer applies through the port.
REMOTE_TRIP = "remote_trip"
REMOTE_CLOSE = "remote_close"
SHARED_FAILURES = "shared_failures"

#: Log events of the breaker (see docs/logging.md and docs/breaker.md).
BREAKER_CLASSIFY_FAILED = "trio_resilience.classify_failed"
BREAKER_SHARING_FAILED = "trio_resilience.breaker.sharing_failed"


@dataclass(frozen=True, slots=True)
class StateChange:
    """One transition of a breaker, passed to ``on_state_change`` and port listeners."""

    name: str
    """The breaker's name."""
    old_state: CircuitState
    """The state it left."""
    new_state: CircuitState
    """The state it entered."""
    reason: str
    """Why: ``failure_threshold``, ``failure_rate``, ``recovery_timeout``,
    ``success_threshold``, ``half_open_failure``, ``half_open_timeout``, ``force_open``,
    ``disable``, ``reset``, or a reason given by a sharing layer (``remote_trip``,
    ``remote_close``, ``shared_failures`` by default)."""
    at: float
    """Trio time of the transition."""


@dataclass(frozen=True, slots=True)
class CircuitBreakerStatistics:
    """A snapshot of a breaker, from :meth:`CircuitBreaker.statistics`."""

    state: CircuitState
    """The effective state (an open breaker past its recovery timeout reads half-open)."""
    failures_in_window: int
    """Failures that still count towards tripping."""
    calls_in_window: int
    """Successes and failures in the window (approximate to one bucket)."""
    half_open_in_flight: int
    """Probes running now in the current half-open period."""
    consecutive_successes: int
    """Consecutive successful probes in the current half-open period."""
    total_calls: int
    """Calls admitted over the breaker's life (rejections are not calls)."""
    total_successes: int
    """Admitted calls that succeeded."""
    total_failures: int
    """Admitted calls that failed (slow calls and rejected results included)."""
    total_rejected: int
    """Calls refused with :class:`CircuitOpenError`."""
    total_ignored: int
    """Admitted calls that counted as nothing: ``ignore_on`` matched, or a
    ``BaseException`` that is not an ``Exception`` and not matched by ``failure_on``;
    ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` always count here (never
    as failures, whatever ``failure_on`` says)."""
    total_cancelled: int
    """Admitted calls that ended in ``trio.Cancelled`` (or a group holding one), counted
    as nothing else."""
    times_opened: int
    """How often the breaker opened because of failures (forced opens excluded)."""
    retry_after: float
    """Seconds until a probe can be admitted (0.0 unless open; inf when forced open)."""
    generation: int
    """Increases with every transition; results of older generations are stale."""
