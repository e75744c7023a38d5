"""Exceptions carry structured attributes and readable messages."""

from __future__ import annotations

import math

import outcome

from trio_resilience import (
    CircuitOpenError,
    CircuitState,
    LoadShedError,
    LoopBudgetExhausted,
    RetryError,
)


def test_circuit_open_error_attributes() -> None:
    """name, state and retry_after are attributes; the message says them."""
    exc = CircuitOpenError("db", CircuitState.OPEN, 2.5)
    assert (exc.name, exc.state, exc.retry_after) == ("db", CircuitState.OPEN, 2.5)
    assert str(exc) == "circuit breaker 'db' is open; retry after 2.500s"
    assert "inf" in str(CircuitOpenError("db", CircuitState.FORCED_OPEN, math.inf))


def test_other_errors_attributes() -> None:
    """LoadShedError, LoopBudgetExhausted and RetryError keep their data."""
    shed = LoadShedError({"id": 1}, "buffer_full")
    assert shed.item == {"id": 1}
    assert shed.reason == "buffer_full"
    assert str(shed) == "item shed (buffer_full)"
    exhausted = LoopBudgetExhausted("poll", "max_iterations", 10)
    assert (exhausted.name, exhausted.limit, exhausted.iterations) == ("poll", "max_iterations", 10)
    assert str(exhausted) == "loop budget 'poll' exhausted: max_iterations after 10 iterations"
    last = outcome.Value(None)
    retry = RetryError(last, 3)
    assert retry.last_outcome is last
    assert retry.attempts == 3
    assert str(retry) == "gave up after 3 attempts on a rejected result"
