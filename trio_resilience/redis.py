"""Shared breaker state and retry budgets across processes and hosts, on Redis.

``from trio_resilience.redis import open_shared_state`` (needs the ``redis`` extra:
coredis, which runs on Trio through anyio). Nothing here is imported by
``trio_resilience`` itself.

What is shared, and how (see ``docs/distributed.md``):

- trips: a process whose breaker opens writes ``{prefix}:breaker:{name}`` (a hash of
  plain fields) and publishes on ``{prefix}:events``; every process sharing the breaker
  opens it until the shared recovery deadline, on the Redis server's clock. Late joiners
  read the hash. When a process's probes close the breaker, the others close too.
- half-open probes: a sorted set of leases per breaker, taken by a Lua script, so that
  at most ``half_open_max_calls`` probes run across the cluster; a lease expires after
  ``permit_lease`` seconds, so a crashed process cannot hold one forever.
- failure counts (``share_counts=True``): each process adds its new failures and calls
  to time buckets every ``sync_interval``; the cluster's counts can trip every breaker.
- retry budget tokens: deposits and withdrawals go to time buckets by a Lua script; each
  process's budget then sees the cluster's net tokens.

The closed-state call path never awaits Redis; a half-open probe waits at most
``permit_timeout`` for a cluster permit, then falls back to the local limiter. When
Redis is down or slow, breakers go on deciding locally.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import coredis
import coredis.exceptions
import coredis.retry
import trio

from ._backoff import ExponentialBackoff
from ._breaker import CircuitBreaker, CircuitState
from ._log import get_logger
from ._retry import RetryBudget
from ._validate import check_bool, check_logger, check_number, check_str

__all__ = ["SharedState", "SharedStateStatistics", "open_shared_state"]

REDIS_DEGRADED = "trio_resilience.redis.degraded"
REDIS_RECOVERED = "trio_resilience.redis.recovered"
REDIS_MALFORMED = "trio_resilience.redis.malformed"

_BUCKETS = 10
_RECONNECT = ExponentialBackoff(base=0.05, multiplier=2.0, max_delay=2.0, jitter_factor=0.3)

# KEYS[1] = lease zset; ARGV = limit, lease ms, lease id. Server time, atomic.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
"""

# KEYS[1] = bucket hash; ARGV = bucket ms, window ms, then field/increment pairs.
# Adds the increments to the current bucket, drops buckets older than the window and
# returns, for each field, the sum over the window.
_ADD_BUCKETS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local width = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local current = math.floor(now / width)
local oldest = current - math.floor(window / width) + 1
for i = 3, #ARGV, 2 do
  local inc = tonumber(ARGV[i + 1])
  if inc ~= 0 then
    redis.call('HINCRBY', KEYS[1], ARGV[i] .. ':' .. current, inc)
  end
end
local sums = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local field, bucket = string.match(all[i], '^(.*):(%-?%d+)$')
  bucket = tonumber(bucket)
  if bucket == nil or bucket < oldest then
    redis.call('HDEL', KEYS[1], all[i])
  else
    sums[field] = (sums[field] or 0) + tonumber(all[i + 1])
  end
end
redis.call('PEXPIRE', KEYS[1], window * 2)
local out = {}
for i = 3, #ARGV, 2 do
  table.insert(out, sums[ARGV[i]] or 0)
end
return out
"""


@dataclass(frozen=True, slots=True)
class SharedStateStatistics:
    """The sharing layer's health and traffic, from :meth:`SharedState.statistics`."""

    connected: bool
    """Whether Redis answered the last operation."""
    degraded_since: float | None
    """Trio time since when Redis has been unreachable, or None."""
    last_sync: float | None
    """Trio time of the last completed sync."""
    published: int
    """Trips and closes this process published."""
    received: int
    """Trips and closes received from other processes and applied."""
    malformed: int
    """Values read from Redis that were ignored as malformed or foreign."""


class _Lost(Exception):
    """Redis is unreachable or too slow; the supervisor reconnects."""


class SharedState:
    """The running sharing layer, yielded by :func:`open_shared_state`."""

    def __init__(
        self,
        url: str,
        breakers: Sequence[CircuitBreaker],
        retry_budgets: Sequence[RetryBudget],
        *,
        prefix: str,
        sync_interval: float,
        share_counts: bool,
        permit_timeout: float,
        permit_lease: float,
        logger: Any,
    ) -> None:
        self.url = url
        self.breakers = {b.name: b for b in breakers}
        self.retry_budgets = tuple(retry_budgets)
        self.prefix = prefix
        self.sync_interval = sync_interval
        self.share_counts = share_counts
        self.permit_timeout = permit_timeout
        self.permit_lease = permit_lease
        self._logger = get_logger(logger)
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._client: Any = None
        self._acquire_script: Any = None
        self._add_script: Any = None
        self._offset = 0.0  # server time minus Trio time, seconds
        self._outbox_send, self._outbox = trio.open_memory_channel[tuple[Any, ...]](10_000)
        self._leases = itertools.count()
        self._connected = False
        self._closing = False
        self._degraded_since: float | None = None
        self._last_sync: float | None = None
        self._published = 0
        self._received = 0
        self._malformed = 0
        self._flushed: dict[str, tuple[int, int]] = {}
        self._budget_flushed: list[tuple[int, int]] = [(0, 0)] * len(self.retry_budgets)

    # ------------------------------------------------------------ keys

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def channel(self) -> str:
        """The pub/sub channel of trips and closes."""
        return self._key("events")

    # ------------------------------------------------------------ hooks on breakers

    def _attach(self) -> None:
        for breaker in self.breakers.values():
            breaker._observers.append(self._observe)
            breaker._cluster = self

    def _detach(self) -> None:
        for breaker in self.breakers.values():
            if self._observe in breaker._observers:
                breaker._observers.remove(self._observe)
            if breaker._cluster is self:
                breaker._cluster = None
        for budget in self.retry_budgets:
            budget._external = 0

    def _observe(
        self, breaker: CircuitBreaker, old: CircuitState, new: CircuitState, reason: str
    ) -> None:
        if reason in ("remote_trip", "remote_close"):
            return
        if new is CircuitState.OPEN:
            self._post(("open", breaker.name, breaker._open_until))
        elif new is CircuitState.CLOSED and reason == "success_threshold":
            self._post(("closed", breaker.name))

    def _post(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(trio.WouldBlock):  # 10,000 unsent events: drop the rest
            self._outbox_send.send_nowait(message)

    async def acquire(self, breaker: CircuitBreaker) -> str | bool | None:
        """A cluster-wide probe permit: a lease id, False when the cluster is full, or
        None when Redis did not answer within ``permit_timeout`` (the local limiter
        decides then).

        **Cancellation**: waits at most ``permit_timeout``; a cancelled wait takes no
        permit (a lease granted just then expires after ``permit_lease``).
        """
        script = self._acquire_script
        if script is None:
            return None
        lease = f"{self.origin}:{next(self._leases)}"
        with trio.move_on_after(self.permit_timeout):
            try:
                got = await script(
                    keys=[self._key("breaker", breaker.name, "probes")],
                    args=[breaker.half_open_max_calls, int(self.permit_lease * 1000), lease],
                )
            except (coredis.exceptions.RedisError, OSError):
                return None
            return lease if int(got) == 1 else False
        return None

    def release(self, breaker: CircuitBreaker, lease: str) -> None:
        """Give a probe permit back (asynchronously; it expires anyway)."""
        self._post(("release", breaker.name, lease))

    # ------------------------------------------------------------ statistics

    def statistics(self) -> SharedStateStatistics:
        """Return the sharing layer's health and traffic."""
        return SharedStateStatistics(
            connected=self._connected,
            degraded_since=self._degraded_since,
            last_sync=self._last_sync,
            published=self._published,
            received=self._received,
            malformed=self._malformed,
        )

    def __repr__(self) -> str:
        state = "connected" if self._connected else "degraded"
        return f"<SharedState {self.prefix!r} {state} {sorted(self.breakers)}>"

    # ------------------------------------------------------------ the tasks

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a connection, reconnecting with backoff; local decisions never wait.

        Runs in :func:`open_shared_state`'s nursery; reports started once the first
        connection is made or has failed (then the breakers start out local).

        **Cancellation**: cancelling it (leaving the block) closes the connection.
        """
        started = False
        delays = _RECONNECT.delays()
        while True:
            try:
                client = coredis.Redis.from_url(
                    self.url,
                    decode_responses=True,
                    retry_policy=coredis.retry.NoRetryPolicy(),
                    connect_timeout=max(0.5, self.sync_interval * 4),
                    stream_timeout=max(0.5, self.sync_interval * 4),
                )
                async with client:
                    try:
                        self._acquire_script = client.register_script(_ACQUIRE)
                        self._add_script = client.register_script(_ADD_BUCKETS)
                        await self._sync(client)
                        self._up()
                        delays = _RECONNECT.delays()
                        if not started:
                            started = True
                            task_status.started()
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._subscribe, client)
                            nursery.start_soon(self._sync_forever, client)
                            nursery.start_soon(self._send, client)
                    finally:
                        self._acquire_script = None
            except BaseExceptionGroup as group:
                lost, rest = group.split(_is_connection_error)
                if rest is not None:
                    raise rest from None
                if self._closing:
                    return
                self._down(lost)
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                if self._closing:
                    return  # a client torn down while the block exits: not an outage
                self._down(exc)
            if not started:
                started = True
                task_status.started()  # degraded from the start: breakers decide locally
            await trio.sleep(next(delays))

    def _up(self) -> None:
        if self._degraded_since is not None:
            self._logger.info(
                REDIS_RECOVERED,
                prefix=self.prefix,
                degraded_for=trio.current_time() - self._degraded_since,
            )
            self._degraded_since = None
        self._connected = True

    def _down(self, error: BaseException | None) -> None:
        self._connected = False
        self._acquire_script = None
        if self._degraded_since is None:
            self._degraded_since = trio.current_time()
            self._logger.warning(REDIS_DEGRADED, prefix=self.prefix, error=repr(error))

    async def _call(self, awaitable: Any) -> Any:
        try:
            with trio.fail_after(max(0.5, self.sync_interval * 4)):
                return await awaitable
        except (trio.TooSlowError, coredis.exceptions.RedisError, OSError) as exc:
            raise _Lost(repr(exc)) from exc

    async def _sync_forever(self, client: Any) -> None:
        while True:
            await trio.sleep(self.sync_interval)
            await self._sync(client)

    async def _sync(self, client: Any) -> None:
        before = trio.current_time()
        server = await self._call(client.time())
        after = trio.current_time()
        self._offset = server.timestamp() - (before + after) / 2
        now = trio.current_time()
        for name, breaker in self.breakers.items():
            fields = await self._call(client.hgetall(self._key("breaker", name)))
            if fields:
                self._apply_stored(breaker, fields, now)
            if self.share_counts:
                await self._share_counts(breaker, now)
        for index, budget in enumerate(self.retry_budgets):
            await self._share_budget(index, budget)
        self._last_sync = trio.current_time()

    def _apply_stored(self, breaker: CircuitBreaker, fields: dict[str, Any], now: float) -> None:
        state = fields.get("state")
        until = _number(fields.get("open_until_ms"))
        if state == "open" and until is not None:
            local_until = until / 1000 - self._offset
            if local_until > now:
                if breaker._state is not CircuitState.OPEN:
                    self._received += 1
                breaker._remote_open(local_until, now)
        elif state not in ("open", "closed"):
            self._malformed_value(breaker.name, fields)

    async def _share_counts(self, breaker: CircuitBreaker, now: float) -> None:
        failures = breaker._total_failures
        calls = breaker._total_failures + breaker._total_successes
        last_failures, last_calls = self._flushed.get(breaker.name, (0, 0))
        self._flushed[breaker.name] = (failures, calls)
        window_ms = int(breaker.failure_window * 1000)
        width = max(1, window_ms // _BUCKETS)
        sums = await self._call(
            self._add_script(
                keys=[self._key("breaker", breaker.name, "counts")],
                args=[width, window_ms, "f", failures - last_failures, "c", calls - last_calls],
            )
        )
        try:
            cluster_failures, cluster_calls = int(sums[0]), int(sums[1])
        except (TypeError, ValueError, IndexError):
            self._malformed_value(breaker.name, sums)
            return
        if breaker._state is not CircuitState.CLOSED:
            return
        threshold, rate = breaker.failure_threshold, breaker.failure_rate_threshold
        if (threshold is not None and cluster_failures >= threshold) or (
            rate is not None
            and cluster_calls >= breaker.minimum_calls
            and cluster_failures >= rate * cluster_calls
        ):
            breaker._transition(CircuitState.OPEN, "shared_failures", now)

    async def _share_budget(self, index: int, budget: RetryBudget) -> None:
        deposits, withdrawals = budget._deposits, budget._withdrawals
        last_deposits, last_withdrawals = self._budget_flushed[index]
        self._budget_flushed[index] = (deposits, withdrawals)
        window_ms = int(budget.window * 1000)
        net = (deposits - last_deposits) * budget._deposit - (withdrawals - last_withdrawals) * 1000
        sums = await self._call(
            self._add_script(
                keys=[self._key("retry_budget", str(index))],
                args=[max(1, window_ms // _BUCKETS), window_ms, "net", net],
            )
        )
        try:
            cluster_net = int(sums[0])
        except (TypeError, ValueError, IndexError):
            self._malformed_value(f"retry_budget:{index}", sums)
            return
        budget._external = cluster_net - budget._sum

    async def _subscribe(self, client: Any) -> None:
        pubsub = client.pubsub(
            channels=[self.channel],
            ignore_subscribe_messages=True,
            retry_policy=coredis.retry.NoRetryPolicy(),
        )
        try:
            async with pubsub:
                async for message in pubsub:
                    if message.get("type") == "message":
                        self._receive(message.get("data"))
        except _CONNECTION_ERRORS as exc:
            raise _Lost(repr(exc)) from exc
        raise _Lost("subscription ended")

    def _receive(self, data: Any) -> None:
        try:
            event = json.loads(data)
            name, state, origin = event["breaker"], event["state"], event["origin"]
            if not (isinstance(name, str) and isinstance(origin, str)):
                raise ValueError("breaker and origin must be strings")
            if state not in ("open", "closed"):
                raise ValueError(f"unknown state {state!r}")
            until = _number(event.get("open_until_ms")) if state == "open" else None
            if state == "open" and until is None:
                raise ValueError("open_until_ms missing")
        except (ValueError, TypeError, KeyError) as exc:
            self._malformed_value("events", data, exc)
            return
        if origin == self.origin:
            return
        breaker = self.breakers.get(name)
        if breaker is None:
            return  # a breaker this process does not share
        now = trio.current_time()
        if state == "open":
            assert until is not None
            local_until = until / 1000 - self._offset
            if local_until <= now:
                return  # a trip whose open period is already over
            self._received += 1
            breaker._remote_open(local_until, now)
        else:
            self._received += 1
            breaker._remote_close(now)

    async def _send(self, client: Any) -> None:
        async for message in self._outbox:
            kind, name = message[0], message[1]
            if kind == "release":
                await self._call(client.zrem(self._key("breaker", name, "probes"), [message[2]]))
                continue
            event: dict[str, Any] = {"breaker": name, "state": kind, "origin": self.origin}
            fields: dict[str, Any] = {"state": kind, "origin": self.origin}
            if kind == "open":
                if message[2] <= trio.current_time():
                    continue  # sent late (Redis was down): its open period is over
                until_ms = int((message[2] + self._offset) * 1000)
                event["open_until_ms"] = fields["open_until_ms"] = until_ms
            key = self._key("breaker", name)
            await self._call(client.hset(key, fields))
            await self._call(client.pexpire(key, 24 * 3600 * 1000))
            await self._call(client.publish(self.channel, json.dumps(event)))
            self._published += 1

    def _malformed_value(self, where: str, value: Any, error: Any = None) -> None:
        self._malformed += 1
        self._logger.warning(
            REDIS_MALFORMED,
            prefix=self.prefix,
            key=where,
            value=repr(value)[:200],
            error=repr(error) if error is not None else None,
        )


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


_CONNECTION_ERRORS = (
    _Lost,
    coredis.exceptions.RedisError,
    OSError,
    trio.TooSlowError,
    EOFError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
)


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, _CONNECTION_ERRORS)


@asynccontextmanager
async def open_shared_state(
    url: str,
    *breakers: CircuitBreaker,
    retry_budgets: Sequence[RetryBudget] = (),
    prefix: str = "trio_resilience",
    sync_interval: float = 0.25,
    share_counts: bool = False,
    permit_timeout: float = 0.05,
    permit_lease: float = 30.0,
    logger: Any = None,
) -> AsyncIterator[SharedState]:
    """Share ``breakers`` (and ``retry_budgets``) through Redis while the block runs.

    Args:
        url: ``redis://`` or ``rediss://`` URL (user and password allowed).
        *breakers: the breakers to share, by name; other processes share a breaker by
            passing one of the same name (and the same prefix).
        retry_budgets: budgets to share, matched across processes by position.
        prefix: namespace of every key and of the pub/sub channel.
        sync_interval: seconds between syncs (late-join reads, counts, budgets).
        share_counts: also trip on the cluster's failure counts.
        permit_timeout: the longest a half-open probe waits for a cluster permit.
        permit_lease: seconds after which an unreleased probe permit expires.
        logger: a structlog-like logger.

    Yields:
        the running :class:`SharedState`.

    **Cancellation**: the block runs the sync tasks in a nursery; leaving the block
    (normally, by error or by cancellation) stops the sharing and detaches the
    breakers, which go on working locally.
    """
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"url must be a redis://, rediss:// or unix:// URL, got {url!r}")
    for i, breaker in enumerate(breakers):
        if not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breakers[{i}] must be a CircuitBreaker, got {breaker!r}")
        if breaker._cluster is not None:
            raise RuntimeError(f"breaker {breaker.name!r} is already shared; share it once")
    names = [b.name for b in breakers]
    if len(set(names)) != len(names):
        raise ValueError(f"breakers must have distinct names, got {names!r}")
    for i, budget in enumerate(retry_budgets):
        if not isinstance(budget, RetryBudget):
            raise TypeError(f"retry_budgets[{i}] must be a RetryBudget, got {budget!r}")
    state = SharedState(
        url,
        breakers,
        retry_budgets,
        prefix=check_str("prefix", prefix),
        sync_interval=check_number("sync_interval", sync_interval, gt=0),
        share_counts=check_bool("share_counts", share_counts),
        permit_timeout=check_number("permit_timeout", permit_timeout, gt=0),
        permit_lease=check_number("permit_lease", permit_lease, gt=0),
        logger=check_logger(logger),
    )
    state._attach()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(state.run)
            yield state
            state._closing = True
            nursery.cancel_scope.cancel()
    finally:
        state._detach()
