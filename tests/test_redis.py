"""Shared state on a real redis-server on loopback (real time: these tests may wait).

The fixtures (tests/redis_servers.py) start redis-server on free ports; ``make test``
installs it where missing. Each test uses its own key prefix on a shared server, or
its own server when it kills or pauses it. Several OS processes, each with its own
trio.run, share breakers through tests/redis_worker.py.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

coredis = pytest.importorskip("coredis")

from trio_resilience import (  # noqa: E402
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    RateLimiter,
    RateLimitExceeded,
    RetryBudget,
)
from trio_resilience.redis import open_shared_state  # noqa: E402

from .conftest import Boom  # noqa: E402
from .redis_servers import (  # noqa: E402
    REDIS,
    RedisServer,
    free_port,
    redis_server,
    shared_server,
)

_FIXTURES = (redis_server, shared_server)  # pytest finds fixtures by module name

WORKER = Path(__file__).parent / "redis_worker.py"
pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")


class Capture:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    warning = error = info

    def named(self, event: str) -> list[dict[str, Any]]:
        return [kw for e, kw in self.events if e == event]


def fresh() -> str:
    return "t" + uuid.uuid4().hex[:8]


async def fail() -> None:
    raise Boom


async def trip(breaker: CircuitBreaker, times: int | None = None) -> None:
    for _ in range(times or breaker.failure_threshold or 1):
        try:
            await breaker.call(fail)
        except (Boom, CircuitOpenError):
            pass


async def wait_for(predicate: Any, limit: float = 2.0) -> float:
    """Poll every millisecond; return the seconds it took (fails after ``limit``)."""
    start = trio.current_time()
    while not predicate():
        if trio.current_time() - start > limit:
            raise AssertionError("condition not reached in time")
        await trio.sleep(0.001)
    return trio.current_time() - start


def raw(server: RedisServer) -> Any:
    return coredis.Redis.from_url(server.url, decode_responses=True)


# ------------------------------------------------------------------ the nine defects


async def test_remote_deadline_is_exact_to_the_millisecond(shared_server: RedisServer) -> None:
    """Server time to the microsecond: a sharer opens until the tripper's deadline, not
    up to a second past it (coredis's time() dropped the sub-second part)."""
    prefix = fresh()
    for trial in range(3):
        a = CircuitBreaker(f"exact{trial}", failure_threshold=1, recovery_timeout=0.4)
        b = CircuitBreaker(f"exact{trial}", failure_threshold=1, recovery_timeout=0.4)
        async with (
            open_shared_state(shared_server.url, a, prefix=prefix, trip_quorum=1),
            open_shared_state(shared_server.url, b, prefix=prefix, trip_quorum=1),
        ):
            await trip(a)
            await wait_for(lambda b=b: b.state is CircuitState.OPEN)
            assert abs(b.retry_after - a.retry_after) < 0.02
            await trio.sleep(a.retry_after + 0.03)
            assert b.state is CircuitState.HALF_OPEN  # a probe is admitted on time
            assert await b.call(trio.sleep, 0) is None


async def test_garbage_under_a_key_never_degrades_sharing(shared_server: RedisServer) -> None:
    """A wrong-typed key or unparsable fields are data errors: replaced and counted in
    ``malformed``; Redis still counts as up and trips still spread."""
    prefix = fresh()
    client = raw(shared_server)
    a = CircuitBreaker("db", failure_threshold=1)
    b = CircuitBreaker("db", failure_threshold=1)
    async with client:
        await client.set(f"{{{prefix}:db}}:state", "garbage")
        await client.set(f"{{{prefix}:db}}:trips", "garbage")
        await client.hset(f"{{{prefix}:db}}:counts:60000", {"f:1": "x", "junk": "1"})
        async with (
            open_shared_state(shared_server.url, a, prefix=prefix, trip_quorum=1) as sa,
            open_shared_state(
                shared_server.url, b, prefix=prefix, trip_quorum=1, share_counts=True
            ) as sb,
        ):
            await trio.sleep(0.3)
            assert sa.statistics().connected
            assert sb.statistics().connected
            assert sa.statistics().malformed + sb.statistics().malformed >= 2
            assert sa.statistics().degraded_since is None
            await trip(a)
            await wait_for(lambda: b.state is CircuitState.OPEN)


async def test_nested_and_huge_messages_are_refused(shared_server: RedisServer) -> None:
    """A deeply nested, a huge or a binary message is malformed: never a RecursionError,
    never an exception out of the block."""
    prefix = fresh()
    logger = Capture()
    breaker = CircuitBreaker("db", failure_threshold=1)
    client = raw(shared_server)
    async with (
        client,
        open_shared_state(shared_server.url, breaker, prefix=prefix, logger=logger) as shared,
    ):
        channel = f"{prefix}:events"
        await client.publish(channel, "[" * 100_000 + "]" * 100_000)
        await client.publish(channel, json.dumps({"a": [[[[[[[[]]]]]]]]}))
        await client.publish(channel, "v2|db|" + "x" * 10_000)
        await client.publish(channel, "v2||")
        await trio.sleep(0.3)
        assert shared.statistics().malformed == 4
        assert shared.statistics().connected
        assert shared.statistics().subscribed
        assert breaker.state is CircuitState.CLOSED
    # Logged at most once per second, with the count since the last event.
    assert [kw["count"] for kw in logger.named("trio_resilience.redis.malformed")] == [1]


async def test_stored_deadlines_never_outlast_the_own_longest_open_period(
    shared_server: RedisServer,
) -> None:
    """Trips claiming an open deadline of 1e297 (or beyond any digit count) keep a
    breaker open no longer than its own recovery timeout."""
    prefix = fresh()
    client = raw(shared_server)
    breaker = CircuitBreaker("db", recovery_timeout=0.5)
    async with client:
        t = await client.execute_command(
            client.create_request(b"TIME", callback=coredis.response._callbacks.NoopCallback())
        )
        now_us = int(t[0]) * 1_000_000 + int(t[1])
        await client.hset(
            f"{{{prefix}:db}}:trips",
            {
                "x": f"{now_us}:{'9' * 300}",
                "y": f"{now_us}:{10**297}",
                "z": f"{now_us}:{now_us + 10**15}",
                "w": f"{now_us}:{now_us + 10**12}",
            },
        )
        await client.hset(f"{{{prefix}:db}}:state", {"ver": "1"})
        async with open_shared_state(shared_server.url, breaker, prefix=prefix) as shared:
            assert breaker.state is CircuitState.OPEN
            assert breaker.retry_after <= 0.5
            await trio.sleep(0.55)
            assert breaker.state is CircuitState.HALF_OPEN
            assert shared.statistics().received == 1
            assert shared.statistics().malformed >= 1  # x and y, replaced by the script


async def test_infinite_leases_never_block_probes(shared_server: RedisServer) -> None:
    """Three +inf leases (and one far-future lease) are beyond any permit_lease: probes
    are still admitted."""
    from trio_resilience.testing import set_breaker_state

    prefix = fresh()
    client = raw(shared_server)
    breaker = CircuitBreaker("db", half_open_max_calls=3, success_threshold=1)
    async with client:
        await client.zadd(
            f"{{{prefix}:db}}:probes", {"a": math.inf, "b": math.inf, "c": math.inf, "d": 1e300}
        )
        async with open_shared_state(
            shared_server.url, breaker, prefix=prefix, permit_timeout=0.5
        ) as shared:
            set_breaker_state(breaker, "half_open")
            lease = await shared.acquire(breaker)
            assert isinstance(lease, str)
            shared.release(breaker, lease)
            await breaker.call(trio.sleep, 0)
            assert breaker.state is CircuitState.CLOSED


async def test_shared_counts_are_cleared_when_the_breaker_closes(
    shared_server: RedisServer,
) -> None:
    """With share_counts, a breaker that recovered does not re-trip on the old failures
    at the next syncs."""
    prefix = fresh()
    opts: dict[str, Any] = {"failure_threshold": 4, "recovery_timeout": 0.3}
    a = CircuitBreaker("db", success_threshold=1, **opts)
    b = CircuitBreaker("db", success_threshold=1, **opts)
    common: dict[str, Any] = {"prefix": prefix, "share_counts": True, "sync_interval": 0.05}
    async with (
        open_shared_state(shared_server.url, a, **common),
        open_shared_state(shared_server.url, b, **common),
    ):
        for breaker in (a, b, a, b):
            await trip(breaker, 1)
        assert a.state is CircuitState.CLOSED  # two local failures each
        await wait_for(lambda: a.state is CircuitState.OPEN and b.state is CircuitState.OPEN)
        await trio.sleep(0.35)
        await a.call(trio.sleep, 0)  # a's probe closes it; the close spreads to b
        await wait_for(lambda: b.state is CircuitState.CLOSED)
        await trio.sleep(0.4)  # eight syncs
        assert a.state is CircuitState.CLOSED
        assert b.state is CircuitState.CLOSED


async def test_a_stall_never_orphans_a_probe_lease(redis_server: RedisServer) -> None:
    """A permit request that times out while Redis is stalled is released at the next
    sync: the cluster's probes are free again within a sync, not after permit_lease."""
    from trio_resilience.testing import set_breaker_state

    prefix = fresh()
    breaker = CircuitBreaker("db", half_open_max_calls=1, success_threshold=5)
    other = CircuitBreaker("db", half_open_max_calls=1, success_threshold=5)
    async with (
        open_shared_state(redis_server.url, breaker, prefix=prefix, sync_interval=0.05) as shared,
        open_shared_state(
            redis_server.url, other, prefix=prefix, sync_interval=0.05, permit_timeout=0.5
        ) as shared_other,
    ):
        set_breaker_state(breaker, "half_open")
        set_breaker_state(other, "half_open")
        redis_server.pause()
        assert await shared.acquire(breaker) is None  # timed out: the local limiter decides
        await trio.sleep(0.1)
        redis_server.resume()
        await wait_for(lambda: shared.statistics().connected, limit=5.0)
        await trio.sleep(0.3)
        lease = await shared_other.acquire(other)
        assert isinstance(lease, str)  # the stalled request's lease was released


async def test_a_cancellation_storm_leaves_no_permit_or_lease(shared_server: RedisServer) -> None:
    """Fifty probes cancelled at random points (while waiting for the cluster permit or
    while running) give back every local permit, and every lease is released."""
    import random

    from trio_resilience.testing import set_breaker_state

    prefix = fresh()
    rng = random.Random(18)
    breaker = CircuitBreaker("db", half_open_max_calls=3, success_threshold=10_000)
    client = raw(shared_server)
    async with (
        client,
        open_shared_state(
            shared_server.url, breaker, prefix=prefix, sync_interval=0.05, permit_timeout=0.5
        ),
    ):
        set_breaker_state(breaker, "half_open")

        async def probe(start: float, delay: float, hold: float) -> None:
            await trio.sleep(start)
            with trio.move_on_after(delay):
                try:
                    async with breaker:
                        await trio.sleep(hold)
                except CircuitOpenError:
                    pass

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                start, delay, hold = (
                    rng.uniform(0, 0.1),
                    rng.uniform(0, 0.01),
                    rng.uniform(0, 0.02),
                )
                nursery.start_soon(probe, start, delay, hold)
        assert breaker.statistics().half_open_in_flight == 0
        assert breaker.statistics().total_calls >= 3  # leases were taken
        await trio.sleep(0.3)
        assert await client.zcard(f"{{{prefix}:db}}:probes") == 0


async def test_names_that_share_a_prefix_never_collide(shared_server: RedisServer) -> None:
    """Breakers named "db" and "db:probes" (and "{x}") get their own keys and trips."""
    prefix = fresh()
    names = ["db", "db:probes", "{db}", "db%3Aprobes"]
    here = [CircuitBreaker(n, failure_threshold=1) for n in names]
    there = [CircuitBreaker(n, failure_threshold=1) for n in names]
    client = raw(shared_server)
    async with (
        client,
        open_shared_state(shared_server.url, *here, prefix=prefix, trip_quorum=1),
        open_shared_state(shared_server.url, *there, prefix=prefix, trip_quorum=1),
    ):
        await trip(here[1])
        await wait_for(lambda: there[1].state is CircuitState.OPEN)
        await trio.sleep(0.3)
        assert [b.state for b in there] == [
            CircuitState.CLOSED,
            CircuitState.OPEN,
            CircuitState.CLOSED,
            CircuitState.CLOSED,
        ]
        keys = await client.keys(f"*{prefix}*")
        tags = {k.split("}")[0] + "}" for k in keys}
        assert len(tags) == 4  # one hash tag per breaker, all distinct


async def test_differing_configurations_never_delete_each_others_counts(
    shared_server: RedisServer,
) -> None:
    """A sharer with a 1 s window and one with a 60 s window: the short one's syncs leave
    the long one's counts alone, and the long one still trips on them."""
    prefix = fresh()
    short = CircuitBreaker("db", failure_threshold=100, failure_window=1.0)
    long_a = CircuitBreaker("db", failure_threshold=3, failure_window=60.0)
    long_b = CircuitBreaker("db", failure_threshold=3, failure_window=60.0)
    common: dict[str, Any] = {
        "prefix": prefix,
        "share_counts": True,
        "sync_interval": 0.05,
        "trip_quorum": 1,
    }
    client = raw(shared_server)
    async with (
        client,
        open_shared_state(shared_server.url, short, **common),
        open_shared_state(shared_server.url, long_a, **common),
        open_shared_state(shared_server.url, long_b, **common),
    ):
        await trip(long_a, 2)
        await trio.sleep(1.3)  # the short window passes; the short sharer syncs 26 times
        fields = await client.hgetall(f"{{{prefix}:db}}:counts:60000")
        assert sum(int(v) for k, v in fields.items() if k.startswith("f:")) == 2
        await trip(long_b, 1)
        await wait_for(lambda: long_a.state is CircuitState.OPEN)
        assert short.state is CircuitState.CLOSED


async def test_extreme_accepted_values_never_crash_a_call(shared_server: RedisServer) -> None:
    """The largest finite settings and breaker values are accepted and work; NaN, inf,
    zero and bools are refused at once (ValueError or TypeError, never OverflowError)."""
    prefix = fresh()
    a = CircuitBreaker("db", failure_threshold=1, failure_window=1e12, recovery_timeout=1e12)
    b = CircuitBreaker("db", failure_threshold=1, failure_window=1e12, recovery_timeout=1e12)
    extreme: dict[str, Any] = {
        "prefix": prefix,
        "permit_lease": 1e300,
        "permit_timeout": 1e300,
        "trip_quorum": 2**62,
    }
    async with (
        open_shared_state(shared_server.url, a, sync_interval=1e300, **extreme),
        open_shared_state(shared_server.url, b, sync_interval=1e-300, **extreme) as sb,
    ):
        await trip(a)
        await trio.sleep(0.2)
        with pytest.raises(CircuitOpenError):
            await a.call(trio.sleep, 0)
        assert await b.call(trio.sleep, 0) is None  # a quorum of 2**62 is never met
        assert sb.statistics().connected
    async with (
        open_shared_state(shared_server.url, a, prefix=fresh(), trip_quorum=1),
        open_shared_state(
            shared_server.url, b, prefix=fresh(), permit_lease=1e300, permit_timeout=1e300
        ) as sb,
    ):
        from trio_resilience.testing import set_breaker_state

        set_breaker_state(b, "half_open")
        assert await b.call(trio.sleep, 0) is None  # a probe with a 1e300 s lease
    for name, value in (
        ("permit_lease", math.inf),
        ("sync_interval", math.nan),
        ("permit_timeout", 0),
        ("trip_quorum", 0),
    ):
        with pytest.raises(ValueError, match=rf"^{name} must "):
            async with open_shared_state(shared_server.url, **{name: value}):
                pass
    with pytest.raises(TypeError, match=r"^sync_interval must be a number, got True$"):
        async with open_shared_state(shared_server.url, sync_interval=True):
            pass


# ------------------------------------------------------------------ the contract


async def test_one_sick_process_never_opens_the_others(shared_server: RedisServer) -> None:
    """trip_quorum=2: one process's trip leaves the others closed; a second distinct
    process's trip within the failure window opens them."""
    prefix = fresh()
    sick, other, watcher = (CircuitBreaker("db", failure_threshold=1) for _ in range(3))
    async with (
        open_shared_state(shared_server.url, sick, prefix=prefix),
        open_shared_state(shared_server.url, other, prefix=prefix),
        open_shared_state(shared_server.url, watcher, prefix=prefix) as shared,
    ):
        await trip(sick)
        await trio.sleep(0.4)
        assert watcher.state is CircuitState.CLOSED
        assert other.state is CircuitState.CLOSED
        await trip(other)
        took = await wait_for(lambda: watcher.state is CircuitState.OPEN)
        assert took < 0.25 + 0.05
        assert shared.statistics().received == 1
        assert 29.0 < watcher.retry_after <= 30.0


async def test_trips_travel_by_hint_long_before_the_next_sync(
    shared_server: RedisServer,
) -> None:
    """With a 5 s sync interval, a trip still reaches the other sharer at once (within
    milliseconds; 0.5 s allows for a loaded machine): the pub/sub hint starts a sync."""
    prefix = fresh()
    a = CircuitBreaker("db", failure_threshold=1)
    b = CircuitBreaker("db", failure_threshold=1)
    common: dict[str, Any] = {"prefix": prefix, "sync_interval": 5.0, "trip_quorum": 1}
    async with (
        open_shared_state(shared_server.url, a, **common),
        open_shared_state(shared_server.url, b, **common) as sb,
    ):
        await wait_for(lambda: sb.statistics().subscribed)
        await trio.sleep(0.1)
        await trip(a)
        took = await wait_for(lambda: b.state is CircuitState.OPEN)
        assert took < 0.5
        assert sb.statistics().syncs == 2  # the first, and the one the hint started


async def test_the_cluster_runs_the_smallest_half_open_max_calls(
    shared_server: RedisServer,
) -> None:
    """Sharers with half_open_max_calls 1 and 3: at most one probe runs cluster-wide."""
    from trio_resilience.testing import set_breaker_state

    prefix = fresh()
    small = CircuitBreaker("db", half_open_max_calls=1, success_threshold=10)
    large = CircuitBreaker("db", half_open_max_calls=3, success_threshold=10)
    async with (
        open_shared_state(shared_server.url, small, prefix=prefix, permit_timeout=0.5),
        open_shared_state(shared_server.url, large, prefix=prefix, permit_timeout=0.5) as s,
    ):
        await trio.sleep(0.1)  # both heartbeats are in
        set_breaker_state(large, "half_open")
        leases = [await s.acquire(large) for _ in range(3)]
        assert isinstance(leases[0], str)
        assert leases[1:] == [False, False]


async def test_a_client_passed_in_is_used_and_left_open(shared_server: RedisServer) -> None:
    """A coredis client (decode_responses either way) entered by the caller is used and
    not closed; a client whose pool is closed under the block only degrades sharing."""
    for decode in (False, True):
        prefix = fresh()
        client = coredis.Redis("127.0.0.1", shared_server.port, decode_responses=decode)
        a = CircuitBreaker("db", failure_threshold=1)
        b = CircuitBreaker("db", failure_threshold=1)
        async with client:
            async with (
                open_shared_state(client, a, prefix=prefix, trip_quorum=1),
                open_shared_state(client, b, prefix=prefix, trip_quorum=1) as shared,
            ):
                assert shared.url is None
                await trip(a)
                await wait_for(lambda b=b: b.state is CircuitState.OPEN)
            assert await client.ping()
    logger = Capture()
    breaker = CircuitBreaker("db", failure_threshold=1)
    async with open_shared_state(
        client, breaker, prefix=fresh(), logger=logger, sync_interval=0.05
    ) as shared:
        await trio.sleep(0.2)  # the client's pool was closed above
        assert not shared.statistics().connected
        assert await breaker.call(trio.sleep, 0) is None
    assert len(logger.named("trio_resilience.redis.degraded")) == 1


async def test_one_round_trip_per_sync_for_all_breakers_and_budgets(
    shared_server: RedisServer,
) -> None:
    """Ten breakers and two budgets cost one round trip per sync in the steady state."""
    prefix = fresh()
    breakers = [CircuitBreaker(f"b{i}") for i in range(10)]
    budgets = [RetryBudget(name="x"), RetryBudget(name="y")]
    async with open_shared_state(
        shared_server.url, *breakers, retry_budgets=budgets, prefix=prefix, sync_interval=0.05
    ) as shared:
        await trio.sleep(0.2)
        before = shared.statistics()
        await trio.sleep(0.5)
        after = shared.statistics()
    syncs = after.syncs - before.syncs
    assert syncs >= 5
    # A sync in flight at a snapshot has counted its round trip but not yet itself.
    assert syncs <= after.round_trips - before.round_trips <= syncs + 1


async def test_retry_budget_counts_are_shared_by_name(shared_server: RedisServer) -> None:
    """First attempts in one process fund retries in another; budgets match by name."""
    prefix = fresh()
    rich = RetryBudget(ratio=1.0, min_retries_per_second=0.0, name="api")
    poor = RetryBudget(ratio=1.0, min_retries_per_second=0.0, name="api")
    other = RetryBudget(ratio=1.0, min_retries_per_second=0.0, name="other")
    async with (
        open_shared_state(shared_server.url, retry_budgets=[rich], prefix=prefix),
        open_shared_state(shared_server.url, retry_budgets=[poor, other], prefix=prefix),
    ):
        for _ in range(5):
            rich.deposit()
        assert not poor.try_withdraw()
        await trio.sleep(0.6)
        assert poor.try_withdraw()
        assert not other.try_withdraw()


async def test_rate_limiters_share_one_rate_and_fall_back_locally(
    redis_server: RedisServer,
) -> None:
    """Two sharers of a 20/s limiter admit about 20/s together; with Redis gone each
    falls back to its full local rate."""
    prefix = fresh()
    a = RateLimiter(20, burst=1, name="api")
    b = RateLimiter(20, burst=1, name="api")
    counts = {"a": 0, "b": 0}

    async def hammer(limiter: RateLimiter, key: str, seconds: float) -> None:
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            try:
                with trio.move_on_at(end):
                    await limiter.acquire()
                    counts[key] += 1
            except RateLimitExceeded:  # the wait would end past the deadline
                await trio.sleep_until(end)

    async with (
        open_shared_state(redis_server.url, rate_limiters=[a], prefix=prefix),
        open_shared_state(redis_server.url, rate_limiters=[b], prefix=prefix),
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hammer, a, "a", 1.0)
            nursery.start_soon(hammer, b, "b", 1.0)
        assert 15 <= counts["a"] + counts["b"] <= 24
        redis_server.stop()
        await trio.sleep(0.3)
        counts = {"a": 0, "b": 0}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hammer, a, "a", 1.0)
            nursery.start_soon(hammer, b, "b", 1.0)
        assert counts["a"] >= 15
        assert counts["b"] >= 15
    assert not a.remote_attached


async def test_redis_down_from_the_start_keeps_breakers_local() -> None:
    """With no server, the block runs degraded: logged once, breakers decide locally."""
    logger = Capture()
    breaker = CircuitBreaker("alone", failure_threshold=1)
    async with open_shared_state(
        f"redis://127.0.0.1:{free_port()}/0", breaker, sync_interval=0.05, logger=logger
    ) as shared:
        assert await breaker.call(trio.sleep, 0) is None
        await trip(breaker)
        assert breaker.state is CircuitState.OPEN
        await trio.sleep(0.5)
        assert not shared.statistics().connected
        assert await shared.acquire(breaker) is None
    assert len(logger.named("trio_resilience.redis.degraded")) == 1


async def test_a_trip_made_while_redis_is_down_is_sent_on_reconnect(
    redis_server: RedisServer,
) -> None:
    """Redis goes away and comes back: degraded and recovered are logged once each, and a
    trip made meanwhile reaches the other sharer after the reconnect."""
    prefix = fresh()
    logger = Capture()
    a = CircuitBreaker("db", failure_threshold=1)
    b = CircuitBreaker("db", failure_threshold=1)
    common: dict[str, Any] = {"prefix": prefix, "sync_interval": 0.05, "trip_quorum": 1}
    async with (
        open_shared_state(redis_server.url, a, logger=logger, **common) as sa,
        open_shared_state(redis_server.url, b, **common) as sb,
    ):
        redis_server.stop()
        await wait_for(lambda: not sa.statistics().connected)
        await trip(a)
        await trio.sleep(0.2)
        assert b.state is CircuitState.CLOSED
        redis_server.start()
        # b may read the stored trip at its own sync a moment before a's publish is
        # counted: wait for both, the test is that both happen after the reconnect.
        await wait_for(
            lambda: b.state is CircuitState.OPEN and sa.statistics().published == 1, limit=5.0
        )
        assert sb.statistics().connected
    assert [e for e, _ in logger.events if e.startswith("trio_resilience.redis.")] == [
        "trio_resilience.redis.degraded",
        "trio_resilience.redis.recovered",
    ]


async def test_late_joiner_reads_the_shared_trips(shared_server: RedisServer) -> None:
    """A process that joins after two trips reads them and opens until the deadline."""
    prefix = fresh()
    first = [CircuitBreaker("late", failure_threshold=1, recovery_timeout=5.0) for _ in "ab"]
    async with (
        open_shared_state(shared_server.url, first[0], prefix=prefix),
        open_shared_state(shared_server.url, first[1], prefix=prefix),
    ):
        await trip(first[0])
        await trip(first[1])
        await trio.sleep(0.1)
    joiner = CircuitBreaker("late", failure_threshold=1, recovery_timeout=5.0)
    async with open_shared_state(shared_server.url, joiner, prefix=prefix) as shared:
        assert joiner.state is CircuitState.OPEN
        assert 4.5 < joiner.retry_after <= 5.0
        assert shared.statistics().received == 1


async def test_open_shared_state_validates_its_arguments() -> None:
    """Bad URLs, non-breakers, duplicate names and bad numbers are refused at once."""
    with pytest.raises(ValueError, match="url_or_client must be a redis://"):
        async with open_shared_state("http://x"):
            pass
    with pytest.raises(TypeError, match="url_or_client must be a URL or a coredis client"):
        async with open_shared_state(42):
            pass
    with pytest.raises(TypeError, match=r"breakers\[0\] must be a CircuitBreaker"):
        async with open_shared_state("redis://x", 1):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="distinct names"):
        async with open_shared_state("redis://x", CircuitBreaker("a"), CircuitBreaker("a")):
            pass
    with pytest.raises(ValueError, match=r"^sync_interval must be > 0, got 0$"):
        async with open_shared_state("redis://x", sync_interval=0):
            pass
    with pytest.raises(TypeError, match=r"retry_budgets\[0\] must be a RetryBudget"):
        async with open_shared_state("redis://x", retry_budgets=[1]):  # type: ignore[list-item]
            pass
    with pytest.raises(TypeError, match=r"^trip_quorum must be an int, got True$"):
        async with open_shared_state("redis://x", trip_quorum=True):
            pass


async def test_a_breaker_is_shared_by_one_block_at_a_time(shared_server: RedisServer) -> None:
    """A second block sharing the same breaker is refused; leaving the block detaches
    every policy (the breaker's port has no owner, the limiter no remote)."""
    breaker = CircuitBreaker("db")
    other = CircuitBreaker("other")
    limiter = RateLimiter(10, name="api")
    async with open_shared_state(
        shared_server.url, breaker, rate_limiters=[limiter], prefix=fresh()
    ) as shared:
        assert breaker.sharing.owner is shared
        assert limiter.remote_attached
        with pytest.raises(RuntimeError):
            async with open_shared_state(shared_server.url, other, breaker, prefix=fresh()):
                pass
        assert other.sharing.owner is None  # the refused block attached nothing
    assert breaker.sharing.owner is None
    assert not limiter.remote_attached


async def test_the_blocks_own_error_and_cancellation_come_out_as_themselves(
    shared_server: RedisServer,
) -> None:
    """An error raised in the block is not wrapped in an ExceptionGroup, and cancelling
    the block from outside ends it cleanly, with a URL or a client passed in."""
    client = coredis.Redis("127.0.0.1", shared_server.port)
    async with client:
        for target in (shared_server.url, client):
            with pytest.raises(KeyError, match="mine"):
                async with open_shared_state(target, CircuitBreaker("db"), prefix=fresh()):
                    raise KeyError("mine")
            with trio.move_on_after(0.2) as scope:
                async with open_shared_state(target, CircuitBreaker("db"), prefix=fresh()):
                    await trio.sleep(10)
            assert scope.cancelled_caught


async def server_us(client: Any) -> int:
    """The server's clock in microseconds (coredis's time() drops the fraction)."""
    t = await client.execute_command(
        client.create_request(b"TIME", callback=coredis.response._callbacks.NoopCallback())
    )
    return int(t[0]) * 1_000_000 + int(t[1])


async def test_a_foreign_count_lua_would_parse_never_loses_another_breakers_trip(
    shared_server: RedisServer,
) -> None:
    """Counts like "5.0", "0x10" or " 7" in the current bucket (HINCRBY refuses them)
    are replaced and counted malformed; the trip of another breaker in the same sync
    and the budget counts still arrive."""
    prefix = fresh()
    client = raw(shared_server)
    sick = CircuitBreaker("aa", failure_threshold=3, failure_window=10)
    tripper = CircuitBreaker("zz", failure_threshold=1, failure_window=10)
    peer = CircuitBreaker("zz", failure_threshold=1, failure_window=10)
    rich = RetryBudget(ratio=1.0, min_retries_per_second=0.0, window=10, name="api")
    poor = RetryBudget(ratio=1.0, min_retries_per_second=0.0, window=10, name="api")
    async with client:
        bucket = await server_us(client) // 1_000_000  # width: a tenth of 10 s
        garbage = ("5.0", "0x10", " 7", "1e3")
        for i, value in enumerate(garbage):  # whichever bucket is current at the sync
            await client.hset(f"{{{prefix}:aa}}:counts:10000", {f"f:{bucket + i}": value})
            await client.hset(f"{{{prefix}:budget:api}}:10000", {f"d:{bucket + i}": value})
        async with (
            open_shared_state(
                shared_server.url,
                sick,
                tripper,
                retry_budgets=[rich],
                prefix=prefix,
                share_counts=True,
                trip_quorum=1,
            ) as shared,
            open_shared_state(
                shared_server.url,
                peer,
                retry_budgets=[poor],
                prefix=prefix,
                share_counts=True,
                trip_quorum=1,
            ),
        ):
            await trip(sick, 1)  # a new failure: an HINCRBY on the garbage field
            for _ in range(5):
                rich.deposit()
            await trip(tripper)
            await wait_for(lambda: peer.state is CircuitState.OPEN)
            await wait_for(poor.try_withdraw)
            assert shared.statistics().published == 1
            assert shared.statistics().malformed >= 1
        counts = await client.hgetall(f"{{{prefix}:aa}}:counts:10000")
        assert not set(counts.values()) & set(garbage)


async def test_foreign_members_of_the_origins_set_never_make_a_quorum(
    shared_server: RedisServer,
) -> None:
    """An origin scored in the future (+inf) or not shaped like an origin id is removed
    and counted malformed: one failing process alone never opens the others."""
    prefix = fresh()
    client = raw(shared_server)
    a = CircuitBreaker("db", failure_threshold=5, failure_window=10)
    b = CircuitBreaker("db", failure_threshold=3, failure_window=10)
    key = f"{{{prefix}:db}}:origins:10000"
    async with client:
        now_us = await server_us(client)
        await client.zadd(key, {"garbage": math.inf, "1-abc": now_us + 3e9, "x|y": now_us})
        async with (
            open_shared_state(shared_server.url, a, prefix=prefix, share_counts=True) as sa,
            open_shared_state(shared_server.url, b, prefix=prefix, share_counts=True) as sb,
        ):
            await trip(a, 3)
            await wait_for(lambda: sa.statistics().malformed + sb.statistics().malformed >= 1)
            syncs = sb.statistics().syncs
            await wait_for(lambda: sb.statistics().syncs >= syncs + 2)
            assert b.state is CircuitState.CLOSED
            assert a.state is CircuitState.CLOSED
        assert await client.zmscore(key, ["garbage", "1-abc", "x|y"]) == (None, None, None)


async def test_counts_beyond_what_a_bucket_could_hold_are_refused(
    shared_server: RedisServer,
) -> None:
    """A planted 10**11-odd first attempts (or failures) in a one-second bucket is more
    than a million a second: it is dropped and counted malformed, so the budget still
    caps retries and the breaker does not trip on it."""
    prefix = fresh()
    client = raw(shared_server)
    budget = RetryBudget(ratio=0.1, min_retries_per_second=0.0, window=10, name="api")
    breaker = CircuitBreaker("db", failure_threshold=5, failure_window=10)
    async with client:
        bucket = await server_us(client) // 1_000_000  # width: a tenth of 10 s
        for i in range(-1, 3):  # whichever bucket is current at the sync
            await client.hset(f"{{{prefix}:budget:api}}:10000", {f"d:{bucket + i}": "10" * 6})
            await client.hset(f"{{{prefix}:db}}:counts:10000", {f"f:{bucket + i}": "10" * 6})
        async with open_shared_state(
            shared_server.url,
            breaker,
            retry_budgets=[budget],
            prefix=prefix,
            share_counts=True,
            trip_quorum=1,
        ) as shared:
            await trip(breaker, 1)  # this process is a failing origin
            await wait_for(lambda: shared.statistics().malformed >= 2)
            syncs = shared.statistics().syncs
            await wait_for(lambda: shared.statistics().syncs >= syncs + 2)
            assert breaker.state is CircuitState.CLOSED
            assert not budget.try_withdraw()
        assert not await client.hvals(f"{{{prefix}:budget:api}}:10000")


async def test_a_finished_probe_frees_its_lease_for_the_next_probe_at_once(
    shared_server: RedisServer,
) -> None:
    """With one probe at a time and a slow sync, probes in a row are each admitted:
    the last probe's lease is released with the next acquisition, not the next sync."""
    from trio_resilience.testing import set_breaker_state

    breaker = CircuitBreaker("db", half_open_max_calls=1, success_threshold=3)
    async with open_shared_state(
        shared_server.url, breaker, prefix=fresh(), sync_interval=30, permit_timeout=1
    ) as shared:
        await wait_for(lambda: shared.statistics().syncs >= 1)
        set_breaker_state(breaker, "half_open")
        for _ in range(3):
            await breaker.call(trio.sleep, 0)  # never CircuitOpenError
        assert breaker.state is CircuitState.CLOSED


async def test_a_block_that_exits_stops_capping_the_clusters_probes(
    shared_server: RedisServer,
) -> None:
    """A sharer with half_open_max_calls=1 caps the cluster's probes while its block
    runs; once it exits cleanly the others run their own limit at once."""
    from trio_resilience.testing import set_breaker_state

    prefix = fresh()
    strict = CircuitBreaker("db", half_open_max_calls=1)
    loose = CircuitBreaker("db", half_open_max_calls=3)
    async with open_shared_state(
        shared_server.url, loose, prefix=prefix, permit_timeout=1, permit_lease=60
    ) as shared:
        set_breaker_state(loose, "half_open")
        async with open_shared_state(shared_server.url, strict, prefix=prefix) as other:
            await wait_for(lambda: other.statistics().syncs >= 1)
            lease = await shared.acquire(loose)
            assert isinstance(lease, str)
            assert await shared.acquire(loose) is False  # the cluster's limit is 1
            shared.release(loose, lease)
        leases = [await shared.acquire(loose) for _ in range(3)]
        assert all(isinstance(lease, str) for lease in leases)
        assert await shared.acquire(loose) is False
        for lease in leases:
            assert isinstance(lease, str)
            shared.release(loose, lease)


async def test_a_long_names_trip_travels_by_hint_and_is_not_malformed(
    shared_server: RedisServer,
) -> None:
    """A 604-character name (escaping makes it longer) still fits the hints the library
    reads: the trip arrives by hint, long before the next sync, and nobody counts it
    malformed."""
    prefix = fresh()
    name = "svc:" * 100 + "é" * 204
    a = CircuitBreaker(name, failure_threshold=1)
    b = CircuitBreaker(name, failure_threshold=1)
    common: dict[str, Any] = {"prefix": prefix, "sync_interval": 30.0, "trip_quorum": 1}
    async with (
        open_shared_state(shared_server.url, a, **common) as sa,
        open_shared_state(shared_server.url, b, **common) as sb,
    ):
        await wait_for(lambda: sa.statistics().subscribed and sb.statistics().subscribed)
        await wait_for(lambda: sa.statistics().syncs >= 1 and sb.statistics().syncs >= 1)
        await trio.sleep(0.1)  # the subscription is confirmed on the server side
        await trip(a)
        await wait_for(lambda: b.state is CircuitState.OPEN, limit=3.0)
        assert sa.statistics().malformed == sb.statistics().malformed == 0


async def test_a_stalled_redis_at_start_barely_delays_entering_the_block(
    redis_server: RedisServer,
) -> None:
    """With the server stopped (SIGSTOP) before the block, entering it waits at most
    entry_wait (0.25 s), not the 5 s sync time-out of sync_interval=2; breakers
    decide locally meanwhile."""
    redis_server.pause()
    breaker = CircuitBreaker("db", failure_threshold=1)
    try:
        with trio.fail_after(20):
            start = trio.current_time()
            async with open_shared_state(
                redis_server.url, breaker, prefix=fresh(), sync_interval=2.0
            ) as shared:
                entered = trio.current_time() - start
                assert not shared.statistics().connected
                assert await breaker.call(trio.sleep, 0) is None
                await trip(breaker)
                assert breaker.state is CircuitState.OPEN
            assert entered < 1.0  # 0.25 s and a loaded machine's slack
    finally:
        redis_server.resume()


async def test_an_exception_group_raised_in_the_block_comes_out_as_itself(
    shared_server: RedisServer,
) -> None:
    """A group the body raises is not wrapped in the block's nursery group, with a URL,
    a client passed in, or Redis down."""
    client = coredis.Redis("127.0.0.1", shared_server.port)
    async with client:
        for target in (shared_server.url, client, f"redis://127.0.0.1:{free_port()}/0"):
            error = ExceptionGroup("mine", [KeyError("a"), Boom()])
            with pytest.raises(ExceptionGroup) as info:
                async with open_shared_state(target, CircuitBreaker("db"), prefix=fresh()):
                    await trio.sleep(0.05)
                    raise error
            assert info.value is error


async def test_cancelling_nested_blocks_from_outside_raises_nothing(
    shared_server: RedisServer,
) -> None:
    """A cancel scope around two nested blocks (or one whose body cleans up shielded)
    absorbs the cancellation: the client's teardown errors never leak out of it."""
    prefix = fresh()
    for trial in range(8):
        with trio.move_on_after(0.1 + trial % 4 * 0.02) as scope:
            async with (
                open_shared_state(shared_server.url, CircuitBreaker("db"), prefix=prefix),
                open_shared_state(shared_server.url, CircuitBreaker("db"), prefix=prefix),
            ):
                await trio.sleep(10)
        assert scope.cancelled_caught
    for trial in range(4):
        with trio.move_on_after(0.1 + trial * 0.02) as scope:
            breaker = CircuitBreaker("db")
            async with open_shared_state(
                shared_server.url, breaker, prefix=prefix, sync_interval=0.05
            ):
                try:
                    await trio.sleep(10)
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.sleep(0.05)
        assert scope.cancelled_caught


async def test_password_urls_work(redis_server: RedisServer) -> None:
    """A redis:// URL with a password reaches a server that requires one; a wrong one
    degrades to local decisions."""
    redis_server.cli("config", "set", "requirepass", "s3cret")
    breaker = CircuitBreaker("auth", failure_threshold=1)
    url = f"redis://:s3cret@127.0.0.1:{redis_server.port}/0"
    async with open_shared_state(url, breaker, prefix="t11") as shared:
        assert shared.statistics().connected
    logger = Capture()
    wrong = f"redis://:nope@127.0.0.1:{redis_server.port}/0"
    async with open_shared_state(wrong, prefix="t11", logger=logger) as shared:
        assert not shared.statistics().connected
    assert logger.events[0][0] == "trio_resilience.redis.degraded"


# ------------------------------------------------------------------ several processes


def spawn(url: str, role: str, prefix: str, scenario: str, quorum: int) -> Any:
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, role, prefix, scenario, str(quorum)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )


def collect(process: Any, timeout: float = 30) -> list[dict[str, Any]]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def first(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(e for e in events if e["event"] == name)


def test_two_processes_trip_and_every_process_opens(shared_server: RedisServer) -> None:
    """Five processes, quorum 2: two trip, the other three open within the sync interval
    plus 50 ms, to the tripper's deadline."""
    prefix = fresh()
    roles = ["tripper1", "tripper2", "a", "b", "c"]
    workers = [spawn(shared_server.url, role, prefix, "trip", 2) for role in roles]
    results = [collect(w) for w in workers]
    tripped = max(first(r, "tripped")["time"] for r in results[:2])
    for events in results[2:]:
        seen = first(events, "open")
        assert seen["time"] - tripped < 0.1 + 0.05 + 0.1  # sync interval, 50 ms, slack
        assert 29.0 < seen["retry_after"] <= 30.0


def test_one_tripping_process_opens_nobody_else(shared_server: RedisServer) -> None:
    """Three processes, quorum 2: one trips, the others never open."""
    prefix = fresh()
    workers = [spawn(shared_server.url, r, prefix, "trip", 2) for r in ("tripper", "a", "b")]
    results = [collect(w) for w in workers]
    assert first(results[0], "done")["open"]
    assert [first(r, "done")["open"] for r in results[1:]] == [False, False]


def test_cluster_wide_probes_never_exceed_the_limit(shared_server: RedisServer) -> None:
    """Three processes x 10 probes after the recovery timeout: at most 2 run at once."""
    prefix = fresh()
    workers = [spawn(shared_server.url, r, prefix, "probes", 1) for r in ("tripper", "a", "b")]
    results = [first(collect(w), "probes") for w in workers]
    assert max(r["peak"] for r in results) <= 2
    assert sum(r["admitted"] for r in results) >= 2


def test_processes_survive_redis_restart_and_resync(redis_server: RedisServer) -> None:
    """Redis is killed and restarted mid-run; both processes keep serving and resync."""
    import time

    prefix = fresh()
    workers = [spawn(redis_server.url, r, prefix, "survive", 1) for r in ("tripper", "b")]
    for worker in workers:  # every worker synced once before the server goes
        assert json.loads(worker.stdout.readline())["event"] == "ready"
    time.sleep(0.5)
    redis_server.stop()
    time.sleep(1.5)
    redis_server.start()
    results = [collect(w) for w in workers]
    for events in results:
        names = [e["event"] for e in events]
        assert names.count("trio_resilience.redis.degraded") == 1
        assert names.index("trio_resilience.redis.degraded") < names.index(
            "trio_resilience.redis.recovered"
        )
        assert first(events, "done")["served"] > 40
    tripped = first(results[0], "tripped")["time"]
    assert first(results[1], "open")["time"] - tripped < 0.3  # resynced after the restart


def test_two_workers_example(shared_server: RedisServer) -> None:
    """examples/redis/two_workers.py: the worker that saw no failure rejects too."""
    example = Path(__file__).parent.parent / "examples" / "redis" / "two_workers.py"
    done = subprocess.run(
        [sys.executable, str(example), shared_server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = {line.split(":")[0]: line for line in done.stdout.splitlines()}
    assert "'failed': 3" in lines["worker a"]
    assert "'failed': 0" in lines["worker b"]
    assert "'rejected': 0" not in lines["worker b"]
    assert "breaker open" in lines["worker b"]


def test_the_core_package_never_imports_coredis() -> None:
    """trio_resilience works without the redis extra: only trio_resilience.redis needs it."""
    code = "import sys, trio_resilience, trio_resilience.testing; print('coredis' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
