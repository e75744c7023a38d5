"""Which errors mean Redis is down (connection, time-out, a dead pool) and which are data.

Only the first kind degrades sharing; the second is counted as malformed. Neither
ever reaches a caller.
"""

from __future__ import annotations

from typing import Any

import anyio
import coredis.exceptions as cx
import trio

from .._log import safe_repr

# Errors that mean Redis is unreachable, slow or unusable (never a data problem).
_DOWN = (
    cx.ConnectionError,
    cx.ClusterDownError,
    cx.TryAgainError,
    cx.AskError,
    cx.ClusterError,
    cx.ClusterRoutingError,
    cx.ClusterResponseError,
    cx.AuthenticationError,
    cx.AuthorizationError,
    cx.ReadOnlyError,
    cx.SentinelError,
    cx.PubSubError,
    TimeoutError,
    OSError,
    EOFError,
    trio.TooSlowError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    RuntimeError,  # e.g. a command on a pool that was closed under it
)


def is_down(exc: BaseException) -> bool:
    """Whether ``exc`` (or every leaf of a group) says Redis is unreachable or slow."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_down(e) for e in exc.exceptions)
    return isinstance(exc, _DOWN)


def only_errors(exc: BaseException) -> bool:
    """Whether ``exc`` (or every leaf of a group) is an ``Exception``, not a Cancelled."""
    if isinstance(exc, BaseExceptionGroup):
        return all(only_errors(e) for e in exc.exceptions)
    return isinstance(exc, Exception)


def without_errors(exc: BaseException) -> BaseException | None:
    """``exc`` without its ``Exception`` leaves (a Cancelled, or a group of them), or None.

    A client torn down by a cancellation may raise its own errors next to the
    Cancelled; only the Cancelled may go on, so that the cancel scope absorbs it.
    """
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(
            lambda e: not isinstance(e, Exception | BaseExceptionGroup)  # leaves only
        )
    return None if isinstance(exc, Exception) else exc


def describe(value: Any) -> str:
    """``repr(value)`` cut at 200 characters, even when that ``repr`` raises."""
    return safe_repr(value, 200)
