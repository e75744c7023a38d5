"""A circuit breaker in front of a flaky dependency: trip, reject, probe, close.

Run it: ``python examples/breaker_basics.py`` (it runs in virtual time).
"""

from __future__ import annotations

import trio
import trio.testing

from trio_resilience import CircuitBreaker, CircuitOpenError, StateChange


class Unavailable(Exception):
    pass


async def main() -> list[str]:
    story: list[str] = []

    def on_change(change: StateChange) -> None:
        story.append(
            f"t={change.at:5.1f}s {change.old_state} -> {change.new_state} ({change.reason})"
        )

    breaker = CircuitBreaker(
        "inventory",
        failure_threshold=3,
        recovery_timeout=10.0,
        success_threshold=2,
        half_open_max_calls=1,
        on_state_change=on_change,
    )
    healthy_from = 15.0

    @breaker
    async def fetch_stock(sku: str) -> int:
        await trio.sleep(0.1)  # the network round trip
        if trio.current_time() < healthy_from:
            raise Unavailable(sku)
        return 42

    for _ in range(40):
        try:
            await fetch_stock("sku-1")
        except Unavailable:
            pass
        except CircuitOpenError as exc:
            await trio.sleep(min(exc.retry_after, 1.0) or 0.1)
        await trio.sleep(0.5)
    stats = breaker.statistics()
    story.append(
        f"{stats.state}: {stats.total_calls} calls, {stats.total_failures} failures, "
        f"{stats.total_rejected} rejected without touching the service"
    )
    for line in story:
        print(line)
    return story


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
