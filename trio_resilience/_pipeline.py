"""Policies composed: Bulkhead, FailAfter, Fallback, Pipeline and guarded nurseries."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable

import trio

from . import _live
from ._breaker import CircuitBreaker
from ._classify import NEVER_COUNTED, ExceptionSpec, Matcher, leaves
from ._decorate import decorate
from ._exceptions import BulkheadFullError
from ._retry import Retry
from ._validate import (
    check_int,
    check_number,
    check_optional_number,
    check_str,
    is_async_callable,
)

P = ParamSpec("P")
T = TypeVar("T")


@runtime_checkable
class Policy(Protocol):
    """Anything with ``async def call(self, fn, *args, **kwargs)`` is a policy."""

    async def call(self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``await fn(*args, **kwargs)`` under the policy.

        **Cancellation**: a policy never retries, counts or swallows a cancellation.
        """
        ...


_is_async_callable = is_async_callable


def _check_policy(where: str, policy: object) -> Policy:
    call = getattr(policy, "call", None)
    if not callable(call) or not _is_async_callable(call):
        raise TypeError(
            f"{where} must be a policy (an object with async def call(fn, *args)), got {policy!r}"
        )
    return policy  # type: ignore[return-value]


class _Decorates:
    """``@policy`` on an async function: every call goes through ``policy.call``."""

    __slots__ = ()

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        raise NotImplementedError

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        return decorate(type(self).__name__, self.call, fn)


@dataclass(frozen=True, slots=True)
class BulkheadStatistics:
    """A snapshot of a :class:`Bulkhead`."""

    max_concurrent: int
    """The limiter's total tokens."""
    in_flight: int
    """Tokens borrowed now (calls running; with a shared limiter, its other users too)."""
    waiting: int
    """Tasks waiting for a token."""
    total_admitted: int
    """Calls this bulkhead admitted over its life."""
    total_rejected: int
    """Calls refused with :class:`BulkheadFullError` (``max_wait`` ran out)."""
    total_cancelled: int
    """Calls cancelled while waiting for a token."""
    max_wait: float | None
    """The longest a call waits for a token; None: no limit."""

    @property
    def borrowed_tokens(self) -> int:
        """Wave-1 name of :attr:`in_flight` (``trio.CapacityLimiter`` vocabulary)."""
        return self.in_flight

    @property
    def tasks_waiting(self) -> int:
        """Wave-1 name of :attr:`waiting`."""
        return self.waiting

    @property
    def total_tokens(self) -> int:
        """Wave-1 name of :attr:`max_concurrent`."""
        return self.max_concurrent


class Bulkhead(_Decorates):
    """At most ``max_concurrent`` calls at once, through a ``trio.CapacityLimiter``.

    Args:
        max_concurrent: an int (a new limiter of that many tokens) or an existing
            ``trio.CapacityLimiter`` to share.
        max_wait: the longest a call waits for a token: ``None`` waits as long as the
            caller's cancel scope allows, ``0`` rejects at once when no token is free,
            a positive number waits at most that long. A call that gets no token in
            time raises :class:`BulkheadFullError`.
        name: a label for errors and metrics.

    Calls give their token back on every path, cancellation included.
    """

    __slots__ = (
        "__weakref__",
        "_admitted",
        "_cancelled",
        "_limiter",
        "_rejected",
        "max_wait",
        "name",
    )

    def __init__(
        self,
        max_concurrent: int | trio.CapacityLimiter,
        *,
        max_wait: float | None = None,
        name: str = "default",
    ):
        if isinstance(max_concurrent, trio.CapacityLimiter):
            self._limiter = max_concurrent
        else:
            check_int("max_concurrent", max_concurrent, minimum=1)
            self._limiter = trio.CapacityLimiter(max_concurrent)
        self.max_wait = check_optional_number("max_wait", max_wait, ge=0, allow_inf=True)
        if self.max_wait == float("inf"):
            self.max_wait = None
        self.name = check_str("name", name)
        self._admitted = 0
        self._rejected = 0
        self._cancelled = 0
        _live.register("bulkhead", self)

    @property
    def max_concurrent(self) -> int:
        """The limiter's total tokens."""
        return int(self._limiter.total_tokens)

    @property
    def limiter(self) -> trio.CapacityLimiter:
        """The ``trio.CapacityLimiter`` behind the bulkhead."""
        return self._limiter

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Wait for a token (at most ``max_wait``), run ``fn``, give the token back.

        Raises:
            BulkheadFullError: no token was free within ``max_wait``.

        **Cancellation**: a checkpoint, also when it rejects; cancelled while waiting,
        no token is taken.
        """
        limiter = self._limiter
        token = _Token()
        max_wait = self.max_wait
        if max_wait is None:
            try:
                await limiter.acquire_on_behalf_of(token)
            except BaseException:
                self._cancelled += 1
                raise
        elif not max_wait:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                limiter.acquire_on_behalf_of_nowait(token)
            except trio.WouldBlock:
                self._rejected += 1
                await trio.lowlevel.checkpoint()
                raise BulkheadFullError(self.name, self.max_concurrent) from None
            try:
                await trio.lowlevel.cancel_shielded_checkpoint()
            except BaseException:  # pragma: no cover - a shielded checkpoint never raises
                limiter.release_on_behalf_of(token)
                raise
        else:
            await self._acquire_within(token, max_wait)
        self._admitted += 1
        try:
            return await fn(*args, **kwargs)
        finally:
            limiter.release_on_behalf_of(token)

    async def _acquire_within(self, token: _Token, max_wait: float) -> None:
        limiter = self._limiter
        acquired = False
        try:
            with trio.move_on_after(max_wait):
                await limiter.acquire_on_behalf_of(token)
                acquired = True
        except BaseException:
            self._cancelled += 1
            raise
        if not acquired:
            self._rejected += 1
            raise BulkheadFullError(self.name, self.max_concurrent)

    def statistics(self) -> BulkheadStatistics:
        """Return a frozen snapshot of the bulkhead and its limiter."""
        limiter = self._limiter.statistics()
        return BulkheadStatistics(
            max_concurrent=int(limiter.total_tokens),
            in_flight=limiter.borrowed_tokens,
            waiting=limiter.tasks_waiting,
            total_admitted=self._admitted,
            total_rejected=self._rejected,
            total_cancelled=self._cancelled,
            max_wait=self.max_wait,
        )

    def __repr__(self) -> str:
        return (
            f"<Bulkhead {self.name!r} {self._limiter.borrowed_tokens}/"
            f"{self._limiter.total_tokens} in use>"
        )


class _Token:
    """A borrower identity per call, so one task may hold several permits."""

    __slots__ = ("__weakref__",)


class FailAfter(_Decorates):
    """Each call under ``trio.fail_after(seconds)``: ``trio.TooSlowError`` past it."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = check_number("seconds", seconds, gt=0)

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` with a deadline ``seconds`` from now.

        Raises:
            trio.TooSlowError: ``fn`` did not finish in time (it was cancelled).

        **Cancellation**: ``fn`` runs in a cancel scope with that deadline; an outer
        cancellation passes through unchanged.
        """
        with trio.fail_after(self.seconds):
            return await fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"FailAfter({self.seconds!r})"


class Fallback(_Decorates):
    """Answer with a fallback when the call fails with an exception matching ``on``.

    Args:
        value_or_async_fn: a value to return, or an async function called with the
            error whose result is returned.
        on: exception spec (type, tuple or predicate; ExceptionGroups match by their
            leaves). A ``CircuitOpenError`` triggers it like any other error.
            Cancellation never does.
    """

    __slots__ = ("_is_fn", "_matcher", "on", "value_or_async_fn")

    def __init__(self, value_or_async_fn: Any, on: ExceptionSpec = Exception) -> None:
        if callable(value_or_async_fn) and not _is_async_callable(value_or_async_fn):
            raise TypeError(
                "value_or_async_fn must be a value or an async function taking the error, "
                f"got the sync callable {value_or_async_fn!r}"
            )
        self.value_or_async_fn = value_or_async_fn
        self._is_fn = callable(value_or_async_fn)
        self.on = on
        self._matcher = Matcher("on", on)

    def _matches(self, exc: BaseException) -> bool:
        found = False
        for leaf in leaves(exc):
            if isinstance(leaf, NEVER_COUNTED):
                return False
            if not found:
                try:
                    found = self._matcher.leaf(leaf)
                except Exception:  # a predicate that raises: no fallback, the error stays
                    return False
        return found

    async def call(self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any) -> Any:
        """Return ``await fn(...)``, or the fallback when it raises a matching error.

        **Cancellation**: never answered with the fallback; it propagates unchanged.
        """
        try:
            return await fn(*args, **kwargs)
        except BaseException as exc:
            if not self._matches(exc):
                raise
            if self._is_fn:
                return await self.value_or_async_fn(exc)
            return self.value_or_async_fn

    def __repr__(self) -> str:
        return f"Fallback({self.value_or_async_fn!r}, on={self.on!r})"


def _breakers_in(policies: tuple[Any, ...]) -> tuple[CircuitBreaker, ...]:
    """The CircuitBreakers among ``policies`` and inside nested Pipelines, each once."""
    found: list[CircuitBreaker] = []
    for policy in policies:
        if isinstance(policy, Pipeline):
            inner = _breakers_in(policy.policies)
        elif isinstance(policy, CircuitBreaker):
            inner = (policy,)
        else:
            continue
        found.extend(b for b in inner if all(b is not f for f in found))
    return tuple(found)


def _compose(
    policies: tuple[Policy, ...], outer: tuple[CircuitBreaker, ...] = ()
) -> Callable[..., Awaitable[Any]] | None:
    """Chain ``policies``; ``outer`` are the breakers a nesting Pipeline puts after them."""
    call: Callable[..., Awaitable[Any]] | None = None
    for i in range(len(policies) - 1, -1, -1):
        policy = policies[i]
        if isinstance(policy, Retry) and (call is not None or outer):
            # Retry knows the breakers it wraps, per call: one Retry may serve many
            # pipelines (see Retry: no sleep for a retry a breaker would reject).
            breakers = _merge(_breakers_in(policies[i + 1 :]), outer)
            if breakers:
                if call is None:  # the last of a nested Pipeline: the outer tail is fn
                    call = functools.partial(policy._call_within, breakers)
                else:
                    call = functools.partial(policy._call_within, breakers, call)
                continue
        elif (
            type(policy) is Pipeline and (call is not None or outer) and _has_retry(policy.policies)
        ):
            # A nested Pipeline's Retries also wrap the breakers after it, out here.
            inner = _compose(policy.policies, _merge(_breakers_in(policies[i + 1 :]), outer))
            if inner is not None:
                call = inner if call is None else functools.partial(inner, call)
            continue
        call = policy.call if call is None else functools.partial(policy.call, call)
    return call


def _merge(
    first: tuple[CircuitBreaker, ...], second: tuple[CircuitBreaker, ...]
) -> tuple[CircuitBreaker, ...]:
    """``first`` then the breakers of ``second`` not already in it."""
    if not second:
        return first
    return first + tuple(b for b in second if all(b is not f for f in first))


def _has_retry(policies: tuple[Any, ...]) -> bool:
    """Whether a Retry is among ``policies`` or inside Pipelines nested in them."""
    return any(
        isinstance(p, Retry) or (type(p) is Pipeline and _has_retry(p.policies)) for p in policies
    )


class Pipeline(_Decorates):
    """Policies composed into one; the first is outermost.

    ``Pipeline(Retry(...), breaker, FailAfter(2))`` retries calls that each pass
    through the breaker, each attempt under a 2 s deadline. A Pipeline is itself a
    policy (and a decorator). A :class:`Retry` outside :class:`CircuitBreaker` s of the
    same Pipeline (or of Pipelines nested after it) gives up at once, reason
    ``"circuit_open"``, rather than sleep for a retry a breaker would still reject.

    Raises:
        TypeError: an argument is not a policy; the message gives its position.
    """

    __slots__ = ("_call", "policies")

    def __init__(self, *policies: Policy) -> None:
        for i, policy in enumerate(policies):
            _check_policy(f"policy {i} (of Pipeline)", policy)
        self.policies = policies
        self._call = _compose(policies)

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` through every policy, first outermost.

        **Cancellation**: as each policy's ``call``; no checkpoint of its own.
        """
        call = self._call
        if call is None:
            return await fn(*args, **kwargs)
        return await call(fn, *args, **kwargs)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(repr(p) for p in self.policies)})"


def duties_of(policies: tuple[Any, ...]) -> list[Callable[[], Awaitable[Any]]]:
    """The ``serve`` duty of each policy, and of each policy inside a Pipeline, once each.

    A duty is an ``async def serve(self)`` method, found by duck typing; policies
    without one (or with a sync ``serve``) have none.
    """
    found: list[Callable[[], Awaitable[Any]]] = []
    seen: list[object] = []

    def visit(items: tuple[Any, ...]) -> None:
        for policy in items:
            if any(policy is other for other in seen):
                continue
            seen.append(policy)
            if isinstance(policy, Pipeline):
                visit(policy.policies)
                continue
            serve = getattr(policy, "serve", None)
            if serve is not None and is_async_callable(serve):
                found.append(serve)

    visit(policies)
    return found


class _OnceTaskStatus(trio.TaskStatus[Any]):
    """Forward the first ``started()``; a retried child may call it again harmlessly."""

    def __init__(self, inner: trio.TaskStatus[Any]) -> None:
        self._inner = inner
        self._started = False

    def started(self, value: Any = None) -> None:
        if not self._started:
            self._started = True
            self._inner.started(value)


class GuardedNursery:
    """A Trio nursery whose children all run through a :class:`Pipeline`.

    The policies' duties (``serve()``) run in the same nursery, under their own cancel
    scope, until the body and every child started through :meth:`start_soon` or
    :meth:`start` are done; :attr:`child_tasks` lists only those children.
    """

    def __init__(self, nursery: trio.Nursery, pipeline: Pipeline) -> None:
        self._nursery = nursery
        self.pipeline = pipeline
        self._duty_scopes: list[trio.CancelScope] = []
        self._duty_tasks: set[trio.lowlevel.Task] = set()
        self._children = 0
        self._body_done = False

    @property
    def cancel_scope(self) -> trio.CancelScope:
        """The nursery's cancel scope: cancelling it cancels children and duties."""
        return self._nursery.cancel_scope

    @property
    def nursery(self) -> trio.Nursery:
        """The underlying Trio nursery (tasks started on it directly are not guarded)."""
        return self._nursery

    @property
    def parent_task(self) -> trio.lowlevel.Task:
        """The task that opened the nursery."""
        return self._nursery.parent_task

    @property
    def child_tasks(self) -> frozenset[trio.lowlevel.Task]:
        """The running children, without the policies' duties."""
        tasks = self._nursery.child_tasks
        if not self._duty_tasks:
            return tasks
        return frozenset(t for t in tasks if t not in self._duty_tasks)

    @property
    def duty_tasks(self) -> frozenset[trio.lowlevel.Task]:
        """The tasks running the policies' ``serve()`` duties."""
        return frozenset(self._duty_tasks)

    # ------------------------------------------------------------ duties

    async def _start_duties(self, duties: list[Callable[[], Awaitable[Any]]]) -> None:
        for serve in duties:
            await self._nursery.start(self._duty, serve, name=_duty_name(serve))

    async def _duty(
        self,
        serve: Callable[[], Awaitable[Any]],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task = trio.lowlevel.current_task()
        self._duty_tasks.add(task)
        try:
            with trio.CancelScope() as scope:
                self._duty_scopes.append(scope)
                if self._body_done and self._children == 0:
                    scope.cancel()
                task_status.started()
                await serve()
        finally:
            self._duty_tasks.discard(task)

    def _stop_duties(self) -> None:
        for scope in self._duty_scopes:
            scope.cancel()

    def _child_done(self) -> None:
        self._children -= 1
        if self._children == 0 and self._body_done:
            self._stop_duties()

    def _body_finished(self) -> None:
        self._body_done = True
        if self._children == 0:
            self._stop_duties()

    async def _guarded(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await self.pipeline.call(fn, *args)
        finally:
            self._child_done()

    # ------------------------------------------------------------ children

    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> None:
        """Start ``fn(*args)`` as a child, run through the pipeline."""
        self._children += 1
        try:
            self._nursery.start_soon(self._guarded, fn, *args, name=name or _name_of(fn))
        except BaseException:
            self._child_done()
            raise

    async def start(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> Any:
        """Start ``fn(*args, task_status=...)`` through the pipeline; wait for started().

        **Cancellation**: as ``trio.Nursery.start``.
        """
        pipeline = self.pipeline
        ran = False

        async def guarded(*args: Any, task_status: trio.TaskStatus[Any]) -> None:
            nonlocal ran
            ran = True
            try:
                await pipeline.call(fn, *args, task_status=_OnceTaskStatus(task_status))
            finally:
                self._child_done()

        self._children += 1
        try:
            return await self._nursery.start(guarded, *args, name=name or _name_of(fn))
        except BaseException:
            if not ran:
                self._child_done()
            raise

    def __repr__(self) -> str:
        return f"<GuardedNursery {self.pipeline!r}>"


def _name_of(fn: object) -> object:
    return getattr(fn, "__qualname__", None) or fn


def _duty_name(serve: object) -> str:
    owner = getattr(serve, "__self__", None)
    label = getattr(owner, "name", None)
    kind = type(owner).__name__ if owner is not None else "policy"
    return f"{kind}({label!r}).serve" if isinstance(label, str) else f"{kind}.serve"


@asynccontextmanager
async def open_guarded_nursery(*policies: Policy) -> AsyncIterator[GuardedNursery]:
    """Open a Trio nursery whose children run through ``Pipeline(*policies)``.

    ::

        async with open_guarded_nursery(Retry(), breaker, FailAfter(5)) as nursery:
            for url in urls:
                nursery.start_soon(fetch, url)

    Opening it starts the duty (``async def serve(self)``) of each policy that has one,
    and of each policy inside a Pipeline, once each: a breaker's timed transitions, a
    shedding channel's log flushes. The duties are cancelled once the body and every
    guarded child are done; they never appear in ``child_tasks``. Errors propagate
    exactly as from a Trio nursery (a duty that raises cancels the nursery too).

    **Cancellation**: as ``trio.open_nursery``; ``cancel_scope`` cancels every child
    and every duty.
    """
    pipeline = Pipeline(*policies)
    duties = duties_of(policies)
    async with trio.open_nursery() as nursery:
        guarded = GuardedNursery(nursery, pipeline)
        if duties:
            await guarded._start_duties(duties)
        try:
            yield guarded
        finally:
            guarded._body_finished()
