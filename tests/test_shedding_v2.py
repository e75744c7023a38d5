"""Shedding channels, wave 2: no WouldBlock, burst logs, duties, wrapper accounting."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
import trio
import trio.testing

from trio_resilience import (
    CoDelShedding,
    DropNewest,
    DropOldest,
    LoadShedError,
    ProbabilisticShedding,
    ShedSendChannel,
    _live,
    open_shedding_channel,
)


def balanced(stats: Any) -> bool:
    return bool(stats.sent == stats.received + stats.evicted + stats.current_buffer_used)


def drops(logs: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(e["shed"], e["evicted"]) for e in logs if e["event"] == "trio_resilience.shed.dropped"]


@pytest.mark.parametrize(
    "policy", [ProbabilisticShedding(random.Random(0)), DropNewest()], ids=repr
)
async def test_send_nowait_on_a_full_channel_sheds_instead_of_would_block(
    policy: Any, logs: list[dict[str, Any]]
) -> None:
    """No room for send_nowait is a counted, logged LoadShedError, never WouldBlock."""
    send, _receive = open_shedding_channel(1, policy=policy)
    send.send_nowait(0)
    with pytest.raises(LoadShedError) as info:
        send.send_nowait(1)
    assert (info.value.item, info.value.reason) == (1, "buffer_full")
    assert send.statistics().shed == 1
    assert drops(logs) == [(1, 0)]


async def test_wrapper_send_nowait_on_a_full_channel_sheds_instead_of_would_block(
    logs: list[dict[str, Any]],
) -> None:
    """ShedSendChannel.send_nowait never raises WouldBlock either."""
    raw_send, _raw_receive = trio.open_memory_channel[int](1)
    send = ShedSendChannel(raw_send, policy=ProbabilisticShedding(random.Random(0)))
    send.send_nowait(0)
    with pytest.raises(LoadShedError, match="buffer_full"):
        send.send_nowait(1)
    assert send.statistics().shed == 1
    assert drops(logs) == [(1, 0)]


async def test_burst_tail_is_logged_by_the_next_shed_after_a_second(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """The first shed is logged at once; the burst's rest with the next one a second later."""
    send, _receive = open_shedding_channel(1, policy=DropNewest())
    send.send_nowait(0)
    for i in range(5):
        with pytest.raises(LoadShedError):
            send.send_nowait(i)
    assert drops(logs) == [(1, 0)]
    await trio.sleep(1.0)
    with pytest.raises(LoadShedError):
        send.send_nowait(9)
    assert drops(logs) == [(1, 0), (5, 0)]


async def test_burst_tail_is_logged_when_the_channel_closes(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """Closing the last send end logs the counts still pending."""
    send, receive = open_shedding_channel(1, policy=DropNewest())
    send.send_nowait(0)
    for i in range(3):
        with pytest.raises(LoadShedError):
            send.send_nowait(i)
    await send.aclose()
    assert drops(logs) == [(1, 0), (2, 0)]
    raw_send, _raw = trio.open_memory_channel[int](1)
    wrapper = ShedSendChannel(raw_send, policy=DropNewest())
    wrapper.send_nowait(0)
    for i in range(3):
        with pytest.raises(LoadShedError):
            wrapper.send_nowait(i)
    wrapper.close()
    assert drops(logs)[-2:] == [(1, 0), (2, 0)]
    receive.close()


async def test_channel_duty_flushes_pending_counts_every_second(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """send.serve() logs a burst's tail a second after the first event, with no new shed."""
    send, _receive = open_shedding_channel(1, policy=DropNewest(), name="jobs")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send.serve)
        send.send_nowait(0)
        for i in range(4):
            with pytest.raises(LoadShedError):
                send.send_nowait(i)
        await trio.sleep(0.5)
        assert drops(logs) == [(1, 0)]
        await trio.sleep(0.6)
        assert drops(logs) == [(1, 0), (3, 0)]
        await trio.sleep(5)
        assert drops(logs) == [(1, 0), (3, 0)]  # nothing pending: nothing logged
        nursery.cancel_scope.cancel()


async def test_receive_end_and_wrapper_have_duties_too(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """receive.serve() and ShedSendChannel.serve() flush the same way."""
    raw_send, _raw = trio.open_memory_channel[int](1)
    wrapper = ShedSendChannel(raw_send, policy=DropNewest())
    _send, receive = open_shedding_channel(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wrapper.serve)
        nursery.start_soon(receive.serve)
        wrapper.send_nowait(0)
        for i in range(3):
            with pytest.raises(LoadShedError):
                wrapper.send_nowait(i)
        await trio.sleep(1.1)
        assert drops(logs) == [(1, 0), (2, 0)]
        nursery.cancel_scope.cancel()


def test_open_shedding_channel_can_be_parametrized_like_trios() -> None:
    """open_shedding_channel[int](3) works like trio.open_memory_channel[int](3)."""
    send, receive = open_shedding_channel[int](3, policy=DropNewest())
    send.send_nowait(1)
    assert receive.receive_nowait() == 1
    assert send.statistics().max_buffer_size == 3


async def test_drop_oldest_send_never_raises_after_enqueueing(
    logs: list[dict[str, Any]],
) -> None:
    """A raising on_shed and an evicted item whose repr raises never fail the send."""

    class Odd:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    class Loud(Exception):
        def __repr__(self) -> str:
            raise RuntimeError("no repr either")

    def on_shed(item: Any, reason: str) -> None:
        raise Loud()

    send, receive = open_shedding_channel(1, policy=DropOldest(), on_shed=on_shed)
    await send.send(Odd())
    await send.send("new")  # evicts the Odd item; on_shed raises: the send still succeeds
    assert receive.receive_nowait() == "new"
    stats = receive.statistics()
    assert (stats.sent, stats.evicted, stats.received) == (2, 1, 1)
    failed = [e for e in logs if e["event"] == "trio_resilience.shed.on_shed_failed"]
    assert failed[0]["error"] == "<unrepresentable Loud>"


async def test_wrapper_never_reports_receiver_close_drops_as_received() -> None:
    """Items Trio drops when the receivers close count as evicted, not received."""
    raw_send, raw_receive = trio.open_memory_channel[int](5)
    send = ShedSendChannel(raw_send, policy=DropNewest())
    for i in range(4):
        await send.send(i)
    assert raw_receive.receive_nowait() == 0
    stats = send.statistics()
    assert (stats.sent, stats.received, stats.current_buffer_used) == (4, 1, 3)
    raw_receive.close()
    stats = send.statistics()
    assert (stats.sent, stats.received, stats.evicted, stats.current_buffer_used) == (4, 1, 3, 0)
    assert balanced(stats)
    with pytest.raises(trio.BrokenResourceError):
        await send.send(9)
    assert send.statistics().sent == 4


async def test_wrapper_accounting_holds_when_other_clones_send() -> None:
    """Direct sends on a clone of the wrapped channel never break the identity."""
    raw_send, raw_receive = trio.open_memory_channel[int](10)
    other = raw_send.clone()
    send = ShedSendChannel(raw_send, policy=DropNewest())
    await send.send(1)
    for i in range(5):
        other.send_nowait(100 + i)  # not through the wrapper
    stats = send.statistics()
    assert (stats.sent, stats.current_buffer_used, stats.received) == (1, 1, 0)
    assert balanced(stats)
    received = [raw_receive.receive_nowait() for _ in range(6)]
    assert received[0] == 1
    stats = send.statistics()
    assert (stats.sent, stats.received, stats.current_buffer_used) == (1, 1, 0)
    assert balanced(stats)


def test_channels_are_listed_as_live_policies() -> None:
    """open_shedding_channel's state and ShedSendChannel register under "channel"."""
    send, _receive = open_shedding_channel(2, name="jobs")
    names = {getattr(c, "name", None) for c in _live.live("channel")}
    assert "jobs" in names
    raw_send, _raw = trio.open_memory_channel[int](1)
    wrapper = ShedSendChannel(raw_send, name="raw-jobs")
    assert wrapper in _live.live("channel")
    assert wrapper.clone() not in _live.live("channel")
    assert send.statistics().max_buffer_size == 2


async def test_shed_logs_are_json_safe(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """Every shedding log event serializes as strict JSON."""
    send, _receive = open_shedding_channel(1, policy=DropNewest())
    send.send_nowait(0)
    with pytest.raises(LoadShedError):
        send.send_nowait(1)
    for event in logs:
        json.dumps(event, allow_nan=False)


def test_async_on_shed_is_refused() -> None:
    """on_shed is a sync callback: an async function is a TypeError."""

    async def on_shed(item: Any, reason: str) -> None:
        return None

    with pytest.raises(TypeError, match=r"^on_shed must be a sync callable"):
        open_shedding_channel(1, on_shed=on_shed)


# ------------------------------------------------------------------ review 1


@pytest.mark.parametrize(
    "policy", [ProbabilisticShedding(), DropNewest(), DropOldest(), CoDelShedding()]
)
async def test_an_unbounded_shedding_channel_opens_like_trio_s(
    autojump_clock: trio.testing.MockClock, policy: Any
) -> None:
    """open_shedding_channel(math.inf) is unbounded, as trio.open_memory_channel(math.inf)."""
    send, receive = open_shedding_channel[int](math.inf, policy=policy)
    for i in range(1000):
        await send.send(i)
    stats = send.statistics()
    assert (stats.sent, stats.shed, stats.current_buffer_used) == (1000, 0, 1000)
    assert (stats.max_buffer_size, stats.overload_factor, stats.shed_probability) == (
        math.inf,
        0.0,
        0.0,
    )
    assert receive.receive_nowait() == 0


async def test_a_shed_send_channel_accepts_an_unbounded_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Around trio.open_memory_channel(math.inf) nothing is shed and the figures add up."""
    raw_send, _raw_receive = trio.open_memory_channel[int](math.inf)
    send = ShedSendChannel(raw_send)
    for i in range(100):
        send.send_nowait(i)
    stats = send.statistics()
    assert (stats.sent, stats.shed, stats.current_buffer_used) == (100, 0, 100)
    assert stats.max_buffer_size == math.inf
    zero_send, _ = trio.open_memory_channel[int](0)
    with pytest.raises(ValueError, match=r"^max_buffer_size must be >= 1, got 0$"):
        ShedSendChannel(zero_send)
