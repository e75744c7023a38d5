"""Checks for everything read from Redis: nothing there is trusted.

Each helper returns None for a value it refuses (wrong type, out of bounds, NaN, inf,
too long); the caller counts it as malformed. No recursion, no unbounded parsing.
"""

from __future__ import annotations

from typing import Any

#: Integers above this lose precision as floats; no count or time we keep is larger.
MAX_INT = 2**53
#: The longest pub/sub hint read; anything longer is malformed.
MAX_MESSAGE = 512
#: The longest origin id read back from Redis.
MAX_ORIGIN = 200


def integer(value: Any, low: int = 0, high: int = MAX_INT) -> int | None:
    """``value`` if it is an int (not a bool) within ``[low, high]``."""
    if type(value) is not int or not low <= value <= high:
        return None
    return value


def text(value: Any, limit: int = MAX_ORIGIN) -> str | None:
    """``value`` (str or bytes, as the client decodes) as a str of at most ``limit``."""
    if isinstance(value, bytes):
        if len(value) > limit:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, str) and len(value) <= limit:
        return value
    return None


def reply_list(value: Any, minimum: int, maximum: int = 100_000) -> list[Any] | None:
    """``value`` if it is a list (or tuple) of ``minimum`` to ``maximum`` items."""
    if not isinstance(value, list | tuple) or not minimum <= len(value) <= maximum:
        return None
    return list(value)


def hint(data: Any) -> tuple[str, str] | None:
    """Parse a pub/sub hint ``v2|<name>|<origin>`` into (name, origin); the name is
    the escaped breaker name or its digest (``_keys.hint_name``)."""
    message = text(data, MAX_MESSAGE)
    if message is None:
        return None
    parts = message.split("|")
    if len(parts) != 3 or parts[0] != "v2" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]
