"""``@policy`` on an async function: the one decorator every policy shares."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def decorate(
    kind: str, call: Callable[..., Awaitable[Any]], fn: Callable[P, Awaitable[T]]
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Wrap the async ``fn`` so that every call runs as ``await call(fn, *args, **kwargs)``.

    Keeps ``fn``'s name, docstring and signature (``functools.wraps``) and its type
    (``ParamSpec``). A sync ``fn`` is a ``TypeError`` at decoration time, since a policy
    could never await it.
    """
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"@{kind} decorates async functions, got {fn!r}")

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return await call(fn, *args, **kwargs)  # type: ignore[no-any-return]

    return wrapper
