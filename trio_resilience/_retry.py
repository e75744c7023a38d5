"""Retry with backoff on Trio's clock, deadlines as cancel scopes see them, and retry budgets."""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType, TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar

import outcome
import trio

from . import _live
from ._backoff import Backoff, ExponentialBackoff
from ._classify import ExceptionSpec, Matcher, is_retryable, leaves
from ._decorate import decorate
from ._exceptions import CircuitOpenError, RetryError
from ._log import (
    CLASSIFY_FAILED,
    RETRY_GAVE_UP,
    RETRY_HINT_FAILED,
    RETRY_SCHEDULED,
    get_logger,
    log_safely,
    safe_repr,
)
from ._retry_budget import RetryBudget as RetryBudget  # re-exported: wave-1 import path
from ._retry_budget import RetryBudgetStatistics as RetryBudgetStatistics
from ._testing_flags import ZERO_BACKOFF
from ._validate import (
    check_logger,
    check_number,
    check_optional_int,
    check_optional_number,
    check_str,
    check_sync_callable,
)

P = ParamSpec("P")
T = TypeVar("T")

_current_time = trio.current_time
_deadline = trio.current_effective_deadline

#: The reasons a Retry gives up, as in ``trio_resilience.retry.gave_up`` and statistics.
GAVE_UP_REASONS = ("attempts", "deadline", "budget", "not_retryable", "result", "circuit_open")

_WHY = {
    "attempts": "no attempts left",
    "deadline": "the next delay would pass the deadline",
    "budget": "the retry budget had no token",
    "not_retryable": "the error is not retryable",
    "circuit_open": "a circuit breaker would still reject the retry (circuit_open)",
}


class _Breaker(Protocol):
    """What Retry reads of a breaker it wraps: only public API."""

    name: str

    def statistics(self) -> Any: ...

    async def wait_ready(self) -> None: ...


#: Outside a Pipeline, a retried ``CircuitOpenError`` with ``retry_after`` 0 (half-open,
#: probes busy) waits at least this long, so a zero backoff never spins on it.
BUSY_PROBE_FLOOR = 0.01


@dataclass(frozen=True, slots=True)
class RetryStatistics:
    """A snapshot of a :class:`Retry`'s counters (lifetime totals)."""

    calls: int
    """Retried operations started: ``call()``, decorated calls and ``async for`` loops."""
    attempts: int
    """Attempts made, first attempts included (``calls + retries``)."""
    retries: int
    """Attempts after the first (each followed a backoff sleep)."""
    gave_up: Mapping[str, int]
    """Give-ups by reason (``attempts``, ``deadline``, ``budget``, ``not_retryable``,
    ``result``, ``circuit_open``), as in ``trio_resilience.retry.gave_up``."""
    budget_refused: int
    """Retries not made because the retry budget had no token."""


_DEFAULT_BACKOFF = ExponentialBackoff()


def _open_retry_after(exc: BaseException) -> float | None:
    """The longest ``retry_after`` of the CircuitOpenErrors in ``exc``, or None."""
    found: float | None = None
    for leaf in leaves(exc) if isinstance(exc, BaseExceptionGroup) else (exc,):
        if isinstance(leaf, CircuitOpenError):
            value = getattr(leaf, "retry_after", 0.0)
            if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
                value = 0.0
            if value < 0.0:
                value = 0.0
            if found is None or value > found:
                found = float(value)
    return found


class _Run:
    """The state of one retried call after its first failure: the one engine."""

    __slots__ = (
        "attempt",
        "breakers",
        "delays",
        "notes",
        "retry",
        "start",
        "wait_busy",
        "withdrew",
    )

    def __init__(self, retry: Retry, start: float, breakers: tuple[_Breaker, ...]) -> None:
        self.retry = retry
        self.start = start
        self.breakers = breakers
        self.attempt = 1
        self.delays: Iterator[float] | None = None
        self.withdrew = False  # a budget token is held for the coming retry
        self.wait_busy = False  # after the sleep, wait for the breakers to admit a call
        self.notes: list[str] | None = None  # delay_hint failures, for the final error

    def after_error(self, exc: BaseException) -> float | None:
        """The delay before the next attempt, or None to give up on ``exc`` (noted)."""
        retry = self.retry
        try:
            retryable = is_retryable(exc, retry._matcher)
        except Exception as err:  # a retry_on predicate raised: do not retry
            log_safely(
                retry._logger,
                "error",
                CLASSIFY_FAILED,
                retry=retry.name,
                predicate="retry_on",
                error=safe_repr(err),
            )
            retryable = False
        if not retryable:
            if self.attempt > 1:
                self._give_up(exc, safe_repr(exc), "not_retryable")
            return None
        return self._next(exc, None)

    def after_result(self, value: Any) -> float:
        """The delay before the next attempt; raises RetryError to give up."""
        delay = self._next(None, value)
        if delay is None:
            error = RetryError(outcome.Value(value), self.attempt)
            for note in self.notes or ():
                error.add_note(note)
            raise error
        return delay

    def _next(self, exc: BaseException | None, value: Any) -> float | None:
        retry = self.retry
        attempts = retry.attempts
        if attempts is not None and self.attempt >= attempts:
            self._give_up(exc, self._what(exc, value), "attempts" if exc is not None else "result")
            return None
        if self.delays is None:
            self.delays = retry.backoff.delays()
        backoff_delay = next(self.delays)
        delay = backoff_delay
        now = _current_time()
        deadline = _deadline()
        if deadline <= now:
            # The caller's scope is cancelled (or its deadline passed): the sleep below
            # raises Cancelled, which is what the caller must see, not the last error.
            return delay
        breakers = self.breakers
        reason = None
        # First the give-ups that do not depend on the delay, so that delay_hint is
        # called only when a retry may follow: a forced-open breaker, an empty budget.
        for breaker in breakers:
            try:
                retry_after = breaker.statistics().retry_after
            except Exception:  # pragma: no cover - a breaker's statistics never raise
                continue
            if retry_after == math.inf:  # forced open: no delay is long enough
                reason = "circuit_open"
                break
        budget = retry.budget
        if reason is None and budget is not None:
            if budget.try_withdraw():
                self.withdrew = True
            else:
                retry._budget_refused += 1
                reason = "budget"
        if reason is None:
            if exc is not None:
                if retry.delay_hint is not None:
                    hinted = self._hint(exc)
                    if hinted is not None:
                        delay = hinted
                opened = _open_retry_after(exc)
                if opened is not None:
                    # A rejection waits for the breaker, whatever the hint says.
                    floor = backoff_delay if backoff_delay > opened else opened
                    if opened == 0.0:
                        # Half-open, probes busy: no spin. In a Pipeline the sleep ends
                        # with the breakers' wait_ready(); elsewhere a small floor.
                        if breakers:
                            self.wait_busy = True
                        elif floor < BUSY_PROBE_FLOOR:
                            floor = BUSY_PROBE_FLOOR
                    if delay < floor:
                        delay = floor
            if ZERO_BACKOFF.get():
                delay = 0.0
            for breaker in breakers:  # a breaker that would still reject after the sleep
                try:
                    retry_after = breaker.statistics().retry_after
                except Exception:  # pragma: no cover - a breaker's statistics never raise
                    continue
                if retry_after > delay:
                    reason = "circuit_open"
                    break
            total = retry.max_total_duration
            if reason is None and (
                (total is not None and now + delay > self.start + total)
                or now + delay >= deadline
                # A wait for busy probes needs time left to wait in: no spin at the end.
                or (self.wait_busy and total is not None and now + delay >= self.start + total)
            ):
                reason = "deadline"
            if reason is not None and self.withdrew:
                self.withdrew = False
                budget._undo_withdraw()  # type: ignore[union-attr]
        if reason is not None:
            self.wait_busy = False
            self._give_up(exc, self._what(exc, value), reason if exc is not None else "result")
            return None
        log_safely(
            retry._logger,
            "warning",
            RETRY_SCHEDULED,
            retry=retry.name,
            attempt=self.attempt,
            delay=delay,
            error=self._what(exc, value),
        )
        return delay

    def _hint(self, exc: BaseException) -> float | None:
        """``delay_hint(exc)`` jittered upward, or None; a failing hint is logged and noted."""
        retry = self.retry
        try:
            assert retry.delay_hint is not None
            hint: object = retry.delay_hint(exc)
            if hint is None:
                return None
            if isinstance(hint, bool) or not isinstance(hint, numbers.Real | Decimal):
                raise TypeError(f"delay_hint must return a number or None, got {safe_repr(hint)}")
            try:
                delay = float(hint)
            except OverflowError:  # 10**400, Fraction(10**400): longer than any deadline
                delay = math.inf if hint > 0 else 0.0  # type: ignore[operator]
        except Exception as err:
            log_safely(
                retry._logger,
                "warning",
                RETRY_HINT_FAILED,
                retry=retry.name,
                attempt=self.attempt,
                error=safe_repr(err),
            )
            note = (
                f"trio_resilience: Retry {retry.name!r}: delay_hint raised "
                f"{safe_repr(err)}; the backoff's delay was used after attempt {self.attempt}"
            )
            exc.add_note(note)  # on this attempt's error, and later on the final one
            if self.notes is None:
                self.notes = [note]
            else:
                self.notes.append(note)
            return None
        if not delay >= 0.0:  # negative or NaN: retry at once
            return 0.0
        jitter = retry.hint_jitter
        if jitter and delay > 0.0:
            high = delay * (1.0 + jitter)
            if high < math.inf:  # an infinite hint stays infinite (and gives up)
                drawn = retry._uniform(delay, high)
                delay = drawn if delay <= drawn <= high else delay
        return delay

    @staticmethod
    def _what(exc: BaseException | None, value: Any) -> str:
        if exc is not None:
            return safe_repr(exc)
        return f"rejected result {safe_repr(value)}"

    def _give_up(self, exc: BaseException | None, error: str, reason: str) -> None:
        retry = self.retry
        elapsed = _current_time() - self.start
        retry._gave_up[reason] = retry._gave_up.get(reason, 0) + 1
        log_safely(
            retry._logger,
            "error",
            RETRY_GAVE_UP,
            retry=retry.name,
            attempts=self.attempt,
            elapsed=elapsed,
            error=error,
            reason=reason,
        )
        if exc is not None:
            # The delay_hint failures of earlier attempts go on the error the caller gets.
            for note in self.notes or ():
                if note not in getattr(exc, "__notes__", ()):
                    exc.add_note(note)
            exc.add_note(
                f"trio_resilience: Retry {retry.name!r} gave up after {self.attempt} "
                f"attempt{'s' if self.attempt != 1 else ''} over {elapsed:.3f}s: {_WHY[reason]}"
            )

    async def sleep(self, delay: float) -> None:
        """Sleep before the next attempt; a cancelled sleep gives the budget token back.

        The retry counts (``attempt``, the Retry's ``retries``) only once the sleep is
        over: a retry whose sleep was cancelled was not made.
        """
        try:
            await trio.sleep(delay)
            if self.wait_busy:
                self.wait_busy = False
                await self._wait_for_breakers()
        except BaseException:
            if self.withdrew:
                self.withdrew = False
                budget = self.retry.budget
                if budget is not None:
                    budget.give_back()
            raise
        self.withdrew = False
        self.attempt += 1
        self.retry._retries += 1

    async def _wait_for_breakers(self) -> None:
        """Wait until the breakers would admit a call, at most to ``max_total_duration``."""
        total = self.retry.max_total_duration
        with trio.move_on_at(self.start + total if total is not None else math.inf):
            for breaker in self.breakers:
                await breaker.wait_ready()


class Retry:
    """Call again after a failure, with backoff, within deadlines and a retry budget.

    Use it as ``await retry.call(fn, *args)``, ``@retry`` on an async function, or::

        async for attempt in retry:
            with attempt:
                await do_something()

    In a :class:`Pipeline` outside one or more :class:`CircuitBreaker`, a Retry does
    not sleep for a retry that a breaker would still reject when the sleep ends: it
    gives up at once (reason ``"circuit_open"``). A retried ``CircuitOpenError`` waits
    at least ``max(backoff delay, error.retry_after)``, whatever ``delay_hint`` says.

    Args:
        attempts: total calls including the first; None for no limit.
        backoff: the delays between attempts.
        retry_on: exception spec of retryable errors. This library's own rejections
            (``CircuitOpenError``, ``LoadShedError``, ...) are retried only when a type
            in the spec names them.
        retry_if_result: a predicate on results; True means "retry".
        max_total_duration: seconds from the first attempt after which no retry starts.
        budget: a :class:`RetryBudget` shared by many Retry objects.
        delay_hint: reads a server-directed delay (e.g. Retry-After) from an error; a
            number replaces the backoff's delay for that retry, None keeps it. Called
            only when a retry follows; if it raises, the backoff's delay is used, the
            error gets a note and ``trio_resilience.retry.hint_failed`` is logged.
        name: a label for logs, notes and metrics.
        logger: a structlog-like logger.
        hint_jitter: ``0 <= hint_jitter <= 1``; a hint ``d`` becomes a uniform draw in
            ``[d, d * (1 + hint_jitter)]`` (never earlier than the server asked).
        rng: the ``random.Random`` for ``hint_jitter`` (None: the backoff's ``rng``, else
            the ``random`` module's).

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument has a wrong value; the message names it.
    """

    __slots__ = (
        "__weakref__",
        "_budget_refused",
        "_calls",
        "_gave_up",
        "_logger",
        "_matcher",
        "_retries",
        "_uniform",
        "attempts",
        "backoff",
        "budget",
        "delay_hint",
        "hint_jitter",
        "logger",
        "max_total_duration",
        "name",
        "retry_if_result",
        "retry_on",
        "rng",
    )

    def __init__(
        self,
        *,
        attempts: int | None = 3,
        backoff: Backoff = _DEFAULT_BACKOFF,
        retry_on: ExceptionSpec = Exception,
        retry_if_result: Callable[[Any], bool] | None = None,
        max_total_duration: float | None = 60.0,
        budget: RetryBudget | None = None,
        delay_hint: Callable[[BaseException], float | None] | None = None,
        name: str = "default",
        logger: Any = None,
        hint_jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.attempts = check_optional_int("attempts", attempts, minimum=1)
        if not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a Backoff, got {backoff!r}")
        self.backoff = backoff
        self.retry_on = retry_on
        self._matcher = Matcher("retry_on", retry_on)
        self.retry_if_result = check_sync_callable("retry_if_result", retry_if_result)
        self.max_total_duration = check_optional_number(
            "max_total_duration", max_total_duration, gt=0, allow_inf=True
        )
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget or None, got {budget!r}")
        self.budget = budget
        self.delay_hint = check_sync_callable("delay_hint", delay_hint)
        self.name = check_str("name", name)
        self.logger = check_logger(logger)
        self._logger = get_logger(logger)
        self.hint_jitter = check_number("hint_jitter", hint_jitter, ge=0, le=1)
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random or None, got {rng!r}")
        self.rng = rng
        source = rng if rng is not None else getattr(backoff, "rng", None)
        self._uniform = (source if isinstance(source, random.Random) else random._inst).uniform
        self._calls = 0
        self._retries = 0
        self._budget_refused = 0
        self._gave_up: dict[str, int] = {}
        _live.register("retry", self)

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Call ``await fn(*args, **kwargs)`` until it succeeds or retries end.

        Returns:
            The first accepted result.

        Raises:
            RetryError: retries ended on a result ``retry_if_result`` rejected.
            Exception: retries ended on an exception: that very exception, with a
                PEP 678 note saying how many attempts were made over how long.

        **Cancellation**: never retried; a cancellation during an attempt or a backoff
        sleep propagates at once, and an error raised while the caller's scope is
        cancelled gives ``trio.Cancelled`` rather than a retry or a give-up. A first
        attempt adds no checkpoint of its own; a cancelled backoff sleep gives its
        budget token back.
        """
        start = _current_time()
        self._calls += 1
        budget = self.budget
        if budget is not None:
            budget.deposit()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            run = _Run(self, start, ())
            delay = run.after_error(exc)
            if delay is None:
                raise
        else:
            check = self.retry_if_result
            if check is None or not check(result):
                return result
            run = _Run(self, start, ())
            delay = run.after_result(result)
        return await self._again(run, delay, fn, args, kwargs)

    async def _call_within(
        self,
        breakers: tuple[_Breaker, ...],
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        **kwargs: Any,
    ) -> T:
        """``call()`` for a Pipeline that has ``breakers`` inside this Retry.

        The breakers come with each call, so one Retry may serve several pipelines.
        """
        start = _current_time()
        self._calls += 1
        budget = self.budget
        if budget is not None:
            budget.deposit()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            run = _Run(self, start, breakers)
            delay = run.after_error(exc)
            if delay is None:
                raise
        else:
            check = self.retry_if_result
            if check is None or not check(result):
                return result
            run = _Run(self, start, breakers)
            delay = run.after_result(result)
        return await self._again(run, delay, fn, args, kwargs)

    async def _again(
        self,
        run: _Run,
        delay: float,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        check = self.retry_if_result
        while True:
            await run.sleep(delay)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                next_delay = run.after_error(exc)
                if next_delay is None:
                    raise
                delay = next_delay
                continue
            if check is None or not check(result):
                return result
            delay = run.after_result(result)

    def statistics(self) -> RetryStatistics:
        """Return a frozen snapshot of the Retry's lifetime counters."""
        return RetryStatistics(
            calls=self._calls,
            attempts=self._calls + self._retries,
            retries=self._retries,
            gave_up=MappingProxyType(dict(self._gave_up)),
            budget_refused=self._budget_refused,
        )

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate an async function so that every call is retried by this policy."""
        return decorate("Retry", self.call, fn)

    def __aiter__(self) -> AsyncIterator[Attempt]:
        attempts = _new_attempts(_Attempts)  # no __init__ frame: the loop's one allocation
        attempts._retry = self
        attempts._state = _FIRST
        attempts.number = 0
        return attempts

    def __repr__(self) -> str:
        return (
            f"<Retry {self.name!r} attempts={self.attempts} backoff={self.backoff!r} "
            f"max_total_duration={self.max_total_duration}>"
        )


_FIRST, _OPEN, _SETTLED, _DONE = range(4)


class Attempt:
    """One attempt of ``async for attempt in retry``; use it as ``with attempt:``.

    The block's outcome decides: an exception that may be retried is swallowed and the
    loop goes on after the backoff delay; any other exception (and the last one, with a
    note) propagates; leaving the block normally ends the loop. One object stands for
    every attempt of a loop; ``number`` is the current attempt's.
    """

    __slots__ = ("_delay", "_retry", "_run", "_start", "_state", "number")

    _run: _Run | None
    _start: float
    _delay: float

    def __init__(self, retry: Retry) -> None:
        self._retry = retry
        self._state = _FIRST
        # _run, _start and number are set by the first __anext__ (fewer stores here).
        self.number = 0
        """1-based number of the current attempt."""

    def __enter__(self) -> Attempt:
        if self._state != _OPEN:
            raise RuntimeError("an Attempt can be entered once; use the next one")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            self._state = _DONE
            return False
        run = self._run
        if run is None:
            run = self._run = _Run(self._retry, self._start, ())
        delay = run.after_error(exc)
        if delay is None:
            self._state = _DONE
            return False
        self._state = _SETTLED
        self._delay = delay
        return True

    def __repr__(self) -> str:
        return f"<Attempt {self.number}>"


_new_attempts = object.__new__


class _Attempts(Attempt):
    """``async for attempt in retry``: the iterator is the attempt (one allocation)."""

    __slots__ = ()

    def __aiter__(self) -> _Attempts:
        return self

    async def __anext__(self) -> Attempt:
        state = self._state
        if state == _FIRST:
            # No checkpoint of its own before the first attempt: the block's awaits are
            # the loop's checkpoints, as the body's are for ``call()``.
            retry = self._retry
            self._start = _current_time()
            self._run = None
            retry._calls += 1
            if retry.budget is not None:
                retry.budget.deposit()
            self._state = _OPEN
            self.number = 1
            return self
        if state != _SETTLED:
            raise StopAsyncIteration  # done, or the block was skipped: end the loop
        run = self._run
        assert run is not None
        await run.sleep(self._delay)
        self._state = _OPEN
        self.number += 1
        return self
