"""RateLimiter's statistics record and its remote-decision port (see ``_ratelimit``)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

RATE_LIMITER_REMOTE_FAILED = "trio_resilience.rate_limiter.remote_failed"
RATE_LIMITER_REMOTE_RECOVERED = "trio_resilience.rate_limiter.remote_recovered"

#: An async hook that decides an admission remotely: ``await decide(cost)``.
RemoteDecide = Callable[[float], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    """A snapshot of a :class:`RateLimiter`."""

    admitted: int
    """Acquisitions admitted over the limiter's life."""
    admitted_cost: float
    """Their total cost."""
    rejected: int
    """``RateLimitExceeded`` raised (the wait would pass ``max_wait`` or the deadline)."""
    would_block: int
    """``acquire_nowait`` calls refused with ``trio.WouldBlock``."""
    cancelled: int
    """Waiters cancelled while queued (they left no reservation)."""
    waiting: int
    """Tasks queued now."""
    queued_cost: float
    """Their total cost."""
    available: float
    """Cost that would be admitted at once now (0 to ``burst``), ignoring the queue."""
    wakeups: int
    """Queued tasks woken to take the head of the queue (<= admitted + cancelled)."""
    remote_attached: bool
    """Whether a remote decision hook is installed."""
    remote_decisions: int
    """Admissions decided by the remote hook."""
    remote_fallbacks: int
    """Decisions made locally because the hook failed, timed out or answered garbage."""


async def consult(
    remote: RemoteDecide, cost: float, within: float, longest: float
) -> tuple[float | None, str]:
    """Ask ``remote`` about ``cost``, waiting at most ``within`` seconds.

    Returns ``(verdict, "")`` for a usable answer: a finite number, ``<= 0`` for
    admitted, else the seconds to wait, at most ``longest`` (one emission of the cost:
    a GCRA with the limiter's own parameters never asks for more). Anything else
    gives ``(None, why)``: the exception, ``"timeout"`` or the malformed answer.
    Untrusted: never raises an ``Exception`` of the hook's.
    """
    answer: object = None
    with trio.move_on_after(within) as scope:
        try:
            answer = await remote(cost)
        except Exception as exc:
            return None, short_repr(exc)
    if scope.cancelled_caught:
        return None, "timeout"
    if (
        isinstance(answer, int | float)
        and not isinstance(answer, bool)
        and math.isfinite(answer)
        and answer <= longest * (1 + 1e-6) + 1e-3
    ):
        return float(answer), ""
    return None, f"malformed answer {short_repr(answer)}"


def short_repr(value: object) -> str:
    """``repr(value)`` cut at 200 characters; never raises."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text[:200]
