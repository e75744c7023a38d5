"""The demo: a breaker in front of a service that goes down and comes back, in virtual time."""

from __future__ import annotations

from typing import TextIO

import trio
import trio.testing

from ._breaker import CircuitBreaker, StateChange
from ._exceptions import CircuitOpenError


class UpstreamDown(Exception):
    """The demo's upstream service is in its outage."""


async def _story(seed: int, out: TextIO) -> dict[str, int]:
    changes: list[StateChange] = []
    breaker = CircuitBreaker(
        "upstream",
        failure_threshold=5,
        recovery_timeout=5.0,
        success_threshold=3,
        on_state_change=changes.append,
        logger=_SilentLogger(),
    )
    outage = (10.0, 40.0)
    reached_dead = 0
    figures = {"requests": 0, "served": 0, "rejected": 0, "failed": 0}

    async def upstream() -> str:
        nonlocal reached_dead
        await trio.sleep(0.05)
        if outage[0] <= trio.current_time() < outage[1]:
            reached_dead += 1
            raise UpstreamDown
        return "ok"

    while trio.current_time() < 60.0:
        figures["requests"] += 1
        try:
            await breaker.call(upstream)
            figures["served"] += 1
        except CircuitOpenError:
            figures["rejected"] += 1
        except UpstreamDown:
            figures["failed"] += 1
        await trio.sleep(0.1 + (seed % 7) * 0.001)
    figures["reached_dead_upstream"] = reached_dead
    print("upstream down from t=10s to t=40s; one client calls every ~0.15s", file=out)
    for change in changes:
        print(
            f"  t={change.at:6.2f}s  {change.old_state:>9} -> {change.new_state:<9} "
            f"({change.reason})",
            file=out,
        )
    for key, value in figures.items():
        print(f"  {key:>22}: {value}", file=out)
    return figures


class _SilentLogger:
    def info(self, *args: object, **kwargs: object) -> None:
        pass

    warning = error = info


def run_demo(seed: int, out: TextIO) -> int:
    """Run the demo under an autojump MockClock and print its figures."""
    trio.run(_story, seed, out, clock=trio.testing.MockClock(autojump_threshold=0))
    return 0
