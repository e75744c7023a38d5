"""Policies composed: Bulkhead, FailAfter, Fallback, Pipeline and guarded nurseries."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable

import trio

from ._classify import NEVER_COUNTED, ExceptionSpec, Matcher, leaves
from ._decorate import decorate
from ._validate import check_int, check_number, check_str

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


def _is_async_callable(obj: object) -> bool:
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__call__", None)  # noqa: B004 - async callable objects
    )


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


class Bulkhead(_Decorates):
    """At most ``max_concurrent`` calls at once, through a ``trio.CapacityLimiter``.

    Args:
        max_concurrent: an int (a new limiter of that many tokens) or an existing
            ``trio.CapacityLimiter`` to share.
        name: a label.

    Calls wait for a token (the caller's cancel scope bounds the wait) and give it back
    on every path, cancellation included.
    """

    __slots__ = ("_limiter", "name")

    def __init__(self, max_concurrent: int | trio.CapacityLimiter, *, name: str = "default"):
        if isinstance(max_concurrent, trio.CapacityLimiter):
            self._limiter = max_concurrent
        else:
            check_int("max_concurrent", max_concurrent, minimum=1)
            self._limiter = trio.CapacityLimiter(max_concurrent)
        self.name = check_str("name", name)

    @property
    def max_concurrent(self) -> int:
        """The limiter's total tokens."""
        return int(self._limiter.total_tokens)

    @property
    def limiter(self) -> trio.CapacityLimiter:
        """The ``trio.CapacityLimiter`` behind the bulkhead."""
        return self._limiter

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Wait for a token, run ``fn``, give the token back.

        **Cancellation**: a checkpoint; cancelled while waiting, no token is taken.
        """
        limiter = self._limiter
        token = _Token()
        await limiter.acquire_on_behalf_of(token)
        try:
            return await fn(*args, **kwargs)
        finally:
            limiter.release_on_behalf_of(token)

    def statistics(self) -> Any:
        """The limiter's ``statistics()``: ``borrowed_tokens``, ``tasks_waiting`` ..."""
        return self._limiter.statistics()

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
            if not found and self._matcher.leaf(leaf):
                found = True
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


def _compose(policies: tuple[Policy, ...]) -> Callable[..., Awaitable[Any]] | None:
    call: Callable[..., Awaitable[Any]] | None = None
    for policy in reversed(policies):
        call = policy.call if call is None else functools.partial(policy.call, call)
    return call


class Pipeline(_Decorates):
    """Policies composed into one; the first is outermost.

    ``Pipeline(Retry(...), breaker, FailAfter(2))`` retries calls that each pass
    through the breaker, each attempt under a 2 s deadline. A Pipeline is itself a
    policy (and a decorator).

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
    """A Trio nursery whose children all run through a :class:`Pipeline`."""

    def __init__(self, nursery: trio.Nursery, pipeline: Pipeline) -> None:
        self._nursery = nursery
        self.pipeline = pipeline

    @property
    def cancel_scope(self) -> trio.CancelScope:
        """The nursery's cancel scope."""
        return self._nursery.cancel_scope

    @property
    def nursery(self) -> trio.Nursery:
        """The underlying Trio nursery (its children are not guarded)."""
        return self._nursery

    @property
    def child_tasks(self) -> frozenset[trio.lowlevel.Task]:
        """The nursery's running children."""
        return self._nursery.child_tasks

    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> None:
        """Start ``fn(*args)`` as a child, run through the pipeline."""
        self._nursery.start_soon(self.pipeline.call, fn, *args, name=name or _name_of(fn))

    async def start(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> Any:
        """Start ``fn(*args, task_status=...)`` through the pipeline; wait for started().

        **Cancellation**: as ``trio.Nursery.start``.
        """
        pipeline = self.pipeline

        async def guarded(*args: Any, task_status: trio.TaskStatus[Any]) -> None:
            await pipeline.call(fn, *args, task_status=_OnceTaskStatus(task_status))

        return await self._nursery.start(guarded, *args, name=name or _name_of(fn))

    def __repr__(self) -> str:
        return f"<GuardedNursery {self.pipeline!r}>"


def _name_of(fn: object) -> object:
    return getattr(fn, "__qualname__", None) or fn


@asynccontextmanager
async def open_guarded_nursery(*policies: Policy) -> AsyncIterator[GuardedNursery]:
    """Open a Trio nursery whose children run through ``Pipeline(*policies)``.

    ::

        async with open_guarded_nursery(Retry(), breaker, FailAfter(5)) as nursery:
            for url in urls:
                nursery.start_soon(fetch, url)

    Errors propagate exactly as from a Trio nursery.

    **Cancellation**: as ``trio.open_nursery``; ``cancel_scope`` cancels every child.
    """
    pipeline = Pipeline(*policies)
    async with trio.open_nursery() as nursery:
        yield GuardedNursery(nursery, pipeline)
