"""Resilience policies for Trio: circuit breakers, retries, loop budgets and load shedding.

Every public object is importable from here; ``trio_resilience.testing`` is opt-in.
"""

from __future__ import annotations

import contextlib

from ._backoff import (
    Backoff,
    ConstantBackoff,
    DecorrelatedJitterBackoff,
    ExponentialBackoff,
    FibonacciBackoff,
    FullJitterBackoff,
    LinearBackoff,
)
from ._breaker import (
    BreakerRegistry,
    CircuitBreaker,
    CircuitBreakerStatistics,
    CircuitState,
    StateChange,
)
from ._budget import LoopBudget, LoopBudgetStatistics, budgeted
from ._classify import ExceptionSpec
from ._concurrency import AdaptiveConcurrency, AdaptiveConcurrencyStatistics
from ._exceptions import (
    BulkheadFullError,
    CircuitOpenError,
    LoadShedError,
    LoopBudgetExhausted,
    RateLimitExceeded,
    ResilienceError,
    RetryError,
    ThrottledError,
)
from ._hedge import Hedge, HedgeStatistics
from ._pipeline import (
    Bulkhead,
    BulkheadStatistics,
    FailAfter,
    Fallback,
    GuardedNursery,
    Pipeline,
    Policy,
    open_guarded_nursery,
)
from ._ratelimit import RateLimiter
from ._ratelimit_parts import RateLimiterStatistics
from ._retry import Attempt, Retry, RetryStatistics
from ._retry_budget import RetryBudget, RetryBudgetDelta, RetryBudgetStatistics
from ._shedding import (
    CoDelShedding,
    DropNewest,
    DropOldest,
    ProbabilisticShedding,
    ShedChannelStatistics,
    SheddingPolicy,
    ShedMemoryReceiveChannel,
    ShedMemorySendChannel,
    ShedSendChannel,
    open_shedding_channel,
)
from ._throttle import AdaptiveThrottle, AdaptiveThrottleStatistics

__version__ = "0.1.0"

__all__ = [
    "AdaptiveConcurrency",
    "AdaptiveConcurrencyStatistics",
    "AdaptiveThrottle",
    "AdaptiveThrottleStatistics",
    "Attempt",
    "Backoff",
    "BreakerRegistry",
    "Bulkhead",
    "BulkheadFullError",
    "BulkheadStatistics",
    "CircuitBreaker",
    "CircuitBreakerStatistics",
    "CircuitOpenError",
    "CircuitState",
    "CoDelShedding",
    "ConstantBackoff",
    "DecorrelatedJitterBackoff",
    "DropNewest",
    "DropOldest",
    "ExceptionSpec",
    "ExponentialBackoff",
    "FailAfter",
    "Fallback",
    "FibonacciBackoff",
    "FullJitterBackoff",
    "GuardedNursery",
    "Hedge",
    "HedgeStatistics",
    "LinearBackoff",
    "LoadShedError",
    "LoopBudget",
    "LoopBudgetExhausted",
    "LoopBudgetStatistics",
    "Pipeline",
    "Policy",
    "ProbabilisticShedding",
    "RateLimitExceeded",
    "RateLimiter",
    "RateLimiterStatistics",
    "ResilienceError",
    "Retry",
    "RetryBudget",
    "RetryBudgetDelta",
    "RetryBudgetStatistics",
    "RetryError",
    "RetryStatistics",
    "ShedChannelStatistics",
    "ShedMemoryReceiveChannel",
    "ShedMemorySendChannel",
    "ShedSendChannel",
    "SheddingPolicy",
    "StateChange",
    "ThrottledError",
    "budgeted",
    "open_guarded_nursery",
    "open_shedding_channel",
]


def _fix_module_names() -> None:
    # Show public objects as trio_resilience.X in reprs and docs, as trio does.
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("trio_resilience."):
            with contextlib.suppress(AttributeError, TypeError):
                obj.__module__ = __name__


_fix_module_names()
del _fix_module_names
