"""Exception specs (a type, a tuple of types or a predicate) and ExceptionGroup-aware matching."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

import trio

from ._exceptions import ResilienceError
from ._log import CLASSIFY_FAILED, log_safely, safe_repr
from ._validate import is_async_callable

ExceptionSpec: TypeAlias = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)

#: Never a failure, never retried: these always propagate untouched.
NEVER_COUNTED: tuple[type[BaseException], ...] = (
    trio.Cancelled,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
)

# Verdicts of :func:`classify`.
SUCCESS = 0
FAILURE = 1
IGNORED = 2
CANCELLED = 3


def check_exception_spec(name: str, spec: object) -> ExceptionSpec:
    """Return ``spec`` if it is an exception spec, else raise ``TypeError`` naming ``name``.

    A spec is an exception type, a tuple of exception types, or a sync predicate
    ``Callable[[BaseException], bool]``. A class that is not an exception (``int``)
    and an ``async def`` function are refused: neither could answer the question.
    """
    if isinstance(spec, type):
        if issubclass(spec, BaseException):
            return spec
        raise TypeError(
            f"{name} must be an exception type, a tuple of exception types or a "
            f"predicate, got the non-exception class {spec!r}"
        )
    if isinstance(spec, tuple):
        for i, item in enumerate(spec):
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise TypeError(
                    f"{name} must be an exception type, a tuple of exception types or "
                    f"a predicate; item {i} is {item!r}"
                )
        return spec
    if callable(spec):
        if is_async_callable(spec):
            raise TypeError(f"{name} must be a sync predicate, got the async callable {spec!r}")
        return spec
    raise TypeError(
        f"{name} must be an exception type, a tuple of exception types or a predicate, got {spec!r}"
    )


class Matcher:
    """A compiled exception spec that answers for one leaf exception."""

    __slots__ = ("names_resilience", "predicate", "spec", "types")

    def __init__(self, name: str, spec: object) -> None:
        check_exception_spec(name, spec)
        self.spec = spec
        self.predicate: Callable[[BaseException], bool] | None = None
        self.types: tuple[type[BaseException], ...] = ()
        if isinstance(spec, type):
            self.types = (spec,)
        elif isinstance(spec, tuple):
            self.types = spec
        else:
            self.predicate = spec  # type: ignore[assignment]
        self.names_resilience = any(issubclass(t, ResilienceError) for t in self.types)

    def leaf(self, exc: BaseException) -> bool:
        """Whether ``exc`` (not a group) matches the spec."""
        if self.predicate is not None:
            return bool(self.predicate(exc))
        return isinstance(exc, self.types)

    def leaf_strict(self, exc: BaseException) -> bool:
        """Like :meth:`leaf`, but a :class:`ResilienceError` matches only a type that names it."""
        if self.predicate is not None:
            return bool(self.predicate(exc))
        if isinstance(exc, ResilienceError):
            return self.names_resilience and any(
                issubclass(t, ResilienceError) and isinstance(exc, t) for t in self.types
            )
        return isinstance(exc, self.types)

    def __repr__(self) -> str:
        return f"Matcher({self.spec!r})"


NOTHING = Matcher("ignore_on", ())
"""A matcher that matches no exception (for policies without an ``ignore_on``)."""


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """Yield the non-group exceptions inside ``exc`` (``exc`` itself if not a group)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc


def classify(exc: BaseException, failure_on: Matcher, ignore_on: Matcher) -> int:
    """Classify ``exc`` for a circuit breaker.

    Cancellation and the other never-counted exceptions give CANCELLED. Ignore wins
    over failure: a group is IGNORED only when every counted leaf is ignored, and a
    FAILURE when any counted leaf is a failure; anything else is a SUCCESS, except a
    BaseException that is not an Exception (IGNORED: it says nothing of health).
    """
    if not isinstance(exc, BaseExceptionGroup):
        if isinstance(exc, NEVER_COUNTED):
            return CANCELLED
        if ignore_on.leaf(exc):
            return IGNORED
        if failure_on.leaf(exc):
            return FAILURE
        # A BaseException nobody named (not an Exception) is no evidence of health.
        return SUCCESS if isinstance(exc, Exception) else IGNORED
    counted = [leaf for leaf in leaves(exc) if not isinstance(leaf, NEVER_COUNTED)]
    if not counted:
        return CANCELLED
    if all(ignore_on.leaf(leaf) for leaf in counted):
        return IGNORED
    if any(failure_on.leaf(leaf) for leaf in counted):
        return FAILURE
    return SUCCESS if isinstance(exc, Exception) else IGNORED


def is_retryable(exc: BaseException, retry_on: Matcher) -> bool:
    """Whether a retry may follow ``exc``.

    Never when any leaf is a cancellation (retrying would swallow it); otherwise when
    any leaf matches ``retry_on``, this library's own rejections only if named.
    """
    if not isinstance(exc, BaseExceptionGroup):
        return not isinstance(exc, NEVER_COUNTED) and retry_on.leaf_strict(exc)
    found = False
    for leaf in leaves(exc):
        if isinstance(leaf, NEVER_COUNTED):
            return False
        if not found and retry_on.leaf_strict(leaf):
            found = True
    return found


def classify_or_failure(exc: BaseException, failure_on: Matcher, logger: Any, **keys: Any) -> int:
    """:func:`classify` with no ``ignore_on``; a ``failure_on`` predicate that raises
    counts the call as a failure and logs ``trio_resilience.classify_failed``."""
    try:
        return classify(exc, failure_on, NOTHING)
    except Exception as broken:
        log_safely(
            logger, "error", CLASSIFY_FAILED, error=safe_repr(broken, 200), exc_info=True, **keys
        )
        return FAILURE
