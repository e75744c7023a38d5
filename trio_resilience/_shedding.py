"""Shedding channels: Trio memory channels that refuse or drop work by policy under overload."""

from __future__ import annotations

import contextlib
import math
import random
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar, final

import outcome
import trio
from trio.lowlevel import (
    Abort,
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from . import _live
from ._exceptions import LoadShedError
from ._log import SHED_CALLBACK_FAILED, SHED_DROPPED, get_logger, safe_repr
from ._validate import check_logger, check_number, check_str, check_sync_callable

T = TypeVar("T")
_C = TypeVar("_C", bound="_SyncClose")

_current_time = trio.current_time
_LOG_INTERVAL = 1.0  # seconds between shedding summaries per channel

OnShed = Callable[[Any, str], object]


# ---------------------------------------------------------------------- policies


class SheddingPolicy:
    """Base class of the shedding policies; ``name`` appears in logs."""

    __slots__ = ()
    name = "policy"
    #: Whether the policy works with :class:`ShedSendChannel` around a plain channel.
    send_side_only = False

    def shed_probability(self, queued: int, max_buffer_size: float) -> float:
        """Probability that a send arriving with ``queued`` items ahead is shed."""
        return 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ProbabilisticShedding(SheddingPolicy):
    """Shed with ``p = clamp(q / max_buffer_size - 1, 0, 1)`` (the seed's formula).

    ``q`` counts items buffered plus senders waiting, so shedding starts once the
    buffer is full and senders queue behind it, and every send is shed once as many
    senders wait as the buffer holds.

    Args:
        rng: the ``random.Random`` to draw from (None: the ``random`` module's).
    """

    __slots__ = ("_random", "rng")
    name = "probabilistic"
    send_side_only = True

    def __init__(self, rng: random.Random | None = None) -> None:
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random or None, got {rng!r}")
        self.rng = rng
        self._random = (rng or random._inst).random

    def shed_probability(self, queued: int, max_buffer_size: float) -> float:
        p = queued / max_buffer_size - 1.0
        return 0.0 if p < 0.0 else 1.0 if p > 1.0 else p

    def should_shed(self, queued: int, max_buffer_size: float) -> bool:
        """Draw once (only when p > 0) and say whether to shed."""
        p = self.shed_probability(queued, max_buffer_size)
        return p > 0.0 and self._random() < p

    def __repr__(self) -> str:
        return f"ProbabilisticShedding(rng={self.rng!r})"


class DropNewest(SheddingPolicy):
    """Never wait: a send that finds the buffer full is shed (tower's ``load_shed``)."""

    __slots__ = ()
    name = "drop_newest"
    send_side_only = True

    def shed_probability(self, queued: int, max_buffer_size: float) -> float:
        return 1.0 if queued >= max_buffer_size else 0.0


class DropOldest(SheddingPolicy):
    """Never wait: a send that finds the buffer full evicts the oldest buffered item."""

    __slots__ = ()
    name = "drop_oldest"


class CoDelShedding(SheddingPolicy):
    """CoDel for request queues (folly's executor, "Fail at Scale"), on Trio's clock.

    At the end of each ``interval``, the queue is overloaded if the minimum sojourn time
    seen in it exceeded ``target``. While overloaded, an item whose sojourn exceeds
    ``2 * target`` is dropped at dequeue (evicted, reason ``"codel"``). With
    ``adaptive_lifo`` the newest item is served first while overloaded.

    Args:
        target: acceptable standing queue delay, seconds.
        interval: seconds over which the minimum delay is judged.
        adaptive_lifo: serve newest first while overloaded.
    """

    __slots__ = ("adaptive_lifo", "interval", "target")
    name = "codel"

    def __init__(
        self, target: float = 0.005, interval: float = 0.1, *, adaptive_lifo: bool = False
    ) -> None:
        self.target = check_number("target", target, gt=0)
        self.interval = check_number("interval", interval, gt=0)
        if not isinstance(adaptive_lifo, bool):
            raise TypeError(f"adaptive_lifo must be a bool, got {adaptive_lifo!r}")
        self.adaptive_lifo = adaptive_lifo

    def __repr__(self) -> str:
        return (
            f"CoDelShedding(target={self.target!r}, interval={self.interval!r}, "
            f"adaptive_lifo={self.adaptive_lifo!r})"
        )


_PROBABILISTIC, _DROP_NEWEST, _DROP_OLDEST, _CODEL = range(4)


def _mode_of(policy: object) -> int:
    if isinstance(policy, ProbabilisticShedding):
        return _PROBABILISTIC
    if isinstance(policy, DropNewest):
        return _DROP_NEWEST
    if isinstance(policy, DropOldest):
        return _DROP_OLDEST
    if isinstance(policy, CoDelShedding):
        return _CODEL
    raise TypeError(
        "policy must be ProbabilisticShedding, DropNewest, DropOldest or CoDelShedding, "
        f"got {policy!r}"
    )


# ---------------------------------------------------------------------- statistics


@dataclass(frozen=True, slots=True)
class ShedChannelStatistics:
    """Accounting of a shedding channel: ``sent == received + evicted + current_buffer_used``."""

    sent: int
    """Items accepted into the channel (not shed, not cancelled while waiting)."""
    received: int
    """Items handed to receivers."""
    shed: int
    """Sends refused with :class:`LoadShedError` (never enqueued)."""
    evicted: int
    """Accepted items dropped from the buffer (drop-oldest, CoDel, receiver closed)."""
    current_buffer_used: int
    """Items in the buffer now."""
    max_buffer_size: int | float
    """The buffer's capacity (``math.inf`` for an unbounded channel)."""
    tasks_waiting_send: int
    """Senders waiting for room."""
    tasks_waiting_receive: int
    """Receivers waiting for an item."""
    open_send_channels: int
    """Send handles not closed yet."""
    open_receive_channels: int
    """Receive handles not closed yet."""
    overload_factor: float
    """``(current_buffer_used + tasks_waiting_send) / max_buffer_size``."""
    shed_probability: float
    """Probability that a send made now would be shed."""


class _Accounting:
    """Counters, shedding callbacks and rate-limited logging shared by a channel's handles."""

    __slots__ = (
        "_logger",
        "evicted",
        "last_log",
        "logged_evicted",
        "logged_shed",
        "name",
        "on_shed",
        "policy",
        "received",
        "receivers_gone",
        "sent",
        "shed",
    )

    def __init__(self, policy: SheddingPolicy, on_shed: OnShed | None, name: str, logger: Any):
        self.policy = policy
        self.on_shed = on_shed
        self.name = name
        self._logger = get_logger(logger)
        self.sent = 0
        self.received = 0
        self.shed = 0
        self.evicted = 0
        self.last_log = -float("inf")
        self.logged_shed = 0
        self.logged_evicted = 0
        # ShedSendChannel only: whether the wrapped channel's receivers were seen closed.
        self.receivers_gone = False

    def dropped(self, item: Any, reason: str, *, evicted: bool) -> None:
        """Count a shed or evicted item, tell on_shed, and log at most once a second.

        Never raises: a failing ``on_shed`` or logger cannot break a send that already
        enqueued (drop-oldest evicts after admitting the new item).
        """
        if evicted:
            self.evicted += 1
        else:
            self.shed += 1
        callback = self.on_shed
        if callback is not None:
            try:
                callback(item, reason)
            except Exception as exc:
                with contextlib.suppress(Exception):  # a logger that raises
                    self._logger.error(
                        SHED_CALLBACK_FAILED, channel=self.name, error=safe_repr(exc), exc_info=True
                    )
        try:
            now = _current_time()
        except RuntimeError:  # pragma: no cover - closing outside trio.run
            now = self.last_log + _LOG_INTERVAL
        if now >= self.last_log + _LOG_INTERVAL:
            self.last_log = now
            self.flush_log()

    def flush_due(self) -> None:
        """Log the counts pending since the last event if a second has passed (serve())."""
        now = _current_time()
        if now >= self.last_log + _LOG_INTERVAL and self.pending():
            self.last_log = now
            self.flush_log()

    def pending(self) -> bool:
        """Whether sheds or evictions happened since the last event."""
        return self.shed != self.logged_shed or self.evicted != self.logged_evicted

    def flush_log(self) -> None:
        """Log the counts since the last event now, if there are any."""
        shed = self.shed - self.logged_shed
        evicted = self.evicted - self.logged_evicted
        if shed or evicted:
            self.logged_shed = self.shed
            self.logged_evicted = self.evicted
            with contextlib.suppress(Exception):  # a logger that raises
                self._logger.warning(
                    SHED_DROPPED,
                    channel=self.name,
                    shed=shed,
                    evicted=evicted,
                    policy=self.policy.name,
                )

    async def serve(self) -> NoReturn:
        """Flush pending shed counts every second, so a burst's tail is logged on time."""
        while True:
            await trio.sleep(_LOG_INTERVAL)
            self.flush_due()


# ---------------------------------------------------------------------- the channel


class _State(Generic[T]):
    __slots__ = (
        "__weakref__",
        "acct",
        "codel",
        "data",
        "interval_end",
        "max_buffer_size",
        "min_sojourn",
        "mode",
        "open_receive_channels",
        "open_send_channels",
        "overloaded",
        "policy",
        "receive_tasks",
        "send_tasks",
        "stamps",
    )

    def __init__(self, max_buffer_size: float, policy: SheddingPolicy, acct: _Accounting) -> None:
        self.max_buffer_size = max_buffer_size
        self.policy = policy
        self.mode = _mode_of(policy)
        self.acct = acct
        self.data: deque[T] = deque()
        self.codel = policy if isinstance(policy, CoDelShedding) else None
        self.stamps: deque[float] = deque()
        self.overloaded = False
        self.interval_end = -float("inf")
        self.min_sojourn = 0.0  # the first interval starts out not overloaded
        self.send_tasks: OrderedDict[Task, tuple[T, float]] = OrderedDict()
        self.receive_tasks: OrderedDict[Task, None] = OrderedDict()
        self.open_send_channels = 0
        self.open_receive_channels = 0

    @property
    def name(self) -> str:
        """The channel's name (for exporters listing live channels)."""
        return self.acct.name

    def statistics(self) -> ShedChannelStatistics:
        acct = self.acct
        used = len(self.data)
        queued = used + len(self.send_tasks)
        if self.receive_tasks:
            probability = 0.0
        else:
            probability = self.policy.shed_probability(queued, self.max_buffer_size)
        return ShedChannelStatistics(
            sent=acct.sent,
            received=acct.received,
            shed=acct.shed,
            evicted=acct.evicted,
            current_buffer_used=used,
            max_buffer_size=self.max_buffer_size,
            tasks_waiting_send=len(self.send_tasks),
            tasks_waiting_receive=len(self.receive_tasks),
            open_send_channels=self.open_send_channels,
            open_receive_channels=self.open_receive_channels,
            overload_factor=queued / self.max_buffer_size,
            shed_probability=probability,
        )

    def pull(self) -> tuple[bool, Any]:
        """Take the next item for a receiver, apply CoDel, refill from waiting senders.

        As in Trio, senders wait only while the buffer is full: each item taken lets
        the first waiting sender in at once, so a later sender can never jump the queue.
        """
        data, send_tasks, acct = self.data, self.send_tasks, self.acct
        codel = self.codel
        while True:
            if not data:
                if not send_tasks:
                    return False, None
                self._admit_waiting_sender()
            if codel is None:
                item = data.popleft()
                if send_tasks:
                    self._admit_waiting_sender()
                acct.received += 1
                return True, item
            # folly's CoDel::overloaded(), on Trio's clock: judge the interval that just
            # ended by its minimum sojourn, then measure this item against 2 * target.
            now = _current_time()
            if now >= self.interval_end:
                self.overloaded = self.min_sojourn > codel.target
                self.interval_end = now + codel.interval
                self.min_sojourn = float("inf")
            if codel.adaptive_lifo and self.overloaded:
                item, stamp = data.pop(), self.stamps.pop()
            else:
                item, stamp = data.popleft(), self.stamps.popleft()
            if send_tasks:
                self._admit_waiting_sender()
            sojourn = now - stamp
            if sojourn < self.min_sojourn:
                self.min_sojourn = sojourn
            if self.overloaded and sojourn > 2 * codel.target:
                acct.dropped(item, "codel", evicted=True)
                continue
            acct.received += 1
            return True, item

    def _admit_waiting_sender(self) -> None:
        task, (value, stamp) = self.send_tasks.popitem(last=False)
        task.custom_sleep_data._tasks.remove(task)
        reschedule(task)
        self.data.append(value)
        if self.codel is not None:
            self.stamps.append(stamp)
        self.acct.sent += 1


class _SyncClose:
    """``aclose()`` and ``with channel:`` for channels that can close synchronously."""

    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close this channel end.

        **Cancellation**: a checkpoint; the end is closed even if it is cancelled.
        """
        self.close()
        await trio.lowlevel.checkpoint()

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _fail_waiters(waiters: OrderedDict[Task, Any], error: type[BaseException]) -> None:
    """Wake every task waiting on the other end of the channel with ``error``."""
    for task in waiters:
        task.custom_sleep_data._tasks.remove(task)
        reschedule(task, outcome.Error(error()))
    waiters.clear()


class _Handle(_SyncClose):
    """One end of a shedding channel: tracks its own waiting tasks, as Trio's do."""

    _closed: bool
    _tasks: set[Task]

    def _close_handle(self, waiters: OrderedDict[Task, Any]) -> bool:
        """Mark this end closed and wake its own waiters; False if it already was."""
        if self._closed:
            return False
        self._closed = True
        for task in self._tasks:
            reschedule(task, outcome.Error(trio.ClosedResourceError()))
            del waiters[task]
        self._tasks.clear()
        return True


class ShedMemorySendChannel(_Handle, trio.abc.SendChannel[T]):
    """The send end of :func:`open_shedding_channel` (Trio memory-channel semantics)."""

    def __init__(self, state: _State[T]) -> None:
        self._state = state
        self._closed = False
        self._tasks: set[Task] = set()
        state.open_send_channels += 1

    def send_nowait(self, value: T) -> None:
        """Enqueue ``value`` at once, or shed it: never ``trio.WouldBlock``.

        Raises:
            LoadShedError: the policy shed the item, or there was no room for it now
                (reason ``"buffer_full"``); counted and logged like any shed.
            trio.BrokenResourceError: every receive end is closed.
            trio.ClosedResourceError: this send end is closed.
        """
        if self._offer(value):
            return
        self._state.acct.dropped(value, "buffer_full", evicted=False)
        raise LoadShedError(value, "buffer_full")

    def _offer(self, value: T) -> bool:
        """Enqueue without waiting: True if done; False if the sender must wait."""
        if self._closed:
            raise trio.ClosedResourceError
        state = self._state
        if not state.open_receive_channels:
            raise trio.BrokenResourceError
        acct = state.acct
        if state.receive_tasks:
            task, _ = state.receive_tasks.popitem(last=False)
            task.custom_sleep_data._tasks.remove(task)
            acct.sent += 1
            acct.received += 1
            reschedule(task, outcome.Value(value))
            return True
        data = state.data
        if len(data) < state.max_buffer_size:
            data.append(value)
            if state.codel is not None:
                state.stamps.append(_current_time())
            acct.sent += 1
            return True
        mode = state.mode
        if mode == _PROBABILISTIC:
            policy: Any = state.policy
            if policy.should_shed(len(data) + len(state.send_tasks), state.max_buffer_size):
                acct.dropped(value, "probabilistic", evicted=False)
                raise LoadShedError(value, "probabilistic")
            return False
        if mode == _DROP_NEWEST:
            acct.dropped(value, "buffer_full", evicted=False)
            raise LoadShedError(value, "buffer_full")
        if mode == _DROP_OLDEST:
            oldest = data.popleft()
            data.append(value)
            acct.sent += 1
            acct.dropped(oldest, "drop_oldest", evicted=True)
            return True
        return False  # CoDel: wait like a memory channel; drops happen at dequeue

    async def send(self, value: T) -> None:
        """Enqueue ``value``, waiting for room as a memory channel does, or shed it.

        Raises:
            LoadShedError: the policy shed the item; it was not enqueued.
            trio.BrokenResourceError: every receive end is closed.
            trio.ClosedResourceError: this send end is closed.

        **Cancellation**: a checkpoint. A sender cancelled while waiting has sent
        nothing (``sent`` does not count it).
        """
        await checkpoint_if_cancelled()
        try:
            done = self._offer(value)
        except LoadShedError:
            await cancel_shielded_checkpoint()
            raise
        if done:
            await cancel_shielded_checkpoint()
            return
        task = current_task()
        state = self._state
        self._tasks.add(task)
        state.send_tasks[task] = (value, _current_time() if state.codel is not None else 0.0)
        task.custom_sleep_data = self

        def abort_fn(_: Any) -> Abort:
            self._tasks.remove(task)
            del state.send_tasks[task]
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort_fn)

    def clone(self) -> ShedMemorySendChannel[T]:
        """Another send end of the same channel; the channel ends when all are closed."""
        if self._closed:
            raise trio.ClosedResourceError
        return ShedMemorySendChannel(self._state)

    def close(self) -> None:
        """Close this send end synchronously (not a checkpoint).

        Closing the last send end logs the shed counts still pending.
        """
        state = self._state
        if not self._close_handle(state.send_tasks):
            return
        state.open_send_channels -= 1
        if state.open_send_channels == 0:
            _fail_waiters(state.receive_tasks, trio.EndOfChannel)
            state.acct.flush_log()

    async def serve(self) -> NoReturn:
        """The channel's duty: log pending shed counts every second.

        Without it, the counts of a burst are logged by the next shed after a second,
        or when the channel closes. Run it as ``nursery.start_soon(send.serve)``.

        **Cancellation**: runs until cancelled.
        """
        await self._state.acct.serve()

    def statistics(self) -> ShedChannelStatistics:
        """Return the channel's accounting (the same from either end)."""
        return self._state.statistics()

    def __repr__(self) -> str:
        return f"<send end of shedding channel {self._state.acct.name!r}>"


class ShedMemoryReceiveChannel(_Handle, trio.abc.ReceiveChannel[T]):
    """The receive end of :func:`open_shedding_channel` (Trio memory-channel semantics)."""

    def __init__(self, state: _State[T]) -> None:
        self._state = state
        self._closed = False
        self._tasks: set[Task] = set()
        state.open_receive_channels += 1

    def receive_nowait(self) -> T:
        """Take the next item at once, or raise ``WouldBlock`` / ``EndOfChannel``."""
        if self._closed:
            raise trio.ClosedResourceError
        state = self._state
        found, value = state.pull()
        if found:
            return value  # type: ignore[no-any-return]
        if not state.open_send_channels:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> T:
        """Take the next item, waiting for one.

        Raises:
            trio.EndOfChannel: every send end is closed and the buffer is empty.
            trio.ClosedResourceError: this receive end is closed.

        **Cancellation**: a checkpoint; a receiver cancelled while waiting takes nothing.
        """
        await checkpoint_if_cancelled()
        try:
            value = self.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await cancel_shielded_checkpoint()
            return value
        task = current_task()
        state = self._state
        self._tasks.add(task)
        state.receive_tasks[task] = None
        task.custom_sleep_data = self

        def abort_fn(_: Any) -> Abort:
            self._tasks.remove(task)
            del state.receive_tasks[task]
            return Abort.SUCCEEDED

        return await wait_task_rescheduled(abort_fn)  # type: ignore[no-any-return]

    def clone(self) -> ShedMemoryReceiveChannel[T]:
        """Another receive end of the same channel."""
        if self._closed:
            raise trio.ClosedResourceError
        return ShedMemoryReceiveChannel(self._state)

    async def serve(self) -> NoReturn:
        """The channel's duty: log pending shed counts every second (as the send end's).

        **Cancellation**: runs until cancelled.
        """
        await self._state.acct.serve()

    def close(self) -> None:
        """Close this receive end synchronously (not a checkpoint).

        When the last receive end closes, waiting senders get ``BrokenResourceError``
        and every buffered item is evicted to ``on_shed(item, "receiver_closed")``.
        """
        state = self._state
        if not self._close_handle(state.receive_tasks):
            return
        state.open_receive_channels -= 1
        if state.open_receive_channels == 0:
            _fail_waiters(state.send_tasks, trio.BrokenResourceError)
            data, acct = state.data, state.acct
            state.stamps.clear()
            while data:
                acct.dropped(data.popleft(), "receiver_closed", evicted=True)
            acct.flush_log()

    def statistics(self) -> ShedChannelStatistics:
        """Return the channel's accounting (the same from either end)."""
        return self._state.statistics()

    def __repr__(self) -> str:
        return f"<receive end of shedding channel {self._state.acct.name!r}>"


def _check_common(policy: object, on_shed: object, name: object, logger: object) -> None:
    if not isinstance(policy, SheddingPolicy):
        _mode_of(policy)  # raises the TypeError
    check_sync_callable("on_shed", on_shed)
    check_str("name", name)
    check_logger(logger)


_DEFAULT_POLICY = ProbabilisticShedding()


def _open_shedding_channel(
    max_buffer_size: float,
    policy: SheddingPolicy,
    on_shed: OnShed | None,
    name: str,
    logger: Any,
) -> tuple[ShedMemorySendChannel[Any], ShedMemoryReceiveChannel[Any]]:
    if isinstance(max_buffer_size, float) and max_buffer_size == math.inf:
        pass  # unbounded, as trio.open_memory_channel(math.inf): only CoDel ever drops
    elif not isinstance(max_buffer_size, int) or isinstance(max_buffer_size, bool):
        raise TypeError(f"max_buffer_size must be an int or math.inf, got {max_buffer_size!r}")
    elif max_buffer_size < 1:
        raise ValueError(f"max_buffer_size must be >= 1, got {max_buffer_size!r}")
    _check_common(policy, on_shed, name, logger)
    state: _State[Any] = _State(max_buffer_size, policy, _Accounting(policy, on_shed, name, logger))
    _live.register("channel", state)
    return ShedMemorySendChannel(state), ShedMemoryReceiveChannel(state)


# Written as a class, as trio.open_memory_channel is, so that
# open_shedding_channel[int](5) works and type-checks.
@final
class open_shedding_channel(tuple["ShedMemorySendChannel[T]", "ShedMemoryReceiveChannel[T]"]):
    """Open a memory channel that sheds by ``policy`` instead of queueing without bound.

    ``open_shedding_channel[int](10)`` types the channel, as
    ``trio.open_memory_channel[int](10)`` does.

    Args:
        max_buffer_size: the buffer's capacity, at least 1, or ``math.inf`` (unbounded,
            as for ``trio.open_memory_channel``: then only CoDel ever drops items).
        policy: :class:`ProbabilisticShedding` (default), :class:`DropNewest`,
            :class:`DropOldest` or :class:`CoDelShedding`.
        on_shed: called as ``on_shed(item, reason)`` for every item shed or evicted;
            an exception it raises is logged and never breaks the channel.
        name: a label for logs and metrics.
        logger: a structlog-like logger.

    Returns:
        A ``(send_channel, receive_channel)`` pair with Trio memory-channel semantics.
    """

    def __new__(  # type: ignore[misc]
        cls,
        max_buffer_size: float,
        *,
        policy: SheddingPolicy = _DEFAULT_POLICY,
        on_shed: OnShed | None = None,
        name: str = "default",
        logger: Any = None,
    ) -> tuple[ShedMemorySendChannel[T], ShedMemoryReceiveChannel[T]]:
        return _open_shedding_channel(max_buffer_size, policy, on_shed, name, logger)

    if TYPE_CHECKING:

        def __init__(
            self,
            max_buffer_size: float,
            *,
            policy: SheddingPolicy = _DEFAULT_POLICY,
            on_shed: OnShed | None = None,
            name: str = "default",
            logger: Any = None,
        ) -> None: ...


class ShedSendChannel(_SyncClose, trio.abc.SendChannel[T]):
    """Wrap a plain Trio ``MemorySendChannel`` so that its sends shed by policy.

    Only the policies that need the send side alone are accepted
    (:class:`ProbabilisticShedding`, :class:`DropNewest`). The wrapper accounts for the
    items sent through it and its clones; for full accounting (evictions, receivers
    closing with items buffered, ``on_shed`` for each of them) use
    :func:`open_shedding_channel`.

    What its figures mean: ``sent`` and ``shed`` count what passed through this
    wrapper and its clones, exactly. Trio's public API cannot tell which buffered items
    are whose, so ``current_buffer_used`` is the wrapped channel's count capped at what
    this wrapper sent and has not seen leave, and ``received`` is
    ``sent - evicted - current_buffer_used``, never decreasing. When the receivers
    close, every item not yet seen received counts as ``evicted`` (items received
    after the last look are counted there too: a drop is never reported as received).
    Where other clones of the wrapped channel send directly, their items share the
    buffer: the figures then describe this wrapper's sends as far as they can be told
    apart, and ``sent == received + evicted + current_buffer_used`` still holds.
    """

    def __init__(
        self,
        memory_send_channel: trio.MemorySendChannel[T],
        *,
        policy: SheddingPolicy = _DEFAULT_POLICY,
        on_shed: OnShed | None = None,
        name: str = "default",
        logger: Any = None,
        _acct: _Accounting | None = None,
    ) -> None:
        if not isinstance(memory_send_channel, trio.MemorySendChannel):
            raise TypeError(
                f"memory_send_channel must be a trio.MemorySendChannel, got {memory_send_channel!r}"
            )
        _check_common(policy, on_shed, name, logger)
        if not policy.send_side_only:
            raise ValueError(
                f"policy {policy!r} needs the receive side; use open_shedding_channel() instead"
            )
        size = memory_send_channel.statistics().max_buffer_size
        # Trio allows only ints >= 0 and math.inf. An unbounded channel never refuses a
        # send, so nothing is ever shed; it is accepted for its statistics.
        if size != math.inf and (not isinstance(size, int) or size < 1):
            raise ValueError(f"max_buffer_size must be >= 1, got {size!r}")
        self._channel = memory_send_channel
        self._max = size
        self._policy = policy
        self._acct = _acct or _Accounting(policy, on_shed, name, logger)
        self._closed = False
        self.memory_send_channel = memory_send_channel
        self.policy = policy
        self.on_shed = self._acct.on_shed
        self.name = self._acct.name
        self.logger = logger
        if _acct is None:
            _live.register("channel", self)

    def send_nowait(self, value: T) -> None:
        """Send at once, or shed: never ``trio.WouldBlock``.

        Raises:
            LoadShedError: shed by the policy, or no room now (``"buffer_full"``).
        """
        if self._closed:
            raise trio.ClosedResourceError
        try:
            self._channel.send_nowait(value)
        except trio.WouldBlock:
            self._shed_or_wait(value)
            self._acct.dropped(value, "buffer_full", evicted=False)
            raise LoadShedError(value, "buffer_full") from None
        except trio.BrokenResourceError:
            self._receivers_closed()
            raise
        self._acct.sent += 1

    def _shed_or_wait(self, value: T) -> None:
        stats = self._channel.statistics()
        self._observe(stats)
        queued = stats.current_buffer_used + stats.tasks_waiting_send
        if isinstance(self._policy, ProbabilisticShedding):
            if self._policy.should_shed(queued, self._max):
                self._acct.dropped(value, "probabilistic", evicted=False)
                raise LoadShedError(value, "probabilistic")
            return
        self._acct.dropped(value, "buffer_full", evicted=False)
        raise LoadShedError(value, "buffer_full")

    async def send(self, value: T) -> None:
        """Send ``value``, waiting for room as the wrapped channel does, or shed it.

        **Cancellation**: a checkpoint; a sender cancelled while waiting sent nothing.
        """
        if self._closed:
            raise trio.ClosedResourceError
        await checkpoint_if_cancelled()
        try:
            self._channel.send_nowait(value)
        except trio.WouldBlock:
            try:
                self._shed_or_wait(value)
            except LoadShedError:
                await cancel_shielded_checkpoint()
                raise
            try:
                await self._channel.send(value)
            except trio.BrokenResourceError:
                self._receivers_closed()
                raise
            self._acct.sent += 1
            return
        except trio.BrokenResourceError:
            self._receivers_closed()
            raise
        self._acct.sent += 1
        await cancel_shielded_checkpoint()

    def clone(self) -> ShedSendChannel[T]:
        """A wrapper around a clone of the wrapped channel, sharing the accounting."""
        if self._closed:
            raise trio.ClosedResourceError
        return ShedSendChannel(self._channel.clone(), policy=self._policy, _acct=self._acct)

    def close(self) -> None:
        """Close the wrapped channel synchronously; logs the pending shed counts."""
        if not self._closed:
            self._closed = True
            self._acct.flush_log()
        self._channel.close()

    async def serve(self) -> NoReturn:
        """The channel's duty: log pending shed counts every second.

        **Cancellation**: runs until cancelled.
        """
        await self._acct.serve()

    def _receivers_closed(self) -> None:
        """Every item not yet seen received is counted as evicted (dropped by Trio)."""
        acct = self._acct
        if not acct.receivers_gone:
            acct.receivers_gone = True
            gone = acct.sent - acct.evicted - acct.received
            if gone > 0:
                acct.evicted += gone
                acct.flush_log()

    def _observe(self, stats: Any) -> int:
        """Update ``received`` from a look at the wrapped channel; return the used count."""
        acct = self._acct
        if stats.open_receive_channels == 0:
            self._receivers_closed()
        outstanding = acct.sent - acct.evicted - acct.received
        used = 0 if acct.receivers_gone else min(stats.current_buffer_used, outstanding)
        acct.received = acct.sent - acct.evicted - used  # never decreases
        return used

    def statistics(self) -> ShedChannelStatistics:
        """Accounting of the sends made through this wrapper and its clones."""
        stats = self._channel.statistics()
        acct = self._acct
        used = self._observe(stats)
        queued = stats.current_buffer_used + stats.tasks_waiting_send
        probability = 0.0
        if not stats.tasks_waiting_receive and stats.open_receive_channels:
            probability = self._policy.shed_probability(queued, self._max)
        return ShedChannelStatistics(
            sent=acct.sent,
            received=acct.received,
            shed=acct.shed,
            evicted=acct.evicted,
            current_buffer_used=used,
            max_buffer_size=self._max,
            tasks_waiting_send=stats.tasks_waiting_send,
            tasks_waiting_receive=stats.tasks_waiting_receive,
            open_send_channels=stats.open_send_channels,
            open_receive_channels=stats.open_receive_channels,
            overload_factor=queued / self._max,
            shed_probability=probability,
        )

    def __repr__(self) -> str:
        return f"<ShedSendChannel {self._acct.name!r} around {self._channel!r}>"
