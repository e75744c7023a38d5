"""AdaptiveConcurrency: a concurrency limit that follows measured latency.

Calls pass through a ``trio.CapacityLimiter`` whose ``total_tokens`` is the limit.
Each finished call adds its latency to a measurement window; a window closes after
at least ten calls and ``4 x`` the baseline latency (between 50 ms and 1 s), and one
of the algorithms in :mod:`trio_resilience._concurrency_algorithms` turns it into the
next limit. The per-call cost is two clock reads and a few additions.

The baseline (no-load) latency is the lowest recent window mean. A standing queue
would hide the true baseline forever (this is how Netflix's Gradient2 drifts
upward under a modest overload), so every ``15 s`` the limiter probes: it halves
the limit for two windows, lets the queue drain in the first and takes the second
window's mean as the new baseline; the window after it, while the queue refills, is
not used. A probe costs about 2% of the throughput and lets
the baseline follow a service that really became slower.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import trio

from . import _live
from ._classify import FAILURE, SUCCESS, Matcher, classify_or_failure
from ._concurrency_algorithms import ALGORITHMS
from ._decorate import decorate
from ._exceptions import BulkheadFullError
from ._log import get_logger
from ._runs import run_token
from ._validate import check_int, check_logger, check_optional_number, check_str

P = ParamSpec("P")
T = TypeVar("T")

CONCURRENCY_LIMIT_CHANGED = "trio_resilience.concurrency.limit_changed"

_MIN_SAMPLES = 10
_MIN_WINDOW = 0.05
_MAX_WINDOW = 1.0
_PROBE_INTERVAL = 15.0
_LOG_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class AdaptiveConcurrencyStatistics:
    """A snapshot of an :class:`AdaptiveConcurrency`."""

    algorithm: str
    """``"aimd"``, ``"gradient2"`` or ``"vegas"``."""
    limit: int
    """The concurrency limit in force (the limiter's ``total_tokens``)."""
    estimated_limit: float
    """The algorithm's estimate, before rounding down and probing."""
    in_flight: int
    """Calls running now."""
    waiting: int
    """Calls waiting for a slot."""
    baseline_latency: float | None
    """The no-load latency estimate (seconds), None before the first window."""
    recent_latency: float | None
    """Mean latency of the last closed window (seconds)."""
    total_calls: int
    """Calls admitted over the policy's life."""
    total_rejected: int
    """Calls refused with ``BulkheadFullError``."""
    total_failures: int
    """Admitted calls that failed (signals to the algorithm)."""
    updates: int
    """Windows closed (limit updates)."""
    probes: int
    """Baseline probes made."""


class _Borrower:
    """A borrower identity per call, so one task may hold several slots."""

    __slots__ = ()


class AdaptiveConcurrency:
    """Limit concurrent calls to a limit that adapts to measured latency.

    Args:
        algorithm: ``"gradient2"`` (default), ``"aimd"`` or ``"vegas"``.
        initial_limit: the limit before any measurement.
        min_limit: the lowest limit (>= 1).
        max_limit: the highest limit.
        max_wait: the longest a call waits for a slot; None waits as long as the
            caller's cancel scope allows; 0 never waits. Past it,
            ``BulkheadFullError``.
        failure_on: exception spec of the errors that signal overload (each makes
            AIMD and Vegas back off).
        name: a label for logs, statistics and metrics.
        logger: a structlog-like logger.

    Use ``await limit.call(fn, *args)`` or ``@limit``.
    """

    __slots__ = (
        "__weakref__",
        "_algorithm",
        "_baseline",
        "_estimate",
        "_last_log",
        "_logged_limit",
        "_logger",
        "_matcher",
        "_next_probe",
        "_probe_stage",
        "_probes",
        "_recent",
        "_token",
        "_total_calls",
        "_total_failures",
        "_total_rejected",
        "_updates",
        "_w_count",
        "_w_dropped",
        "_w_end",
        "_w_inflight",
        "_w_start",
        "_w_sum",
        "algorithm",
        "failure_on",
        "initial_limit",
        "limiter",
        "max_limit",
        "max_wait",
        "min_limit",
        "name",
    )

    def __init__(
        self,
        *,
        algorithm: str = "gradient2",
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 200,
        max_wait: float | None = None,
        failure_on: Any = Exception,
        name: str = "default",
        logger: Any = None,
    ) -> None:
        if not isinstance(algorithm, str):
            raise TypeError(f"algorithm must be a str, got {algorithm!r}")
        if algorithm not in ALGORITHMS:
            raise ValueError(
                f"algorithm must be one of 'aimd', 'gradient2', 'vegas', got {algorithm!r}"
            )
        self.algorithm = algorithm
        self._algorithm = ALGORITHMS[algorithm]
        self.min_limit = check_int("min_limit", min_limit, minimum=1, maximum=2**31 - 1)
        self.max_limit = check_int(
            "max_limit", max_limit, minimum=self.min_limit, maximum=2**31 - 1
        )
        self.initial_limit = check_int(
            "initial_limit", initial_limit, minimum=self.min_limit, maximum=self.max_limit
        )
        self.max_wait = check_optional_number("max_wait", max_wait, ge=0, allow_inf=True)
        self.failure_on = failure_on
        self._matcher = Matcher("failure_on", failure_on)
        self.name = check_str("name", name)
        self._logger = get_logger(check_logger(logger))
        self.limiter = trio.CapacityLimiter(self.initial_limit)
        self._estimate = float(self.initial_limit)
        self._logged_limit = self.initial_limit
        self._last_log = -math.inf
        self._baseline: float | None = None
        self._recent: float | None = None
        self._token: object = None
        self._total_calls = 0
        self._total_failures = 0
        self._total_rejected = 0
        self._updates = 0
        self._probes = 0
        self._probe_stage = 0
        self._next_probe = math.inf
        self._reset_window(-math.inf)
        _live.register("concurrency", self)

    @property
    def limit(self) -> int:
        """The concurrency limit in force."""
        return int(self.limiter.total_tokens)

    def _reset_window(self, now: float) -> None:
        self._w_start = now
        base = self._baseline
        length = _MIN_WINDOW if base is None else min(_MAX_WINDOW, max(_MIN_WINDOW, 4 * base))
        self._w_end = now + length
        self._w_count = 0
        self._w_sum = 0.0
        self._w_inflight = 0
        self._w_dropped = False

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Wait for a slot, run ``await fn(*args, **kwargs)``, measure it, free the slot.

        Raises:
            BulkheadFullError: no slot was free within ``max_wait``.

        **Cancellation**: a checkpoint; cancelled while waiting, no slot is taken; a
        cancelled ``fn`` frees its slot and is not measured.
        """
        limiter = self.limiter
        borrower = _Borrower()
        if self.max_wait is None:
            await limiter.acquire_on_behalf_of(borrower)
        else:
            await self._acquire_within(borrower, self.max_wait)
        try:
            start = trio.current_time()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                verdict = classify_or_failure(
                    exc, self._matcher, self._logger, concurrency=self.name
                )
                if verdict in (FAILURE, SUCCESS):  # not cancelled or ignored
                    self._sample(start, verdict == FAILURE)
                raise
            # The success path of _sample, inlined: this is the hot path.
            now = trio.current_time()
            self._total_calls += 1
            if now < self._w_start:
                self._new_run(now)
            self._w_count += 1
            self._w_sum += now - start
            inflight = limiter.borrowed_tokens
            if inflight > self._w_inflight:
                self._w_inflight = inflight
            if now >= self._w_end and self._w_count >= _MIN_SAMPLES:
                self._close_window(now)
            return result
        finally:
            limiter.release_on_behalf_of(borrower)

    async def _acquire_within(self, borrower: _Borrower, max_wait: float) -> None:
        limiter = self.limiter
        if max_wait == 0:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                limiter.acquire_on_behalf_of_nowait(borrower)
            except trio.WouldBlock:
                self._total_rejected += 1
                raise BulkheadFullError(self.name, self.limit) from None
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        with trio.move_on_after(max_wait):
            await limiter.acquire_on_behalf_of(borrower)
            return
        self._total_rejected += 1
        raise BulkheadFullError(self.name, self.limit)

    def _sample(self, start: float, dropped: bool) -> None:
        now = trio.current_time()
        self._total_calls += 1
        if dropped:
            self._total_failures += 1
            self._w_dropped = True
        if now < self._w_start:  # time went backwards: another trio.run
            self._new_run(now)
        self._w_count += 1
        self._w_sum += now - start
        inflight = self.limiter.borrowed_tokens
        if inflight > self._w_inflight:
            self._w_inflight = inflight
        if now >= self._w_end and self._w_count >= _MIN_SAMPLES:
            self._close_window(now)

    def _new_run(self, now: float) -> None:
        self._token = run_token()
        self._baseline = None
        self._recent = None
        self._probe_stage = 0
        self._next_probe = now + _PROBE_INTERVAL
        self._reset_window(now)

    def _close_window(self, now: float) -> None:
        if run_token() is not self._token:
            self._new_run(now)
            return
        short = self._w_sum / self._w_count
        self._recent = short
        self._updates += 1
        stage = self._probe_stage
        if stage == 1:  # the queue drained: measure in the next window
            self._probe_stage = 2
        elif stage == 2:  # the probe's measurement is the new baseline
            self._baseline = short
            self._probe_stage = 3
            self._next_probe = now + _PROBE_INTERVAL
            self._apply(self._estimate, now)
        elif stage == 3:  # the queue refills: its low latency says nothing, skip it
            self._probe_stage = 0
        else:
            baseline = self._baseline
            if baseline is None or short < baseline:
                self._baseline = baseline = short
                if self._next_probe == math.inf:
                    self._next_probe = now + _PROBE_INTERVAL
            estimate = self._algorithm(
                self._estimate, short, baseline, self._w_inflight, self._w_dropped
            )
            if not estimate >= self.min_limit:  # also NaN
                estimate = float(self.min_limit)
            elif estimate > self.max_limit:
                estimate = float(self.max_limit)
            self._estimate = estimate
            if now >= self._next_probe:
                self._probe_stage = 1
                self._probes += 1
                self._apply(max(self.min_limit, estimate / 2), now)
            else:
                self._apply(estimate, now)
        self._reset_window(now)

    def _apply(self, estimate: float, now: float) -> None:
        limit = max(self.min_limit, min(self.max_limit, int(estimate)))
        limiter = self.limiter
        if limit != limiter.total_tokens:
            limiter.total_tokens = limit
        if (
            self._probe_stage in (0, 3)
            and limit != self._logged_limit
            and (now - self._last_log >= _LOG_INTERVAL)
        ):
            self._logger.info(
                CONCURRENCY_LIMIT_CHANGED,
                concurrency=self.name,
                algorithm=self.algorithm,
                old_limit=self._logged_limit,
                new_limit=limit,
                baseline_latency=self._baseline,
                recent_latency=self._recent,
            )
            self._logged_limit = limit
            self._last_log = now

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        return decorate("AdaptiveConcurrency", self.call, fn)

    def statistics(self) -> AdaptiveConcurrencyStatistics:
        """Return a frozen snapshot."""
        stats = self.limiter.statistics()
        return AdaptiveConcurrencyStatistics(
            algorithm=self.algorithm,
            limit=self.limit,
            estimated_limit=self._estimate,
            in_flight=int(stats.borrowed_tokens),
            waiting=stats.tasks_waiting,
            baseline_latency=self._baseline,
            recent_latency=self._recent,
            total_calls=self._total_calls,
            total_rejected=self._total_rejected,
            total_failures=self._total_failures,
            updates=self._updates,
            probes=self._probes,
        )

    def __repr__(self) -> str:
        return (
            f"<AdaptiveConcurrency {self.name!r} {self.algorithm} limit={self.limit} "
            f"{self.limiter.borrowed_tokens} in flight>"
        )
