"""Shedding channels: memory-channel semantics, each policy, accounting, logs, overload."""

from __future__ import annotations

import json
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
    open_shedding_channel,
)


def balanced(stats: Any) -> bool:
    return bool(stats.sent == stats.received + stats.evicted + stats.current_buffer_used)


# ------------------------------------------------------------------ channel semantics


async def test_fifo_send_and_receive() -> None:
    """Items come out in order; nowait variants behave as Trio's."""
    send, receive = open_shedding_channel(3)
    for i in range(3):
        send.send_nowait(i)
    with pytest.raises(LoadShedError, match=r"buffer_full"):  # never WouldBlock: a shed
        send.send_nowait(3)
    assert [receive.receive_nowait() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(trio.WouldBlock):
        receive.receive_nowait()
    await send.send("a")
    assert await receive.receive() == "a"
    assert balanced(receive.statistics())
    assert receive.statistics().shed == 1


async def test_end_of_channel_and_broken_resource() -> None:
    """Closing every sender ends the stream; closing every receiver breaks sends."""
    send, receive = open_shedding_channel(2)
    clone = send.clone()
    send.send_nowait(1)
    await send.aclose()
    assert receive.receive_nowait() == 1
    with pytest.raises(trio.WouldBlock):  # the clone is still open
        receive.receive_nowait()
    clone.close()
    with pytest.raises(trio.EndOfChannel):
        await receive.receive()
    send2, receive2 = open_shedding_channel(2)
    receive2.close()
    with pytest.raises(trio.BrokenResourceError):
        await send2.send(1)


async def test_closed_handles_raise_closed_resource_error() -> None:
    """A closed handle refuses every operation, including clone."""
    send, receive = open_shedding_channel(2)
    send.close()
    send.close()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        send.send_nowait(1)
    with pytest.raises(trio.ClosedResourceError):
        send.clone()
    receive.close()
    with pytest.raises(trio.ClosedResourceError):
        await receive.receive()
    with pytest.raises(trio.ClosedResourceError):
        receive.clone()


async def test_async_with_and_async_for() -> None:
    """async with closes the handle; async for drains until EndOfChannel."""
    send, receive = open_shedding_channel(5)
    async with send:
        for i in range(4):
            await send.send(i)
    got = [item async for item in receive]
    assert got == [0, 1, 2, 3]
    with send, receive:
        pass


async def test_waiting_senders_wake_in_fifo_order(autojump_clock: trio.testing.MockClock) -> None:
    """Senders blocked on a full buffer are admitted first come, first served."""
    send, receive = open_shedding_channel(1, policy=CoDelShedding(target=100.0))
    send.send_nowait("first")
    async with trio.open_nursery() as nursery:
        for name in "abc":
            nursery.start_soon(send.send, name)
            await trio.testing.wait_all_tasks_blocked()
        assert send.statistics().tasks_waiting_send == 3
        assert [await receive.receive() for _ in range(4)] == ["first", "a", "b", "c"]
    assert balanced(send.statistics())


async def test_waiting_receiver_gets_items_handed_over() -> None:
    """A blocked receiver is woken by the next send, which never buffers."""
    send, receive = open_shedding_channel(1)
    got = []
    async with trio.open_nursery() as nursery:

        async def receiver() -> None:
            got.append(await receive.receive())

        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        assert receive.statistics().tasks_waiting_receive == 1
        send.send_nowait("x")
    assert got == ["x"]
    assert receive.statistics().current_buffer_used == 0


async def test_closing_a_handle_wakes_its_own_waiters() -> None:
    """Closing a handle raises ClosedResourceError in its tasks, EndOfChannel in others'."""
    send, receive = open_shedding_channel(1)
    errors: list[type[BaseException]] = []

    async def wait_receive(channel: Any) -> None:
        try:
            await channel.receive()
        except (trio.ClosedResourceError, trio.EndOfChannel) as exc:
            errors.append(type(exc))

    other = receive.clone()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_receive, receive)
        nursery.start_soon(wait_receive, other)
        await trio.testing.wait_all_tasks_blocked()
        receive.close()
        await trio.testing.wait_all_tasks_blocked()
        send.close()
    assert errors == [trio.ClosedResourceError, trio.EndOfChannel]


async def test_last_receiver_closing_breaks_waiting_senders_and_evicts_buffer() -> None:
    """Buffered items go to on_shed(item, "receiver_closed"); waiting senders break."""
    shed: list[tuple[Any, str]] = []
    send, receive = open_shedding_channel(
        2, policy=CoDelShedding(), on_shed=lambda i, r: shed.append((i, r))
    )
    send.send_nowait(1)
    send.send_nowait(2)
    broken = []

    async def blocked_sender() -> None:
        try:
            await send.send(3)
        except trio.BrokenResourceError:
            broken.append(3)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked_sender)
        await trio.testing.wait_all_tasks_blocked()
        receive.close()
    assert broken == [3]
    assert shed == [(1, "receiver_closed"), (2, "receiver_closed")]
    stats = send.statistics()
    assert (stats.sent, stats.received, stats.evicted) == (2, 0, 2)
    assert balanced(stats)


async def test_cancelled_sender_sends_nothing(autojump_clock: trio.testing.MockClock) -> None:
    """A sender cancelled while waiting is not counted in sent."""
    send, receive = open_shedding_channel(1, policy=CoDelShedding())
    send.send_nowait(0)
    with trio.move_on_after(1):
        await send.send(1)
    stats = send.statistics()
    assert stats.sent == 1
    assert stats.tasks_waiting_send == 0
    assert receive.receive_nowait() == 0
    with pytest.raises(trio.WouldBlock):
        receive.receive_nowait()


# ------------------------------------------------------------------ policies


def test_probabilistic_formula() -> None:
    """p = clamp(q / max_buffer_size - 1, 0, 1)."""
    policy = ProbabilisticShedding()
    assert policy.shed_probability(5, 10) == 0.0
    assert policy.shed_probability(10, 10) == 0.0
    assert policy.shed_probability(15, 10) == 0.5
    assert policy.shed_probability(20, 10) == 1.0
    assert policy.shed_probability(50, 10) == 1.0


async def test_probabilistic_sheds_by_queue_including_waiting_senders(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With the buffer full and senders waiting, sends shed with the formula's odds."""
    rng = random.Random(3)
    shed: list[tuple[Any, str]] = []
    send, receive = open_shedding_channel(
        2, policy=ProbabilisticShedding(rng=rng), on_shed=lambda i, r: shed.append((i, r))
    )
    send.send_nowait("a")
    send.send_nowait("b")
    assert send.statistics().shed_probability == 0.0
    outcomes: list[str] = []

    async def sender(item: int) -> None:
        try:
            await send.send(item)
            outcomes.append("sent")
        except LoadShedError as exc:
            assert exc.item == item
            assert exc.reason == "probabilistic"
            outcomes.append("shed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender, 1)  # q = 2: p = 0, waits
        await trio.testing.wait_all_tasks_blocked()
        assert send.statistics().shed_probability == 0.5  # q = 3
        assert send.statistics().overload_factor == 1.5
        nursery.start_soon(sender, 2)  # q = 3: p = 0.5
        await trio.testing.wait_all_tasks_blocked()
        waiting = send.statistics().tasks_waiting_send
        assert waiting in (1, 2)
        for _ in range(waiting + 2):
            await receive.receive()
    expected = random.Random(3).random() < 0.5
    assert outcomes.count("shed") == (1 if expected else 0)
    assert [r for _, r in shed] == ["probabilistic"] * outcomes.count("shed")
    assert balanced(send.statistics())


async def test_probabilistic_always_sheds_at_twice_the_buffer() -> None:
    """p reaches 1 once as many senders wait as the buffer holds."""
    send, _receive = open_shedding_channel(1, policy=ProbabilisticShedding(random.Random(0)))
    send.send_nowait(0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send.send, 1)  # waits: q = 1
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(LoadShedError):
            send.send_nowait(2)  # q = 2: p = 1
        with pytest.raises(LoadShedError):
            await send.send(3)
        nursery.cancel_scope.cancel()
    assert send.statistics().shed == 2


async def test_drop_newest_never_waits() -> None:
    """DropNewest sheds a send that finds the buffer full."""
    send, receive = open_shedding_channel(2, policy=DropNewest())
    await send.send(1)
    await send.send(2)
    assert send.statistics().shed_probability == 1.0
    with pytest.raises(LoadShedError) as info:
        await send.send(3)
    assert (info.value.item, info.value.reason) == (3, "buffer_full")
    assert [receive.receive_nowait(), receive.receive_nowait()] == [1, 2]
    assert balanced(send.statistics())


async def test_drop_oldest_evicts_to_on_shed() -> None:
    """DropOldest admits the new item and hands the oldest to on_shed."""
    shed: list[tuple[Any, str]] = []
    send, receive = open_shedding_channel(
        2, policy=DropOldest(), on_shed=lambda i, r: shed.append((i, r))
    )
    for i in range(5):
        await send.send(i)
    assert shed == [(0, "drop_oldest"), (1, "drop_oldest"), (2, "drop_oldest")]
    assert [receive.receive_nowait(), receive.receive_nowait()] == [3, 4]
    stats = send.statistics()
    assert (stats.sent, stats.received, stats.evicted, stats.shed) == (5, 2, 3, 0)
    assert balanced(stats)


async def test_codel_drops_stale_items_only_while_overloaded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An interval whose minimum sojourn exceeded target makes old items drop at dequeue."""
    shed: list[tuple[Any, str]] = []
    send, receive = open_shedding_channel(
        100,
        policy=CoDelShedding(target=0.005, interval=0.1),
        on_shed=lambda i, r: shed.append((i, r)),
    )
    for i in range(10):
        send.send_nowait(i)
    await trio.sleep(0.05)
    assert receive.receive_nowait() == 0  # first dequeue opens an interval: not overloaded
    await trio.sleep(0.1)  # the interval ends; its minimum sojourn was 50 ms > 5 ms
    with pytest.raises(trio.WouldBlock):  # overloaded: items 1..9 are stale, all dropped
        receive.receive_nowait()
    assert [i for i, _ in shed] == list(range(1, 10))
    send.send_nowait("fresh")
    assert receive.receive_nowait() == "fresh"  # a fresh item is served
    assert {r for _, r in shed} == {"codel"}
    stats = send.statistics()
    assert (stats.evicted, stats.received) == (9, 2)
    assert balanced(stats)


async def test_codel_recovers_when_delays_fall(autojump_clock: trio.testing.MockClock) -> None:
    """An interval with a low minimum sojourn ends the overload."""
    send, receive = open_shedding_channel(100, policy=CoDelShedding(target=0.01, interval=0.1))
    send.send_nowait(0)
    await trio.sleep(0.5)
    receive.receive_nowait()  # opens an interval, min 0.5
    await trio.sleep(0.1)
    send.send_nowait(1)
    receive.receive_nowait()  # interval ends overloaded; min resets to 0
    await trio.sleep(0.1)
    send.send_nowait(2)
    await trio.sleep(0.05)
    assert receive.receive_nowait() == 2  # interval ends: min was 0 <= target, so not overloaded
    assert send.statistics().evicted == 0


async def test_codel_adaptive_lifo_serves_newest_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With adaptive_lifo the newest item is served first while overloaded."""
    send, receive = open_shedding_channel(
        100, policy=CoDelShedding(target=1.0, interval=0.1, adaptive_lifo=True)
    )
    for i in range(3):
        send.send_nowait(i)
    await trio.sleep(1.5)
    assert receive.receive_nowait() == 0  # opens the interval (not overloaded yet)
    await trio.sleep(0.1)
    send.send_nowait("new")
    assert receive.receive_nowait() == "new"  # overloaded now: LIFO
    assert send.statistics().evicted == 0


async def test_on_shed_errors_are_logged_and_never_break_the_channel(
    logs: list[dict[str, Any]],
) -> None:
    """A raising on_shed is logged; the channel goes on working."""

    def broken(item: Any, reason: str) -> None:
        raise RuntimeError("callback bug")

    send, receive = open_shedding_channel(1, policy=DropNewest(), on_shed=broken, name="jobs")
    send.send_nowait(1)
    with pytest.raises(LoadShedError):
        send.send_nowait(2)
    assert receive.receive_nowait() == 1
    send.send_nowait(3)
    failed = [e for e in logs if e["event"] == "trio_resilience.shed.on_shed_failed"]
    assert len(failed) == 1
    assert failed[0]["channel"] == "jobs"
    assert failed[0]["error"] == "RuntimeError('callback bug')"
    assert failed[0]["exc_info"] is True  # JSON-safe; renderers read the exception handled
    json.dumps(failed[0], allow_nan=False)


async def test_shed_logs_are_rate_limited(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """The first shed is logged at once; later ones at most once a second, with counts."""
    send, _receive = open_shedding_channel(1, policy=DropNewest(), name="api")
    send.send_nowait(0)
    for _ in range(5):
        with pytest.raises(LoadShedError):
            send.send_nowait(1)
    await trio.sleep(0.5)
    with pytest.raises(LoadShedError):
        send.send_nowait(1)
    await trio.sleep(0.5)
    with pytest.raises(LoadShedError):
        send.send_nowait(1)
    dropped = [e for e in logs if e["event"] == "trio_resilience.shed.dropped"]
    assert dropped == [
        {
            "event": "trio_resilience.shed.dropped",
            "log_level": "warning",
            "channel": "api",
            "shed": 1,
            "evicted": 0,
            "policy": "drop_newest",
        },
        {
            "event": "trio_resilience.shed.dropped",
            "log_level": "warning",
            "channel": "api",
            "shed": 6,
            "evicted": 0,
            "policy": "drop_newest",
        },
    ]


# ------------------------------------------------------------------ ShedSendChannel


async def test_shed_send_channel_wraps_a_plain_memory_channel() -> None:
    """The wrapper sheds by DropNewest around trio's own channel."""
    raw_send, raw_receive = trio.open_memory_channel[int](2)
    shed: list[tuple[Any, str]] = []
    send = ShedSendChannel(raw_send, policy=DropNewest(), on_shed=lambda i, r: shed.append((i, r)))
    await send.send(1)
    send.send_nowait(2)
    with pytest.raises(LoadShedError):
        await send.send(3)
    with pytest.raises(LoadShedError):
        send.send_nowait(4)
    assert shed == [(3, "buffer_full"), (4, "buffer_full")]
    assert raw_receive.receive_nowait() == 1
    stats = send.statistics()
    assert (stats.sent, stats.shed, stats.current_buffer_used, stats.received) == (2, 2, 1, 1)
    assert balanced(stats)
    clone = send.clone()
    await clone.send(5)
    assert send.statistics().sent == 3
    await clone.aclose()
    with send:
        pass
    with pytest.raises(trio.ClosedResourceError):
        await send.send(1)


async def test_shed_send_channel_probabilistic_waits_then_sheds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Probabilistic shedding around a plain channel counts waiting senders."""
    raw_send, raw_receive = trio.open_memory_channel[int](1)
    send = ShedSendChannel(raw_send, policy=ProbabilisticShedding(random.Random(1)))
    await send.send(0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send.send, 1)  # q = 1: waits
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(LoadShedError):
            await send.send(2)  # q = 2: p = 1
        assert send.statistics().shed_probability == 1.0
        assert raw_receive.receive_nowait() == 0
    assert raw_receive.receive_nowait() == 1
    assert send.statistics().sent == 2


def test_shed_send_channel_refuses_receive_side_policies() -> None:
    """DropOldest and CoDel need the receive side: a ValueError that says so."""
    raw_send, _ = trio.open_memory_channel[int](2)
    for policy in (DropOldest(), CoDelShedding()):
        with pytest.raises(ValueError, match="needs the receive side"):
            ShedSendChannel(raw_send, policy=policy)
    unbuffered, _ = trio.open_memory_channel[int](0)
    with pytest.raises(ValueError, match=r"^max_buffer_size must be >= 1, got 0$"):
        ShedSendChannel(unbuffered)
    with pytest.raises(TypeError, match=r"^memory_send_channel must be a trio.MemorySendChannel"):
        ShedSendChannel(object())  # type: ignore[arg-type]


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((0,), {}, ValueError, r"^max_buffer_size must be >= 1, got 0$"),
        ((1.5,), {}, TypeError, r"^max_buffer_size must be an int or math.inf, got 1.5$"),
        ((float("nan"),), {}, TypeError, r"^max_buffer_size must be an int or math.inf, got nan$"),
        ((1,), {"policy": "drop"}, TypeError, r"^policy must be ProbabilisticShedding"),
        ((1,), {"on_shed": 3}, TypeError, r"^on_shed must be callable or None, got 3$"),
        ((1,), {"name": 3}, TypeError, r"^name must be a str, got 3$"),
    ],
)
def test_bad_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type, message: str
) -> None:
    """Bad arguments raise at once with the parameter named."""
    with pytest.raises(error, match=message):
        open_shedding_channel(*args, **kwargs)


def test_bad_policy_arguments() -> None:
    """Policies validate their own arguments."""
    with pytest.raises(TypeError, match=r"^rng must be a random.Random or None, got 1$"):
        ProbabilisticShedding(rng=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^target must be > 0, got 0$"):
        CoDelShedding(target=0)
    with pytest.raises(ValueError, match=r"^interval must be > 0, got -1$"):
        CoDelShedding(interval=-1)
    with pytest.raises(TypeError, match=r"^adaptive_lifo must be a bool, got 1$"):
        CoDelShedding(adaptive_lifo=1)  # type: ignore[arg-type]
    assert repr(CoDelShedding()) == (
        "CoDelShedding(target=0.005, interval=0.1, adaptive_lifo=False)"
    )
    assert repr(DropNewest()) == "DropNewest()"


# ------------------------------------------------------------------ overload


async def _overload_run(shedding: bool) -> tuple[list[float], int]:
    """2x offered load against a consumer; return served latencies by arrival order."""
    capacity_per_s = 10.0
    if shedding:
        send, receive = open_shedding_channel(
            10, policy=ProbabilisticShedding(rng=random.Random(5))
        )
    else:
        send, receive = trio.open_memory_channel[float](10)  # type: ignore[assignment]
    latencies: list[float] = []
    shed = 0

    async def client(arrived: float) -> None:
        nonlocal shed
        try:
            await send.send(arrived)
        except LoadShedError:
            shed += 1

    async def consumer() -> None:
        async for arrived in receive:
            await trio.sleep(1 / capacity_per_s)
            latencies.append(trio.current_time() - arrived)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        async with trio.open_nursery() as clients:
            for _ in range(1200):  # 60 s at 20 requests per second
                clients.start_soon(client, trio.current_time())
                await trio.sleep(1 / (2 * capacity_per_s))
            clients.cancel_scope.cancel()  # stop waiting clients at the end
        nursery.cancel_scope.cancel()
    return latencies, shed


async def test_overload_latency_stays_bounded_only_with_shedding(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """At twice the capacity the plain channel's latency grows; the shedding one's does not."""
    plain, _ = await _overload_run(shedding=False)
    guarded, shed = await _overload_run(shedding=True)
    assert shed > 400  # about half the offered load is refused fast
    early, late = plain[50:100], plain[-50:]
    assert max(late) > 5 * max(early)  # a plain queue's delay keeps growing
    assert max(plain) > 25.0
    assert max(guarded) <= 2.5  # bounded by ~2 x buffer / capacity
    assert max(guarded[-100:]) <= 2.5


async def test_later_senders_never_jump_waiting_senders(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Taking an item admits the first waiting sender at once, before any newcomer."""
    send, receive = open_shedding_channel(2, policy=CoDelShedding(target=100.0))
    send.send_nowait(0)
    send.send_nowait(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send.send, 2)
        await trio.testing.wait_all_tasks_blocked()
        assert receive.receive_nowait() == 0
        assert send.statistics().current_buffer_used == 2  # the waiting sender got in
        with pytest.raises(LoadShedError, match=r"buffer_full"):
            send.send_nowait(3)  # a newcomer finds the buffer full again: shed
    assert [receive.receive_nowait(), receive.receive_nowait()] == [1, 2]


def test_shed_send_channel_arguments_are_attributes() -> None:
    """The wrapper's constructor arguments are readable as attributes."""
    raw_send, _ = trio.open_memory_channel[int](2)
    policy, callback = DropNewest(), print
    send = ShedSendChannel(raw_send, policy=policy, on_shed=callback, name="jobs")
    assert send.memory_send_channel is raw_send
    assert send.policy is policy
    assert send.on_shed is callback
    assert send.name == "jobs"
    assert send.logger is None


async def test_shed_send_channel_probabilistic_accounting_in_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every field of the wrapper's shed and statistics is exact."""
    raw_send, raw_receive = trio.open_memory_channel[int](1)
    shed: list[tuple[Any, str]] = []
    send = ShedSendChannel(
        raw_send,
        policy=ProbabilisticShedding(random.Random(1)),
        on_shed=lambda i, r: shed.append((i, r)),
    )
    send.send_nowait(0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send.send, 1)  # q = 1: p = 0, waits
        await trio.testing.wait_all_tasks_blocked()  # q = 2 = 2 x buffer: p = 1
        stats = send.statistics()
        assert stats.overload_factor == 2.0
        assert stats.shed_probability == 1.0
        assert stats.max_buffer_size == 1
        assert stats.tasks_waiting_send == 1
        assert stats.tasks_waiting_receive == 0
        assert (stats.open_send_channels, stats.open_receive_channels) == (1, 1)
        with pytest.raises(LoadShedError) as info:
            await send.send(4)
        assert (info.value.item, info.value.reason) == (4, "probabilistic")
        with pytest.raises(LoadShedError) as info:
            send.send_nowait(5)
        assert (info.value.item, info.value.reason) == (5, "probabilistic")
        assert shed == [(4, "probabilistic"), (5, "probabilistic")]
        for _ in range(2):
            await raw_receive.receive()
    stats = send.statistics()
    assert (stats.sent, stats.received, stats.shed, stats.evicted) == (2, 2, 2, 0)
    assert stats.overload_factor == 0.0
    assert stats.shed_probability == 0.0


async def test_shed_send_channel_probability_is_zero_with_a_waiting_receiver() -> None:
    """A receiver waiting means the next send is handed over, never shed."""
    raw_send, raw_receive = trio.open_memory_channel[int](1)
    send = ShedSendChannel(raw_send, policy=DropNewest())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(raw_receive.receive)
        await trio.testing.wait_all_tasks_blocked()
        assert send.statistics().shed_probability == 0.0
        send.send_nowait(1)
    stats = send.statistics()
    assert (stats.sent, stats.received, stats.current_buffer_used) == (1, 1, 0)
    with pytest.raises(LoadShedError) as info:
        send.send_nowait(2)
        send.send_nowait(3)
    assert (info.value.item, info.value.reason) == (3, "buffer_full")
    assert (send.statistics().shed, send.statistics().evicted) == (1, 0)


async def test_shed_send_channel_defaults_validation_and_logger() -> None:
    """The wrapper's defaults, its argument checks, and a custom logger that gets events."""
    events: list[tuple[str, dict[str, Any]]] = []

    class Logger:
        def info(self, event: str, **kw: Any) -> None:
            events.append((event, kw))

        warning = error = info

    raw_send, _ = trio.open_memory_channel[int](1)
    default = ShedSendChannel(raw_send.clone())
    assert default.name == "default"
    assert isinstance(default.policy, ProbabilisticShedding)
    with pytest.raises(TypeError, match=r"^on_shed must be callable or None, got 1$"):
        ShedSendChannel(raw_send, on_shed=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^logger must have sync"):
        ShedSendChannel(raw_send, logger=1)
    send = ShedSendChannel(raw_send, policy=DropNewest(), name="q", logger=Logger())
    send.send_nowait(1)
    with pytest.raises(LoadShedError):
        send.send_nowait(2)
    assert events == [
        (
            "trio_resilience.shed.dropped",
            {"channel": "q", "shed": 1, "evicted": 0, "policy": "drop_newest"},
        )
    ]
