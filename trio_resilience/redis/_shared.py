"""The running sharing layer: one pipeline per sync, pub/sub hints, permits, GCRA.

Every ``sync_interval`` (or at once after a local trip, a close or a peer's hint) one
pipeline carries a script per breaker and per budget: in the healthy steady state that
is one round trip per process for everything it shares (one per node on a Cluster).
Pub/sub carries hints only ("breaker X changed"); the data always comes back through a
script reply and is checked before use. Nothing here ever raises into a caller.
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from dataclasses import dataclass
from typing import Any

import coredis
import coredis.exceptions as cx
import coredis.retry
import trio

from .._backoff import ExponentialBackoff
from .._breaker import CircuitBreaker, CircuitState, StateChange
from .._log import get_logger
from .._ratelimit import RateLimiter
from .._retry_budget import RetryBudget
from . import _keys, _lua, _trust
from ._errors import describe, is_down, only_errors, without_errors

REDIS_DEGRADED = "trio_resilience.redis.degraded"
REDIS_RECOVERED = "trio_resilience.redis.recovered"
REDIS_MALFORMED = "trio_resilience.redis.malformed"

_RECONNECT = ExponentialBackoff(base=0.05, multiplier=2.0, max_delay=2.0, jitter_factor=0.3)
_US = 1_000_000
_DAY_US = 86_400 * _US
#: Sharers' heartbeats older than this are never counted, whatever their score says.
_LIVENESS_HORIZON_US = 200 * _US
#: Early syncs (after hints) are at least this far apart: a flood of hints is cheap.
_MIN_GAP = 0.01
#: Lease releases waiting for a sync, at most.
_MAX_RELEASES = 10_000
_REMOTE_REASONS = frozenset({"remote_trip", "remote_close", "shared_failures", "quorum"})


@dataclass(frozen=True, slots=True)
class SharedStateStatistics:
    """The sharing layer's health and traffic, from :meth:`SharedState.statistics`."""

    connected: bool
    """Whether Redis answered the last sync."""
    degraded_since: float | None
    """Trio time since when Redis has been unreachable, or None."""
    last_sync: float | None
    """Trio time of the last completed sync."""
    published: int
    """Trips and closes this process published."""
    received: int
    """Trips and closes of other processes applied here."""
    malformed: int
    """Values read from Redis that were refused (wrong type, garbage, out of bounds)."""
    round_trips: int
    """Round trips made (syncs, permits and rate decisions), for cost accounting."""
    syncs: int
    """Completed syncs."""
    subscribed: bool
    """Whether the pub/sub subscription is up."""


class _Shared:
    """The per-breaker sync state."""

    __slots__ = (
        "breaker",
        "closed_seen",
        "counted",
        "escaped",
        "event",
        "heartbeat_at",
        "heartbeat_member",
        "hint",
        "keys",
        "offset",
        "opened_at",
        "port",
        "rtt",
        "rtt_at",
        "version",
    )

    def __init__(self, breaker: CircuitBreaker, prefix: str) -> None:
        self.breaker = breaker
        self.port = breaker.sharing
        self.escaped = _keys.escape(breaker.name)
        self.hint = f"v2|{_keys.hint_name(self.escaped)}|"  # then the origin
        self.keys = _keys.BreakerKeys(prefix, breaker.name, _ms(breaker.failure_window))
        self.version = "-1"  # never seen: the first sync reads everything
        self.closed_seen = -1
        self.counted: tuple[int, int] = (0, 0)
        self.event: tuple[str, float] | None = None  # ("trip"|"close", Trio time)
        self.opened_at = -math.inf  # Trio time of the last transition to OPEN
        self.offset: float | None = None  # server time minus Trio time, seconds
        self.rtt = math.inf
        self.rtt_at = -math.inf
        self.heartbeat_at = -math.inf  # Trio time of the last heartbeat sent
        self.heartbeat_member: str | None = None  # removed when the block exits


def _ms(seconds: float) -> int:
    return max(1, min(_DAY_US, round(seconds * 1000)))


def _us(seconds: float) -> int:
    if not seconds > 0:  # also NaN
        return 0
    return min(_DAY_US, round(seconds * _US))


class SharedState:
    """The running sharing layer, yielded by :func:`open_shared_state`."""

    def __init__(
        self,
        client_or_url: Any,
        breakers: tuple[CircuitBreaker, ...],
        retry_budgets: tuple[RetryBudget, ...],
        rate_limiters: tuple[RateLimiter, ...],
        *,
        prefix: str,
        sync_interval: float,
        share_counts: bool,
        permit_timeout: float,
        permit_lease: float,
        trip_quorum: int,
        logger: Any,
    ) -> None:
        self.url = client_or_url if isinstance(client_or_url, str) else None
        self._client: Any = None if self.url is not None else client_or_url
        self.prefix = prefix
        self.sync_interval = sync_interval
        self.share_counts = share_counts
        self.permit_timeout = permit_timeout
        self.permit_lease = permit_lease
        self.trip_quorum = trip_quorum
        self._logger = get_logger(logger)
        # The sync script counts only origins of this shape (digits, '-', hex).
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.channel = _keys.channel(prefix)
        self._shared = {b.name: _Shared(b, prefix) for b in breakers}
        self._by_hint = {_keys.hint_name(s.escaped): s for s in self._shared.values()}
        self.retry_budgets = retry_budgets
        self.rate_limiters = rate_limiters
        self._budget_unsent: dict[str, tuple[int, int]] = {b.name: (0, 0) for b in retry_budgets}
        # Any positive finite setting is accepted; what the loops use is bounded.
        self._interval = min(3600.0, max(0.001, sync_interval))
        self._permit_wait = min(60.0, permit_timeout)
        self._timeout = min(5.0, max(0.25, 4 * sync_interval))
        self._alive_us = _us(max(15.0, 3 * sync_interval))
        self._leases = itertools.count()
        self._releases: dict[tuple[str, str], int] = {}  # (breaker, lease) -> sends left
        self._wake = trio.Event()
        self._started = trio.Event()
        self._last_sync_at = -math.inf
        self._connected = False
        self._closing = False
        self._subscribed = False
        self._degraded_since: float | None = None
        self._last_sync: float | None = None
        self._published = 0
        self._received = 0
        self._malformed = 0
        self._malformed_logged_at = -math.inf
        self._malformed_unlogged = 0
        self._round_trips = 0
        self._syncs = 0
        self._scripts: dict[str, str] = {}
        self._sha: dict[str, str] = {}
        for name, body in (
            ("sync", _lua.SYNC_BREAKERS),
            ("acquire", _lua.ACQUIRE),
            ("budget", _lua.SYNC_BUDGET),
            ("gcra", _lua.GCRA),
        ):
            self._scripts[name] = body
            self._sha[name] = _sha1(body)

    # ------------------------------------------------------------ attach / detach

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """The shared breakers, by name."""
        return {name: s.breaker for name, s in self._shared.items()}

    def _attach(self) -> None:
        attached: list[_Shared] = []
        try:
            for shared in self._shared.values():
                shared.port.attach(self)
                attached.append(shared)
                shared.port.add_listener(self._listener(shared))
                shared.port.set_permit_source(self)
                shared.counted = shared.port.counted()
                if shared.port.state is CircuitState.OPEN:
                    shared.opened_at = _now_or(-math.inf)
        except BaseException:
            for shared in attached:
                shared.port.detach(self)
            raise
        for budget in self.retry_budgets:
            budget.clear_remote()
        for limiter in self.rate_limiters:
            limiter.attach_remote(self._decider(limiter), timeout=self._permit_wait)

    def _detach(self) -> None:
        for shared in self._shared.values():
            shared.port.detach(self)
        for budget in self.retry_budgets:
            budget.clear_remote()
        for limiter in self.rate_limiters:
            limiter.detach_remote()

    def _listener(self, shared: _Shared) -> Any:
        def on_change(change: StateChange) -> None:
            # Outcomes counted before a transition never go out after it: a recovered
            # breaker must not re-trip on its own old failures.
            shared.counted = shared.port.counted()
            if change.new_state is CircuitState.OPEN:
                shared.opened_at = change.at
            if change.reason in _REMOTE_REASONS:
                return
            if change.new_state is CircuitState.OPEN:
                shared.event = ("trip", change.at)
                self._wake.set()
            elif change.new_state is CircuitState.CLOSED and change.reason == "success_threshold":
                shared.event = ("close", change.at)
                self._wake.set()

        return on_change

    # ------------------------------------------------------------ permits (the port)

    async def acquire(self, breaker: CircuitBreaker) -> str | bool | None:
        """A cluster-wide probe permit: a lease id, False when the cluster's probes are
        all busy, or None when Redis did not answer within ``permit_timeout``.

        **Cancellation**: waits at most ``permit_timeout``; a wait that ends without a
        lease (time-out, error, cancellation) sends a release, so a lease granted late
        by a stalled server is freed at the next sync, never orphaned.
        """
        shared = self._shared.get(breaker.name)
        if shared is None or not self._connected or self._client is None:
            return None
        lease = f"{self.origin}:{next(self._leases)}"
        granted = False
        # This breaker's finished probes give their leases back first: the next probe
        # of this process never waits for a sync to free the last one's lease.
        releasing = self._releases_of(breaker.name)
        try:
            with trio.move_on_after(self._permit_wait):
                self._round_trips += 1
                reply = await self._evalsha(
                    "acquire",
                    [shared.keys.probes, shared.keys.sharers],
                    [
                        shared.port.half_open_max_calls,
                        _us(self.permit_lease),
                        lease,
                        _LIVENESS_HORIZON_US,
                        *releasing,
                    ],
                )
                self._released(breaker.name, releasing)
                items = _trust.reply_list(reply, 3, 3)
                ok = items and _trust.integer(items[0], 0, 1)
                if items is None or ok is None or _trust.integer(items[2]) is None:
                    self._bad(breaker.name, reply)
                    return None
                self._count_bad(breaker.name, items[2])
                granted = ok == 1
                return lease if granted else False
            return None
        except Exception as exc:
            if not is_down(exc):
                self._bad(breaker.name, exc)
            return None
        finally:
            if not granted:
                self._post_release(breaker.name, lease, 3)

    def release(self, breaker: CircuitBreaker, lease: str) -> None:
        """Give a probe permit back (with the next acquisition or the sync it starts;
        it expires anyway)."""
        self._post_release(breaker.name, lease, 1)
        self._wake.set()

    def _releases_of(self, name: str) -> list[str]:
        """Up to 32 leases of breaker ``name`` waiting to be released."""
        found: list[str] = []
        for breaker, lease in self._releases:
            if breaker == name:
                found.append(lease)
                if len(found) == 32:
                    break
        return found

    def _released(self, name: str, leases: list[str]) -> None:
        """``leases`` reached the server: one send fewer left for each."""
        releases = self._releases
        for lease in leases:
            left = releases.get((name, lease))
            if left is not None and left <= 1:
                del releases[(name, lease)]
            elif left is not None:
                releases[(name, lease)] = left - 1

    def _post_release(self, name: str, lease: str, sends: int) -> None:
        releases = self._releases
        if len(releases) >= _MAX_RELEASES:  # bounded: the oldest expire on their own
            del releases[next(iter(releases))]
        releases[(name, lease)] = sends

    # ------------------------------------------------------------ rate limiters

    def _decider(self, limiter: RateLimiter) -> Any:
        key = _keys.limiter_key(self.prefix, limiter.name)
        emission_us = max(1, round(limiter.period / limiter.rate * _US))
        tau_us = round(limiter.burst * emission_us)

        async def decide(cost: float) -> float | None:
            if not self._connected or self._client is None:
                # The limiter decides locally at its full rate (and logs it once).
                raise cx.ConnectionError("Redis is unreachable: deciding locally")
            self._round_trips += 1
            try:
                reply = await self._evalsha(
                    "gcra", [key], [emission_us, tau_us, max(1, round(cost * 1000)) / 1000]
                )
            except Exception as exc:
                if not is_down(exc):
                    self._bad(limiter.name, exc)
                return None
            items = _trust.reply_list(reply, 2, 2)
            wait = _trust.integer(items[0], 0, _DAY_US) if items else None
            if items is None or wait is None:
                self._bad(limiter.name, reply)
                return None
            self._count_bad(limiter.name, items[1])
            return wait / _US

        return decide

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
            round_trips=self._round_trips,
            syncs=self._syncs,
            subscribed=self._subscribed,
        )

    def __repr__(self) -> str:
        state = "connected" if self._connected else "degraded"
        return f"<SharedState {self.prefix!r} {state} {sorted(self._shared)}>"

    # ------------------------------------------------------------ the tasks

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sync and subscribe until cancelled; reports started after the first sync
        (made or failed). Never raises but ``trio.Cancelled``.

        **Cancellation**: cancelling it (leaving the block) stops the sharing; a client
        made from a URL is closed, a client passed in is left to its owner.
        """
        started = [False]

        def start() -> None:
            if not started[0]:
                started[0] = True
                self._started.set()
                task_status.started()

        if self.url is None:
            try:
                await self._serve(start)
            except BaseException as exc:
                if self._closing:
                    return  # the client's teardown noise while the block exits
                if only_errors(exc):  # never expected: the tasks catch their errors
                    self._down(exc)
                    start()
                    return
                _raise_cancellation(exc)
            return
        delays = _RECONNECT.delays()
        while True:
            try:
                client = coredis.Redis.from_url(
                    self.url,
                    decode_responses=False,
                    retry_policy=coredis.retry.NoRetryPolicy(),
                    connect_timeout=self._timeout,
                    stream_timeout=self._timeout,
                )
                async with client:
                    self._client = client
                    await self._serve(start)
            except BaseException as exc:
                self._client = None
                if self._closing:
                    return
                if not only_errors(exc):
                    _raise_cancellation(exc)
                self._down(exc)
            start()
            await trio.sleep(next(delays))

    async def _serve(self, start: Any) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._subscribe_forever)
            await self._sync_forever(start)

    async def _sync_forever(self, start: Any) -> None:
        delays = _RECONNECT.delays()
        while True:
            try:
                with trio.fail_after(self._timeout):
                    await self._sync()
            except Exception as exc:
                for shared in self._shared.values():
                    shared.heartbeat_at = -math.inf
                # Budget counts of a failed sync are dropped, not sent late into a
                # newer bucket (the local budget still has them).
                for name in self._budget_unsent:
                    self._budget_unsent[name] = (0, 0)
                if is_down(exc):
                    self._down(exc)
                    start()
                    await trio.sleep(next(delays))
                    continue
                self._bad("sync", exc)
            else:
                delays = _RECONNECT.delays()
                self._up()
            start()
            with trio.move_on_after(self._interval):
                await self._wake.wait()
                await trio.sleep(max(0.0, self._last_sync_at + _MIN_GAP - trio.current_time()))
            self._wake = trio.Event()

    def _up(self) -> None:
        if self._degraded_since is not None:
            self._logger.info(
                REDIS_RECOVERED,
                prefix=self.prefix,
                degraded_for=trio.current_time() - self._degraded_since,
            )
            self._degraded_since = None
        self._connected = True

    def _down(self, error: BaseException) -> None:
        self._connected = False
        if self._degraded_since is None:
            self._degraded_since = trio.current_time()
            self._logger.warning(REDIS_DEGRADED, prefix=self.prefix, error=describe(error))

    # ------------------------------------------------------------ one sync

    #: The longest the block's exit waits to send what is still unsent.
    exit_flush = 0.5
    #: The longest entering the block waits for the first sync (a stalled Redis).
    entry_wait = 0.25

    async def wait_started(self) -> None:
        """Wait until the first sync is made or failed, for at most :attr:`entry_wait`
        (then the policies go on locally until the sync ends).

        **Cancellation**: a plain wait; cancelling it changes nothing.
        """
        with trio.move_on_after(self.entry_wait):
            await self._started.wait()

    async def _flush(self) -> None:
        """One last sync when trips, closes or releases are still unsent, then the
        heartbeats are withdrawn (when Redis is up): the block leaves the cluster."""
        client = self._client
        if not (self._connected and client is not None):
            return
        pending = self._releases or any(s.event for s in self._shared.values())
        try:
            if pending:
                await self._sync()
            await self._leave(client)
        except Exception as exc:
            if not is_down(exc):
                self._bad("sync", exc)

    async def _leave(self, client: Any) -> None:
        """Remove this block's heartbeats: its ``half_open_max_calls`` stops capping
        the cluster's probes now, not when the heartbeat would have expired."""
        gone = [(s.keys.sharers, s.heartbeat_member) for s in self._shared.values()]
        gone = [(key, member) for key, member in gone if member is not None]
        if not gone:
            return
        self._round_trips += 1
        async with client.pipeline(transaction=False, raise_on_error=False) as pipe:
            for key, member in gone:
                pipe.zrem(key, [member])
        for shared in self._shared.values():
            shared.heartbeat_member = None
            shared.heartbeat_at = -math.inf

    async def _sync(self) -> None:
        client = self._client
        if client is None:
            raise cx.ConnectionError("no client")
        now = trio.current_time()
        self._last_sync_at = now
        plan: list[tuple[str, Any, Any]] = []
        releases = dict(self._releases)
        by_breaker: dict[str, list[str]] = {}
        for name, lease in releases:
            by_breaker.setdefault(name, []).append(lease)
        commands: list[tuple[str, list[Any], list[Any]]] = []
        # One script for every breaker on one server; one per breaker on a Cluster
        # (each script's keys must be in one slot), all in one pipeline.
        groups: list[list[_Shared]] = (
            [[s] for s in self._shared.values()]
            if isinstance(client, coredis.RedisCluster)
            else [list(self._shared.values())]
        )
        for group in groups:
            if not group:
                continue
            keys: list[Any] = []
            args: list[Any] = [len(group)]
            sent: list[tuple[_Shared, Any]] = []
            for shared in group:
                k, a, event = self._breaker_args(shared, now, by_breaker.get(shared.breaker.name))
                keys += k
                args += [len(a), *a]
                sent.append((shared, event))
            commands.append(("sync", keys, args))
            plan.append(("breakers", sent, None))
        for budget in self.retry_budgets:
            delta = budget.take_sync_delta()
            old_dep, old_wd = self._budget_unsent[budget.name]
            dep, wd = old_dep + delta.deposits, old_wd + delta.withdrawals
            self._budget_unsent[budget.name] = (dep, wd)
            window_us = _us(budget.window)
            key = _keys.budget_key(self.prefix, budget.name, _ms(budget.window))
            commands.append(("budget", [key], [max(1, window_us // 10), window_us, dep, wd]))
            plan.append(("budget", budget, None))
        if not commands:  # nothing to share (rate limiters only): check the way there
            self._round_trips += 1
            await client.ping()
            self._syncs += 1
            self._last_sync = trio.current_time()
            return
        before = trio.current_time()
        replies = await self._pipeline(client, commands)
        after = trio.current_time()
        # The round trip is done: what it carried is delivered.
        for item in releases:
            left = self._releases.get(item)
            if left is not None and left <= 1:
                del self._releases[item]
            elif left is not None:
                self._releases[item] = left - 1
        for (kind, target, _), reply in zip(plan, replies, strict=True):
            if kind == "breakers":
                parts = self._split(reply, len(target))
                for (shared, event), part in zip(target, parts, strict=True):
                    # A trip or close is delivered only with a valid reply (an error
                    # reply may have stopped the script before it): else sent again.
                    applied = self._apply_breaker(shared, part, before, after)
                    if applied and event is not None and shared.event is event:
                        shared.event = None
                        self._published += 1
            else:
                self._budget_unsent[target.name] = (0, 0)
                self._apply_budget(target, reply)
        self._syncs += 1
        self._last_sync = trio.current_time()

    def _split(self, reply: Any, count: int) -> list[Any]:
        """Cut a many-breaker reply (length, items, length, items ...) into ``count``
        replies; anything that does not fit gives None (malformed) for the rest."""
        items = _trust.reply_list(reply, 0, 10_000_000)
        parts: list[Any] = []
        i = 0
        while items is not None and len(parts) < count:
            length = _trust.integer(items[i], 0, len(items)) if i < len(items) else None
            if length is None or i + 1 + length > len(items):
                break
            parts.append(items[i + 1 : i + 1 + length])
            i += 1 + length
        return parts + [None] * (count - len(parts))

    def _breaker_args(
        self, shared: _Shared, now: float, releases: list[str] | None
    ) -> tuple[list[str], list[Any], Any]:
        port = shared.port
        failures, calls = port.counted()
        last_failures, last_calls = shared.counted
        new_failures = max(0, failures - last_failures) if self.share_counts else 0
        new_calls = max(0, calls - last_calls) if self.share_counts else 0
        shared.counted = (failures, calls)
        event = shared.event
        kind, age, open_for = "", 0, 0
        if event is not None:
            if event[0] == "trip":
                deadline = port.open_deadline
                if port.state is CircuitState.OPEN and deadline is not None and deadline > now:
                    kind, age, open_for = "trip", _us(now - event[1]), _us(deadline - event[1])
                else:
                    shared.event = event = None  # its open period is over: nothing to tell
            else:
                kind, age = "close", _us(now - event[1])
        window_us = _us(port.failure_window)
        keys = shared.keys
        heartbeat = 0
        if now - shared.heartbeat_at >= self._alive_us / _US / 3 or now < shared.heartbeat_at:
            heartbeat = self._alive_us
            shared.heartbeat_at = now  # forgotten again if this sync fails
            shared.heartbeat_member = f"{port.half_open_max_calls}|{self.origin}"
        args: list[Any] = [
            self.origin,
            shared.version,
            port.half_open_max_calls,
            heartbeat,
            kind,
            age,
            open_for,
            self.channel,
            shared.hint + self.origin,
            "1" if self.share_counts else "0",
            window_us,
            max(1, window_us // 10),
            new_failures,
            new_calls,
            len(releases or ()),
            *(releases or ()),
        ]
        key_list = [keys.state, keys.trips, keys.sharers, keys.probes, keys.counts, keys.origins]
        return key_list, args, event

    async def _pipeline(self, client: Any, commands: list[tuple[str, list[Any], list[Any]]]) -> Any:
        for attempt in range(2):
            self._round_trips += 1
            async with client.pipeline(transaction=False, raise_on_error=False) as pipe:
                for name, keys, args in commands:
                    pipe.evalsha(self._sha[name], keys=keys, args=args)
            replies = list(pipe.results or ())
            if len(replies) != len(commands):
                raise cx.ConnectionError("pipeline answered short")
            for reply in replies:
                if isinstance(reply, BaseException) and is_down(reply):
                    raise reply
            if attempt == 0 and any(isinstance(r, cx.NoScriptError) for r in replies):
                await self._load_scripts(client)
                continue
            return replies
        return replies

    async def _load_scripts(self, client: Any) -> None:
        for name, body in self._scripts.items():
            self._round_trips += 1
            sha = await client.script_load(body)
            self._sha[name] = sha.decode() if isinstance(sha, bytes) else str(sha)

    async def _evalsha(self, name: str, keys: list[str], args: list[Any]) -> Any:
        client = self._client
        try:
            return await client.evalsha(self._sha[name], keys=keys, args=args)
        except cx.NoScriptError:
            await self._load_scripts(client)
            return await client.evalsha(self._sha[name], keys=keys, args=args)

    # ------------------------------------------------------------ applying replies

    def _apply_breaker(self, shared: _Shared, reply: Any, before: float, after: float) -> bool:
        """Apply one breaker's sync reply; False if it was refused as malformed."""
        name = shared.breaker.name
        items = _trust.reply_list(reply, 8)
        if items is None or (len(items) - 8) % 3:
            self._bad(name, reply)
            return False
        server_us = _trust.integer(items[0], 1)
        version = _trust.integer(items[1])
        bad = _trust.integer(items[2])
        closed = _trust.integer(items[3])
        failures, calls, origins = (_trust.integer(v) for v in items[4:7])
        changed = _trust.integer(items[7], 0, 1)
        if None in (server_us, version, bad, closed, failures, calls, origins, changed):
            self._bad(name, reply)
            return False
        assert server_us is not None
        assert version is not None
        assert closed is not None
        assert failures is not None
        assert calls is not None
        assert origins is not None
        self._count_bad(name, bad)
        self._clock(shared, server_us, before, after)
        offset = shared.offset
        assert offset is not None
        now = trio.current_time()
        port = shared.port
        if closed > shared.closed_seen and closed > 0:
            shared.closed_seen = closed
            close_at = closed / _US - offset
            if (
                close_at > shared.opened_at
                and port.state
                in (
                    CircuitState.OPEN,
                    CircuitState.HALF_OPEN,
                )
                and port.close_remote("remote_close")
            ):
                self._received += 1
        if changed:
            shared.version = str(version)
            self._apply_trips(shared, items[8:], server_us, offset, now)
        if (
            self.share_counts
            and port.state is CircuitState.CLOSED
            and origins >= self.trip_quorum
            and port.would_trip(failures, calls)
        ):
            port.trip("shared_failures")
        return True

    def _apply_trips(
        self, shared: _Shared, triples: list[Any], server_us: int, offset: float, now: float
    ) -> None:
        port = shared.port
        window_us = _us(port.failure_window)
        longest = port.longest_open_period
        count = 0
        deadline = -math.inf
        for i in range(0, len(triples), 3):
            origin = _trust.text(triples[i])
            trip_us = _trust.integer(triples[i + 1])
            until_us = _trust.integer(triples[i + 2])
            if origin is None or trip_us is None or until_us is None or until_us < trip_us:
                self._bad(shared.breaker.name, triples[i : i + 3])
                continue
            if not server_us - window_us < trip_us <= server_us + _US:
                continue  # outside this breaker's own failure window
            count += 1
            trip_at = trip_us / _US - offset
            # Never longer than this breaker's own longest open period from the trip.
            deadline = max(deadline, min(until_us / _US - offset, trip_at + longest))
        if count >= self.trip_quorum and deadline > now:
            was = port.state
            if port.open_until(deadline, "remote_trip") and was is not CircuitState.OPEN:
                self._received += 1

    def _clock(self, shared: _Shared, server_us: int, before: float, after: float) -> None:
        """Keep the offset of the sample with the shortest round trip (aged over 30 s):
        its error is at most half that round trip."""
        rtt = after - before
        now = after
        if shared.offset is None or rtt <= shared.rtt * 1.5 or now - shared.rtt_at > 30.0:
            shared.offset = server_us / _US - (before + after) / 2
            shared.rtt = rtt
            shared.rtt_at = now

    def _apply_budget(self, budget: RetryBudget, reply: Any) -> None:
        items = _trust.reply_list(reply, 4, 4)
        if items is None:
            self._bad(budget.name, reply)
            return
        deposits = _trust.integer(items[1], -_trust.MAX_INT)
        withdrawals = _trust.integer(items[2], -_trust.MAX_INT)
        if deposits is None or withdrawals is None:
            self._bad(budget.name, reply)
            return
        self._count_bad(budget.name, items[3])
        if not budget.apply_remote_counts(deposits, withdrawals, includes_local=True):
            self._bad(budget.name, reply)

    # ------------------------------------------------------------ pub/sub hints

    async def _subscribe_forever(self) -> None:
        delays = _RECONNECT.delays()
        while True:
            try:
                client = self._client
                if client is None:
                    raise cx.ConnectionError("no client")
                pubsub = client.pubsub(
                    channels=[self.channel],
                    ignore_subscribe_messages=True,
                    retry_policy=coredis.retry.NoRetryPolicy(),
                    max_idle_seconds=max(1.0, self._timeout),
                )
                async with pubsub:
                    self._subscribed = True
                    delays = _RECONNECT.delays()
                    async for message in pubsub:
                        self._hint(message)
            except Exception as exc:
                if not is_down(exc):
                    self._bad("events", exc)
            self._subscribed = False
            await trio.sleep(next(delays))

    def _hint(self, message: Any) -> None:
        data = message.get("data") if isinstance(message, dict) else None
        parsed = _trust.hint(data)
        if parsed is None:
            self._bad("events", data)
            return
        name, origin = parsed
        if origin != self.origin and name in self._by_hint:
            self._wake.set()

    # ------------------------------------------------------------ malformed data

    def _count_bad(self, where: str, bad: Any) -> None:
        count = _trust.integer(bad, 0, 10**6)
        if count:
            self._bad(where, f"{count} malformed value(s) replaced by the script")

    def _bad(self, where: str, value: Any) -> None:
        """Count a refused value; log at most once per second (with the count since)."""
        self._malformed += 1
        self._malformed_unlogged += 1
        now = trio.current_time()
        if now - self._malformed_logged_at >= 1.0 or now < self._malformed_logged_at:
            self._malformed_logged_at = now
            self._logger.warning(
                REDIS_MALFORMED,
                prefix=self.prefix,
                key=where,
                value=describe(value),
                count=self._malformed_unlogged,
            )
            self._malformed_unlogged = 0


def _raise_cancellation(exc: BaseException) -> None:  # called with a non-Exception inside
    """Re-raise ``exc`` without the errors a cancelled client's teardown added to it."""
    rest = without_errors(exc)
    if rest is exc:
        raise exc
    if rest is not None:
        raise rest from exc


def _now_or(default: float) -> float:
    try:
        return trio.current_time()
    except RuntimeError:
        return default


def _sha1(body: str) -> str:
    import hashlib

    return hashlib.sha1(body.encode()).hexdigest()
