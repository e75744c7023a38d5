"""CircuitBreaker: closed, open and half-open states on Trio's clock, one engine for all uses."""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from fractions import Fraction
from types import TracebackType
from typing import Any, NoReturn, ParamSpec, Protocol, TypeVar

import trio
from trio_util import AsyncValue

from . import _live
from ._backoff import Backoff
from ._classify import (
    CANCELLED,
    FAILURE,
    IGNORED,
    SUCCESS,
    ExceptionSpec,
    Matcher,
    classify,
    leaves,
)
from ._decorate import decorate
from ._exceptions import CircuitOpenError
from ._log import BREAKER_LISTENER_FAILED, BREAKER_STATE_CHANGED, get_logger, log_safely, safe_repr
from ._ring import TimeRing
from ._runs import run_token
from ._state import (
    BREAKER_CLASSIFY_FAILED,
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
    check_optional_int,
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

_current_clock = trio.lowlevel.current_clock
_current_time = trio.current_time
_getframe = sys._getframe
_RATE_BUCKETS = 10
# A closed breaker without a rate rule, slow-call check or result check reads the clock
# once per batch of up to _BATCH successes, stamping the batch with its first success.
_BATCH = 32
_STALE = -2  # the generation of an untracked call admitted before the last transition
_DISABLED_TICKET = -1
#: The shortest failure window: its tenth must still be a usable bucket width.
MIN_WINDOW = 0.001
_DEFAULT_LOGGER = get_logger()

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


# ---------------------------------------------------------------------- validation


def _number(name: str, value: object, **bounds: Any) -> float:
    """check_number, but an int too large for a float is a ValueError, not OverflowError."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**1023:
        raise ValueError(
            f"{name} must be a finite number of seconds, got an int of {value.bit_length()} bits"
        )
    return check_number(name, value, **bounds)


def _optional_number(name: str, value: object, **bounds: Any) -> float | None:
    return None if value is None else _number(name, value, **bounds)


def _is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    )


def _check_spec(name: str, spec: object) -> object:
    """An exception spec: a BaseException type, a tuple of them, or a sync predicate."""
    if isinstance(spec, type) and not issubclass(spec, BaseException):
        raise TypeError(
            f"{name} must be an exception type, a tuple of exception types or a "
            f"predicate, got the class {spec.__name__}"
        )
    if not isinstance(spec, type | tuple) and callable(spec) and _is_async(spec):
        raise TypeError(f"{name} must be a sync predicate, got the async function {spec!r}")
    return spec


def _check_sync_callable(name: str, fn: object) -> Any:
    if fn is None:
        return None
    if not callable(fn):
        raise TypeError(f"{name} must be callable or None, got {fn!r}")
    if _is_async(fn):
        raise TypeError(f"{name} must be a sync callable, got the async function {fn!r}")
    return fn


def _is_cancellation(exc: BaseException) -> bool:
    """Whether a never-counted ``exc`` is a cancellation (``total_cancelled``).

    Only for an exception :func:`classify` found never counted: ``trio.Cancelled``, or
    a group with a ``trio.Cancelled`` leaf, is a cancellation; ``KeyboardInterrupt``,
    ``SystemExit`` and ``GeneratorExit`` (alone or in a group) count as ignored.
    """
    if isinstance(exc, trio.Cancelled):
        return True
    return isinstance(exc, BaseExceptionGroup) and any(
        isinstance(leaf, trio.Cancelled) for leaf in leaves(exc)
    )


def _json_seconds(value: float) -> float | None:
    """A duration for a log value: None instead of inf or NaN (JSON has neither)."""
    return value if math.isfinite(value) else None


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


class CircuitBreaker:
    """Stop calling a failing dependency; let a few probes find out when it is back.

    Use it as ``async with breaker:``, ``await breaker.call(fn, *args)`` or ``@breaker``
    on an async function: all three share one engine. See ``docs/breaker.md``.

    Args:
        name: a label for logs, errors, metrics and the registry.
        failure_threshold: failures within ``failure_window`` that open the breaker
            (``None``: only the rate rule trips it).
        failure_window: seconds a failure counts for (a true sliding window; >= 0.001).
        failure_rate_threshold: also open when the failure rate over the window
            (time buckets, approximate to a tenth of it) is at least this, once
            ``minimum_calls`` calls were seen. Compared exactly, as the decimal written.
        minimum_calls: calls needed in the window before the rate rule applies.
        slow_call_duration: a success slower than this (strictly, > 0) is a failure.
        recovery_timeout: seconds open before probes are admitted, or a
            :class:`Backoff` whose delays grow on consecutive re-trips.
        success_threshold: consecutive successful probes that close it.
        half_open_max_calls: probes admitted at once (a ``trio.CapacityLimiter``).
        failure_on: exception spec of failures (type, tuple or sync predicate).
        ignore_on: exception spec of outcomes counted as nothing (wins over failure).
        failure_if_result: a returned value for which it is true counts as a failure
            (the caller still gets the value).
        half_open_max_duration: a half-open period that has not closed within this many
            seconds re-opens (reason ``half_open_timeout``); its probes become stale.
        on_state_change: called with a :class:`StateChange` on every transition.
        logger: a structlog-like logger; default ``structlog.get_logger("trio_resilience")``.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument has a wrong value; the message names it.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_consecutive",
        "_counted_calls",
        "_counted_failures",
        "_entries",
        "_failure_matcher",
        "_fast",
        "_fast_with",
        "_fhead",
        "_ftimes",
        "_gen",
        "_half_open_until",
        "_ignore_matcher",
        "_last_failure",
        "_last_failure_at",
        "_limiter",
        "_logger",
        "_lot",
        "_open_period",
        "_open_until",
        "_pending",
        "_pending_at",
        "_plain_probe",
        "_rate_den",
        "_rate_num",
        "_recovery_delays",
        "_ring",
        "_ring_hi",
        "_ring_lo",
        "_ring_offset",
        "_run",
        "_shared",
        "_state",
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
        "_value",
        "failure_if_result",
        "failure_on",
        "failure_rate_threshold",
        "failure_threshold",
        "failure_window",
        "half_open_max_calls",
        "half_open_max_duration",
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
        failure_if_result: Callable[[Any], bool] | None = None,
        half_open_max_duration: float | None = None,
        on_state_change: Callable[[StateChange], None] | None = None,
        logger: Any = None,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {safe_repr(name)}")
        if not name:
            raise ValueError("name must not be empty, got ''")
        self.name = name
        self.failure_threshold = check_optional_int(
            "failure_threshold", failure_threshold, minimum=1, maximum=MAX_SIZE
        )
        self.failure_window = _number("failure_window", failure_window, ge=MIN_WINDOW)
        self.failure_rate_threshold = _optional_number(
            "failure_rate_threshold", failure_rate_threshold, gt=0, le=1
        )
        self.minimum_calls = check_int("minimum_calls", minimum_calls, minimum=1)
        self._rate_num, self._rate_den = 0, 0
        if self.failure_rate_threshold is not None:
            exact = Fraction(str(self.failure_rate_threshold))
            self._rate_num, self._rate_den = exact.numerator, exact.denominator
        self.slow_call_duration = _optional_number("slow_call_duration", slow_call_duration, gt=0)
        if isinstance(recovery_timeout, Backoff):
            self.recovery_timeout: float | Backoff = recovery_timeout
        elif isinstance(recovery_timeout, int | float) and not isinstance(recovery_timeout, bool):
            self.recovery_timeout = _number("recovery_timeout", recovery_timeout, ge=0)
        else:
            got = safe_repr(recovery_timeout)
            raise TypeError(f"recovery_timeout must be a number or a Backoff, got {got}")
        self.success_threshold = check_int("success_threshold", success_threshold, minimum=1)
        self.half_open_max_calls = check_int("half_open_max_calls", half_open_max_calls, minimum=1)
        self.half_open_max_duration = _optional_number(
            "half_open_max_duration", half_open_max_duration, gt=0
        )
        self.failure_on = _check_spec("failure_on", failure_on)
        self.ignore_on = _check_spec("ignore_on", ignore_on)
        self._failure_matcher = Matcher("failure_on", failure_on)
        self._ignore_matcher = Matcher("ignore_on", ignore_on)
        self.failure_if_result = _check_sync_callable("failure_if_result", failure_if_result)
        self.on_state_change = _check_sync_callable("on_state_change", on_state_change)
        self.logger = check_logger(logger)
        self._logger = _DEFAULT_LOGGER if logger is None else logger

        self._state = _CLOSED
        self._gen = 0
        self._timed = self.slow_call_duration is not None or self.failure_if_result is not None
        self._fast = not self._timed
        self._fast_with = self._fast
        # Probes need neither a clock nor a ticket: no slow-call or result check, no
        # half-open timeout, no cluster permits (set again by the sharing port).
        self._plain_probe = not self._timed and self.half_open_max_duration is None
        # Created on first use: the half-open limiter, the AsyncValue of state_value and
        # the parking lot of wait_ready()/serve(); the sharing port's hooks.
        self._limiter: trio.CapacityLimiter | None = None
        self._value: AsyncValue[CircuitState] | None = None
        self._lot: trio.lowlevel.ParkingLot | None = None
        self._shared: _Hooks | None = None
        # async with: calls in flight on the closed fast path are only counted; others
        # are recorded under the frame that entered (see __aenter__).
        self._entries: dict[Any, Any] = {}
        self._untracked = 0
        self._untracked_stale = 0
        # The run whose clock the stored times belong to (see _read).
        self._clock: object = None
        self._run: object = None
        # The closed-state window: failure times for the count rule (oldest at _fhead),
        # and calls and failures in ten time buckets for the rate rule and statistics.
        self._ftimes: list[float] = []
        self._fhead = 0
        self._ring = TimeRing(self.failure_window, _RATE_BUCKETS, 2)
        # The span and offset of the bucket the rate rule counted in last (see
        # _count_success): a success in the same bucket skips the ring's advance.
        self._ring_lo = self._ring_hi = -math.inf
        self._ring_offset = 0
        self._pending = 0
        self._pending_at = 0.0
        self._counted_calls = 0
        self._counted_failures = 0
        self._open_until = 0.0
        self._open_period = 0.0
        self._half_open_until = math.inf
        self._recovery_delays: Iterator[float] | None = None
        # The exception that opened the breaker; while closed, with a rate rule, slow
        # calls or a result check, the last failure's exception and its time (a trip on a
        # success or on a failure without an exception reports it).
        self._last_failure: BaseException | None = None
        self._last_failure_at = -math.inf
        self._consecutive = 0
        self._total_calls = 0
        self._total_successes = 0
        self._total_failures = 0
        self._total_rejected = 0
        self._total_ignored = 0
        self._total_cancelled = 0
        self._times_opened = 0
        _live.register("breaker", self)

    # ----------------------------------------------------------------- public API

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` through the breaker and return its result.

        Raises:
            CircuitOpenError: the breaker refused the call; ``fn`` was not called.

        **Cancellation**: an admitted call adds no checkpoint of its own; ``fn``'s
        checkpoints decide. A refusal checks for cancellation first (a cancelled caller
        gets ``trio.Cancelled``, not a refusal). Cancellation of ``fn`` counts as
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
                elif self._rate_den and self._ring_lo <= _current_time() < self._ring_hi:
                    # The rate rule, a success in the bucket of the last count.
                    ring = self._ring
                    ring.add(self._ring_offset, 0, 1)
                    self._counted_calls += 1
                    totals = ring.totals
                    calls = totals[0]
                    if (
                        calls >= self.minimum_calls
                        and totals[1] * self._rate_den >= self._rate_num * calls
                    ):
                        self._rate_trip_on_success()
                else:
                    self._count_success()
            return result
        if self._state is _HALF_OPEN and self._plain_probe:
            # The half-open probe's short path: no clock, no ticket object.
            gen = self._gen
            limiter = self._limiter
            if limiter is None:
                limiter = self.half_open_limiter
            borrower = object()
            try:
                limiter.acquire_on_behalf_of_nowait(borrower)
            except trio.WouldBlock:
                await self._reject()
            self._total_calls += 1
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                self._probe_ended(limiter, borrower, gen, exc)
                raise
            limiter.release_on_behalf_of(borrower)
            if self._lot:
                self._lot.unpark_all()
            self._total_successes += 1
            if gen == self._gen:
                self._consecutive += 1
                if self._consecutive >= self.success_threshold:
                    self._transition(_CLOSED, "success_threshold", self._read())
            return result
        ticket = self._admit()
        if ticket is None:
            await self._reject()
        if self._shared is not None and ticket.__class__ is _Ticket:
            await self._cluster_permit(ticket)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._settle_error(ticket, exc)
            raise
        self._settle_success(ticket, result)
        return result

    async def __aenter__(self) -> CircuitBreaker:
        # Closed fast path: no record, only a count of the calls in flight. A transition
        # moves that count to _untracked_stale; while stale entries are in flight, new
        # entries are recorded so that exits can tell them apart. Records are keyed by
        # the frame that runs the ``async with``: the same frame exits it, even when an
        # async generator is finalized in another task.
        if self._fast_with and not self._entries:
            self._total_calls += 1
            self._untracked += 1
            return self
        frame = _getframe(1)
        if self._fast:
            self._total_calls += 1
            ticket: Any = self._gen
        else:
            ticket = self._admit()
            if ticket is None:
                await self._reject()
            if self._shared is not None and ticket.__class__ is _Ticket:
                await self._cluster_permit(ticket)
        entries = self._entries
        outer = entries.get(frame)
        if outer is not None:  # the same breaker entered again in the same frame
            ticket = [*outer, ticket] if outer.__class__ is list else [outer, ticket]
        entries[frame] = ticket
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entries = self._entries
        if entries:
            frame = _getframe(1)
            ticket = entries.pop(frame, None)
            if ticket is not None:
                if ticket.__class__ is list:
                    entries[frame] = ticket[:-1] if len(ticket) > 2 else ticket[0]
                    ticket = ticket[-1]
                self._settle(ticket, exc)
                return
        if self._untracked_stale:
            self._untracked_stale -= 1
            if not self._untracked_stale:
                self._fast_with = self._fast
            self._settle(_STALE, exc)
            return
        if self._untracked:
            self._untracked -= 1
            if exc is None:
                self._total_successes += 1
                pending = self._pending
                if 0 < pending < _BATCH:
                    self._pending = pending + 1
                else:
                    self._count_success()
                return
            self._settle_error(self._gen, exc)
            return
        if entries:
            # Entered through a helper whose frame differs from the exit's (an
            # AsyncExitStack): settle the oldest record, so that no permit is kept.
            frame = next(iter(entries))
            ticket = entries.pop(frame)
            if ticket.__class__ is list:
                entries[frame] = ticket[1:] if len(ticket) > 2 else ticket[1]
                ticket = ticket[0]
            self._settle(ticket, exc)
            return
        raise RuntimeError("breaker exited more often than it was entered")

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate an async function so that every call goes through the breaker."""
        return decorate("CircuitBreaker", self.call, fn)

    @property
    def state(self) -> CircuitState:
        """The effective state: an open breaker past its recovery timeout reads HALF_OPEN."""
        state = self._state
        if state is _OPEN:
            try:
                if self._read() >= self._open_until:
                    return _HALF_OPEN
            except RuntimeError:
                pass
        return state

    @property
    def state_value(self) -> AsyncValue[CircuitState]:
        """A ``trio_util.AsyncValue`` of the applied state, to await transitions.

        Time-driven moves (open to half-open, the half-open timeout) are applied on
        time while :meth:`serve` runs; without it, by the next call or
        :meth:`wait_ready`, so this value reads OPEN until then.
        """
        if self._value is None:
            self._value = AsyncValue(self._state)
        return self._value

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
        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(self.half_open_max_calls)
        return self._limiter

    @property
    def retry_after(self) -> float:
        """Seconds until a probe can be admitted (see :class:`CircuitOpenError`)."""
        state = self._state
        if state is _FORCED_OPEN:
            return math.inf
        if state is _OPEN:
            try:
                return max(0.0, self._open_until - self._read())
            except RuntimeError:
                return self._open_period
        return 0.0

    async def wait_ready(self) -> None:
        """Return as soon as a call made now would be admitted.

        That is: closed, disabled, open past its recovery time, or half-open with a
        free probe permit. Without a running :meth:`serve`, it sleeps until the
        recovery time itself and applies the due move, so tasks that all wait on it
        and then call never deadlock. A call may still be refused when another task
        took the last permit first: wait again.

        **Cancellation**: a checkpoint, also when the breaker is ready at once.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            now = self._read()
            self._apply_due(now)
            state = self._state
            if state is _CLOSED or state is _DISABLED:
                break
            if state is _HALF_OPEN:
                limiter = self._limiter
                if limiter is None or limiter.borrowed_tokens < limiter.total_tokens:
                    break
                deadline = self._half_open_until
            elif state is _OPEN:
                deadline = self._open_until
            else:
                deadline = math.inf  # forced open: until reset() or disable()
            await self._park_until(deadline)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_closed(self) -> None:
        """Return once the breaker's state is CLOSED.

        It needs calls to close a half-open breaker; it applies the move to half-open
        at the recovery time itself, as :meth:`wait_ready` does.

        **Cancellation**: a checkpoint; cancel it like any wait.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            now = self._read()
            self._apply_due(now)
            if self._state is _CLOSED:
                break
            await self._park_until(self._next_due())
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def serve(self) -> NoReturn:
        """The breaker's duty: apply its time-driven transitions on time.

        Open to half-open at the recovery time and the half-open timeout
        (``half_open_max_duration``), each logged, in ``state_value``, passed to
        ``on_state_change`` and waking :meth:`wait_ready`, with no call needed. Run it
        in a nursery (``open_guarded_nursery`` starts it) or with
        ``nursery.start_soon(breaker.serve)``. It costs nothing on the call path; the
        breaker works without it, lazily. Several may run at once.

        **Cancellation**: it runs until cancelled; cancel its nursery to stop it.
        """
        while True:
            now = self._read()
            self._apply_due(now)
            await self._park_until(self._next_due())

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
            now: float | None = self._read()
        except RuntimeError:
            now = None
        state = self._state
        if state is _OPEN and now is not None and now >= self._open_until:
            state = _HALF_OPEN
        failures, calls = self._window_counts(now)
        in_flight = 0
        if self._state is _HALF_OPEN and self._limiter is not None:
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
            probes = 0 if self._limiter is None else self._limiter.borrowed_tokens
            detail = (
                f"{self._consecutive}/{self.success_threshold} successes, "
                f"{probes}/{self.half_open_max_calls} probes"
            )
        else:
            try:
                now: float | None = self._read()
            except RuntimeError:
                now = None
            failures, calls = self._window_counts(now)
            if self.failure_threshold is not None:
                detail = f"{failures}/{self.failure_threshold} failures"
            else:
                detail = f"{failures}/{calls} failed calls"
        return f"<CircuitBreaker {self.name!r} {state.value} {detail}>"

    # ----------------------------------------------------------------- time and runs

    def _read(self) -> float:
        """Trio's time now; on first use in a new ``trio.run``, forget the old times.

        A different clock object means a different run (pytest-trio and ``trio.run``
        make one per run), so only then is the run token compared.
        """
        clock = _current_clock()
        if clock is not self._clock:
            self._check_run(clock)
        return clock.current_time()

    def _read_checked(self) -> float:
        """Like :meth:`_read`, comparing the run token too (a clock reused across runs)."""
        clock = _current_clock()
        if clock is not self._clock or run_token() is not self._run:
            self._check_run(clock)
        return clock.current_time()

    def _check_run(self, clock: Any) -> None:
        token = run_token()
        self._clock = clock
        if token is self._run:
            return
        first = self._run is None
        self._run = token
        if first:
            return
        # A new run: none of the stored times mean anything any more. (Counts of calls
        # in flight stay: this run may already have entries whose exits will come.)
        now = clock.current_time()
        self._clear_window()
        state = self._state
        if state is _OPEN:
            self._open_until = now + self._open_period
        elif state is _HALF_OPEN:
            self._start_half_open(now)  # (no probe of the old run can be in flight)

    def _now(self) -> float:
        try:
            return self._read()
        except RuntimeError:
            return 0.0

    def _next_due(self) -> float:
        """When the next time-driven transition is due (inf: none)."""
        state = self._state
        if state is _OPEN:
            return self._open_until
        if state is _HALF_OPEN:
            return self._half_open_until
        return math.inf

    def _apply_due(self, now: float) -> None:
        """Apply the time-driven transitions due at ``now``."""
        state = self._state
        if state is _OPEN and now >= self._open_until:
            self._transition(_HALF_OPEN, "recovery_timeout", now)
        elif state is _HALF_OPEN and now >= self._half_open_until:
            self._transition(_OPEN, "half_open_timeout", now, failure=self._last_failure)

    async def _park_until(self, deadline: float) -> None:
        """Sleep until ``deadline`` or until the breaker's state or permits change."""
        lot = self._lot
        if lot is None:
            lot = self._lot = trio.lowlevel.ParkingLot()
        with trio.move_on_at(deadline):
            await lot.park()

    def _wake(self) -> None:
        lot = self._lot
        if lot:
            lot.unpark_all()

    def _start_half_open(self, now: float) -> None:
        duration = self.half_open_max_duration
        self._half_open_until = math.inf if duration is None else now + duration

    # ----------------------------------------------------------------- the engine

    def _rejection(self) -> CircuitOpenError:
        state = self._state
        if state is _FORCED_OPEN:
            return CircuitOpenError(self.name, state, math.inf, None)
        if state is _HALF_OPEN:
            return CircuitOpenError(self.name, state, 0.0, self._last_failure)
        return CircuitOpenError(
            self.name, state, max(0.0, self._open_until - self._read()), self._last_failure
        )

    async def _reject(self) -> NoReturn:
        """Refuse the call: a cancelled caller gets Cancelled, others CircuitOpenError.

        A refusal raises after checking for cancellation, as Trio's channels do, and
        every 64th refusal also yields to the scheduler: a loop that retries refusals
        at once still lets other tasks and deadlines run, at 1/64 of the cost.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._total_rejected += 1
        if not self._total_rejected & 63:
            await trio.lowlevel.cancel_shielded_checkpoint()
        raise self._rejection()

    def _admit(self) -> int | _Ticket | None:
        """Admit a call outside the closed fast path; None means refused (not counted)."""
        state = self._state
        if state is _CLOSED:
            self._total_calls += 1
            return _Ticket(self._gen, None, self._read())
        if state is _DISABLED:
            return _DISABLED_TICKET
        if state is _FORCED_OPEN:
            return None
        if state is _OPEN:
            now = self._read()
            if now < self._open_until:
                return None
            self._transition(_HALF_OPEN, "recovery_timeout", now)
        elif self._timed or self._half_open_until != math.inf:
            now = self._read_checked()
            if now >= self._half_open_until:
                self._transition(_OPEN, "half_open_timeout", now, failure=self._last_failure)
                return None
        else:
            now = 0.0
        limiter = self._limiter
        if limiter is None:
            limiter = self._limiter = trio.CapacityLimiter(self.half_open_max_calls)
        ticket = _Ticket(self._gen, limiter, now)
        try:
            limiter.acquire_on_behalf_of_nowait(ticket)
        except trio.WouldBlock:
            return None
        self._total_calls += 1
        return ticket

    async def _cluster_permit(self, ticket: _Ticket) -> None:
        """For a half-open probe, also take a cluster-wide permit, or refuse the call.

        On refusal (or cancellation) the local permit and the admission are undone. A
        permit source that raises, or answers anything but a lease, True, False or
        None, counts as no answer: the local limiter decides.
        """
        shared = self._shared
        if ticket.limiter is None or shared is None or shared.permits is None:
            return
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
            raise CircuitOpenError(self.name, self._state, 0.0, self._last_failure)
        if isinstance(lease, str):
            ticket.lease = lease
            ticket.source = source

    def _undo_admission(self, ticket: _Ticket) -> None:
        assert ticket.limiter is not None
        ticket.limiter.release_on_behalf_of(ticket)
        self._total_calls -= 1
        self._wake()

    def _release_permits(self, ticket: _Ticket) -> None:
        limiter = ticket.limiter
        if limiter is not None:
            limiter.release_on_behalf_of(ticket)
            if ticket.lease is not None:
                self._release_lease(ticket)
            lot = self._lot
            if lot:
                lot.unpark_all()

    def _release_lease(self, ticket: _Ticket) -> None:
        source, lease = ticket.source, ticket.lease
        ticket.lease = ticket.source = None
        if source is not None and lease is not None:
            try:
                source.release(self, lease)
            except Exception as exc:
                self._sharing_failed("release", exc)

    def _sharing_failed(self, what: str, exc: BaseException) -> None:
        """Log a failed sharing hook; call it in the ``except`` block that caught ``exc``.

        Log values stay JSON-safe: ``exc_info=True`` (structlog's ``format_exc_info``,
        or stdlib logging, renders the exception being handled), never the exception.
        """
        self._log("error", BREAKER_SHARING_FAILED, hook=what, error=safe_repr(exc), exc_info=True)

    def _log(self, level: str, event: str, **values: Any) -> None:
        """Log ``event``; a logger (or a value's repr) that raises never reaches a call."""
        log_safely(self._logger, level, event, breaker=self.name, **values)

    def _settle(self, ticket: int | _Ticket, exc: BaseException | None) -> None:
        if exc is None:
            self._settle_success(ticket, None, check_result=False)
        else:
            self._settle_error(ticket, exc)

    def _settle_success(
        self, ticket: int | _Ticket, result: Any, *, check_result: bool = True
    ) -> None:
        if ticket.__class__ is int:  # closed fast path, disabled (-1) or stale
            if ticket == _DISABLED_TICKET:
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
            self._release_permits(ticket)
        slow = self.slow_call_duration
        if slow is not None and self._read() > ticket.start + slow:
            self._failed(ticket.gen, None)
            return
        check = self.failure_if_result
        if check is not None and check_result:
            try:
                failed = bool(check(result))
            except Exception as error:
                self._log(
                    "error",
                    BREAKER_CLASSIFY_FAILED,
                    predicate="failure_if_result",
                    error=safe_repr(error),
                    exc_info=True,
                )
                failed = True
            if failed:
                self._failed(ticket.gen, None)
                return
        self._total_successes += 1
        if ticket.gen != self._gen:
            return
        if limiter is None:
            self._record_closed(False, self._read())
            return
        self._consecutive += 1
        if self._consecutive >= self.success_threshold:
            self._transition(_CLOSED, "success_threshold", self._read())

    def _verdict(self, exc: BaseException) -> int:
        """Classify ``exc``; a raising predicate makes it a failure (and is logged)."""
        try:
            verdict = classify(exc, self._failure_matcher, self._ignore_matcher)
        except Exception as error:
            self._log(
                "error",
                BREAKER_CLASSIFY_FAILED,
                predicate="failure_on/ignore_on",
                error=safe_repr(error),
                exc_info=True,
            )
            return FAILURE
        return verdict

    def _settle_error(self, ticket: int | _Ticket, exc: BaseException) -> None:
        if ticket.__class__ is _Ticket:
            assert isinstance(ticket, _Ticket)
            if ticket.limiter is not None:
                self._release_permits(ticket)
        verdict = self._verdict(exc)
        if verdict == SUCCESS:
            if ticket.__class__ is _Ticket:
                assert isinstance(ticket, _Ticket)
                self._success_after_release(ticket)
            else:
                self._settle_success(ticket, None, check_result=False)
            return
        if ticket.__class__ is int:
            if ticket == _DISABLED_TICKET:
                return
            gen: int = ticket
        else:
            gen = ticket.gen  # type: ignore[union-attr]
        if verdict == FAILURE:
            self._failed(gen, exc)
        elif verdict == IGNORED:
            self._total_ignored += 1
        else:
            assert verdict == CANCELLED
            if _is_cancellation(exc):
                self._total_cancelled += 1
            else:  # KeyboardInterrupt, SystemExit, GeneratorExit: counted as nothing
                self._total_ignored += 1

    def _plain_probe_without_source(self) -> bool:
        return not self._timed and self.half_open_max_duration is None

    def _probe_ended(
        self, limiter: trio.CapacityLimiter, borrower: object, gen: int, exc: BaseException
    ) -> None:
        """A probe of the short path raised: give its permit back, then count it."""
        limiter.release_on_behalf_of(borrower)
        self._wake()
        verdict = self._verdict(exc)
        if verdict == SUCCESS:
            self._total_successes += 1
            if gen == self._gen:
                self._consecutive += 1
                if self._consecutive >= self.success_threshold:
                    self._transition(_CLOSED, "success_threshold", self._read())
        elif verdict == FAILURE:
            self._failed(gen, exc)
        elif verdict == IGNORED or not _is_cancellation(exc):
            self._total_ignored += 1
        else:
            self._total_cancelled += 1

    def _success_after_release(self, ticket: _Ticket) -> None:
        """A success whose permits were already given back (an error counted as one)."""
        slow = self.slow_call_duration
        if slow is not None and self._read() > ticket.start + slow:
            self._failed(ticket.gen, None)
            return
        self._total_successes += 1
        if ticket.gen != self._gen:
            return
        if self._state is _CLOSED:
            self._record_closed(False, self._read())
        elif self._state is _HALF_OPEN:
            self._consecutive += 1
            if self._consecutive >= self.success_threshold:
                self._transition(_CLOSED, "success_threshold", self._read())

    def _failed(self, gen: int, exc: BaseException | None) -> None:
        self._total_failures += 1
        if gen != self._gen:
            return
        state = self._state
        if state is _CLOSED:
            self._record_closed(True, self._read_checked(), exc)
        elif state is _HALF_OPEN:
            # A slow probe or a rejected result has no exception: keep the one before.
            failure = exc if exc is not None else self._last_failure
            self._transition(_OPEN, "half_open_failure", self._read(), failure=failure)

    def _count_success(self) -> None:
        """Count a closed-state success: exactly for the rate rule, else in a batch."""
        if self._rate_den:  # the rate rule's per-call path, kept short
            now = _current_time()
            ring = self._ring
            if self._ring_lo <= now < self._ring_hi:  # the bucket of the last count
                ring.add(self._ring_offset, 0, 1)
            else:
                clock = _current_clock()
                if clock is not self._clock:
                    self._check_run(clock)
                ring.add(self._ring_bucket(now), 0, 1)
            self._counted_calls += 1
            totals = ring.totals
            calls = totals[0]
            if calls >= self.minimum_calls and totals[1] * self._rate_den >= self._rate_num * calls:
                self._rate_trip_on_success()
            return
        if self._pending:
            self._flush()
        now = self._read()
        self._pending = 1
        self._pending_at = now

    def _ring_bucket(self, now: float) -> int:
        """Advance the ring to ``now``; remember that bucket's span for the next count."""
        ring = self._ring
        offset = ring.advance(now)
        width = ring.width
        hi = (math.floor(now / width) + 1) * width if math.isfinite(now) else -math.inf
        self._ring_hi = hi
        self._ring_lo = hi - width
        self._ring_offset = offset
        return offset

    def _rate_trip_on_success(self) -> None:
        """A success reached minimum_calls at a failing rate: trip, unless the counts
        turn out to be an earlier run's (then the window starts afresh instead)."""
        run = self._run
        now = self._read_checked()
        if self._run is not run:  # a new run: count this success in the fresh window
            self._ring.add(self._ring_bucket(now), 0, 1)
        if self._rate_trips(int(self._ring.total(now, 1)), int(self._ring.totals[0])):
            self._transition(_OPEN, "failure_rate", now, failure=self._window_failure(now))

    def _flush(self) -> None:
        """Count the pending batch of successes in the bucket of its first success."""
        pending = self._pending
        self._pending = 0
        self._ring.count(self._pending_at, 0, pending)
        self._counted_calls += pending

    def _record_closed(self, failed: bool, now: float, exc: BaseException | None = None) -> None:
        """Count one current-generation outcome in the closed state; maybe trip."""
        if self._pending:
            self._flush()
        ring = self._ring
        offset = self._ring_bucket(now)
        ring.add(offset, 0, 1)
        self._counted_calls += 1
        if failed:
            ring.add(offset, 1, 1)
            self._counted_failures += 1
            if exc is None:
                exc = self._window_failure(now)
            elif self._rate_den or self._timed:  # a later trip may happen without one
                self._last_failure = exc
                self._last_failure_at = now
            threshold = self.failure_threshold
            if threshold is not None and self._count_failure(now) >= threshold:
                self._transition(_OPEN, "failure_threshold", now, failure=exc)
                return
        if self._rate_den:
            totals = ring.totals
            calls = totals[0]
            if calls >= self.minimum_calls and totals[1] * self._rate_den >= self._rate_num * calls:
                if exc is None:
                    exc = self._window_failure(now)
                self._transition(_OPEN, "failure_rate", now, failure=exc)

    def _window_failure(self, now: float) -> BaseException | None:
        """The last failure's exception still in the closed window (None: only slow
        calls or rejected results failed in it).

        The rate rule's buckets reach one bucket further back than the window.
        """
        reach = self.failure_window + (self._ring.width if self._rate_den else 0.0)
        if now < self._last_failure_at + reach:
            return self._last_failure
        return None

    def _count_failure(self, now: float) -> int:
        """Record a failure time for the count rule; return the failures in the window."""
        times, head = self._ftimes, self._fhead
        window = self.failure_window
        size = len(times)
        while head < size and times[head] + window <= now:
            head += 1
        if head > 16 and head * 2 > size:
            del times[:head]
            head = 0
        times.append(now)
        self._fhead = head
        return len(times) - head

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

    def _window_counts(self, now: float | None) -> tuple[int, int]:
        """(failures_in_window, calls_in_window) at ``now`` in the closed state."""
        if self._state is not _CLOSED:
            return 0, 0
        ring = self._ring
        if now is None:
            failures = int(ring.totals[1])
            if self.failure_threshold is not None:
                failures = len(self._ftimes) - self._fhead
            return failures, int(ring.totals[0]) + self._pending
        if self._pending:
            self._flush()
        calls = int(ring.total(now, 0))
        if self.failure_threshold is None:
            return int(ring.totals[1]), calls
        window = self.failure_window
        times = self._ftimes
        return sum(1 for i in range(self._fhead, len(times)) if times[i] + window > now), calls

    def _clear_window(self) -> None:
        self._ring_lo = self._ring_hi = -math.inf  # forget the cached bucket
        self._last_failure_at = -math.inf
        if self._state is _CLOSED:
            self._last_failure = None
        self._pending = 0
        self._ftimes.clear()
        self._fhead = 0
        self._ring.clear()

    def _next_open_period(self, old: CircuitState) -> float:
        recovery = self.recovery_timeout
        if not isinstance(recovery, Backoff):
            return recovery
        if old is not _HALF_OPEN or self._recovery_delays is None:
            self._recovery_delays = recovery.delays()
        try:
            delay = next(self._recovery_delays)
        except Exception:  # a user's Backoff that ended or broke: its longest period
            self._recovery_delays = None
            longest = _longest_open_period(recovery)
            return longest if math.isfinite(longest) else 0.0
        if not isinstance(delay, int | float) or delay != delay or delay < 0:
            return 0.0
        return float(delay)

    def _transition(
        self,
        new: CircuitState,
        reason: str,
        now: float,
        open_for: float | None = None,
        failure: BaseException | None = None,
    ) -> None:
        """Enter ``new`` (or renew the same state): new generation, log, listeners.

        ``open_for`` (entering OPEN only) replaces the recovery timeout of this period;
        ``failure`` is the exception that opened it (``CircuitOpenError.last_failure``).
        """
        old = self._state
        failures_in_window = self._window_counts(now)[0] if old is _CLOSED else 0
        # Every call in flight now belongs to an older generation.
        self._gen += 1
        self._untracked_stale += self._untracked
        self._untracked = 0
        self._consecutive = 0
        retry_after: float = 0.0
        if new is _CLOSED:
            self._clear_window()
            self._recovery_delays = None
            self._last_failure = None
        elif new is _OPEN:
            timeout = self._next_open_period(old)
            if open_for is not None:
                timeout = open_for
            self._last_failure = failure
            self._open_period = timeout
            self._open_until = now + timeout
            self._times_opened += 1
            retry_after = timeout
        elif new is _HALF_OPEN:
            self._limiter = None  # a fresh limiter per half-open period, made on first use
            self._start_half_open(now)
        elif new is _FORCED_OPEN:
            self._last_failure = None
            retry_after = math.inf
        self._state = new
        self._fast = new is _CLOSED and not self._timed
        self._fast_with = self._fast and not self._untracked_stale
        if new is old:
            return  # e.g. reset() of a closed breaker: a new generation, nothing to announce
        if self._value is not None:
            self._value.value = new
        self._wake()
        self._log(
            "warning" if new is _OPEN or new is _FORCED_OPEN else "info",
            BREAKER_STATE_CHANGED,
            old_state=old,
            new_state=new,
            reason=reason,
            failures_in_window=failures_in_window,
            retry_after=_json_seconds(retry_after),
        )
        listener = self.on_state_change
        shared = self._shared
        if listener is None and (shared is None or not shared.listeners):
            return
        change = StateChange(self.name, old, new, reason, now)
        if listener is not None:
            try:
                listener(change)
            except Exception as exc:
                self._log("error", BREAKER_LISTENER_FAILED, error=safe_repr(exc), exc_info=True)
        if shared is not None:
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

    async def acquire(self, breaker: CircuitBreaker, /) -> str | bool | None:
        """Take a cluster-wide probe permit for ``breaker``.

        Returns:
            a lease id, True, False (refused) or None (no answer: decide locally).

        **Cancellation**: the probe waits on it; a cancelled wait must take no permit
        (or one that expires on its own), and the probe's local permit is given back.
        """
        ...

    def release(self, breaker: CircuitBreaker, lease: str, /) -> None:
        """Give back the permit ``lease`` (sync: schedule the work, do not block)."""
        ...


class _Hooks:
    """What a sharing layer attached to one breaker."""

    __slots__ = ("listeners", "owner", "permits")

    def __init__(self) -> None:
        self.owner: object = None
        self.listeners: list[Callable[[StateChange], None]] = []
        self.permits: PermitSource | None = None


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
            now = breaker._read()
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
            breaker._open_period = until - now
            breaker._wake()
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
            now = breaker._read()
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
            self.breaker._plain_probe = self.breaker._plain_probe_without_source()

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
        breaker = self.breaker
        breaker._plain_probe = source is None and breaker._plain_probe_without_source()

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

    def remove(self, name: str) -> CircuitBreaker:
        """Forget the breaker called ``name`` and return it (a later ``get`` makes a new one).

        Raises:
            KeyError: no breaker of that name was made.
        """
        return self._breakers.pop(name)

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
