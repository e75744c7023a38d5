"""The exceptions this library raises when a policy refuses work.

::

    Exception
     └── ResilienceError
          ├── BulkheadFullError     a bulkhead or concurrency limit had no free slot
          ├── CircuitOpenError      a breaker refused a call
          ├── LoadShedError         a channel shed a send
          ├── LoopBudgetExhausted   a loop budget hit a hard limit
          ├── RateLimitExceeded     a rate limiter could not admit in time
          ├── RetryError            retries ended on a rejected result
          └── ThrottledError        adaptive throttling rejected a call locally

An exception raised by the user's own code is never wrapped: it comes out unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._state import CircuitState

if TYPE_CHECKING:
    import outcome


class ResilienceError(Exception):
    """Base class of every rejection raised by trio-resilience."""


class CircuitOpenError(ResilienceError):
    """A circuit breaker refused a call without running it.

    Attributes:
        name: the breaker's name.
        state: the breaker's state when it refused (a :class:`CircuitState`).
        retry_after: seconds until the breaker can admit a probe; ``0.0`` when it is
            half-open and every probe permit is busy, ``math.inf`` when forced open.
        last_failure: the exception that opened the breaker: the tripping failure's,
            or for a trip on a success, a slow call or a rejected result the last
            failure's exception in the window; a failed probe's (a slow probe, a
            rejected result or a half-open timeout keeps the one before). ``None``
            when forced open, or opened without any exception: by a sharing layer
            (a remote trip), or by slow calls or rejected results alone.
    """

    def __init__(
        self,
        name: str,
        state: CircuitState,
        retry_after: float,
        last_failure: BaseException | None = None,
    ) -> None:
        super().__init__(name, state, retry_after)
        self.name = name
        self.state = state
        self.retry_after = retry_after
        self.last_failure = last_failure

    def __str__(self) -> str:
        return (
            f"circuit breaker {self.name!r} is {self.state.value}; "
            f"retry after {self.retry_after:.3f}s"
        )


class LoadShedError(ResilienceError):
    """A send on a shedding channel was refused; the item was not enqueued.

    Attributes:
        item: the item that was shed.
        reason: why (``"probabilistic"``, ``"buffer_full"``, ...).
    """

    def __init__(self, item: Any, reason: str) -> None:
        super().__init__(item, reason)
        self.item = item
        self.reason = reason

    def __str__(self) -> str:
        return f"item shed ({self.reason})"


class LoopBudgetExhausted(ResilienceError):
    """A loop budget created with ``raise_on_exhaustion=True`` hit a hard limit.

    Attributes:
        name: the budget's name.
        limit: which limit was hit, ``"max_iterations"`` or ``"max_duration"``.
        iterations: iterations counted when it was hit.
    """

    def __init__(self, name: str, limit: str, iterations: int) -> None:
        super().__init__(name, limit, iterations)
        self.name = name
        self.limit = limit
        self.iterations = iterations

    def __str__(self) -> str:
        return (
            f"loop budget {self.name!r} exhausted: {self.limit} after {self.iterations} iterations"
        )


class RetryError(ResilienceError):
    """Retries ended on a result that ``retry_if_result`` rejected.

    Attributes:
        last_outcome: the last attempt's :class:`outcome.Outcome` (a ``Value``).
        attempts: how many attempts were made.
    """

    def __init__(self, last_outcome: outcome.Outcome[Any], attempts: int) -> None:
        super().__init__(last_outcome, attempts)
        self.last_outcome = last_outcome
        self.attempts = attempts

    def __str__(self) -> str:
        return f"gave up after {self.attempts} attempts on a rejected result"


class BulkheadFullError(ResilienceError):
    """A bulkhead or an adaptive concurrency limit had no free slot in time.

    Attributes:
        name: the policy's name.
        max_concurrent: the limit in force when the call was refused.
    """

    def __init__(self, name: str, max_concurrent: int) -> None:
        super().__init__(name, max_concurrent)
        self.name = name
        self.max_concurrent = max_concurrent

    def __str__(self) -> str:
        return f"bulkhead {self.name!r} is full ({self.max_concurrent} concurrent calls)"


class RateLimitExceeded(ResilienceError):
    """A rate limiter could not admit the call within its wait limit or the deadline.

    Attributes:
        name: the limiter's name.
        retry_after: seconds from now until the cost could be admitted.
    """

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(name, retry_after)
        self.name = name
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"rate limiter {self.name!r} exceeded; retry after {self.retry_after:.3f}s"


class ThrottledError(ResilienceError):
    """Adaptive throttling rejected a call locally, without sending it.

    Attributes:
        name: the throttle's name.
        probability: the rejection probability in force when the call was refused.
    """

    def __init__(self, name: str, probability: float) -> None:
        super().__init__(name, probability)
        self.name = name
        self.probability = probability

    def __str__(self) -> str:
        return f"throttle {self.name!r} rejected the call (p={self.probability:.3f})"
