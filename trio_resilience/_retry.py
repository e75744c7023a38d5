"""Retry with backoff on Trio's clock, deadlines as cancel scopes see them, and retry budgets."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import outcome
import trio

from ._backoff import Backoff, ExponentialBackoff
from ._classify import ExceptionSpec, Matcher, is_retryable
from ._decorate import decorate
from ._exceptions import RetryError
from ._log import RETRY_GAVE_UP, RETRY_SCHEDULED, get_logger
from ._retry_budget import RetryBudget as RetryBudget  # re-exported: wave-1 import path
from ._retry_budget import RetryBudgetStatistics as RetryBudgetStatistics
from ._testing_flags import ZERO_BACKOFF
from ._validate import (
    check_logger,
    check_optional_callable,
    check_optional_int,
    check_optional_number,
    check_str,
)

P = ParamSpec("P")
T = TypeVar("T")

_current_time = trio.current_time


_DEFAULT_BACKOFF = ExponentialBackoff()


class _Run:
    """The state of one retried call after its first failure: the one engine."""

    __slots__ = ("attempt", "delays", "retry", "start")

    def __init__(self, retry: Retry, start: float) -> None:
        self.retry = retry
        self.start = start
        self.attempt = 1
        self.delays: Iterator[float] | None = None

    def after_error(self, exc: BaseException) -> float | None:
        """The delay before the next attempt, or None to give up on ``exc`` (noted)."""
        retry = self.retry
        if not is_retryable(exc, retry._matcher):
            if self.attempt > 1:
                self._give_up(exc, repr(exc), "not_retryable")
            return None
        hint = None
        if retry.delay_hint is not None:
            hint = retry.delay_hint(exc)
        return self._next(exc, repr(exc), hint)

    def after_result(self, value: Any) -> float:
        """The delay before the next attempt; raises RetryError to give up."""
        delay = self._next(None, f"rejected result {value!r}", None)
        if delay is None:
            raise RetryError(outcome.Value(value), self.attempt)
        return delay

    def _next(self, exc: BaseException | None, error: str, hint: Any) -> float | None:
        retry = self.retry
        attempts = retry.attempts
        reason = "result" if exc is None else None
        if attempts is not None and self.attempt >= attempts:
            self._give_up(exc, error, reason or "attempts")
            return None
        if self.delays is None:
            self.delays = retry.backoff.delays()
        delay = next(self.delays)
        if hint is not None:
            delay = float(hint)
            if not delay >= 0.0:  # negative or NaN: retry at once
                delay = 0.0
        if ZERO_BACKOFF.get():
            delay = 0.0
        now = _current_time()
        total = retry.max_total_duration
        if (total is not None and now + delay > self.start + total) or (
            now + delay >= trio.current_effective_deadline()
        ):
            self._give_up(exc, error, reason or "deadline")
            return None
        budget = retry.budget
        if budget is not None and not budget.try_withdraw():
            self._give_up(exc, error, reason or "budget")
            return None
        retry._logger.warning(
            RETRY_SCHEDULED, retry=retry.name, attempt=self.attempt, delay=delay, error=error
        )
        self.attempt += 1
        return delay

    def _give_up(self, exc: BaseException | None, error: str, reason: str) -> None:
        retry = self.retry
        elapsed = _current_time() - self.start
        retry._logger.error(
            RETRY_GAVE_UP,
            retry=retry.name,
            attempts=self.attempt,
            elapsed=elapsed,
            error=error,
            reason=reason,
        )
        if exc is not None:
            why = {
                "attempts": "no attempts left",
                "deadline": "the next delay would pass the deadline",
                "budget": "the retry budget had no token",
                "not_retryable": "the error is not retryable",
            }[reason]
            exc.add_note(
                f"trio_resilience: Retry {retry.name!r} gave up after {self.attempt} "
                f"attempt{'s' if self.attempt != 1 else ''} over {elapsed:.3f}s: {why}"
            )


class Retry:
    """Call again after a failure, with backoff, within deadlines and a retry budget.

    Use it as ``await retry.call(fn, *args)``, ``@retry`` on an async function, or::

        async for attempt in retry:
            with attempt:
                await do_something()

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
            number replaces the backoff's delay for that retry, None keeps it.
        name: a label for logs and notes.
        logger: a structlog-like logger.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument has a wrong value; the message names it.
    """

    __slots__ = (
        "_logger",
        "_matcher",
        "attempts",
        "backoff",
        "budget",
        "delay_hint",
        "logger",
        "max_total_duration",
        "name",
        "retry_if_result",
        "retry_on",
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
    ) -> None:
        self.attempts = check_optional_int("attempts", attempts, minimum=1)
        if not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a Backoff, got {backoff!r}")
        self.backoff = backoff
        self.retry_on = retry_on
        self._matcher = Matcher("retry_on", retry_on)
        self.retry_if_result = check_optional_callable("retry_if_result", retry_if_result)
        self.max_total_duration = check_optional_number(
            "max_total_duration", max_total_duration, gt=0, allow_inf=True
        )
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget or None, got {budget!r}")
        self.budget = budget
        self.delay_hint = check_optional_callable("delay_hint", delay_hint)
        self.name = check_str("name", name)
        self.logger = check_logger(logger)
        self._logger = get_logger(logger)

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Call ``await fn(*args, **kwargs)`` until it succeeds or retries end.

        Returns:
            The first accepted result.

        Raises:
            RetryError: retries ended on a result ``retry_if_result`` rejected.
            Exception: retries ended on an exception: that very exception, with a
                PEP 678 note saying how many attempts were made over how long.

        **Cancellation**: never retried; a cancellation during an attempt or a backoff
        sleep propagates at once. A first attempt adds no checkpoint of its own.
        """
        start = _current_time()
        budget = self.budget
        if budget is not None:
            budget.deposit()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            run = _Run(self, start)
            delay = run.after_error(exc)
            if delay is None:
                raise
        else:
            check = self.retry_if_result
            if check is None or not check(result):
                return result
            run = _Run(self, start)
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
            await trio.sleep(delay)
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

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate an async function so that every call is retried by this policy."""
        return decorate("Retry", self.call, fn)

    def __aiter__(self) -> AsyncIterator[Attempt]:
        return _AttemptIterator(self)

    def __repr__(self) -> str:
        return (
            f"<Retry {self.name!r} attempts={self.attempts} backoff={self.backoff!r} "
            f"max_total_duration={self.max_total_duration}>"
        )


class Attempt:
    """One attempt of ``async for attempt in retry``; use it as ``with attempt:``.

    The block's outcome decides: an exception that may be retried is swallowed and the
    loop goes on after the backoff delay; any other exception (and the last one, with a
    note) propagates; leaving the block normally ends the loop.
    """

    __slots__ = ("_iterator", "_settled", "number")

    def __init__(self, iterator: _AttemptIterator, number: int) -> None:
        self._iterator = iterator
        self.number = number
        """1-based number of this attempt."""
        self._settled = False

    def __enter__(self) -> Attempt:
        if self._settled:
            raise RuntimeError("an Attempt can be entered once; use the next one")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._settled = True
        iterator = self._iterator
        if exc is None:
            iterator._done = True
            return False
        if iterator._run is None:
            iterator._run = _Run(iterator._retry, iterator._start)
        delay = iterator._run.after_error(exc)
        if delay is None:
            iterator._done = True
            return False
        iterator._delay = delay
        return True

    def __repr__(self) -> str:
        return f"<Attempt {self.number}>"


class _AttemptIterator:
    __slots__ = ("_attempt", "_delay", "_done", "_retry", "_run", "_start")

    def __init__(self, retry: Retry) -> None:
        self._retry = retry
        self._run: _Run | None = None
        self._attempt: Attempt | None = None
        self._delay = 0.0
        self._done = False
        self._start = math.nan

    def __aiter__(self) -> _AttemptIterator:
        return self

    async def __anext__(self) -> Attempt:
        previous = self._attempt
        if self._done or (previous is not None and not previous._settled):
            raise StopAsyncIteration
        if previous is None:
            self._start = _current_time()
            if self._retry.budget is not None:
                self._retry.budget.deposit()
            await trio.lowlevel.checkpoint()
            number = 1
        else:
            await trio.sleep(self._delay)
            number = previous.number + 1
        self._attempt = Attempt(self, number)
        return self._attempt
