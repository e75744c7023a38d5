"""CircuitBreaker: closed, open and half-open states on Trio's clock, one engine for all uses."""

from __future__ import annotations

import contextlib
import inspect
import math
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from fractions import Fraction
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar

import trio
from trio_util import AsyncValue

from ._backoff import Backoff
from ._classify import FAILURE, IGNORED, SUCCESS, ExceptionSpec, Matcher, classify
from ._decorate import decorate
from ._exceptions import CircuitOpenError
from ._log import BREAKER_LISTENER_FAILED, BREAKER_STATE_CHANGED, get_logger
from ._state import (
    BREAKER_SHARING_FAILED,
    REMOTE_CLOSE,
    REMOTE_TRIP,
    SHARED_FAILURES,
    CircuitBreakerStatistics,
    CircuitState,
    StateChange,
)
from ._validate import (
    MAX_SIZE,
    check_int,
    check_logger,
    check_number,
    check_optional_callable,
    check_optional_int,
    check_optional_number,
    check_str,
)

__all__ = [
    "BreakerRegistry",
    "BreakerSharing",
    "CircuitBreaker",
    "CircuitBreakerStatistics",
    "CircuitState",
    "PermitSource",
    "StateChange",
]

P = ParamSpec("P")
T = TypeVar("T")

_current_time = trio.current_time


class _TaskContext:
    """Fallback with the one attribute ``async with breaker`` reads: the current task."""

    @property
    def task(self) -> trio.lowlevel.Task:
        return trio.lowlevel.current_task()


def _run_context() -> Any:
    # Trio's run context, read directly: its ``task`` attribute costs half of
    # trio.lowlevel.current_task() on the ``async with breaker`` path.
    try:
        from trio._core import _run
    except ImportError:  # pragma: no cover - a future trio without it
        return _TaskContext()
    return getattr(_run, "GLOBAL_RUN_CONTEXT", None) or _TaskContext()


_RUN_CONTEXT: Any = _run_context()
_RATE_BUCKETS = 10
# A closed breaker without a rate rule or slow-call check reads the clock once per
# batch of up to _BATCH successes, stamping the batch with its first success's time.
_BATCH = 32
_STALE = -2  # the generation of an untracked call admitted before the last transition


_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_FORCED_OPEN = CircuitState.FORCED_OPEN
_DISABLED = CircuitState.DISABLED


class _Ticket:
    """One admitted call that needs more than its generation: a probe or a timed call."""

    __slots__ = ("gen", "lease", "limiter", "source", "start")

    def __init__(self, gen: int, limiter: trio.CapacityLimiter | None, start: float) -> None:
        self.gen = gen
        self.limiter = limiter
        self.start = start
        self.lease: str | None = None  # a cluster-wide probe permit from a PermitSource
        self.source: PermitSource | None = None  # the source that granted it


class CircuitBreaker:
    """Stop calling a failing dependency; let a few probes find out when it is back.

    Use it as ``async with breaker:``, ``await breaker.call(fn, *args)`` or ``@breaker``
    on an async function: all three share one engine. See ``docs/breaker.md``.

    Args:
        name: a label for logs, errors and the registry.
        failure_threshold: failures within ``failure_window`` that open the breaker
            (``None``: only the rate rule trips it).
        failure_window: seconds a failure counts for (a true sliding window).
        failure_rate_threshold: also open when the failure rate over the window
            (time buckets, approximate to a tenth of it) is at least this, once
            ``minimum_calls`` calls were seen.
        minimum_calls: calls needed in the window before the rate rule applies.
        slow_call_duration: a success slower than this (strictly) counts as a failure.
        recovery_timeout: seconds open before probes are admitted, or a
            :class:`Backoff` whose delays grow on consecutive re-trips.
        success_threshold: consecutive successful probes that close it.
        half_open_max_calls: probes admitted at once (a ``trio.CapacityLimiter``).
        failure_on: exception spec of failures (type, tuple or predicate).
        ignore_on: exception spec of outcomes counted as nothing (wins over failure).
        on_state_change: called with a :class:`StateChange` on every transition.
        logger: a structlog-like logger; default ``structlog.get_logger("trio_resilience")``.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument has a wrong value; the message names it.
    """

    __slots__ = (
        "__weakref__",
        "_bucket_calls",
        "_bucket_end",
        "_bucket_failures",
        "_bucket_index",
        "_bucket_width",
        "_closed",
        "_consecutive",
        "_counted_calls",
        "_counted_failures",
        "_entries",
        "_failure_matcher",
        "_failures",
        "_fast",
        "_fast_with",
        "_gen",
        "_ignore_matcher",
        "_limiter",
        "_logger",
        "_open_until",
        "_opened_at",
        "_pending",
        "_pending_at",
        "_rate_den",
        "_rate_num",
        "_recovery_delays",
        "_shared",
        "_state",
        "_state_value",
        "_sum_calls",
        "_sum_failures",
        "_timed",
        "_times_opened",
        "_total_calls",
        "_total_cancelled",
        "_total_failures",
        "_total_ignored",
        "_total_rejected",
        "_total_successes",
        "_untracked",
        "_untracked_stale",
        "failure_on",
        "failure_rate_threshold",
        "failure_threshold",
        "failure_window",
        "half_open_max_calls",
        "ignore_on",
        "logger",
        "minimum_calls",
        "name",
        "on_state_change",
        "recovery_timeout",
        "slow_call_duration",
        "success_threshold",
    )

    def __init__(
        self,
        name: str = "default",
        *,
        failure_threshold: int | None = 5,
        failure_window: float = 60.0,
        failure_rate_threshold: float | None = None,
        minimum_calls: int = 10,
        slow_call_duration: float | None = None,
        recovery_timeout: float | Backoff = 30.0,
        success_threshold: int = 3,
        half_open_max_calls: int = 3,
        failure_on: ExceptionSpec = Exception,
        ignore_on: ExceptionSpec = (),
        on_state_change: Callable[[StateChange], None] | None = None,
        logger: Any = None,
    ) -> None:
        self.name = check_str("name", name)
        self.failure_threshold = check_optional_int(
            "failure_threshold", failure_threshold, minimum=1, maximum=MAX_SIZE
        )
        self.failure_window = check_number("failure_window", failure_window, gt=0)
        self.failure_rate_threshold = check_optional_number(
            "failure_rate_threshold", failure_rate_threshold, gt=0, le=1
        )
        self.minimum_calls = check_int("minimum_calls", minimum_calls, minimum=1)
        self._rate_num, self._rate_den = 0, 0
        if self.failure_rate_threshold is not None:
            exact = Fraction(str(self.failure_rate_threshold))
            self._rate_num, self._rate_den = exact.numerator, exact.denominator
        self.slow_call_duration = check_optional_number(
            "slow_call_duration", slow_call_duration, ge=0
        )
        if isinstance(recovery_timeout, Backoff):
            self.recovery_timeout: float | Backoff = recovery_timeout
        else:
            try:
                self.recovery_timeout = check_number("recovery_timeout", recovery_timeout, ge=0)
            except TypeError:
                raise TypeError(
                    f"recovery_timeout must be a number or a Backoff, got {recovery_timeout!r}"
                ) from None
        self.success_threshold = check_int("success_threshold", success_threshold, minimum=1)
        self.half_open_max_calls = check_int("half_open_max_calls", half_open_max_calls, minimum=1)
        self.failure_on = failure_on
        self.ignore_on = ignore_on
        self._failure_matcher = Matcher("failure_on", failure_on)
        self._ignore_matcher = Matcher("ignore_on", ignore_on)
        self.on_state_change = check_optional_callable("on_state_change", on_state_change)
        self.logger = check_logger(logger)
        self._logger = get_logger(logger)

        self._state = _CLOSED
        self._closed = True
        # The sharing port's hooks (owner, listeners, permit source); None until used.
        self._shared: _Hooks | None = None
        self._counted_calls = 0
        self._counted_failures = 0
        self._gen = 0
        self._state_value: AsyncValue[CircuitState] = AsyncValue(_CLOSED)
        self._limiter = trio.CapacityLimiter(self.half_open_max_calls)
        self._entries: dict[trio.lowlevel.Task, Any] = {}
        self._timed = self.slow_call_duration is not None
        self._fast = not self._timed
        self._fast_with = self._fast
        self._untracked = 0
        self._untracked_stale = 0
        self._pending = 0
        self._pending_at = 0.0
        self._failures: deque[float] = deque(maxlen=self.failure_threshold or 1)
        self._bucket_width = self.failure_window / _RATE_BUCKETS
        self._bucket_calls = [0] * _RATE_BUCKETS
        self._bucket_failures = [0] * _RATE_BUCKETS
        self._bucket_index = 0
        self._bucket_end = self._bucket_width
        self._sum_calls = 0
        self._sum_failures = 0
        self._opened_at = 0.0
        self._open_until = 0.0
        self._recovery_delays: Iterator[float] | None = None
        self._consecutive = 0
        self._total_calls = 0
        self._total_successes = 0
        self._total_failures = 0
        self._total_rejected = 0
        self._total_ignored = 0
        self._total_cancelled = 0
        self._times_opened = 0

    # ----------------------------------------------------------------- public API

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` through the breaker and return its result.

        Raises:
            CircuitOpenError: the breaker refused the call; ``fn`` was not called.

        **Cancellation**: a closed breaker adds no checkpoint of its own; ``fn``'s
        checkpoints decide. A refusal is a checkpoint. Cancellation of ``fn`` counts as
        nothing and gives any half-open permit back.
        """
        if self._fast:
            gen = self._gen
            self._total_calls += 1
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                self._settle_error(gen, exc)
                raise
            self._total_successes += 1
            if gen == self._gen:
                pending = self._pending
                if 0 < pending < _BATCH:
                    self._pending = pending + 1
                else:
                    self._count_success()
            return result
        ticket = await self._admit_or_reject()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._settle_error(ticket, exc)
            raise
        self._settle_success(ticket)
        return result

    async def __aenter__(self) -> CircuitBreaker:
        # Closed fast path: no per-task record, only a count of the calls in flight.
        # A transition moves that count to _untracked_stale; while stale entries are in
        # flight, new entries are recorded per task so that exits can tell them apart.
        if self._fast_with and not self._entries:
            self._total_calls += 1
            self._untracked += 1
            return self
        if self._fast:
            self._total_calls += 1
            ticket: Any = self._gen
        else:
            ticket = await self._admit_or_reject()
        task = _RUN_CONTEXT.task
        entries = self._entries
        outer = entries.get(task)
        if outer is not None:  # the same breaker entered again in the same task
            ticket = [*outer, ticket] if outer.__class__ is list else [outer, ticket]
        entries[task] = ticket
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entries = self._entries
        if entries:
            task = _RUN_CONTEXT.task
            ticket = entries.pop(task, None)
            if ticket is not None:
                if ticket.__class__ is list:
                    entries[task] = ticket[:-1] if len(ticket) > 2 else ticket[0]
                    ticket = ticket[-1]
                if exc is None:
                    self._settle_success(ticket)
                else:
                    self._settle_error(ticket, exc)
                return
        if self._untracked_stale:
            self._untracked_stale -= 1
            if not self._untracked_stale:
                self._fast_with = self._fast
            ticket = _STALE
        elif self._untracked:
            self._untracked -= 1
            ticket = self._gen
            if exc is None:
                self._total_successes += 1
                pending = self._pending
                if 0 < pending < _BATCH:
                    self._pending = pending + 1
                else:
                    self._count_success()
                return
        else:
            raise RuntimeError("breaker exited more often than it was entered")
        if exc is None:
            self._settle_success(ticket)
        else:
            self._settle_error(ticket, exc)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate an async function so that every call goes through the breaker."""
        return decorate("CircuitBreaker", self.call, fn)

    @property
    def state(self) -> CircuitState:
        """The effective state: an open breaker past its recovery timeout reads HALF_OPEN."""
        state = self._state
        if state is _OPEN:
            try:
                if _current_time() >= self._open_until:
                    return _HALF_OPEN
            except RuntimeError:
                pass
        return state

    @property
    def state_value(self) -> AsyncValue[CircuitState]:
        """A ``trio_util.AsyncValue`` of the applied state, to await transitions.

        An open breaker's move to half-open is applied by the next call, so this value
        reads OPEN until a call arrives after the recovery timeout.
        """
        return self._state_value

    @property
    def sharing(self) -> BreakerSharing:
        """The breaker's sharing port, for layers that share it across processes.

        ``trio_resilience.redis`` uses it; see :class:`BreakerSharing` and the
        "Sharing port" section of ``docs/breaker.md``.
        """
        return BreakerSharing(self)

    @property
    def half_open_limiter(self) -> trio.CapacityLimiter:
        """The ``trio.CapacityLimiter`` of the current (or next) half-open period."""
        return self._limiter

    @property
    def retry_after(self) -> float:
        """Seconds until a probe can be admitted (see :class:`CircuitOpenError`)."""
        state = self._state
        if state is _FORCED_OPEN:
            return math.inf
        if state is _OPEN:
            try:
                return max(0.0, self._open_until - _current_time())
            except RuntimeError:
                return self._open_until - self._opened_at
        return 0.0

    async def wait_closed(self) -> None:
        """Return once the breaker's state is CLOSED.

        **Cancellation**: a checkpoint; cancel it like any wait.
        """
        await self._state_value.wait_value(_CLOSED)

    def force_open(self) -> None:
        """Reject every call (``retry_after == inf``) until :meth:`reset`."""
        self._transition(_FORCED_OPEN, "force_open", self._now())

    def disable(self) -> None:
        """Let every call pass and count nothing until :meth:`reset`."""
        self._transition(_DISABLED, "disable", self._now())

    def reset(self) -> None:
        """Back to CLOSED with an empty window and a new generation."""
        self._transition(_CLOSED, "reset", self._now())

    def statistics(self) -> CircuitBreakerStatistics:
        """Return a frozen snapshot of the breaker's state and counters."""
        try:
            now = _current_time()
        except RuntimeError:
            now = None
        state = self._state
        if state is _OPEN and now is not None and now >= self._open_until:
            state = _HALF_OPEN
        failures, calls = self._window_counts(now)
        in_flight = 0
        if self._state is _HALF_OPEN:
            in_flight = self._limiter.borrowed_tokens
        return CircuitBreakerStatistics(
            state=state,
            failures_in_window=failures,
            calls_in_window=calls,
            half_open_in_flight=in_flight,
            consecutive_successes=self._consecutive if self._state is _HALF_OPEN else 0,
            total_calls=self._total_calls,
            total_successes=self._total_successes,
            total_failures=self._total_failures,
            total_rejected=self._total_rejected,
            total_ignored=self._total_ignored,
            total_cancelled=self._total_cancelled,
            times_opened=self._times_opened,
            retry_after=0.0 if state is _HALF_OPEN else self.retry_after,
            generation=self._gen,
        )

    def __repr__(self) -> str:
        state = self.state
        if state is _HALF_OPEN and self._state is _HALF_OPEN:
            detail = (
                f"{self._consecutive}/{self.success_threshold} successes, "
                f"{self._limiter.borrowed_tokens}/{self.half_open_max_calls} probes"
            )
        elif self.failure_threshold is not None:
            try:
                failures = self._window_counts(_current_time())[0]
            except RuntimeError:
                failures = len(self._failures)
            detail = f"{failures}/{self.failure_threshold} failures"
        else:
            detail = f"{self._sum_failures}/{self._sum_calls} failed calls"
        return f"<CircuitBreaker {self.name!r} {state.value} {detail}>"

    # ------------------------------------------- wave-1 hooks (until redis.py moves)
    # trio_resilience.redis of wave 1 reached into these names; they now forward to the
    # sharing port. Remove them once redis.py uses ``breaker.sharing`` only.

    @property
    def _cluster(self) -> Any:
        return self.sharing.permit_source

    @_cluster.setter
    def _cluster(self, source: Any) -> None:
        port = self.sharing
        if source is None:
            port.set_permit_source(None)
            if port.owner is not None:
                port.detach(port.owner)
        else:
            port.attach(source)
            port.set_permit_source(source)

    @property
    def _observers(self) -> list[Any]:
        return _ObserverList(self)

    def _remote_open(self, until: float, now: float) -> None:
        self.sharing.open_until(until)

    def _remote_close(self, now: float) -> None:
        self.sharing.close_remote()

    # ----------------------------------------------------------------- the engine

    def _now(self) -> float:
        try:
            return _current_time()
        except RuntimeError:
            return 0.0

    def _rejection(self) -> CircuitOpenError:
        state = self.state
        retry_after = 0.0 if state is _HALF_OPEN else self.retry_after
        return CircuitOpenError(self.name, state, retry_after)

    def _admit(self) -> int | _Ticket | None:
        """Admit a call outside the closed fast path; None means rejected (and counted)."""
        state = self._state
        if state is _CLOSED:
            self._total_calls += 1
            return _Ticket(self._gen, None, _current_time())
        if state is _DISABLED:
            return -1
        if state is _OPEN:
            now = _current_time()
            if now < self._open_until:
                self._total_rejected += 1
                return None
            self._transition(_HALF_OPEN, "recovery_timeout", now)
        elif state is _FORCED_OPEN:
            self._total_rejected += 1
            return None
        limiter = self._limiter
        ticket = _Ticket(self._gen, limiter, 0.0)
        try:
            limiter.acquire_on_behalf_of_nowait(ticket)
        except trio.WouldBlock:
            self._total_rejected += 1
            return None
        self._total_calls += 1
        if self._timed:
            ticket.start = _current_time()
        return ticket

    async def _admit_or_reject(self) -> int | _Ticket:
        """Admit a call outside the closed fast path, or raise CircuitOpenError.

        A refusal is a checkpoint. A half-open probe also takes a cluster-wide permit
        when a sharing layer set a permit source (see :class:`BreakerSharing`).
        """
        ticket = self._admit()
        if ticket is None or (
            self._shared is not None
            and self._shared.permits is not None
            and ticket.__class__ is _Ticket
            and not await self._cluster_permit(ticket)
        ):
            error = self._rejection()
            await trio.lowlevel.checkpoint()
            raise error
        return ticket

    async def _cluster_permit(self, ticket: _Ticket) -> bool:
        """For a half-open probe, also take a cluster-wide permit; False means refused.

        On refusal (or cancellation) the local permit and the admission are undone. A
        permit source that raises, or answers anything but a lease, True, False or
        None, counts as no answer: the local limiter decides.
        """
        shared = self._shared
        if ticket.limiter is None or shared is None or shared.permits is None:
            return True
        source = shared.permits
        try:
            lease = await source.acquire(self)
        except Exception as exc:
            self._sharing_failed("acquire", exc)
            lease = None
        except BaseException:
            self._undo_admission(ticket)
            raise
        if lease is False:
            self._undo_admission(ticket)
            self._total_rejected += 1
            return False
        if isinstance(lease, str):
            ticket.lease = lease
            ticket.source = source
        return True

    def _undo_admission(self, ticket: _Ticket) -> None:
        assert ticket.limiter is not None
        ticket.limiter.release_on_behalf_of(ticket)
        self._total_calls -= 1

    def _release_lease(self, ticket: _Ticket) -> None:
        source, lease = ticket.source, ticket.lease
        ticket.lease = ticket.source = None
        if source is not None and lease is not None:
            try:
                source.release(self, lease)
            except Exception as exc:
                self._sharing_failed("release", exc)

    def _sharing_failed(self, what: str, exc: BaseException) -> None:
        self._logger.error(
            BREAKER_SHARING_FAILED,
            breaker=self.name,
            hook=what,
            error=_safe_repr(exc),
            exc_info=exc,
        )

    def _settle_success(self, ticket: int | _Ticket) -> None:
        if ticket.__class__ is int:  # closed fast path or disabled (-1)
            if ticket == -1:
                return
            self._total_successes += 1
            if ticket == self._gen:
                pending = self._pending
                if 0 < pending < _BATCH:
                    self._pending = pending + 1
                else:
                    self._count_success()
            return
        assert isinstance(ticket, _Ticket)
        limiter = ticket.limiter
        if limiter is not None:
            limiter.release_on_behalf_of(ticket)
            if ticket.lease is not None:
                self._release_lease(ticket)
        slow = self.slow_call_duration
        if slow is not None and _current_time() > ticket.start + slow:
            self._failed(ticket.gen)
            return
        self._total_successes += 1
        if ticket.gen != self._gen:
            return
        if limiter is None:
            self._record_closed(False)
            return
        self._consecutive += 1
        if self._consecutive >= self.success_threshold:
            self._transition(_CLOSED, "success_threshold", _current_time())

    def _settle_error(self, ticket: int | _Ticket, exc: BaseException) -> None:
        verdict = classify(exc, self._failure_matcher, self._ignore_matcher)
        if verdict == SUCCESS:
            self._settle_success(ticket)
            return
        if ticket.__class__ is int:
            if ticket == -1:
                return
            gen = ticket
        else:
            assert isinstance(ticket, _Ticket)
            gen = ticket.gen
            if ticket.limiter is not None:
                ticket.limiter.release_on_behalf_of(ticket)
                if ticket.lease is not None:
                    self._release_lease(ticket)
        if verdict == FAILURE:
            self._failed(gen)
        elif verdict == IGNORED:
            self._total_ignored += 1
        else:
            self._total_cancelled += 1

    def _failed(self, gen: int) -> None:
        self._total_failures += 1
        if gen != self._gen:
            return
        state = self._state
        if state is _CLOSED:
            self._record_closed(True)
        elif state is _HALF_OPEN:
            self._transition(_OPEN, "half_open_failure", _current_time())

    def _count_success(self) -> None:
        """Count a closed-state success: exactly for the rate rule, else in a batch."""
        if self.failure_rate_threshold is not None:
            self._record_closed(False)
            return
        if self._pending:
            self._flush()
        self._pending = 1
        self._pending_at = _current_time()

    def _flush(self) -> None:
        """Count the pending batch of successes in the bucket of its first success."""
        self._roll(self._pending_at)
        self._bucket_calls[self._bucket_index % _RATE_BUCKETS] += self._pending
        self._sum_calls += self._pending
        self._counted_calls += self._pending
        self._pending = 0

    def _record_closed(self, failed: bool) -> None:
        """Count one current-generation outcome in the closed state; maybe trip."""
        if self._pending:
            self._flush()
        now = _current_time()
        if now >= self._bucket_end or now < self._bucket_end - self._bucket_width:
            self._roll(now)  # checked inline too: this is the rate rule's per-call path
        slot = self._bucket_index % _RATE_BUCKETS
        self._bucket_calls[slot] += 1
        self._sum_calls += 1
        self._counted_calls += 1
        if failed:
            self._counted_failures += 1
            self._bucket_failures[slot] += 1
            self._sum_failures += 1
            threshold = self.failure_threshold
            if threshold is not None:
                window = self.failure_window
                failures = self._failures
                while failures and failures[0] + window <= now:
                    failures.popleft()
                failures.append(now)
                if len(failures) >= threshold:
                    self._transition(_OPEN, "failure_threshold", now)
                    return
        if self.failure_rate_threshold is not None and self._rate_trips(
            self._sum_failures, self._sum_calls
        ):
            self._transition(_OPEN, "failure_rate", now)

    def _rate_trips(self, failures: int, calls: int) -> bool:
        """The rate rule: ``failures / calls >= failure_rate_threshold``, compared exactly.

        The threshold is the decimal it was written as (``0.55`` is 11/20, not the
        float's binary value), compared in integers: 55 of 100 trips at 0.55.
        """
        return (
            self._rate_den != 0
            and calls >= self.minimum_calls
            and failures * self._rate_den >= self._rate_num * calls
        )

    def _roll(self, now: float) -> None:
        """Move the current bucket to the one holding ``now``, emptying those skipped."""
        if self._bucket_end - self._bucket_width <= now < self._bucket_end:
            return
        index = int(now // self._bucket_width)
        calls, failures = self._bucket_calls, self._bucket_failures
        old = self._bucket_index
        if index - old >= _RATE_BUCKETS or index < old:
            for i in range(_RATE_BUCKETS):
                calls[i] = 0
                failures[i] = 0
            self._sum_calls = 0
            self._sum_failures = 0
        else:
            for i in range(old + 1, index + 1):
                slot = i % _RATE_BUCKETS
                self._sum_calls -= calls[slot]
                self._sum_failures -= failures[slot]
                calls[slot] = 0
                failures[slot] = 0
        self._bucket_index = index
        self._bucket_end = (index + 1) * self._bucket_width

    def _window_counts(self, now: float | None) -> tuple[int, int]:
        """(failures_in_window, calls_in_window) at ``now`` in the closed state."""
        if self._state is not _CLOSED:
            return 0, 0
        if now is None:
            return len(self._failures), self._sum_calls + self._pending
        if self._pending:
            self._flush()
        self._roll(now)
        if self.failure_threshold is None:
            return self._sum_failures, self._sum_calls
        window = self.failure_window
        return sum(1 for t in self._failures if t + window > now), self._sum_calls

    def _clear_window(self) -> None:
        self._pending = 0
        self._failures.clear()
        for i in range(_RATE_BUCKETS):
            self._bucket_calls[i] = 0
            self._bucket_failures[i] = 0
        self._sum_calls = 0
        self._sum_failures = 0

    def _transition(
        self, new: CircuitState, reason: str, now: float, open_for: float | None = None
    ) -> None:
        """Enter ``new`` (or renew the same state): new generation, log, listener.

        ``open_for`` (entering OPEN only) replaces the recovery timeout of this period.
        """
        old = self._state
        failures_in_window = self._window_counts(now)[0] if old is _CLOSED else 0
        # Every call in flight now belongs to an older generation.
        self._gen += 1
        self._untracked_stale += self._untracked
        self._untracked = 0
        self._consecutive = 0
        retry_after = 0.0
        if new is _CLOSED:
            self._clear_window()
            self._recovery_delays = None
        elif new is _OPEN:
            if old is _HALF_OPEN and self._recovery_delays is not None:
                timeout = next(self._recovery_delays)
            elif isinstance(self.recovery_timeout, Backoff):
                self._recovery_delays = self.recovery_timeout.delays()
                timeout = next(self._recovery_delays)
            else:
                timeout = self.recovery_timeout
            if open_for is not None:
                timeout = open_for
            self._opened_at = now
            self._open_until = now + timeout
            self._times_opened += 1
            retry_after = timeout
        elif new is _HALF_OPEN:
            self._limiter = trio.CapacityLimiter(self.half_open_max_calls)
        elif new is _FORCED_OPEN:
            retry_after = math.inf
        self._state = new
        self._closed = new is _CLOSED
        self._fast = self._closed and not self._timed
        self._fast_with = self._fast and not self._untracked_stale
        if new is old:
            return  # e.g. reset() of a closed breaker: a new generation, nothing to announce
        self._state_value.value = new
        log = self._logger.warning if new is _OPEN or new is _FORCED_OPEN else self._logger.info
        log(
            BREAKER_STATE_CHANGED,
            breaker=self.name,
            old_state=old,
            new_state=new,
            reason=reason,
            failures_in_window=failures_in_window,
            retry_after=retry_after,
        )
        listener = self.on_state_change
        if listener is not None:
            try:
                listener(StateChange(self.name, old, new, reason, now))
            except Exception as exc:
                self._logger.error(
                    BREAKER_LISTENER_FAILED,
                    breaker=self.name,
                    error=repr(exc),
                    exc_info=exc,
                )
        shared = self._shared
        if shared is not None and shared.listeners:
            change = StateChange(self.name, old, new, reason, now)
            for fn in tuple(shared.listeners):
                try:
                    fn(change)
                except Exception as exc:
                    self._sharing_failed("listener", exc)


class PermitSource(Protocol):
    """Where half-open probes take a cluster-wide permit (set by a sharing layer).

    ``acquire`` answers a lease id (``str``: the permit is held until ``release`` is
    called with it), ``True`` (a permit with nothing to give back), ``False`` (the
    cluster's probes are all busy: the call is refused with ``retry_after == 0.0``)
    or ``None`` (no answer in time: the local limiter alone decides). It should bound
    its own wait (``trio.move_on_after``); an exception it raises counts as ``None``.
    ``release`` must not block; an exception it raises is logged and dropped.
    """

    async def acquire(self, breaker: CircuitBreaker, /) -> str | bool | None: ...

    def release(self, breaker: CircuitBreaker, lease: str, /) -> None: ...


class _ObserverList(list[Any]):
    """Wave-1 observers ``fn(breaker, old, new, reason)`` as port listeners."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        super().__init__()
        self._breaker = breaker
        shared = breaker._shared
        for fn in shared.listeners if shared is not None else ():
            observer = getattr(fn, "observer", None)
            if observer is not None:
                super().append(observer)

    def append(self, observer: Any) -> None:
        breaker = self._breaker

        def listener(change: StateChange) -> None:
            observer(breaker, change.old_state, change.new_state, change.reason)

        listener.observer = observer  # type: ignore[attr-defined]
        breaker.sharing.add_listener(listener)
        super().append(observer)

    def remove(self, observer: Any) -> None:
        shared = self._breaker._shared
        for fn in list(shared.listeners if shared is not None else ()):
            if getattr(fn, "observer", None) is observer:
                shared.listeners.remove(fn)  # type: ignore[union-attr]
        super().remove(observer)


class _Hooks:
    """What a sharing layer attached to one breaker."""

    __slots__ = ("listeners", "owner", "permits")

    def __init__(self) -> None:
        self.owner: object = None
        self.listeners: list[Callable[[StateChange], None]] = []
        self.permits: PermitSource | None = None


def _safe_repr(value: object) -> str:
    """``repr(value)``, or a placeholder when its ``__repr__`` raises."""
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} object (repr failed)>"


def _longest_open_period(recovery_timeout: float | Backoff) -> float:
    """The longest one open period can last: the timeout, or the Backoff's cap."""
    if not isinstance(recovery_timeout, Backoff):
        return recovery_timeout
    cap = getattr(recovery_timeout, "max_delay", None)
    if isinstance(cap, int | float) and not isinstance(cap, bool) and cap >= 0:
        return float(cap)
    delay = getattr(recovery_timeout, "delay", None)
    jitter = getattr(recovery_timeout, "jitter_factor", 0.0)
    if isinstance(delay, int | float) and isinstance(jitter, int | float):
        return float(delay) * (1.0 + float(jitter))
    return math.inf  # a user's own Backoff: no known bound


class BreakerSharing:
    """The sharing port of one :class:`CircuitBreaker`: ``breaker.sharing``.

    A documented door for layers that share a breaker's decisions across processes
    (``trio_resilience.redis``): they read the configuration they validate foreign
    data against, listen to transitions, apply remote trips and closes, read the
    counts to publish, ask the breaker's own trip rule about the cluster's counts,
    and gate half-open probes with cluster-wide permits. Every method is sync, O(1)
    and takes Trio times (``trio.current_time()``); none of them awaits. Deadlines in
    the past or not finite, and calls that make no sense in the current state, change
    nothing and return ``False``; they never raise for bad data.

    The port is a view: ``breaker.sharing`` makes a new one each time, all acting on
    the same breaker. See the "Sharing port" section of ``docs/breaker.md``.
    """

    __slots__ = ("breaker",)

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    # ------------------------------------------------------------ configuration

    @property
    def failure_window(self) -> float:
        """Seconds a failure counts for: the span of counts a sharer may add."""
        return self.breaker.failure_window

    @property
    def failure_threshold(self) -> int | None:
        """Failures within the window that trip it (None: only the rate rule)."""
        return self.breaker.failure_threshold

    @property
    def failure_rate_threshold(self) -> float | None:
        """The failure rate that trips it (None: no rate rule)."""
        return self.breaker.failure_rate_threshold

    @property
    def minimum_calls(self) -> int:
        """Calls needed in the window before the rate rule applies."""
        return self.breaker.minimum_calls

    @property
    def half_open_max_calls(self) -> int:
        """Probes this breaker admits at once."""
        return self.breaker.half_open_max_calls

    @property
    def longest_open_period(self) -> float:
        """The longest one open period of this breaker can last, in seconds.

        ``recovery_timeout`` itself, or a Backoff's ``max_delay`` (a
        ``ConstantBackoff``'s ``delay * (1 + jitter_factor)``; ``inf`` for a Backoff
        of unknown bound). :meth:`open_until` never opens it for longer.
        """
        return _longest_open_period(self.breaker.recovery_timeout)

    # ------------------------------------------------------------ state

    @property
    def state(self) -> CircuitState:
        """The applied state (an open breaker past its recovery time reads OPEN here
        until the move to half-open is applied; :attr:`CircuitBreaker.state` reads the
        effective state)."""
        return self.breaker._state

    @property
    def open_deadline(self) -> float | None:
        """Trio time at which the current open period ends, or None unless OPEN."""
        breaker = self.breaker
        return breaker._open_until if breaker._state is _OPEN else None

    def counted(self) -> tuple[int, int]:
        """``(failures, calls)`` this breaker has counted in its window, ever.

        Monotonic totals of the outcomes that entered the closed-state window (stale
        results, half-open probes, ignored and cancelled calls never do). A sharing
        layer publishes the difference between two readings.
        """
        breaker = self.breaker
        if breaker._pending and breaker._state is _CLOSED:
            with contextlib.suppress(RuntimeError):  # outside trio.run: nothing to roll
                breaker._flush()
        return breaker._counted_failures, breaker._counted_calls + breaker._pending

    def would_trip(self, failures: int, calls: int) -> bool:
        """Whether this breaker's own trip rule opens on these counts over its window.

        The count rule (``failures >= failure_threshold``) or the rate rule (at least
        ``minimum_calls`` calls and ``failures / calls >= failure_rate_threshold``,
        compared exactly). Counts that are not non-negative ints, or more failures
        than calls in a rate rule, answer False.
        """
        breaker = self.breaker
        if not (
            isinstance(failures, int)
            and isinstance(calls, int)
            and not isinstance(failures, bool)
            and not isinstance(calls, bool)
            and failures >= 0
            and calls >= 0
        ):
            return False
        threshold = breaker.failure_threshold
        if threshold is not None and failures >= threshold:
            return True
        return failures <= calls and breaker._rate_trips(failures, calls)

    # ------------------------------------------------------------ transitions

    def open_until(self, deadline: float, reason: str = REMOTE_TRIP) -> bool:
        """Open the breaker until ``deadline`` (Trio time): another process tripped it.

        A CLOSED or HALF_OPEN breaker opens (a transition with ``reason``: new
        generation, log, ``on_state_change``, listeners; ``times_opened`` counts it,
        ``CircuitOpenError.last_failure`` is None); an OPEN one only ever extends its
        deadline. The deadline is capped at ``now + longest_open_period``. FORCED_OPEN
        and DISABLED are left alone. Returns whether anything changed.
        """
        breaker = self.breaker
        if not (
            isinstance(deadline, int | float) and not isinstance(deadline, bool)
        ) or not math.isfinite(deadline):
            return False
        try:
            now = _current_time()
        except RuntimeError:
            return False
        until = min(float(deadline), now + self.longest_open_period)
        if until <= now:
            return False
        state = breaker._state
        if state is _CLOSED or state is _HALF_OPEN:
            breaker._transition(_OPEN, reason, now, open_for=until - now)
            return True
        if state is _OPEN and until > breaker._open_until:
            breaker._open_until = until
            return True
        return False

    def trip(self, reason: str = SHARED_FAILURES) -> bool:
        """Open a CLOSED breaker for its own recovery timeout, as a local trip would.

        For trips decided by the sharing layer (the cluster's counts passed
        :meth:`would_trip`, a quorum of remote trips). Returns whether it opened.
        """
        breaker = self.breaker
        if breaker._state is not _CLOSED:
            return False
        try:
            now = _current_time()
        except RuntimeError:
            return False
        breaker._transition(_OPEN, reason, now)
        return True

    def close_remote(self, reason: str = REMOTE_CLOSE) -> bool:
        """Close an OPEN or HALF_OPEN breaker: another process's probes closed it.

        The window starts empty, as on a local close. FORCED_OPEN, DISABLED and CLOSED
        are left alone. Returns whether it closed.
        """
        breaker = self.breaker
        if breaker._state is not _OPEN and breaker._state is not _HALF_OPEN:
            return False
        breaker._transition(_CLOSED, reason, breaker._now())
        return True

    # ------------------------------------------------------------ hooks

    def _hooks(self) -> _Hooks:
        breaker = self.breaker
        if breaker._shared is None:
            breaker._shared = _Hooks()
        return breaker._shared

    @property
    def owner(self) -> object:
        """The sharing layer attached to this breaker, or None."""
        shared = self.breaker._shared
        return None if shared is None else shared.owner

    def attach(self, owner: object) -> None:
        """Claim the breaker for ``owner`` (one sharing layer at a time).

        Raises:
            RuntimeError: another owner holds it.
        """
        hooks = self._hooks()
        if hooks.owner is not None and hooks.owner is not owner:
            raise RuntimeError(
                f"breaker {self.breaker.name!r} is already shared; share it once "
                "(detach it from the other sharing layer first)"
            )
        hooks.owner = owner

    def detach(self, owner: object) -> None:
        """Release ``owner``'s claim and drop every listener and the permit source.

        Probes holding a lease still give it back to the source that granted it.
        Does nothing when ``owner`` is not the current owner.
        """
        shared = self.breaker._shared
        if shared is not None and shared.owner is owner:
            self.breaker._shared = None

    def add_listener(self, fn: Callable[[StateChange], None]) -> None:
        """Call ``fn(change)`` after every transition (local or applied by the port).

        Called after ``on_state_change``, synchronously, in the task that caused the
        transition; it must not block. An exception it raises is logged
        (``trio_resilience.breaker.sharing_failed``) and never reaches a caller.
        Reasons tell local transitions from the port's (the ``reason`` passed to
        :meth:`open_until`, :meth:`trip`, :meth:`close_remote`).
        """
        if not callable(fn) or inspect.iscoroutinefunction(fn):
            raise TypeError(f"listener must be a sync callable, got {fn!r}")
        self._hooks().listeners.append(fn)

    def remove_listener(self, fn: Callable[[StateChange], None]) -> None:
        """Stop calling ``fn``; nothing happens if it was not a listener."""
        shared = self.breaker._shared
        if shared is not None and fn in shared.listeners:
            shared.listeners.remove(fn)

    @property
    def permit_source(self) -> PermitSource | None:
        """The cluster-wide permit source of half-open probes, or None."""
        shared = self.breaker._shared
        return None if shared is None else shared.permits

    def set_permit_source(self, source: PermitSource | None) -> None:
        """Make half-open probes also take a permit from ``source`` (None: local only).

        A probe first takes a local permit (``half_open_max_calls``), then awaits
        ``source.acquire(breaker)``; a lease it got is released with
        ``source.release(breaker, lease)`` when the probe ends, on every path.
        """
        if source is not None and not (
            callable(getattr(source, "acquire", None))
            and callable(getattr(source, "release", None))
        ):
            raise TypeError(
                f"source must have acquire(breaker) and release(breaker, lease), got {source!r}"
            )
        self._hooks().permits = source

    def __repr__(self) -> str:
        return f"<BreakerSharing of {self.breaker!r}>"


class BreakerRegistry:
    """One breaker per name, created on first use with shared defaults.

    Args:
        **defaults: keyword arguments of :class:`CircuitBreaker` for every breaker.
    """

    def __init__(self, **defaults: Any) -> None:
        if "name" in defaults:
            raise TypeError("BreakerRegistry defaults cannot include name")
        CircuitBreaker("registry-defaults", **defaults)  # validate now, not on first use
        self.defaults = dict(defaults)
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str, **overrides: Any) -> CircuitBreaker:
        """Return the breaker called ``name``, creating it (with ``overrides``) if new."""
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(name, **{**self.defaults, **overrides})
            self._breakers[name] = breaker
        return breaker

    def statistics(self) -> dict[str, CircuitBreakerStatistics]:
        """Return ``{name: statistics}`` for every breaker made so far."""
        return {name: b.statistics() for name, b in self._breakers.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def __repr__(self) -> str:
        return f"<BreakerRegistry {len(self._breakers)} breakers>"
