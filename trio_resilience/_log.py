"""Logger lookup and the stable structlog event names this library emits."""

from __future__ import annotations

import contextlib
from typing import Any

import structlog

LOGGER_NAME = "trio_resilience"

BREAKER_STATE_CHANGED = "trio_resilience.breaker.state_changed"
BREAKER_LISTENER_FAILED = "trio_resilience.breaker.listener_failed"
RETRY_SCHEDULED = "trio_resilience.retry.scheduled"
RETRY_GAVE_UP = "trio_resilience.retry.gave_up"
RETRY_HINT_FAILED = "trio_resilience.retry.hint_failed"
CLASSIFY_FAILED = "trio_resilience.classify_failed"
BUDGET_THROTTLED = "trio_resilience.budget.throttled"
BUDGET_EXHAUSTED = "trio_resilience.budget.exhausted"
SHED_DROPPED = "trio_resilience.shed.dropped"
SHED_CALLBACK_FAILED = "trio_resilience.shed.on_shed_failed"


def safe_repr(value: object, limit: int = 1000) -> str:
    """``repr(value)`` cut to ``limit`` characters, never raising (for log values).

    An object whose ``__repr__`` raises shows as ``<unrepresentable T>``: logging about
    a user's error or result must never replace it with an error of its own.
    """
    try:
        text = repr(value)
        if not isinstance(text, str):
            raise TypeError
    except Exception:
        try:
            name = type(value).__name__
        except Exception:  # pragma: no cover - a type without a name
            name = "object"
        return f"<unrepresentable {name}>"
    if len(text) > limit:
        return text[: limit - 3] + "..."
    return text


def log_safely(logger: Any, level: str, event: str, **values: Any) -> None:
    """Log ``event`` at ``level``; a logger that raises changes nothing for the caller."""
    with contextlib.suppress(Exception):
        getattr(logger, level)(event, **values)


def get_logger(logger: Any = None) -> Any:
    """Return ``logger`` or, when None, structlog's lazy ``trio_resilience`` logger.

    structlog's lazy proxy binds on first use, so this never configures structlog and
    is safe at import time and outside ``trio.run``.
    """
    if logger is not None:
        return logger
    return structlog.get_logger(LOGGER_NAME)
