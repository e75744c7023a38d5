"""LoopBudget: window throttling, hard limits through the cancel scope, exact virtual times."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_resilience import (
    ConstantBackoff,
    ExponentialBackoff,
    LoopBudget,
    LoopBudgetExhausted,
    budgeted,
)


def test_defaults_follow_the_seed() -> None:
    """A 1 s window and the seed's 10 ms x 1.5 up to 1 s backoff without jitter."""
    b = LoopBudget(100)
    assert b.max_iterations_per_window == 100
    assert b.window == 1.0
    assert b.backoff == ExponentialBackoff(0.01, 1.5, 1.0, 0.0)
    assert b.max_iterations is None
    assert b.max_duration is None
    assert b.raise_on_exhaustion is False
    assert b.name == "default"
    assert repr(b) == "<LoopBudget 'default' 100/1s 0 iterations, not entered>"


def test_presets() -> None:
    """network 1000/s, consensus 500/s, discovery 200/s, maintenance 100/s."""
    assert LoopBudget.network().max_iterations_per_window == 1000
    assert LoopBudget.consensus().max_iterations_per_window == 500
    assert LoopBudget.discovery().max_iterations_per_window == 200
    maintenance = LoopBudget.maintenance(max_iterations=5, name="gc")
    assert maintenance.max_iterations_per_window == 100
    assert maintenance.max_iterations == 5
    assert maintenance.name == "gc"


async def test_tick_under_the_limit_is_one_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Under the window's limit a tick is a checkpoint and takes no time."""
    with LoopBudget(10) as budget:
        for _ in range(10):
            with trio.testing.assert_checkpoints():
                await budget.tick()
    assert trio.current_time() == 0.0
    stats = budget.statistics()
    assert stats.iterations == 10
    assert stats.iterations_in_window == 10
    assert stats.window_utilization == 1.0
    assert stats.throttled == 0


async def test_over_the_limit_it_sleeps_backoff_delays_until_the_window_opens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The third tick of a 2-per-second budget waits in 0.25 s steps until t = 1.0."""
    with LoopBudget(2, window=1.0, backoff=ConstantBackoff(0.25)) as budget:
        times = []
        for _ in range(5):
            await budget.tick()
            times.append(trio.current_time())
    assert times == [0.0, 0.0, 1.0, 1.0, 2.0]
    stats = budget.statistics()
    assert stats.throttled == 2
    assert stats.throttle_time == 2.0


async def test_seed_backoff_grows_and_restarts_after_a_pass(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Throttled sleeps follow the backoff, end when the window opens, restart per tick."""
    backoff = ExponentialBackoff(base=0.1, multiplier=2.0, max_delay=10.0, jitter_factor=0.0)
    with LoopBudget(1, window=1.0, backoff=backoff) as budget:
        sleeps: list[float] = []
        real_sleep = trio.sleep

        async def recording_sleep(seconds: float) -> None:
            sleeps.append(seconds)
            await real_sleep(seconds)

        monkeypatch.setattr(trio, "sleep", recording_sleep)
        await budget.tick()  # t = 0
        await budget.tick()  # sleeps 0.1, 0.2, 0.4, then until the window opens at 1.0
        assert trio.current_time() == 1.0
        assert sleeps == [0.1, 0.2, 0.4]
        await trio.sleep(0.75)
        sleeps.clear()
        await budget.tick()  # anew: 0.1 from 1.75, then until 2.0
        assert sleeps == [0.1]
        assert trio.current_time() == 2.0


async def test_zero_delay_backoff_waits_for_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A zero backoff delay cannot spin: the tick sleeps until the window opens."""
    with LoopBudget(1, window=2.0, backoff=ConstantBackoff(0.0)) as budget:
        await budget.tick()
        await budget.tick()
    assert trio.current_time() == 2.0


async def test_max_iterations_cancels_on_the_next_tick(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """max_iterations ticks pass; the next cancels the scope; exhausted says so."""
    reached = []
    with LoopBudget(100, max_iterations=3, name="poll") as budget:
        for i in range(10):
            await budget.tick()
            reached.append(i)
    assert reached == [0, 1, 2]
    assert budget.exhausted
    assert budget.cancel_scope.cancelled_caught
    assert budget.statistics().exhausted_by == "max_iterations"
    assert logs == [
        {
            "event": "trio_resilience.budget.exhausted",
            "log_level": "warning",
            "budget": "poll",
            "limit": "max_iterations",
            "iterations": 3,
            "elapsed": 0.0,
        }
    ]


async def test_max_duration_cancels_a_blocked_body(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """max_duration after entry the scope is cancelled even inside an await."""
    await trio.sleep(5)
    with LoopBudget(100, max_duration=2.5) as budget:
        await budget.tick()
        await trio.sleep_forever()
    assert trio.current_time() == 7.5
    assert budget.exhausted
    assert budget.statistics().exhausted_by == "max_duration"


async def test_outer_cancellation_is_not_exhaustion(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelled by an enclosing scope, the budget is not exhausted."""
    with trio.move_on_after(1):
        with LoopBudget(100, max_duration=10, raise_on_exhaustion=True) as budget:
            await trio.sleep_forever()
    assert not budget.exhausted
    assert trio.current_time() == 1.0


async def test_raise_on_exhaustion(autojump_clock: trio.testing.MockClock) -> None:
    """With raise_on_exhaustion the exit raises LoopBudgetExhausted naming the limit."""
    budget = LoopBudget(10, max_iterations=2, raise_on_exhaustion=True, name="gossip")
    with pytest.raises(LoopBudgetExhausted) as info, budget:
        while True:
            await budget.tick()
    assert info.value.name == "gossip"
    assert info.value.limit == "max_iterations"
    assert info.value.iterations == 2
    budget = LoopBudget(10, max_duration=1.0, raise_on_exhaustion=True)
    with pytest.raises(LoopBudgetExhausted, match="max_duration"), budget:
        await trio.sleep(2)


async def test_body_errors_win_over_exhaustion(autojump_clock: trio.testing.MockClock) -> None:
    """An exception from the body is not replaced by LoopBudgetExhausted."""
    b = LoopBudget(10, max_iterations=1, raise_on_exhaustion=True)
    with pytest.raises(KeyError), b:
        async for _ in b:  # one iteration, then the hard limit ends the loop cleanly
            pass
        assert b.exhausted
        raise KeyError


async def test_async_for_yields_numbers_and_stops_cleanly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """async for i in budget yields 0, 1, 2, ... and ends at max_iterations."""
    seen = []
    with LoopBudget(2, window=1.0, backoff=ConstantBackoff(0.5), max_iterations=5) as budget:
        async for i in budget:
            seen.append((i, trio.current_time()))
        after_loop = True
    assert seen == [(0, 0.0), (1, 0.0), (2, 1.0), (3, 1.0), (4, 2.0)]
    assert after_loop
    assert budget.exhausted


async def test_entered_once_and_tick_needs_entry() -> None:
    """A second with raises RuntimeError; a tick outside the block too."""
    budget = LoopBudget(10)
    with pytest.raises(RuntimeError, match=r"^enter the LoopBudget with `with` before ticking it$"):
        await budget.tick()
    with budget:
        pass
    with pytest.raises(RuntimeError, match="entered once"), budget:
        pass


async def test_throttle_log_at_most_once_per_window(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """Many throttled ticks within one window log one throttled event."""
    with LoopBudget(1, window=10.0, backoff=ConstantBackoff(1.0), name="gc") as budget:
        for _ in range(4):
            await budget.tick()
    throttled = [e for e in logs if e["event"] == "trio_resilience.budget.throttled"]
    assert throttled == [
        {
            "event": "trio_resilience.budget.throttled",
            "log_level": "info",
            "budget": "gc",
            "iterations": 1,
            "iterations_in_window": 1,
            "throttled": 1,
        },
        {
            "event": "trio_resilience.budget.throttled",
            "log_level": "info",
            "budget": "gc",
            "iterations": 2,
            "iterations_in_window": 1,
            "throttled": 2,
        },
        {
            "event": "trio_resilience.budget.throttled",
            "log_level": "info",
            "budget": "gc",
            "iterations": 3,
            "iterations_in_window": 1,
            "throttled": 3,
        },
    ]


async def test_budgeted_drains_a_channel_and_ends_on_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """budgeted() yields every item under the budget and ends when senders close."""
    send, receive = trio.open_memory_channel[int](10)
    for i in range(5):
        send.send_nowait(i)
    send.close()
    got = []
    with LoopBudget(2, window=1.0, backoff=ConstantBackoff(0.5)) as budget:
        async for item in budgeted(receive, budget):
            got.append((item, trio.current_time()))
    assert got == [(0, 0.0), (1, 0.0), (2, 1.0), (3, 1.0), (4, 2.0)]
    assert not budget.exhausted


async def test_budgeted_ends_at_exhaustion_and_waits_without_polling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """At max_iterations budgeted stops; a blocked receive waits for items."""
    send, receive = trio.open_memory_channel[int](10)
    got = []

    async def producer() -> None:
        for i in range(10):
            await trio.sleep(1)
            await send.send(i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        with LoopBudget(100, max_iterations=3) as budget:
            async for item in budgeted(receive, budget):
                got.append((item, trio.current_time()))
        nursery.cancel_scope.cancel()
    assert got == [(0, 1.0), (1, 2.0), (2, 3.0)]
    assert budget.exhausted


def test_budgeted_validates_arguments() -> None:
    """budgeted needs a ReceiveChannel and a LoopBudget."""
    with pytest.raises(TypeError, match=r"^receive_channel must be a trio ReceiveChannel"):
        budgeted([], LoopBudget(1))  # type: ignore[arg-type]
    _, receive = trio.open_memory_channel[int](1)
    with pytest.raises(TypeError, match=r"^budget must be a LoopBudget, got 1$"):
        budgeted(receive, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((0,), {}, ValueError, r"^max_iterations_per_window must be >= 1, got 0$"),
        ((1.5,), {}, TypeError, r"^max_iterations_per_window must be an int, got 1.5$"),
        ((1,), {"window": 0}, ValueError, r"^window must be > 0, got 0$"),
        ((1,), {"backoff": 0.1}, TypeError, r"^backoff must be a Backoff, got 0.1$"),
        ((1,), {"max_iterations": 0}, ValueError, r"^max_iterations must be >= 1, got 0$"),
        ((1,), {"max_duration": -1}, ValueError, r"^max_duration must be > 0, got -1$"),
        ((1,), {"raise_on_exhaustion": 1}, TypeError, r"^raise_on_exhaustion must be a bool"),
        ((1,), {"name": ""}, ValueError, r"^name must not be empty"),
    ],
)
def test_bad_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type, message: str
) -> None:
    """Bad arguments raise at construction with the parameter named."""
    with pytest.raises(error, match=message):
        LoopBudget(*args, **kwargs)


@settings(deadline=None, max_examples=80)
@given(
    limit=st.integers(1, 5),
    window=st.sampled_from([0.5, 1.0, 2.0]),
    gaps=st.lists(st.sampled_from([0.0, 0.0, 0.1, 0.3, 0.7, 1.0, 2.5]), max_size=40),
    delay=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
)
def test_no_window_ever_admits_more_than_the_limit(
    limit: int, window: float, gaps: list[float], delay: float
) -> None:
    """Whatever the tick pattern, any window-long interval holds at most `limit` ticks."""
    passed: list[float] = []

    async def main() -> None:
        with LoopBudget(limit, window=window, backoff=ConstantBackoff(delay)) as budget:
            for gap in gaps:
                await trio.sleep(gap)
                await budget.tick()
                passed.append(trio.current_time())
        assert budget.statistics().iterations == len(gaps)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    for i in range(len(passed) - limit):
        assert passed[i + limit] - passed[i] >= window - 1e-9


async def test_repr_shows_progress_and_exhaustion(autojump_clock: trio.testing.MockClock) -> None:
    """The repr says the limit, the iterations and whether it ran out."""
    with LoopBudget(5, window=2.0, max_iterations=2, name="gc") as budget:
        await budget.tick()
        assert repr(budget) == "<LoopBudget 'gc' 5/2s 1 iterations, running>"
        async for _ in budget:
            pass
    assert repr(budget) == "<LoopBudget 'gc' 5/2s 2 iterations, exhausted by max_iterations>"


async def test_custom_logger_window_edge_and_size_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A passed logger gets the events; a tick leaves the window exactly window later."""
    events: list[str] = []

    class Logger:
        def info(self, event: str, **kw: object) -> None:
            events.append(event)

        warning = error = info

    with LoopBudget(1, window=1.0, max_iterations=2, logger=Logger()) as budget:
        await budget.tick()
        await trio.sleep(0.999)
        assert budget.statistics().iterations_in_window == 1
        await trio.sleep(0.001)
        assert budget.statistics().iterations_in_window == 0
        await budget.tick()
        await budget.tick()
    assert events == ["trio_resilience.budget.exhausted"]
    stats = budget.statistics()
    assert stats.exhausted is True
    assert stats.window_utilization == 1.0  # the second tick, at t = 1, is in the window
    with pytest.raises(ValueError, match=r"^max_iterations_per_window must be <= 2147483647"):
        LoopBudget(2**31)


# ------------------------------------------------------------------ wave 2 corrections


def _allocated(fn: Any) -> int:
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keep = fn()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del keep
    return after - before


def test_a_huge_window_limit_costs_no_memory_up_front() -> None:
    """max_iterations_per_window=2**31-1 allocates nothing proportional to the limit."""
    assert _allocated(lambda: LoopBudget(2**31 - 1)) < 4096


@pytest.mark.parametrize("ticks", [64, 65, 1025, 10_000])
async def test_window_memory_is_at_most_8_bytes_per_tick_plus_slack(
    autojump_clock: trio.testing.MockClock, ticks: int
) -> None:
    """n ticks in one window hold at most 8 * (1.08 n + 24) bytes: no capacity doubling."""
    import tracemalloc

    with LoopBudget(10**9, window=60.0) as budget:
        await budget.tick()  # Trio's own first-use allocations are not the window's
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(ticks - 1):
            await budget.tick()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert budget.statistics().iterations_in_window == ticks
        assert budget._ticks.nbytes <= 8 * (1.08 * ticks + 24)
    assert grown <= 8 * (1.08 * ticks + 24) + 4096  # + what Trio allocates meanwhile


async def test_window_memory_is_freed_when_the_window_empties(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A burst of 5,000 ticks then a quiet window: the tick array holds one tick again."""
    with LoopBudget(10**6, window=1.0) as budget:
        for _ in range(5000):
            await budget.tick()
        await trio.sleep(1.0)
        await budget.tick()
        assert budget._ticks.nbytes <= 8 * 25


async def test_a_raising_logger_never_breaks_a_loop_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Throttled and exhausted events with a broken logger: the budget works as usual."""

    class RaisingLogger:
        def __getattr__(self, name: str) -> Any:
            def method(*args: Any, **kwargs: Any) -> None:
                raise RuntimeError("broken logger")

            return method

    with LoopBudget(1, max_iterations=3, logger=RaisingLogger()) as budget:
        async for _ in budget:
            pass
    stats = budget.statistics()
    assert (stats.iterations, stats.throttled, stats.exhausted_by) == (3, 2, "max_iterations")
    assert trio.current_time() == pytest.approx(2.0)


async def test_window_memory_shrinks_when_ticks_leave_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After a burst leaves the window, the statistics and memory follow the few ticks left."""
    with LoopBudget(10**6, window=1.0) as budget:
        for _ in range(5000):
            await budget.tick()
        await trio.sleep(1.0)
        await budget.tick()
        stats = budget.statistics()
        assert (stats.iterations, stats.iterations_in_window) == (5001, 1)
        assert stats.window_utilization == 1 / 10**6


async def test_tick_after_the_block_exited_raises_runtime_error() -> None:
    """A tick outside the with block is misuse, not a silent pass."""
    with LoopBudget(10) as budget:
        await budget.tick()
    with pytest.raises(RuntimeError, match=r"block has exited"):
        await budget.tick()
    with pytest.raises(RuntimeError, match=r"block has exited"):
        async for _ in budget:
            pass


def test_tiny_windows_are_refused() -> None:
    """A window of 5e-324 s is a ValueError at construction, not a crash later."""
    with pytest.raises(ValueError, match=r"^window must be >= 1e-06, got 5e-324$"):
        LoopBudget(10, window=5e-324)


async def test_zero_backoff_passes_throttled_ticks_and_keeps_the_window_exact(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Under zero_backoff() a full window admits at once; counts stay within the limit."""
    from trio_resilience.testing import zero_backoff

    with zero_backoff(), LoopBudget(3, window=1.0) as budget:
        for _ in range(10):
            await budget.tick()
    stats = budget.statistics()
    assert (stats.iterations, stats.throttled, trio.current_time()) == (10, 7, 0.0)
    assert stats.iterations_in_window == 3


def test_loop_budgets_are_listed_as_live() -> None:
    """A LoopBudget registers under "loop_budget" for exporters."""
    from trio_resilience import _live

    budget = LoopBudget(5, name="poll")
    assert budget in _live.live("loop_budget")


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(1, 40),
    steps=st.lists(st.floats(0, 0.3, allow_nan=False), min_size=1, max_size=300),
)
def test_tick_ring_agrees_with_a_list_of_tick_times(limit: int, steps: list[float]) -> None:
    """The array ring admits, expires, grows and shrinks exactly like a plain list model."""
    from trio_resilience._budget import _TickRing

    ring, model, now = _TickRing(limit), [], 0.0
    for step in steps:
        now += step
        model = [t for t in model if t + 1.0 > now]
        admitted = ring.admit(now, 1.0)
        assert admitted == (len(model) < limit)
        if admitted:
            model.append(now)
        assert ring.count == len(model)
        if model:
            assert ring.oldest() == model[0]
