"""The switch behind ``trio_resilience.testing.zero_backoff()``, read by Retry and LoopBudget."""

from __future__ import annotations

import contextvars

#: True inside ``zero_backoff()``: retries and throttled ticks do not sleep.
ZERO_BACKOFF: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "trio_resilience_zero_backoff", default=False
)
