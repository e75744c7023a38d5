"""RateLimiter: GCRA admission by cost, FIFO waits, fail-fast on deadlines, a remote port.

GCRA (the generic cell rate algorithm) keeps one number, the theoretical arrival
time ``tat``: with ``T = period / rate`` seconds per unit of cost and a tolerance
``tau = burst * T``, a cost ``c`` conforms at ``now`` when
``max(tat, now) + c * T - now <= tau``, and admitting it sets ``tat`` to that sum.
Over any interval of length ``t`` the admitted cost is then at most
``rate * t / period + burst``.

Waiters queue FIFO. Only the head of the queue sleeps (until its cost conforms);
the others are parked and cost nothing until the head admits or leaves, then the
next one is woken: one wake-up per admission or cancellation, never a thundering
herd. Since only the head admits while anyone waits, the time at which a newcomer
would be admitted is known at once (``tat`` plus the queued cost), so a wait that
would end past ``max_wait`` or the caller's deadline fails fast with
:class:`RateLimitExceeded`.

**Sharing port** (used by ``trio_resilience.redis`` to share a limiter cluster-wide):
:meth:`RateLimiter.attach_remote` installs an async ``decide(cost)`` hook that makes
the admission decision elsewhere (GCRA in Lua on the Redis server's clock). The
hook returns ``0.0`` (or any number ``<= 0``) when the cost was admitted, or a
positive number of seconds after which to ask again (at most ``cost * period /
rate``, the longest a conforming GCRA with these parameters can ask for). It is
bounded by ``timeout``; when it raises, times out or answers anything else (None,
NaN, inf, a longer wait, a bool, a str ...), that acquisition falls back to the
local GCRA at the full local rate. Admissions the remote grants are also recorded
in the local ``tat`` (capped at a full bucket), so the fallback continues smoothly.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import trio

from . import _live
from ._decorate import decorate
from ._exceptions import RateLimitExceeded
from ._log import get_logger
from ._ratelimit_parts import (
    RATE_LIMITER_REMOTE_FAILED,
    RATE_LIMITER_REMOTE_RECOVERED,
    RateLimiterStatistics,
    RemoteDecide,
    consult,
)
from ._runs import run_token
from ._validate import check_logger, check_number, check_optional_number, check_str

P = ParamSpec("P")
T = TypeVar("T")

RATE_LIMITER_EXCEEDED = "trio_resilience.rate_limiter.exceeded"


_EPSILON = 1e-9  # float slack in the conformance test (seconds)
# Looked up once: acquire() under the limit is a hot path.
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_current_time = trio.current_time
_LOG_INTERVAL = 1.0  # seconds between two rate-limited "exceeded" events


class _Waiter:
    __slots__ = ("cost", "task")

    def __init__(self, cost: float, task: trio.lowlevel.Task) -> None:
        self.cost = cost
        self.task = task


class RateLimiter:
    """Admit at most ``rate`` units of cost per ``period``, with bursts up to ``burst``.

    Args:
        rate: units of cost per ``period`` (> 0).
        period: seconds (> 0).
        burst: the most cost admitted at once from idle (>= 1, default
            ``max(1, rate)``); no single acquisition may cost more.
        max_wait: the longest an ``acquire`` may wait (None: as long as the caller's
            deadline allows; 0: never wait).
        name: a label for logs, statistics and metrics.
        logger: a structlog-like logger (default ``structlog.get_logger("trio_resilience")``).

    Use ``await limiter.acquire(cost)``, ``limiter.acquire_nowait(cost)``,
    ``await limiter.call(fn, *args)`` or ``@limiter`` on an async function.
    """

    __slots__ = (
        "__weakref__",
        "_admitted",
        "_admitted_cost",
        "_cancelled",
        "_emission",
        "_last_log",
        "_logger",
        "_queue",
        "_queued_cost",
        "_rejected",
        "_rejected_since_log",
        "_remote",
        "_remote_decisions",
        "_remote_down",
        "_remote_fallbacks",
        "_remote_timeout",
        "_tat",
        "_tau",
        "_token",
        "_wakeups",
        "_would_block",
        "burst",
        "max_wait",
        "name",
        "period",
        "rate",
    )

    def __init__(
        self,
        rate: float,
        *,
        period: float = 1.0,
        burst: float | None = None,
        max_wait: float | None = None,
        name: str = "default",
        logger: Any = None,
    ) -> None:
        self.rate = check_number("rate", rate, gt=0)
        self.period = check_number("period", period, gt=0)
        if burst is None:
            burst = max(1.0, self.rate)
        # At least one unit: a burst below the default cost would refuse every call().
        self.burst = check_number("burst", burst, ge=1)
        self.max_wait = check_optional_number("max_wait", max_wait, ge=0, allow_inf=True)
        self.name = check_str("name", name)
        self._logger = get_logger(check_logger(logger))
        emission = self.period / self.rate
        if not (emission > 0 and math.isfinite(emission) and math.isfinite(emission * self.burst)):
            raise ValueError(
                f"period / rate must be a positive finite number of seconds, "
                f"got {self.period!r} / {self.rate!r}"
            )
        self._emission = emission
        self._tau = emission * self.burst
        self._tat = -math.inf
        self._token: object = None
        self._queue: OrderedDict[_Waiter, None] = OrderedDict()
        self._queued_cost = 0.0
        self._admitted = 0
        self._admitted_cost = 0.0
        self._rejected = 0
        self._rejected_since_log = 0
        self._last_log = -math.inf
        self._would_block = 0
        self._cancelled = 0
        self._wakeups = 0
        self._remote: RemoteDecide | None = None
        self._remote_timeout = 0.05
        self._remote_decisions = 0
        self._remote_fallbacks = 0
        self._remote_down = False
        _live.register("rate_limiter", self)

    # -- the sharing port -------------------------------------------------------------

    def attach_remote(self, decide: RemoteDecide, *, timeout: float = 0.05) -> None:
        """Let ``await decide(cost)`` make the admission decisions (e.g. GCRA on Redis).

        ``decide`` returns a number ``<= 0`` when the cost was admitted remotely, or a
        positive number of seconds (at most ``cost * period / rate``) after which
        the head of the queue asks again. Each call is bounded by ``timeout``
        seconds; an exception, a time-out or any other answer makes that
        acquisition fall back to the local GCRA.
        Replaces an earlier hook.

        Raises:
            TypeError: ``decide`` is not callable.
            ValueError: ``timeout`` is not a positive finite number.
        """
        if not callable(decide):
            raise TypeError(f"decide must be an async callable, got {decide!r}")
        self._remote_timeout = check_number("timeout", timeout, gt=0)
        self._remote = decide
        self._remote_down = False

    def detach_remote(self) -> None:
        """Remove the remote hook: decisions are local again."""
        self._remote = None
        self._remote_down = False

    @property
    def remote_attached(self) -> bool:
        """Whether a remote decision hook is installed."""
        return self._remote is not None

    # -- local GCRA -------------------------------------------------------------------

    def _now(self) -> float:
        now = trio.current_time()
        token = run_token()
        if token is not self._token:
            # A new trio.run: times of the earlier run mean nothing here.
            self._token = token
            self._tat = -math.inf
        return now

    def _check_cost(self, cost: object) -> float:
        if type(cost) is int and 0 < cost <= self.burst:
            return cost
        value = check_number("cost", cost, gt=0)
        if value > self.burst:
            raise ValueError(f"cost must be <= burst ({self.burst:g}), got {cost!r}")
        return value

    def _delay(self, cost: float, now: float) -> float:
        """Seconds from ``now`` until ``cost`` (after the queued cost) conforms."""
        tat = self._tat if self._tat > now else now
        return tat + (self._queued_cost + cost) * self._emission - self._tau - now

    def _admit(self, cost: float, now: float) -> None:
        tat = self._tat if self._tat > now else now
        self._tat = tat + cost * self._emission
        self._admitted += 1
        self._admitted_cost += cost

    def _reject(self, wait: float, now: float) -> RateLimitExceeded:
        self._rejected += 1
        self._rejected_since_log += 1
        if now - self._last_log >= _LOG_INTERVAL or now < self._last_log:
            self._logger.warning(
                RATE_LIMITER_EXCEEDED,
                rate_limiter=self.name,
                rejected=self._rejected_since_log,
                retry_after=wait,
            )
            self._last_log = now
            self._rejected_since_log = 0
        return RateLimitExceeded(self.name, wait)

    def _too_long(self, wait: float, now: float) -> bool:
        max_wait = self.max_wait
        if max_wait is not None and wait > max_wait + _EPSILON:
            return True
        return now + wait >= trio.current_effective_deadline()

    # -- acquisition ------------------------------------------------------------------

    def acquire_nowait(self, cost: float = 1) -> None:
        """Admit ``cost`` now or raise ``trio.WouldBlock`` (also while others wait).

        Raises:
            trio.WouldBlock: the cost does not conform now, or tasks are queued.
            ValueError: ``cost`` is not in ``(0, burst]``.
        """
        cost = self._check_cost(cost)
        now = self._now()
        if self._queue or self._delay(cost, now) > _EPSILON:
            self._would_block += 1
            raise trio.WouldBlock
        self._admit(cost, now)

    async def acquire(self, cost: float = 1) -> None:
        """Wait (FIFO) until ``cost`` conforms, then admit it.

        Raises:
            RateLimitExceeded: at once, when the wait would end past ``max_wait`` or
                past the caller's ``trio.current_effective_deadline()``; its
                ``retry_after`` says how long the wait would have been.
            ValueError: ``cost`` is not in ``(0, burst]``.

        **Cancellation**: a checkpoint, also when admitted at once. A waiter cancelled
        in the queue leaves no reservation: the cost it would have taken stays free,
        and it wakes the next waiter only if it was at the head.
        """
        if type(cost) is not int or not 0 < cost <= self.burst:
            cost = self._check_cost(cost)
        await _checkpoint_if_cancelled()
        now = _current_time()
        if run_token() is not self._token:
            self._now()
        if self._remote is None and not self._queue:
            tat = self._tat
            if tat < now:
                tat = now
            new_tat = tat + cost * self._emission
            if new_tat - self._tau - now <= _EPSILON:
                # Admitted at once: the hot path.
                self._tat = new_tat
                self._admitted += 1
                self._admitted_cost += cost
                await _cancel_shielded_checkpoint()
                return
            wait = new_tat - self._tau - now
        else:
            wait = self._delay(cost, now) if self._remote is None else 0.0
        if wait > _EPSILON and self._too_long(wait, now):
            raise self._reject(wait, now)
        await self._wait_in_queue(cost)

    async def _wait_in_queue(self, cost: float) -> None:
        waiter = _Waiter(cost, trio.lowlevel.current_task())
        queue = self._queue
        queue[waiter] = None
        self._queued_cost += cost
        try:
            if next(iter(queue)) is not waiter:

                def abort(_: object) -> trio.lowlevel.Abort:
                    self._leave(waiter)
                    return trio.lowlevel.Abort.SUCCEEDED

                await trio.lowlevel.wait_task_rescheduled(abort)
            await self._serve_head(waiter)
        except trio.Cancelled:
            self._cancelled += 1
            raise
        finally:
            if waiter in queue:
                self._leave(waiter)

    def _leave(self, waiter: _Waiter) -> None:
        """Take ``waiter`` out of the queue; if it was the head, wake the next one."""
        queue = self._queue
        was_head = next(iter(queue)) is waiter
        del queue[waiter]
        self._queued_cost -= waiter.cost
        if not queue:
            self._queued_cost = 0.0
        elif was_head:
            self._wakeups += 1
            trio.lowlevel.reschedule(next(iter(queue)).task)

    async def _serve_head(self, waiter: _Waiter) -> None:
        """As the head of the queue: wait until the cost is admitted (then leave)."""
        cost = waiter.cost
        while True:
            now = self._now()
            remote = self._remote
            if remote is not None:
                verdict = await self._ask_remote(remote, cost)
                now = self._now()
                if verdict is not None:
                    if verdict <= 0:
                        self._record_remote(cost, now)
                        self._leave(waiter)
                        return
                    if self._too_long(verdict, now):
                        raise self._reject(verdict, now)
                    await trio.sleep(verdict)
                    continue
            # Local GCRA: only the head admits while anyone waits.
            tat = self._tat if self._tat > now else now
            wait = tat + cost * self._emission - self._tau - now
            if wait > _EPSILON:
                if self._too_long(wait, now):
                    raise self._reject(wait, now)
                await trio.sleep(wait)
                now = self._now()
            self._admit(cost, now)
            self._leave(waiter)
            return

    async def _ask_remote(self, remote: RemoteDecide, cost: float) -> float | None:
        """The remote verdict (seconds to wait, <= 0 admitted) or None to decide locally."""
        verdict, error = await consult(remote, cost, self._remote_timeout, cost * self._emission)
        if verdict is not None:
            if self._remote_down:
                self._remote_down = False
                self._logger.info(RATE_LIMITER_REMOTE_RECOVERED, rate_limiter=self.name)
            return verdict
        self._remote_fallbacks += 1
        if not self._remote_down:
            self._remote_down = True
            self._logger.warning(RATE_LIMITER_REMOTE_FAILED, rate_limiter=self.name, error=error)
        return None

    def _record_remote(self, cost: float, now: float) -> None:
        tat = self._tat if self._tat > now else now
        self._tat = min(tat + cost * self._emission, now + self._tau)
        self._admitted += 1
        self._admitted_cost += cost
        self._remote_decisions += 1

    # -- policy -----------------------------------------------------------------------

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Acquire a cost of 1, then return ``await fn(*args, **kwargs)``.

        Raises:
            RateLimitExceeded: as :meth:`acquire`; ``fn`` is not called.

        **Cancellation**: as :meth:`acquire`; once ``fn`` runs, its own.
        """
        await self.acquire(1)
        return await fn(*args, **kwargs)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        return decorate("RateLimiter", self.call, fn)

    def statistics(self) -> RateLimiterStatistics:
        """Return a frozen snapshot of the limiter."""
        try:
            now = self._now()
            tat = self._tat if self._tat > now else now
            available = max(0.0, min(self.burst, (self._tau - (tat - now)) / self._emission))
        except RuntimeError:  # outside trio.run
            available = self.burst
        return RateLimiterStatistics(
            admitted=self._admitted,
            admitted_cost=self._admitted_cost,
            rejected=self._rejected,
            would_block=self._would_block,
            cancelled=self._cancelled,
            waiting=len(self._queue),
            queued_cost=self._queued_cost,
            available=available,
            wakeups=self._wakeups,
            remote_attached=self._remote is not None,
            remote_decisions=self._remote_decisions,
            remote_fallbacks=self._remote_fallbacks,
        )

    def __repr__(self) -> str:
        return (
            f"<RateLimiter {self.name!r} {self.rate:g}/{self.period:g}s burst={self.burst:g} "
            f"{len(self._queue)} waiting>"
        )
