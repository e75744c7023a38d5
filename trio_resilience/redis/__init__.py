"""Shared breaker state, retry budgets and rate limits across processes, on Redis.

``from trio_resilience.redis import open_shared_state`` (needs the ``redis`` extra:
coredis >= 6, which runs on Trio through anyio). Nothing here is imported by
``trio_resilience`` itself. See ``docs/distributed.md`` for what is shared, the trip
quorum, Cluster and Sentinel use, the costs and every failure mode.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import coredis
import trio

from .._breaker import CircuitBreaker
from .._ratelimit import RateLimiter
from .._retry_budget import RetryBudget
from .._validate import check_bool, check_int, check_logger, check_number, check_str
from ._keys import escape
from ._shared import (
    REDIS_DEGRADED,
    REDIS_MALFORMED,
    REDIS_RECOVERED,
    SharedState,
    SharedStateStatistics,
)

__all__ = [
    "REDIS_DEGRADED",
    "REDIS_MALFORMED",
    "REDIS_RECOVERED",
    "SharedState",
    "SharedStateStatistics",
    "escape",
    "open_shared_state",
]


def _check_named(kind: str, items: Sequence[Any], cls: type) -> tuple[Any, ...]:
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise TypeError(f"{kind} must be a sequence of {cls.__name__}, got {items!r}")
    for i, item in enumerate(items):
        if not isinstance(item, cls):
            raise TypeError(f"{kind}[{i}] must be a {cls.__name__}, got {item!r}")
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise ValueError(f"{kind} must have distinct names, got {names!r}")
    return tuple(items)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _only_from(group: BaseExceptionGroup[Any], body_error: BaseException) -> bool:
    """Whether every leaf of ``group`` is a leaf of ``body_error`` or a Cancelled."""
    own = {id(leaf) for leaf in _leaves(body_error)}
    return all(id(leaf) in own or isinstance(leaf, trio.Cancelled) for leaf in _leaves(group))


@asynccontextmanager
async def open_shared_state(
    url_or_client: str | Any,
    *breakers: CircuitBreaker,
    retry_budgets: Sequence[RetryBudget] = (),
    rate_limiters: Sequence[RateLimiter] = (),
    prefix: str = "trio_resilience",
    sync_interval: float = 0.25,
    share_counts: bool = False,
    permit_timeout: float = 0.05,
    permit_lease: float = 30.0,
    trip_quorum: int = 2,
    logger: Any = None,
) -> AsyncIterator[SharedState]:
    """Share ``breakers``, ``retry_budgets`` and ``rate_limiters`` through Redis while
    the block runs.

    Args:
        url_or_client: a ``redis://``, ``rediss://`` or ``unix://`` URL, or a coredis
            client (``Redis``, ``RedisCluster``, a Sentinel ``primary_for(...)``
            client) that the caller has entered and will close; any
            ``decode_responses`` setting.
        *breakers: the breakers to share, matched across processes by name.
        retry_budgets: budgets to share, matched by name.
        rate_limiters: RateLimiters to share cluster-wide (GCRA on the server's
            clock), matched by name; each falls back to its full local rate while
            Redis is down.
        prefix: namespace of every key and of the pub/sub channel.
        sync_interval: seconds between syncs (> 0; used within 1 ms and an hour).
        share_counts: also trip on the cluster's failure counts.
        permit_timeout: the longest a half-open probe or a rate decision waits for
            Redis (> 0; at most a minute is used), then the local limiter decides.
        permit_lease: seconds after which an unreleased probe permit expires (> 0;
            at most a day is used).
        trip_quorum: distinct processes (``open_shared_state`` blocks) whose trips
            within a breaker's ``failure_window`` open it here; 1 opens on any trip.
        logger: a structlog-like logger.

    Yields:
        the running :class:`SharedState`.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument has a wrong value; the message names it.
        RuntimeError: a breaker is already shared by another block.

    **Cancellation**: the block runs the sync tasks in a nursery; leaving the block
    (normally, by error or by cancellation) stops the sharing and detaches every
    breaker, budget and limiter, which go on working locally. Redis never makes the
    block or any call through the shared policies fail.
    """
    if isinstance(url_or_client, str):
        if not url_or_client.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"url_or_client must be a redis://, rediss:// or unix:// URL, got {url_or_client!r}"
            )
    elif not isinstance(url_or_client, coredis.client.Client):
        raise TypeError(f"url_or_client must be a URL or a coredis client, got {url_or_client!r}")
    shared_breakers = _check_named("breakers", breakers, CircuitBreaker)
    budgets = _check_named("retry_budgets", retry_budgets, RetryBudget)
    limiters = _check_named("rate_limiters", rate_limiters, RateLimiter)
    state = SharedState(
        url_or_client,
        shared_breakers,
        budgets,
        limiters,
        prefix=check_str("prefix", prefix),
        sync_interval=check_number("sync_interval", sync_interval, gt=0),
        share_counts=check_bool("share_counts", share_counts),
        permit_timeout=check_number("permit_timeout", permit_timeout, gt=0),
        permit_lease=check_number("permit_lease", permit_lease, gt=0),
        trip_quorum=check_int("trip_quorum", trip_quorum, minimum=1),
        logger=check_logger(logger),
    )
    state._attach()
    body_error: BaseException | None = None
    try:
        try:
            async with trio.open_nursery() as nursery:
                # The first sync loads the shared state before the body runs, but a
                # stalled Redis never holds up the entry for longer than entry_wait.
                nursery.start_soon(state.run)
                await state.wait_started()
                try:
                    yield state
                except BaseException as exc:
                    body_error = exc
                    raise
                finally:
                    # Trips, closes and lease releases not yet sent go out now (bounded).
                    with trio.CancelScope(shield=True), trio.move_on_after(state.exit_flush):
                        await state._flush()
                    state._closing = True
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The block's own error comes out as itself, not wrapped by our nursery
            # (which may hold a copy of a group the body raised, and Cancelleds).
            if body_error is None or not _only_from(group, body_error):
                raise
        if body_error is not None:
            raise body_error
    finally:
        state._closing = True
        state._detach()
