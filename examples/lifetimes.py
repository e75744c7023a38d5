"""Policies with duties: a guarded nursery runs them while its children run.

A breaker opens at t = 0; its duty (``CircuitBreaker.serve``) moves it to half-open at
t = 5 with no call needed, so ``on_state_change`` and the logs see the transition on
time. A shedding channel's duty logs the tail of a burst a second later. Both duties
stop when the nursery's body and children are done, and never show in
``child_tasks``. Run it: ``python examples/lifetimes.py`` (it runs in virtual time).
"""

from __future__ import annotations

import contextlib

import trio
import trio.testing

from trio_resilience import (
    CircuitBreaker,
    DropNewest,
    LoadShedError,
    Pipeline,
    Retry,
    StateChange,
    open_guarded_nursery,
    open_shedding_channel,
)


async def main() -> list[str]:
    story: list[str] = []

    def on_change(change: StateChange) -> None:
        story.append(
            f"{change.at:4.1f}s {change.old_state} -> {change.new_state} ({change.reason})"
        )

    breaker = CircuitBreaker(
        "db", failure_threshold=1, recovery_timeout=5.0, on_state_change=on_change
    )
    send, receive = open_shedding_channel(1, policy=DropNewest(), name="jobs")

    async def failing() -> None:
        raise ConnectionError("db down")

    async def sleeper() -> None:
        await trio.sleep(6.0)

    async with open_guarded_nursery(Pipeline(Retry(attempts=2), breaker)) as nursery:
        nursery.nursery.start_soon(send.serve)  # a channel's duty, started by hand
        nursery.start_soon(sleeper)  # a guarded child: its call passes the closed breaker
        await trio.testing.wait_all_tasks_blocked()
        for job in range(20):
            # A shed is counted and logged: the first at once, the rest by the duty.
            with contextlib.suppress(LoadShedError):
                send.send_nowait(job)
        with contextlib.suppress(ConnectionError):
            await breaker.call(failing)
        duties = "a duty" if nursery.duty_tasks else "no duty (transitions stay lazy)"
        story.append(f"the breaker runs with {duties}")
        await trio.sleep(6.0)
        story.append(f"{trio.current_time():4.1f}s state {breaker.state}")
        nursery.cancel_scope.cancel()  # stops the channel's hand-started duty too
    receive.close()
    for line in story:
        print(line)
    return story


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
