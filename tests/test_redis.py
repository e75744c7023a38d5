"""Shared state on a real redis-server on loopback (real time: these tests may wait).

The fixture starts redis-server on a free port; make test / .ci/run install it.
Several OS processes, each with its own trio.run, share breakers through it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

coredis = pytest.importorskip("coredis")

from trio_resilience import CircuitBreaker, CircuitState, RetryBudget  # noqa: E402
from trio_resilience.redis import open_shared_state  # noqa: E402

from .conftest import Boom  # noqa: E402

WORKER = Path(__file__).parent / "redis_worker.py"
REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")


class RedisServer:
    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        assert REDIS is not None
        self.process = subprocess.Popen(
            [
                REDIS,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def password_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start("--requirepass", "s3cret")
    try:
        yield server
    finally:
        server.stop()


def spawn(url: str, role: str, prefix: str, scenario: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, role, prefix, scenario],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )


def collect(process: subprocess.Popen[str], timeout: float = 30) -> list[dict[str, Any]]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def first(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(e for e in events if e["event"] == name)


def test_a_trip_in_one_process_is_seen_by_all_within_the_sync_interval(
    redis_server: RedisServer,
) -> None:
    """Three processes; one trips; the others reject within the sync interval."""
    workers = [spawn(redis_server.url, role, "t1", "trip") for role in ("tripper", "a", "b")]
    results = [collect(w) for w in workers]
    tripped = first(results[0], "tripped")["time"]
    for events in results[1:]:
        seen = first(events, "open")
        assert seen["time"] - tripped < 0.1 + 0.3  # sync interval plus process slack
        assert 29.0 < seen["retry_after"] <= 30.5  # the shared deadline, to clock offset


def test_cluster_wide_probes_never_exceed_the_limit(redis_server: RedisServer) -> None:
    """Three processes x 10 probes after the recovery timeout: at most 2 run at once."""
    workers = [spawn(redis_server.url, role, "t2", "probes") for role in ("tripper", "a", "b")]
    results = [first(collect(w), "probes") for w in workers]
    assert max(r["peak"] for r in results) <= 2
    assert sum(r["admitted"] for r in results) >= 2


def test_processes_survive_redis_restart_and_resync(redis_server: RedisServer) -> None:
    """Redis is killed and restarted mid-run; both processes keep serving and resync."""
    workers = [spawn(redis_server.url, role, "t3", "survive") for role in ("tripper", "b")]
    time.sleep(2.0)
    redis_server.stop()
    time.sleep(2.0)
    redis_server.start()
    results = [collect(w) for w in workers]
    for events in results:
        names = [e["event"] for e in events]
        assert "trio_resilience.redis.degraded" in names
        assert "trio_resilience.redis.recovered" in names
        assert names.index("trio_resilience.redis.degraded") < names.index(
            "trio_resilience.redis.recovered"
        )
        served_while_down = [e["served"] for e in events if e["event"] == "served"]
        assert served_while_down == sorted(served_while_down)
        assert first(events, "done")["served"] > 50
    tripped = first(results[0], "tripped")["time"]
    assert first(results[1], "open")["time"] - tripped < 0.5  # resynced after the restart


# ------------------------------------------------------------------ in one process


class Capture:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    warning = error = info


async def test_late_joiner_reads_the_shared_trip(redis_server: RedisServer) -> None:
    """A process that joins after a trip reads the key and opens until the deadline."""
    first_breaker = CircuitBreaker("late", failure_threshold=1, recovery_timeout=5.0)
    async with open_shared_state(redis_server.url, first_breaker, prefix="t4", sync_interval=0.05):
        await _trip(first_breaker)
        await trio.sleep(0.2)
    joiner = CircuitBreaker("late", failure_threshold=1, recovery_timeout=5.0)
    async with open_shared_state(redis_server.url, joiner, prefix="t4", sync_interval=0.05) as s:
        assert joiner.state is CircuitState.OPEN
        assert 4.0 < joiner.retry_after <= 5.1  # to the clock offset estimate
        assert s.statistics().received == 1
    assert joiner._cluster is None  # detached after the block
    assert joiner._observers == []


async def _trip(breaker: CircuitBreaker) -> None:
    async def fail() -> None:
        raise Boom

    for _ in range(breaker.failure_threshold or 1):
        try:
            await breaker.call(fail)
        except Boom:
            pass


async def test_shared_counts_trip_every_process(redis_server: RedisServer) -> None:
    """With share_counts, failures spread over two sharers add up to the threshold."""
    a = CircuitBreaker("counts", failure_threshold=4, failure_window=10.0)
    b = CircuitBreaker("counts", failure_threshold=4, failure_window=10.0)
    async with (
        open_shared_state(redis_server.url, a, prefix="t5", sync_interval=0.05, share_counts=True),
        open_shared_state(redis_server.url, b, prefix="t5", sync_interval=0.05, share_counts=True),
    ):

        async def fail() -> None:
            raise Boom

        for breaker in (a, b, a, b):
            try:
                await breaker.call(fail)
            except Boom:
                pass
        assert a.state is CircuitState.CLOSED  # 2 local failures each
        await trio.sleep(0.3)
        assert a.state is CircuitState.OPEN
        assert b.state is CircuitState.OPEN


async def test_retry_budget_tokens_are_shared(redis_server: RedisServer) -> None:
    """Deposits in one process fund retries in another."""
    rich = RetryBudget(ratio=1.0, min_retries_per_second=0.0)
    poor = RetryBudget(ratio=1.0, min_retries_per_second=0.0)
    async with (
        open_shared_state(redis_server.url, retry_budgets=[rich], prefix="t6", sync_interval=0.05),
        open_shared_state(redis_server.url, retry_budgets=[poor], prefix="t6", sync_interval=0.05),
    ):
        for _ in range(5):
            rich.deposit()
        assert not poor.try_withdraw()
        await trio.sleep(0.3)
        assert poor.statistics().balance >= 4.0
        assert poor.try_withdraw()
    assert poor._external == 0


async def test_malformed_values_are_ignored_and_logged(redis_server: RedisServer) -> None:
    """Foreign or malformed values in Redis are logged and never trusted."""
    client = coredis.Redis.from_url(redis_server.url, decode_responses=True)
    logger = Capture()
    breaker = CircuitBreaker("bad")
    async with (
        client,
        open_shared_state(
            redis_server.url, breaker, prefix="t7", sync_interval=0.05, logger=logger
        ) as shared,
    ):
        await client.hset("t7:breaker:bad", {"state": "melted", "open_until_ms": "soon"})
        await client.publish("t7:events", "not json")
        await client.publish("t7:events", json.dumps({"breaker": "bad", "state": "open"}))
        await trio.sleep(0.3)
        assert breaker.state is CircuitState.CLOSED
        assert shared.statistics().malformed >= 3
    assert any(e == "trio_resilience.redis.malformed" for e, _ in logger.events)


async def test_redis_down_from_the_start_keeps_breakers_local() -> None:
    """With no server, the block runs degraded: logged once, breakers decide locally."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logger = Capture()
    breaker = CircuitBreaker("alone", failure_threshold=1)
    async with open_shared_state(
        f"redis://127.0.0.1:{port}/0", breaker, prefix="t8", sync_interval=0.05, logger=logger
    ) as shared:
        assert await breaker.call(trio.sleep, 0) is None
        await _trip(breaker)
        assert breaker.state is CircuitState.OPEN
        await trio.sleep(0.5)
        assert not shared.statistics().connected
    degraded = [e for e, _ in logger.events if e == "trio_resilience.redis.degraded"]
    assert degraded == ["trio_resilience.redis.degraded"]


async def test_open_shared_state_validates_its_arguments() -> None:
    """Bad URLs, non-breakers, duplicate names and bad numbers are refused at once."""
    with pytest.raises(ValueError, match="url must be a redis://"):
        async with open_shared_state("http://x"):
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


def test_two_workers_example(redis_server: RedisServer) -> None:
    """examples/redis/two_workers.py: the worker that saw no failure rejects too."""
    example = Path(__file__).parent.parent / "examples" / "redis" / "two_workers.py"
    done = subprocess.run(
        [sys.executable, str(example), redis_server.url],
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


async def test_cluster_permits_limit_probes_across_sharers(redis_server: RedisServer) -> None:
    """Two sharers, one permit: a probe held by one refuses the other's; close spreads."""
    from trio_resilience.testing import set_breaker_state

    a = CircuitBreaker("probe", half_open_max_calls=1, success_threshold=1)
    b = CircuitBreaker("probe", half_open_max_calls=1, success_threshold=1)
    async with (
        open_shared_state(redis_server.url, a, prefix="t9", sync_interval=0.05, permit_timeout=0.5),
        open_shared_state(
            redis_server.url, b, prefix="t9", sync_interval=0.05, permit_timeout=0.5
        ) as shared_b,
    ):
        set_breaker_state(a, "half_open")
        set_breaker_state(b, "half_open")
        release = trio.Event()
        refused = []

        async def held_probe() -> None:
            async with a:
                await release.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(held_probe)
            await trio.sleep(0.2)
            try:
                await b.call(trio.sleep, 0)
            except Exception as exc:
                refused.append(exc)
            stats = b.statistics()
            assert stats.half_open_in_flight == 0  # the local permit was given back
            release.set()
        assert [type(e).__name__ for e in refused] == ["CircuitOpenError"]
        assert a.state is CircuitState.CLOSED  # its probe succeeded
        await trio.sleep(0.3)
        assert b.state is CircuitState.CLOSED  # closed by a's probes, through pub/sub
        assert shared_b.statistics().received >= 1
        assert repr(shared_b).startswith("<SharedState 't9' connected")


async def test_probe_falls_back_to_the_local_limiter_without_redis() -> None:
    """With Redis unreachable, half-open admission is decided by the local limiter."""
    from trio_resilience.testing import set_breaker_state

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    breaker = CircuitBreaker("nofallback", half_open_max_calls=1, success_threshold=1)
    async with open_shared_state(
        f"redis://127.0.0.1:{port}/0", breaker, prefix="t10", logger=Capture()
    ) as shared:
        set_breaker_state(breaker, "half_open")
        assert await shared.acquire(breaker) is None
        await breaker.call(trio.sleep, 0)
        assert breaker.state is CircuitState.CLOSED


async def test_password_urls_work(password_server: RedisServer) -> None:
    """A redis:// URL with a password reaches a server that requires one; a wrong one
    degrades to local decisions."""
    port = password_server.port
    breaker = CircuitBreaker("auth", failure_threshold=1)
    url = f"redis://:s3cret@127.0.0.1:{port}/0"
    async with open_shared_state(url, breaker, prefix="t11", sync_interval=0.05) as shared:
        assert shared.statistics().connected
    logger = Capture()
    wrong = f"redis://:nope@127.0.0.1:{port}/0"
    async with open_shared_state(wrong, prefix="t11", logger=logger) as shared:
        assert not shared.statistics().connected
    assert logger.events[0][0] == "trio_resilience.redis.degraded"


def test_the_core_package_never_imports_coredis() -> None:
    """trio_resilience works without the redis extra: only trio_resilience.redis needs it."""
    code = "import sys, trio_resilience, trio_resilience.testing; print('coredis' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
