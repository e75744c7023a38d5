"""AdaptiveThrottle: Google SRE client-side throttling over a sliding window of time buckets.

Each client remembers, over the last ``window`` seconds, how many ``requests`` it
attempted and how many the backend ``accepts``. A new request is rejected locally,
without being sent, with probability::

    p = min(max_reject, max(0, (requests - k * accepts) / (requests + 1)))

A locally rejected request still counts as a request, so the traffic that reaches a
backend that accepts nothing decays to a trickle, and once the backend accepts again
the accepts catch up and ``p`` falls to 0 within one window. With ``k = 2`` the
traffic reaching an overloaded backend settles at about twice what it accepts
("Handling Overload", *Site Reliability Engineering*, ch. 21).

The counts live in the shared :class:`trio_resilience._ring.TimeRing` (ten buckets of
``window / 10`` seconds), so memory is fixed and each call is O(1).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import trio

from . import _live
from ._classify import FAILURE, SUCCESS, Matcher, classify_or_failure
from ._decorate import decorate
from ._exceptions import ThrottledError
from ._log import get_logger
from ._ring import TimeRing
from ._runs import run_token
from ._validate import check_logger, check_number, check_str

P = ParamSpec("P")
T = TypeVar("T")

THROTTLE_STARTED = "trio_resilience.throttle.started"
THROTTLE_STOPPED = "trio_resilience.throttle.stopped"

_BUCKETS = 10
_REQUESTS = 0
_ACCEPTS = 1


@dataclass(frozen=True, slots=True)
class AdaptiveThrottleStatistics:
    """A snapshot of an :class:`AdaptiveThrottle`."""

    requests: float
    """Requests in the window (locally rejected ones included)."""
    accepts: float
    """Requests the backend accepted in the window."""
    reject_probability: float
    """The probability that a call made now is rejected locally."""
    throttling: bool
    """Whether the throttle is rejecting (``reject_probability > 0``)."""
    total_calls: int
    """Calls over the throttle's life (rejected ones included)."""
    total_rejected: int
    """Calls rejected locally with ``ThrottledError``."""
    total_accepts: int
    """Calls the backend accepted."""
    total_failures: int
    """Calls that failed with an exception matching ``failure_on``."""


class AdaptiveThrottle:
    """Reject calls locally, before they reach a backend that is refusing work.

    Args:
        k: the multiplier of accepts (>= 1; 2.0 lets through about twice what the
            backend accepts; lower is more aggressive).
        window: seconds of history (> 0).
        max_reject: the highest rejection probability (0..1), so a few requests
            always probe the backend.
        failure_on: exception spec of the errors that mean "not accepted" (the
            backend refused or failed). Any other outcome is an accept;
            cancellation counts as nothing.
        rng: a ``random.Random`` for the rejection draws (default: the ``random``
            module's global instance).
        name: a label for logs, statistics and metrics.
        logger: a structlog-like logger.

    Use ``await throttle.call(fn, *args)`` or ``@throttle``.
    """

    __slots__ = (
        "__weakref__",
        "_logger",
        "_matcher",
        "_random",
        "_ring",
        "_throttling",
        "_token",
        "_total_accepts",
        "_total_calls",
        "_total_failures",
        "_total_rejected",
        "failure_on",
        "k",
        "max_reject",
        "name",
        "rng",
        "window",
    )

    def __init__(
        self,
        k: float = 2.0,
        *,
        window: float = 120.0,
        max_reject: float = 0.9,
        failure_on: Any = Exception,
        rng: random.Random | None = None,
        name: str = "default",
        logger: Any = None,
    ) -> None:
        self.k = check_number("k", k, ge=1)
        self.window = check_number("window", window, ge=1e-6)
        self.max_reject = check_number("max_reject", max_reject, ge=0, le=1)
        self.failure_on = failure_on
        self._matcher = Matcher("failure_on", failure_on)
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random or None, got {rng!r}")
        self.rng = rng
        self._random = rng.random if rng is not None else random.random
        self.name = check_str("name", name)
        self._logger = get_logger(check_logger(logger))
        self._ring = TimeRing(self.window, _BUCKETS, fields=2)
        self._token: object = None
        self._throttling = False
        self._total_calls = 0
        self._total_rejected = 0
        self._total_accepts = 0
        self._total_failures = 0
        _live.register("throttle", self)

    def _probability(self, requests: float, accepts: float) -> float:
        p = (requests - self.k * accepts) / (requests + 1)
        if p <= 0:
            return 0.0
        return p if p < self.max_reject else self.max_reject

    def _offset(self) -> int:
        now = trio.current_time()
        token = run_token()
        if token is not self._token:
            self._token = token
            self._ring.clear()
        return self._ring.advance(now)

    def reject_probability(self) -> float:
        """The probability that a call made now would be rejected locally."""
        self._offset()
        totals = self._ring.totals
        return self._probability(totals[_REQUESTS], totals[_ACCEPTS])

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)``, or reject it locally.

        Raises:
            ThrottledError: the call was rejected locally (``fn`` was not called);
                ``probability`` is the rejection probability in force.

        **Cancellation**: a rejection is a checkpoint only if the caller is already
        cancelled (as ``CapacityLimiter`` does); a cancelled ``fn`` counts as nothing.
        """
        ring = self._ring
        offset = self._offset()
        totals = ring.totals
        p = self._probability(totals[_REQUESTS], totals[_ACCEPTS])
        self._total_calls += 1
        if p > 0:
            if not self._throttling:
                self._set_throttling(True, p)
            if self._random() < p:
                await trio.lowlevel.checkpoint_if_cancelled()
                ring.add(offset, _REQUESTS, 1)
                self._total_rejected += 1
                raise ThrottledError(self.name, p)
        elif self._throttling:
            self._set_throttling(False, p)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            verdict = classify_or_failure(exc, self._matcher, self._logger, throttle=self.name)
            # Cancellation and BaseExceptions that are not Exceptions count as nothing.
            if verdict in (FAILURE, SUCCESS):
                offset = ring.advance(trio.current_time())
                ring.add(offset, _REQUESTS, 1)
                if verdict == FAILURE:
                    self._total_failures += 1
                else:
                    ring.add(offset, _ACCEPTS, 1)
                    self._total_accepts += 1
            raise
        offset = ring.advance(trio.current_time())
        ring.add(offset, _REQUESTS, 1)
        ring.add(offset, _ACCEPTS, 1)
        self._total_accepts += 1
        return result

    def _set_throttling(self, on: bool, p: float) -> None:
        self._throttling = on
        totals = self._ring.totals
        log = self._logger.warning if on else self._logger.info
        log(
            THROTTLE_STARTED if on else THROTTLE_STOPPED,
            throttle=self.name,
            requests=totals[_REQUESTS],
            accepts=totals[_ACCEPTS],
            reject_probability=round(p, 6),
        )

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        return decorate("AdaptiveThrottle", self.call, fn)

    def statistics(self) -> AdaptiveThrottleStatistics:
        """Return a frozen snapshot of the throttle."""
        try:
            p = self.reject_probability()
        except RuntimeError:  # outside trio.run
            p = 0.0
        totals = self._ring.totals
        return AdaptiveThrottleStatistics(
            requests=totals[_REQUESTS],
            accepts=totals[_ACCEPTS],
            reject_probability=p,
            throttling=p > 0,
            total_calls=self._total_calls,
            total_rejected=self._total_rejected,
            total_accepts=self._total_accepts,
            total_failures=self._total_failures,
        )

    def __repr__(self) -> str:
        totals = self._ring.totals
        return (
            f"<AdaptiveThrottle {self.name!r} k={self.k:g} "
            f"{totals[_ACCEPTS]:g}/{totals[_REQUESTS]:g} accepted>"
        )
