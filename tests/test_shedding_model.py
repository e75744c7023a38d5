"""Hypothesis: under random sends, receives, cancellations and closes, nothing is lost."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_resilience import (
    CoDelShedding,
    DropNewest,
    DropOldest,
    LoadShedError,
    ProbabilisticShedding,
    open_shedding_channel,
)

POLICIES = {
    "probabilistic": lambda: ProbabilisticShedding(rng=random.Random(0)),
    "drop_newest": DropNewest,
    "drop_oldest": DropOldest,
    "codel": lambda: CoDelShedding(target=0.01, interval=0.05),
}

OPS = st.lists(
    st.sampled_from(
        [
            "send",
            "send",
            "send_nowait",
            "receive",
            "receive_nowait",
            "cancel_sender",
            "cancel_receiver",
            "sleep",
            "close_send_clone",
            "close_receive_clone",
        ]
    ),
    max_size=60,
)


@settings(deadline=None, max_examples=150)
@given(policy=st.sampled_from(sorted(POLICIES)), size=st.integers(1, 4), ops=OPS)
def test_every_item_is_accounted_for(policy: str, size: int, ops: list[str]) -> None:
    """sent == received + evicted + buffered at every step; each item has exactly one fate."""
    fates: dict[int, str] = {}
    received_order: list[int] = []

    def on_shed(item: int, reason: str) -> None:
        fates[item] = "evicted" if reason in ("drop_oldest", "codel", "receiver_closed") else "shed"

    async def main() -> None:
        send, receive = open_shedding_channel(size, policy=POLICIES[policy](), on_shed=on_shed)
        sends = [send, send.clone()]
        receives = [receive, receive.clone()]
        next_item = 0
        senders: list[trio.CancelScope] = []
        receivers: list[trio.CancelScope] = []

        async def sender(channel: Any, item: int, task_status: Any) -> None:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                try:
                    await channel.send(item)
                    fates.setdefault(item, "sent")
                    return
                except LoadShedError:
                    assert fates[item] == "shed"
                    return
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    fates[item] = "refused"
                    return
            fates[item] = "cancelled"

        async def receiver(channel: Any, task_status: Any) -> None:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                try:
                    item = await channel.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
                received_order.append(item)
                fates[item] = "received"

        async with trio.open_nursery() as nursery:
            for op in ops:
                if op in ("send", "send_nowait"):
                    item, next_item = next_item, next_item + 1
                    channel = sends[item % 2]
                    if op == "send":
                        senders.append(await nursery.start(sender, channel, item))
                    else:
                        try:
                            channel.send_nowait(item)
                            fates.setdefault(item, "sent")
                        except LoadShedError:
                            assert fates[item] == "shed"
                        except (trio.WouldBlock, trio.BrokenResourceError):
                            fates[item] = "refused"
                        except trio.ClosedResourceError:
                            fates[item] = "refused"
                elif op == "receive":
                    receivers.append(await nursery.start(receiver, receives[len(receivers) % 2]))
                elif op == "receive_nowait":
                    try:
                        item = receives[0].receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                        pass
                    else:
                        received_order.append(item)
                        fates[item] = "received"
                elif op == "cancel_sender" and senders:
                    senders.pop(0).cancel()
                elif op == "cancel_receiver" and receivers:
                    receivers.pop(0).cancel()
                elif op == "sleep":
                    await trio.sleep(0.03)
                elif op == "close_send_clone":
                    sends[1].close()
                elif op == "close_receive_clone":
                    receives[1].close()
                await trio.testing.wait_all_tasks_blocked()
                stats = send.statistics()
                assert stats.sent == stats.received + stats.evicted + stats.current_buffer_used
                assert stats.shed == sum(1 for f in fates.values() if f == "shed")
            for ch in sends + receives:
                ch.close()
            nursery.cancel_scope.cancel()

        stats = send.statistics()
        assert stats.current_buffer_used == 0
        assert stats.sent == stats.received + stats.evicted
        assert stats.received == len(received_order)
        counted = {f: sum(1 for v in fates.values() if v == f) for f in set(fates.values())}
        assert counted.get("received", 0) == stats.received
        assert counted.get("evicted", 0) == stats.evicted
        assert set(fates) == set(range(next_item))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(deadline=None, max_examples=100)
@given(
    policy=st.sampled_from(["probabilistic", "drop_newest", "drop_oldest", "codel"]),
    size=st.integers(1, 4),
    pattern=st.lists(st.sampled_from(["send", "receive", "sleep"]), max_size=50),
)
def test_delivery_is_fifo(policy: str, size: int, pattern: list[str]) -> None:
    """Items sent one after another by one task come out in the order sent."""
    received: list[int] = []

    async def main() -> None:
        send, receive = open_shedding_channel(size, policy=POLICIES[policy]())
        item = 0
        for op in pattern:
            if op == "send":
                with contextlib.suppress(LoadShedError, trio.WouldBlock):
                    send.send_nowait(item)
                item += 1
            elif op == "receive":
                with contextlib.suppress(trio.WouldBlock):
                    received.append(receive.receive_nowait())
            else:
                await trio.sleep(0.03)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert received == sorted(received)
    assert len(set(received)) == len(received)
