"""A worker process for the Redis tests and benchmark: its own trio.run sharing breakers.

Usage: python tests/redis_worker.py URL ROLE PREFIX SCENARIO [QUORUM]. It prints JSON
lines (wall-clock ``time`` stamps) that the test reads; the roles are the scenarios of
test_redis.py and benchmarks/bench_redis.py.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import coredis
import trio

from trio_resilience import CircuitBreaker, CircuitOpenError, CircuitState
from trio_resilience.redis import open_shared_state


def emit(**fields: Any) -> None:
    print(json.dumps({"time": time.time(), **fields}), flush=True)


class Down(Exception):
    pass


class Quiet:
    def info(self, event: str, **kw: Any) -> None:
        if event.startswith("trio_resilience.redis."):
            emit(event=event)

    warning = error = info


async def _fail() -> None:
    raise Down


async def _trip(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        try:
            await breaker.call(_fail)
        except (Down, CircuitOpenError):
            pass


async def trip_and_watch(url: str, role: str, prefix: str, quorum: int) -> None:
    """Trippers trip the breaker at 1.0 s; everyone reports when it sees OPEN."""
    breaker = CircuitBreaker("db", failure_threshold=3, recovery_timeout=30.0, logger=Quiet())
    async with open_shared_state(
        url, breaker, prefix=prefix, sync_interval=0.1, trip_quorum=quorum, logger=Quiet()
    ):
        emit(event="ready")
        start = trio.current_time()
        seen = False
        while trio.current_time() - start < 2.5:
            if role.startswith("tripper") and not seen and trio.current_time() - start >= 1.0:
                await _trip(breaker, 3)
                emit(event="tripped")
            if not seen and breaker.state is CircuitState.OPEN:
                seen = True
                emit(event="open", retry_after=breaker.retry_after)
            await trio.sleep(0.005)
        emit(event="done", open=seen)


async def fanout(url: str, role: str, prefix: str, quorum: int) -> None:
    """For the benchmark: wait on the state value until the breaker opens; report when.

    The "tripper" role trips when a line arrives on its stdin (the go signal)."""
    breaker = CircuitBreaker("svc", failure_threshold=1, recovery_timeout=60.0, logger=Quiet())
    async with open_shared_state(
        url, breaker, prefix="bench", sync_interval=0.25, trip_quorum=1, logger=Quiet()
    ) as shared:
        emit(event="ready")
        if role == "tripper":
            await trio.to_thread.run_sync(sys.stdin.readline)  # the go signal
            await _trip(breaker, 1)
            emit(event="tripped")
            await trio.sleep(1.0)
            return
        with trio.move_on_after(30.0):
            await breaker.state_value.wait_value(CircuitState.OPEN)
            emit(event="open", syncs=shared.statistics().syncs)
            return
        emit(event="timeout")


async def probes(url: str, role: str, prefix: str, quorum: int) -> None:
    """After a shared trip, 10 concurrent probes per process; count cluster concurrency."""
    breaker = CircuitBreaker(
        "api",
        failure_threshold=1,
        recovery_timeout=1.0,
        half_open_max_calls=2,
        success_threshold=100,
        logger=Quiet(),
    )
    counter = coredis.Redis.from_url(url, decode_responses=True)
    async with (
        counter,
        open_shared_state(
            url,
            breaker,
            prefix=prefix,
            sync_interval=0.1,
            permit_timeout=0.5,
            trip_quorum=quorum,
            logger=Quiet(),
        ),
    ):
        emit(event="ready")
        if role == "tripper":
            await trio.sleep(0.3)
            await _trip(breaker, 1)
        await trio.sleep(2.0)  # everyone sees the trip; its 1 s recovery passes
        peak = 0
        admitted = 0

        async def probe() -> None:
            nonlocal peak, admitted
            try:
                async with breaker:
                    admitted += 1
                    now = int(await counter.incr(f"{prefix}:inflight"))
                    peak = max(peak, now)
                    await trio.sleep(0.3)
                    await counter.decr(f"{prefix}:inflight")
            except CircuitOpenError:
                pass

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(probe)
        emit(event="probes", admitted=admitted, peak=peak)


async def survive(url: str, role: str, prefix: str, quorum: int) -> None:
    """Keep serving while Redis is killed and restarted; then trip and see it shared."""
    breaker = CircuitBreaker("svc", failure_threshold=2, recovery_timeout=30.0, logger=Quiet())
    served = 0
    async with open_shared_state(
        url, breaker, prefix=prefix, sync_interval=0.1, trip_quorum=quorum, logger=Quiet()
    ):
        emit(event="ready")
        start = trio.current_time()
        seen_open = False
        while trio.current_time() - start < 7.0:
            elapsed = trio.current_time() - start
            if breaker.state is CircuitState.CLOSED:
                await breaker.call(trio.sleep, 0)
                served += 1
            if role == "tripper" and elapsed >= 5.0 and breaker.state is CircuitState.CLOSED:
                await _trip(breaker, 2)
                emit(event="tripped")
            if not seen_open and breaker.state is CircuitState.OPEN:
                seen_open = True
                emit(event="open")
            if int(elapsed * 10) % 10 == 0:
                emit(event="served", served=served)
            await trio.sleep(0.05)
        emit(event="done", served=served)


def main() -> None:
    url, role, prefix, scenario = sys.argv[1:5]
    quorum = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    fn = {"trip": trip_and_watch, "probes": probes, "survive": survive, "fanout": fanout}[scenario]
    trio.run(fn, url, role, prefix, quorum)


if __name__ == "__main__":
    main()
