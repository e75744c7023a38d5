"""Logger lookup and the stable structlog event names this library emits."""

from __future__ import annotations

from typing import Any

import structlog

LOGGER_NAME = "trio_resilience"

BREAKER_STATE_CHANGED = "trio_resilience.breaker.state_changed"
BREAKER_LISTENER_FAILED = "trio_resilience.breaker.listener_failed"
RETRY_SCHEDULED = "trio_resilience.retry.scheduled"
RETRY_GAVE_UP = "trio_resilience.retry.gave_up"
BUDGET_THROTTLED = "trio_resilience.budget.throttled"
BUDGET_EXHAUSTED = "trio_resilience.budget.exhausted"
SHED_DROPPED = "trio_resilience.shed.dropped"
SHED_CALLBACK_FAILED = "trio_resilience.shed.on_shed_failed"


def get_logger(logger: Any = None) -> Any:
    """Return ``logger`` or, when None, structlog's lazy ``trio_resilience`` logger.

    structlog's lazy proxy binds on first use, so this never configures structlog and
    is safe at import time and outside ``trio.run``.
    """
    if logger is not None:
        return logger
    return structlog.get_logger(LOGGER_NAME)
