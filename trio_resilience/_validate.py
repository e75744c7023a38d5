"""Argument checks shared by every constructor: TypeError for types, ValueError for values."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any


def show(value: object, limit: int = 80) -> str:
    """``repr(value)`` for an error message: never raises, huge values cut short."""
    try:
        text = repr(value)
    except Exception:  # an int past the digit limit, or a __repr__ that raises
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


#: Sizes that become a container's capacity stay below this (a deque's maxlen must fit).
MAX_SIZE = 2**31 - 1


def check_int(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Return ``value`` if it is an int (not a bool) within ``[minimum, maximum]``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {show(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {show(value)}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {show(value)}")
    return value


def check_optional_int(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    """Like :func:`check_int`, also accepting ``None``."""
    if value is None:
        return None
    return check_int(name, value, minimum=minimum, maximum=maximum)


def check_number(
    name: str,
    value: object,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    allow_inf: bool = False,
) -> float:
    """Return ``value`` as a float if it is a real number within the bounds."""
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {show(value)}")
    assert isinstance(value, int | float)
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float: as large as infinity
        number = math.inf if value > 0 else -math.inf
    if math.isnan(number):
        raise ValueError(f"{name} must not be NaN, got {show(value)}")
    if math.isinf(number) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {show(value)}")
    if ge is not None and number < ge:
        raise ValueError(f"{name} must be >= {ge:g}, got {show(value)}")
    if gt is not None and number <= gt:
        raise ValueError(f"{name} must be > {gt:g}, got {show(value)}")
    if le is not None and number > le:
        raise ValueError(f"{name} must be <= {le:g}, got {show(value)}")
    return number


def check_optional_number(
    name: str,
    value: object,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    allow_inf: bool = False,
) -> float | None:
    """Like :func:`check_number`, also accepting ``None``."""
    if value is None:
        return None
    return check_number(name, value, ge=ge, gt=gt, le=le, allow_inf=allow_inf)


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_str(name: str, value: object) -> str:
    """Return ``value`` if it is a non-empty str."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {value!r}")
    if not value:
        raise ValueError(f"{name} must not be empty, got {value!r}")
    return value


def check_optional_callable(name: str, value: object) -> Callable[..., Any] | None:
    """Return ``value`` if it is callable or ``None``."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {value!r}")
    return value


def check_logger(value: object) -> Any:
    """Return ``value`` if it looks like a structlog logger (or is ``None``)."""
    if value is None:
        return None
    for method in ("info", "warning", "error"):
        if not callable(getattr(value, method, None)):
            raise TypeError(f"logger must have sync info/warning/error methods, got {value!r}")
    return value


#: The shortest window or duration a sliding-window policy accepts, in seconds.
#: Shorter ones would make time buckets of zero width (5e-324 / 10 == 0.0).
MIN_WINDOW = 1e-6

#: Counts and sizes read from outside (e.g. Redis) must stay within this: exact as floats.
MAX_COUNT = 2**53


def check_window(name: str, value: object, *, minimum: float = MIN_WINDOW) -> float:
    """Return ``value`` as a float if it is a finite number of seconds >= ``minimum``.

    Windows, periods and intervals that split into time buckets use this, so that a
    tiny value (``5e-324``) is a ``ValueError`` at construction, never a crash later.
    """
    number = check_number(name, value, gt=0)
    if number < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")
    return number


def is_async_callable(obj: object) -> bool:
    """Whether calling ``obj`` returns an awaitable coroutine or an async generator.

    Sees through ``functools.partial`` and async ``__call__`` methods.
    """
    return (
        inspect.iscoroutinefunction(obj)
        or inspect.isasyncgenfunction(obj)
        or inspect.iscoroutinefunction(getattr(obj, "__call__", None))  # noqa: B004
    )


def check_sync_callable(name: str, value: object, *, optional: bool = True) -> Any:
    """Return ``value`` if it is a plain (sync) callable, or ``None`` when ``optional``.

    An ``async def`` function is a ``TypeError``: a sync callback would get a coroutine
    that is never awaited.
    """
    if value is None and optional:
        return None
    if not callable(value):
        what = "callable or None" if optional else "callable"
        raise TypeError(f"{name} must be {what}, got {value!r}")
    if is_async_callable(value):
        raise TypeError(f"{name} must be a sync callable, got the async callable {value!r}")
    return value
