"""LoopBudget: throttle a loop that runs too fast, stop one that ran too long (a cancel scope)."""

from __future__ import annotations

import contextlib
import math
import sys
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

import trio

from . import _live
from ._backoff import Backoff, ExponentialBackoff
from ._exceptions import LoopBudgetExhausted
from ._log import BUDGET_EXHAUSTED, BUDGET_THROTTLED, get_logger
from ._testing_flags import ZERO_BACKOFF
from ._validate import (
    MAX_SIZE,
    check_bool,
    check_int,
    check_logger,
    check_optional_int,
    check_optional_number,
    check_str,
    check_window,
)

T = TypeVar("T")

_current_time = trio.current_time
_checkpoint = trio.lowlevel.checkpoint

_SEED_BACKOFF = ExponentialBackoff(base=0.01, multiplier=1.5, max_delay=1.0, jitter_factor=0.0)
#: Compact the tick array once this many expired ticks, and 1/64 of it, lead it.
_COMPACT_MIN = 16
_COMPACT_RATIO = 64
_EMPTY_ARRAY_SIZE = sys.getsizeof(array("d"))


class _TickRing:
    """Times of the ticks still in the window, oldest first, in one ``array('d')``.

    Memory follows the ticks in the window, never ``limit``
    (``max_iterations_per_window``): the array holds the ticks in the window plus
    expired ones not yet compacted away, fewer than ``max(16, len / 64)``; CPython's
    ``array`` over-allocates at most ``len / 16 + 7`` slots when it grows. So the buffer
    holds at most ``8 * (1.08 * n + 24)`` bytes for ``n`` ticks in the window, about
    8.6 bytes per tick (8 bytes is the float64 itself; an exact 8 would need a copy on
    every tick), and nothing once the window is empty. Every operation is O(1)
    amortized: each tick is appended once, dropped once, and moved by compactions at
    most 64 times' worth of ``memmove``.
    """

    __slots__ = ("_buf", "_head", "count", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = array("d")
        self._head = 0
        self.count = 0

    def oldest(self) -> float:
        return self._buf[self._head]

    def _dropped(self, head: int) -> None:
        """The ticks before ``head`` left the window: forget them, compact if worth it."""
        buf = self._buf
        count = len(buf) - head
        if count == 0:
            del buf[:]  # the window is empty: free the buffer
            head = 0
        elif head >= _COMPACT_MIN and head * _COMPACT_RATIO >= len(buf):
            del buf[:head]  # one memmove; the array shrinks its allocation with it
            head = 0
        self._head = head
        self.count = count

    def expire(self, now: float, window: float) -> None:
        """Drop the ticks that left the window ending at ``now`` (``t + window <= now``)."""
        buf = self._buf
        head = self._head
        end = len(buf)
        while head < end and buf[head] + window <= now:
            head += 1
        if head != self._head:
            self._dropped(head)

    def admit(self, now: float, window: float) -> bool:
        """Expire, then add a tick at ``now`` unless the window is full (then False).

        The tick's fast path: one call; the array grows in amortized O(1).
        """
        buf = self._buf
        count = self.count
        if count:
            head = self._head
            if buf[head] + window <= now:
                end = len(buf)
                head += 1
                while head < end and buf[head] + window <= now:  # expiry, inline
                    head += 1
                self._dropped(head)
                count = self.count
        if count == self.limit:
            return False
        buf.append(now)
        self.count = count + 1
        return True

    def drop_oldest(self) -> None:
        """Forget the oldest tick (zero_backoff(): a throttled tick passes at once)."""
        self._dropped(self._head + 1)

    def append(self, now: float) -> None:
        """Add a tick; the caller ensures ``count < limit`` (after :meth:`expire`)."""
        self._buf.append(now)
        self.count += 1

    @property
    def nbytes(self) -> int:
        """Bytes held by the ring's buffer (its allocation, not only the ticks)."""
        return sys.getsizeof(self._buf) - _EMPTY_ARRAY_SIZE


@dataclass(frozen=True, slots=True)
class LoopBudgetStatistics:
    """A snapshot of a :class:`LoopBudget`."""

    iterations: int
    """Ticks that passed since entry."""
    iterations_in_window: int
    """Ticks that passed in the last ``window`` seconds."""
    window_utilization: float
    """``iterations_in_window / max_iterations_per_window``, 0..1."""
    throttled: int
    """Ticks that had to wait for the window."""
    throttle_time: float
    """Seconds spent waiting in throttled ticks."""
    exhausted: bool
    """Whether a hard limit was hit."""
    exhausted_by: str | None
    """``"max_iterations"``, ``"max_duration"`` or None."""


class LoopBudget:
    """A budget for a long-running loop, entered once like ``trio.move_on_after``.

    ::

        with LoopBudget(100, max_iterations=10_000) as budget:
            async for i in budget:          # or: while True: await budget.tick()
                ...
        if budget.exhausted: ...

    ``await budget.tick()`` counts an iteration: under ``max_iterations_per_window`` in
    the last ``window`` seconds it is one checkpoint; over it, it sleeps the backoff's
    delays until the window admits it (the last sleep ends exactly then). A hard limit
    (``max_iterations`` ticks passed, ``max_duration`` seconds since entry) cancels
    :attr:`cancel_scope`, also while the body is blocked in an await; with
    ``raise_on_exhaustion`` the exit raises :class:`LoopBudgetExhausted`. A
    cancellation from an outer scope is not exhaustion.

    Args:
        max_iterations_per_window: ticks admitted in any ``window`` seconds.
        window: the sliding window's length in seconds.
        backoff: the delays a throttled tick sleeps; restarts once a tick passes.
        max_iterations: hard limit on ticks; the next tick cancels the scope.
        max_duration: hard limit in seconds from entry.
        raise_on_exhaustion: raise :class:`LoopBudgetExhausted` on exit when a hard
            limit was hit.
        name: a label for logs.
        logger: a structlog-like logger.
    """

    __slots__ = (
        "__weakref__",
        "_deadline",
        "_entered",
        "_exhausted_by",
        "_exited",
        "_iterations",
        "_last_throttle_log",
        "_limit",
        "_logger",
        "_start",
        "_throttle_time",
        "_throttled",
        "_ticks",
        "backoff",
        "cancel_scope",
        "logger",
        "max_duration",
        "max_iterations",
        "max_iterations_per_window",
        "name",
        "raise_on_exhaustion",
        "window",
    )

    def __init__(
        self,
        max_iterations_per_window: int,
        *,
        window: float = 1.0,
        backoff: Backoff = _SEED_BACKOFF,
        max_iterations: int | None = None,
        max_duration: float | None = None,
        raise_on_exhaustion: bool = False,
        name: str = "default",
        logger: Any = None,
    ) -> None:
        self.max_iterations_per_window = check_int(
            "max_iterations_per_window", max_iterations_per_window, minimum=1, maximum=MAX_SIZE
        )
        self.window = check_window("window", window)
        if not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a Backoff, got {backoff!r}")
        self.backoff = backoff
        self.max_iterations = check_optional_int("max_iterations", max_iterations, minimum=1)
        self.max_duration = check_optional_number("max_duration", max_duration, gt=0)
        self.raise_on_exhaustion = check_bool("raise_on_exhaustion", raise_on_exhaustion)
        self.name = check_str("name", name)
        self.logger = check_logger(logger)
        self._logger = get_logger(logger)
        self.cancel_scope = trio.CancelScope()
        self._limit = math.inf if self.max_iterations is None else self.max_iterations
        self._ticks = _TickRing(self.max_iterations_per_window)
        self._entered = False
        self._exited = False
        self._iterations = 0
        self._throttled = 0
        self._throttle_time = 0.0
        self._exhausted_by: str | None = None
        self._start = 0.0
        self._deadline = math.inf
        self._last_throttle_log = -math.inf
        _live.register("loop_budget", self)

    # -------------------------------------------------------------- presets

    @classmethod
    def network(cls, **kwargs: Any) -> LoopBudget:
        """1000 iterations per second: network I/O loops (the seed's preset)."""
        return cls(1000, **kwargs)

    @classmethod
    def consensus(cls, **kwargs: Any) -> LoopBudget:
        """500 iterations per second: consensus rounds."""
        return cls(500, **kwargs)

    @classmethod
    def discovery(cls, **kwargs: Any) -> LoopBudget:
        """200 iterations per second: peer discovery and gossip."""
        return cls(200, **kwargs)

    @classmethod
    def maintenance(cls, **kwargs: Any) -> LoopBudget:
        """100 iterations per second: maintenance and housekeeping loops."""
        return cls(100, **kwargs)

    # -------------------------------------------------------------- context manager

    def __enter__(self) -> LoopBudget:
        if self._entered:
            raise RuntimeError(
                "a LoopBudget is entered once, like trio.move_on_after; build a new one"
            )
        self._entered = True
        self._start = _current_time()
        if self.max_duration is not None:
            self._deadline = self._start + self.max_duration
            self.cancel_scope.deadline = min(self.cancel_scope.deadline, self._deadline)
        self.cancel_scope.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        scope = self.cancel_scope
        self._exited = True
        try:
            swallowed = scope.__exit__(exc_type, exc, tb)
        finally:
            if (
                self._exhausted_by is None
                and scope.cancelled_caught
                and _current_time() >= self._deadline
            ):
                self._exhaust("max_duration")
        if (
            self._exhausted_by is not None
            and self.raise_on_exhaustion
            and (exc is None or swallowed)
        ):
            raise LoopBudgetExhausted(self.name, self._exhausted_by, self._iterations)
        return swallowed

    # -------------------------------------------------------------- ticking

    async def tick(self) -> None:
        """Count one iteration; wait while the window is full; cancel at a hard limit.

        Raises:
            RuntimeError: the budget is not entered, or its block has exited.

        **Cancellation**: always a checkpoint. A throttled tick sleeps and can be
        cancelled there. Past ``max_iterations`` the tick cancels the budget's scope,
        so the Cancelled it raises ends the ``with`` block.
        """
        if self._iterations >= self._limit or not self._entered or self._exited:
            self._hit_max_iterations()
            await _checkpoint()  # raises Cancelled: the scope is cancelled
            return  # pragma: no cover - only when shielded from its own scope
        now = _current_time()
        ticks = self._ticks
        if not ticks.admit(now, self.window):
            if not ZERO_BACKOFF.get():
                await self._throttle(now)
                return
            self._throttled += 1  # zero_backoff(): counted, not waited for
            ticks.drop_oldest()  # make room: the oldest tick gives way
            ticks.append(now)
        self._iterations += 1
        await _checkpoint()

    def _hit_max_iterations(self) -> None:
        if not self._entered:
            raise RuntimeError("enter the LoopBudget with `with` before ticking it")
        if self._exited:
            raise RuntimeError(
                "the LoopBudget's `with` block has exited; tick it only inside the block"
            )
        if self._exhausted_by is None:
            self._exhaust("max_iterations")
        self.cancel_scope.cancel()

    async def _throttle(self, now: float) -> None:
        self._throttled += 1
        ticks = self._ticks
        if now >= self._last_throttle_log + self.window:
            self._last_throttle_log = now
            with contextlib.suppress(Exception):  # a logger that raises changes nothing
                self._logger.info(
                    BUDGET_THROTTLED,
                    budget=self.name,
                    iterations=self._iterations,
                    iterations_in_window=ticks.count,
                    throttled=self._throttled,
                )
        delays = self.backoff.delays()
        started = now
        try:
            while ticks.count == self.max_iterations_per_window:
                # Back off, but never past the moment the window admits this tick; a
                # zero delay would spin, so it waits for that moment too.
                opens = ticks.oldest() + self.window
                delay = next(delays)
                if 0 < delay < opens - now:
                    await trio.sleep(delay)
                else:
                    await trio.sleep_until(opens)
                now = _current_time()
                ticks.expire(now, self.window)
        finally:
            self._throttle_time += _current_time() - started
        ticks.append(now)
        self._iterations += 1

    def _exhaust(self, limit: str) -> None:
        self._exhausted_by = limit
        with contextlib.suppress(Exception):  # a logger that raises changes nothing
            self._logger.warning(
                BUDGET_EXHAUSTED,
                budget=self.name,
                limit=limit,
                iterations=self._iterations,
                elapsed=_current_time() - self._start,
            )

    def __aiter__(self) -> AsyncIterator[int]:
        return _BudgetIterator(self)

    # -------------------------------------------------------------- introspection

    @property
    def exhausted(self) -> bool:
        """Whether a hard limit was hit (an outer cancellation is not exhaustion)."""
        return self._exhausted_by is not None

    @property
    def iterations(self) -> int:
        """Ticks that passed since entry."""
        return self._iterations

    def statistics(self) -> LoopBudgetStatistics:
        """Return a frozen snapshot of the budget."""
        try:
            now = _current_time()
        except RuntimeError:
            now = math.inf
        ticks = self._ticks
        if now != math.inf:
            ticks.expire(now, self.window)
            in_window = ticks.count
        else:
            in_window = 0
        return LoopBudgetStatistics(
            iterations=self._iterations,
            iterations_in_window=in_window,
            window_utilization=in_window / self.max_iterations_per_window,
            throttled=self._throttled,
            throttle_time=self._throttle_time,
            exhausted=self.exhausted,
            exhausted_by=self._exhausted_by,
        )

    def __repr__(self) -> str:
        state = f"exhausted by {self._exhausted_by}" if self.exhausted else "running"
        if not self._entered:
            state = "not entered"
        return (
            f"<LoopBudget {self.name!r} {self.max_iterations_per_window}/{self.window:g}s "
            f"{self._iterations} iterations, {state}>"
        )


class _BudgetIterator:
    """``async for i in budget``: ticks before each iteration, yields 0, 1, 2, ..."""

    __slots__ = ("_budget", "_next")

    def __init__(self, budget: LoopBudget) -> None:
        self._budget = budget
        self._next = 0

    def __aiter__(self) -> _BudgetIterator:
        return self

    async def __anext__(self) -> int:
        budget = self._budget
        if budget._iterations >= budget._limit:
            # The hard limit: cancel the scope and end the loop cleanly.
            budget._hit_max_iterations()
            raise StopAsyncIteration
        await budget.tick()
        number = self._next
        self._next = number + 1
        return number


class budgeted(Generic[T]):
    """Drain ``receive_channel`` under ``budget``: one tick per item, no polling.

    Ends when the channel is closed (``EndOfChannel`` or ``ClosedResourceError``) or the
    budget hits a hard limit. The budget must be entered (``with budget:``).

    **Cancellation**: each iteration is a checkpoint (the tick) and then waits on the
    channel like ``receive()``.
    """

    __slots__ = ("_budget", "_channel")

    def __init__(self, receive_channel: trio.abc.ReceiveChannel[T], budget: LoopBudget) -> None:
        if not isinstance(receive_channel, trio.abc.ReceiveChannel):
            raise TypeError(
                f"receive_channel must be a trio ReceiveChannel, got {receive_channel!r}"
            )
        if not isinstance(budget, LoopBudget):
            raise TypeError(f"budget must be a LoopBudget, got {budget!r}")
        self._channel = receive_channel
        self._budget = budget

    def __aiter__(self) -> budgeted[T]:
        return self

    async def __anext__(self) -> T:
        budget = self._budget
        if budget._iterations >= budget._limit:
            budget._hit_max_iterations()
            raise StopAsyncIteration
        await budget.tick()
        try:
            return await self._channel.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None
