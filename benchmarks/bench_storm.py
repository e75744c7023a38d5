"""Half-open probe storm: 1,000 callers arrive together just after the recovery timeout.

Counts how many reach the recovering upstream. Ours admits exactly
``half_open_max_calls``; the peers (pybreaker, aiobreaker, purgatory) are run through
the same scenario on the real clock, since they time their reset on the wall clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

import structlog
import trio
from _common import report

CALLERS = 1000
RESET = 0.05  # seconds open before a probe may pass (real time, for the peers)


class Down(Exception):
    pass


async def ours() -> int:
    from trio_resilience import CircuitBreaker, CircuitOpenError

    breaker = CircuitBreaker(
        "storm",
        failure_threshold=1,
        recovery_timeout=RESET,
        half_open_max_calls=3,
        success_threshold=3,
        logger=structlog.ReturnLogger(),
    )
    reached = 0

    async def down() -> None:
        raise Down

    async def upstream() -> None:
        nonlocal reached
        reached += 1
        await trio.sleep(0.01)

    try:
        await breaker.call(down)
    except Down:
        pass
    await trio.sleep(RESET * 1.2)

    async def caller() -> None:
        try:
            await breaker.call(upstream)
        except CircuitOpenError:
            pass

    async with trio.open_nursery() as nursery:
        for _ in range(CALLERS):
            nursery.start_soon(caller)
    return reached


def pybreaker_storm() -> int | str:
    try:
        import pybreaker
    except ImportError:
        return "not installed"
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=RESET)
    reached = 0
    lock = threading.Lock()

    def down() -> None:
        raise Down

    def upstream() -> None:
        nonlocal reached
        with lock:
            reached += 1
        time.sleep(0.01)

    try:
        breaker.call(down)
    except (Down, pybreaker.CircuitBreakerError):
        pass
    time.sleep(RESET * 1.2)
    start = threading.Barrier(CALLERS)

    def caller() -> None:
        start.wait()
        try:
            breaker.call(upstream)
        except pybreaker.CircuitBreakerError:
            pass

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return reached


def aiobreaker_storm() -> int | str:
    try:
        from datetime import timedelta

        import aiobreaker
    except ImportError:
        return "not installed"

    async def run() -> int:
        breaker = aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=RESET))
        reached = 0

        async def down() -> None:
            raise Down

        async def upstream() -> None:
            nonlocal reached
            reached += 1
            await asyncio.sleep(0.01)

        try:
            await breaker.call_async(down)
        except (Down, aiobreaker.CircuitBreakerError):
            pass
        await asyncio.sleep(RESET * 1.2)

        async def caller() -> None:
            try:
                await breaker.call_async(upstream)
            except aiobreaker.CircuitBreakerError:
                pass

        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        return reached

    return asyncio.run(run())


def purgatory_storm() -> int | str:
    try:
        from purgatory import AsyncCircuitBreakerFactory
    except ImportError:
        return "not installed"

    async def run() -> int:
        factory = AsyncCircuitBreakerFactory(default_threshold=1, default_ttl=RESET)
        reached = 0

        async def upstream() -> None:
            nonlocal reached
            reached += 1
            await asyncio.sleep(0.01)

        try:
            async with await factory.get_breaker("storm"):
                raise Down
        except Exception:  # purgatory raises its own error when it opens
            pass
        await asyncio.sleep(RESET * 1.2)

        async def caller() -> None:
            try:
                async with await factory.get_breaker("storm"):
                    await upstream()
            except Exception:  # purgatory's OpenedState
                pass

        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        return reached

    return asyncio.run(run())


def main() -> None:
    results: dict[str, Any] = {"trio_resilience (half_open_max_calls=3)": trio.run(ours)}
    for name, fn in (
        ("pybreaker (threads)", pybreaker_storm),
        ("aiobreaker (asyncio)", aiobreaker_storm),
        ("purgatory (asyncio)", purgatory_storm),
    ):
        try:
            results[name] = fn()
        except Exception as exc:  # a peer that cannot run the scenario
            results[name] = f"could not run: {type(exc).__name__}"
    if os.environ.get("BENCH_JSON"):
        print(json.dumps({"bench": "storm", "storm": results}))
        return
    report(
        f"half-open storm: {CALLERS} callers right after the recovery timeout",
        [],
        {f"{name} reached the upstream": value for name, value in results.items()},
    )


if __name__ == "__main__":
    main()
