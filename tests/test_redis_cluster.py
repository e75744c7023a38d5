"""Shared state on a real 3-master Redis Cluster on loopback (real time: tests may wait).

The cluster fixture (tests/redis_servers.py) starts three cluster-enabled
redis-servers and joins them with ``redis-cli --cluster create``; every key of one
breaker carries one hash tag, so each script runs on one slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

coredis = pytest.importorskip("coredis")

from trio_resilience import CircuitBreaker, CircuitState, RetryBudget  # noqa: E402
from trio_resilience.redis import open_shared_state  # noqa: E402

from .redis_servers import REDIS, REDIS_CLI, RedisCluster, redis_cluster  # noqa: E402
from .test_redis import fresh, trip, wait_for  # noqa: E402

_FIXTURES = (redis_cluster,)
pytestmark = pytest.mark.skipif(
    REDIS is None or REDIS_CLI is None, reason="redis-server/redis-cli are not installed"
)


@pytest.fixture
async def client(redis_cluster: RedisCluster) -> AsyncIterator[Any]:
    """A RedisCluster client, entered (and closed) by the test, as a user would."""
    cluster = coredis.RedisCluster(redis_cluster.host, redis_cluster.port)
    async with cluster:
        yield cluster


def slots_of(cluster: RedisCluster, keys: list[str]) -> set[int]:
    return {int(cluster.nodes[0].cli("cluster", "keyslot", key)) for key in keys}


def node_of(cluster: RedisCluster, slot: int) -> int:
    """Index of the master that serves ``slot``."""
    for line in cluster.nodes[0].cli("cluster", "nodes").splitlines():
        fields = line.split()
        port = int(fields[1].split(":")[1].split("@")[0])
        for span in fields[8:]:
            low, _, high = span.partition("-")
            if int(low) <= slot <= int(high or low):
                return [n.port for n in cluster.nodes].index(port)
    raise AssertionError(f"no node serves slot {slot}")


async def test_every_key_of_a_breaker_is_in_one_slot(
    redis_cluster: RedisCluster, client: Any
) -> None:
    """Each breaker's keys share one hash slot; breakers spread over the masters."""
    prefix = fresh()
    names = [f"svc{i}" for i in range(12)] + ["db", "db:probes"]
    here = [CircuitBreaker(n, failure_threshold=1) for n in names]
    async with open_shared_state(
        client, *here, prefix=prefix, share_counts=True, sync_interval=0.05
    ) as shared:
        await trip(here[0], 1)
        await trio.sleep(0.3)
        assert shared.statistics().connected
        assert shared.statistics().malformed == 0
        # Scanned while the block runs: on exit its heartbeats (sharers keys) go.
        keys: list[str] = []
        for node in redis_cluster.nodes:
            keys += [k for k in node.cli("--scan", "--pattern", f"*{prefix}*").split() if k]
    by_tag: dict[str, list[str]] = {}
    for key in keys:
        by_tag.setdefault(key.split("}")[0], []).append(key)
    assert len(by_tag) == len(names)
    slots = [slots_of(redis_cluster, group) for group in by_tag.values()]
    assert all(len(s) == 1 for s in slots)
    assert len({node_of(redis_cluster, next(iter(s))) for s in slots}) == 3  # all masters


async def test_trips_spread_through_the_cluster(client: Any) -> None:
    """Two sharers on one RedisCluster client: a quorum of trips opens the third sharer,
    for breakers living on different masters."""
    prefix = fresh()
    names = [f"svc{i}" for i in range(6)]
    groups = [[CircuitBreaker(n, failure_threshold=1) for n in names] for _ in range(3)]
    async with (
        open_shared_state(client, *groups[0], prefix=prefix),
        open_shared_state(client, *groups[1], prefix=prefix),
        open_shared_state(client, *groups[2], prefix=prefix) as watcher,
    ):
        for breaker in groups[0] + groups[1]:
            await trip(breaker, 1)
        took = await wait_for(lambda: all(b.state is CircuitState.OPEN for b in groups[2]))
        assert took < 0.25 + 0.05
        assert watcher.statistics().received == len(names)
        assert all(29.0 < b.retry_after <= 30.0 for b in groups[2])


async def test_cluster_probes_and_budgets(client: Any) -> None:
    """Probe permits and retry budgets work on a Cluster as on one server."""
    from trio_resilience.testing import set_breaker_state

    prefix = fresh()
    a = CircuitBreaker("probe", half_open_max_calls=1, success_threshold=5)
    b = CircuitBreaker("probe", half_open_max_calls=2, success_threshold=5)
    rich = RetryBudget(ratio=1.0, min_retries_per_second=0.0, name="api")
    poor = RetryBudget(ratio=1.0, min_retries_per_second=0.0, name="api")
    async with (
        open_shared_state(client, a, retry_budgets=[rich], prefix=prefix, permit_timeout=0.5),
        open_shared_state(
            client, b, retry_budgets=[poor], prefix=prefix, permit_timeout=0.5
        ) as shared,
    ):
        await trio.sleep(0.3)
        set_breaker_state(b, "half_open")
        assert isinstance(await shared.acquire(b), str)
        assert await shared.acquire(b) is False  # the smallest limit among sharers: 1
        for _ in range(3):
            rich.deposit()
        await trio.sleep(0.6)
        assert poor.try_withdraw()


async def test_a_decoding_cluster_client_works_too(redis_cluster: RedisCluster) -> None:
    """decode_responses=True on a RedisCluster client changes nothing."""
    prefix = fresh()
    client = coredis.RedisCluster(redis_cluster.host, redis_cluster.port, decode_responses=True)
    a = CircuitBreaker("db", failure_threshold=1)
    b = CircuitBreaker("db", failure_threshold=1)
    async with (
        client,
        open_shared_state(client, a, prefix=prefix, trip_quorum=1),
        open_shared_state(client, b, prefix=prefix, trip_quorum=1) as shared,
    ):
        await trip(a)
        await wait_for(lambda: b.state is CircuitState.OPEN)
        assert shared.statistics().malformed == 0
