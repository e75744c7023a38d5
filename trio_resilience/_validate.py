"""Argument checks shared by every constructor: TypeError for types, ValueError for values."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


#: Sizes that become a container's capacity stay below this (a deque's maxlen must fit).
MAX_SIZE = 2**31 - 1


def check_int(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Return ``value`` if it is an int (not a bool) within ``[minimum, maximum]``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
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
        raise TypeError(f"{name} must be a number, got {value!r}")
    assert isinstance(value, int | float)
    number = float(value)
    if math.isnan(number):
        raise ValueError(f"{name} must not be NaN, got {value!r}")
    if math.isinf(number) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {value!r}")
    if ge is not None and number < ge:
        raise ValueError(f"{name} must be >= {ge:g}, got {value!r}")
    if gt is not None and number <= gt:
        raise ValueError(f"{name} must be > {gt:g}, got {value!r}")
    if le is not None and number > le:
        raise ValueError(f"{name} must be <= {le:g}, got {value!r}")
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
