"""Shared state through a Sentinel-managed primary (a real redis-sentinel on loopback)."""

from __future__ import annotations

import pytest
import trio

coredis = pytest.importorskip("coredis")

from trio_resilience import CircuitBreaker, CircuitState  # noqa: E402
from trio_resilience.redis import open_shared_state  # noqa: E402

from .redis_servers import REDIS, RedisSentinel, redis_sentinel  # noqa: E402
from .test_redis import fresh, trip, wait_for  # noqa: E402

_FIXTURES = (redis_sentinel,)
pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")


async def test_a_sentinel_primary_client_shares_trips(redis_sentinel: RedisSentinel) -> None:
    """sentinel.primary_for(...) is a client like any other: trips spread through it."""
    prefix = fresh()
    a = CircuitBreaker("db", failure_threshold=1)
    b = CircuitBreaker("db", failure_threshold=1)
    location = coredis.connection.TCPLocation("127.0.0.1", redis_sentinel.port)
    async with coredis.Sentinel([location]) as sentinel:
        primary = sentinel.primary_for("shop")
        async with (
            primary,
            open_shared_state(primary, a, prefix=prefix, trip_quorum=1),
            open_shared_state(primary, b, prefix=prefix, trip_quorum=1) as shared,
        ):
            assert shared.statistics().connected
            await trip(a)
            await wait_for(lambda: b.state is CircuitState.OPEN)
            assert shared.statistics().received == 1
        await trio.sleep(0)
