"""RetryBudget: exact ratios, runs, given-back tokens and the documented sharing port."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

from trio_resilience import RetryBudget, RetryBudgetDelta, _live


async def test_ratio_of_one_seventh_earns_one_retry_per_seven_first_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """1/k is exact: six first attempts buy nothing, the seventh buys one retry."""
    budget = RetryBudget(ratio=1 / 7, min_retries_per_second=0.0)
    for _ in range(6):
        budget.deposit()
    assert not budget.try_withdraw()
    budget.deposit()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()


@pytest.mark.parametrize("k", [3, 7, 10, 49, 1000, 2000, 12345])
async def test_every_one_over_k_ratio_is_exact(
    autojump_clock: trio.testing.MockClock, k: int
) -> None:
    """For 1/k, k - 1 deposits are not a token and k deposits are exactly one."""
    budget = RetryBudget(ratio=1 / k, min_retries_per_second=0.0)
    for _ in range(k - 1):
        budget.deposit()
    assert budget.statistics().balance < 1.0
    assert not budget.try_withdraw()
    budget.deposit()
    assert budget.try_withdraw()


async def test_ratio_below_a_thousandth_still_earns_tokens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ratio=0.0005 (wave 1 rounded it to zero) earns one retry per 2,000 first attempts."""
    budget = RetryBudget(ratio=0.0005, min_retries_per_second=0.0, window=100.0)
    for _ in range(2000):
        budget.deposit()
    assert budget.statistics().balance == 1.0
    assert budget.try_withdraw()


async def test_reserve_is_exact_for_decimal_rates(autojump_clock: trio.testing.MockClock) -> None:
    """min_retries_per_second=0.3 over 10 s is three retries, not 2.9999."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.3, window=10.0)
    assert [budget.try_withdraw() for _ in range(4)] == [True, True, True, False]


async def test_given_back_token_can_be_withdrawn_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """give_back() returns the token of a retry that was never made."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0)
    budget.deposit()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    budget.give_back()
    stats = budget.statistics()
    assert (stats.balance, stats.withdrawals, stats.given_back) == (1.0, 0, 1)
    assert budget.try_withdraw()


def _first_run(budget: RetryBudget) -> None:
    async def main() -> None:
        for _ in range(5):
            budget.deposit()
        assert budget.try_withdraw()

    trio.run(main, clock=trio.testing.MockClock())


def test_a_new_trio_run_starts_with_an_empty_window() -> None:
    """Counts of an earlier trio.run (same clock times) never fund retries in the next."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0)
    _first_run(budget)

    async def second() -> None:
        stats = budget.statistics()
        assert (stats.deposits_in_window, stats.withdrawals_in_window) == (0, 0)
        assert not budget.try_withdraw()

    trio.run(second, clock=trio.testing.MockClock())
    assert budget.statistics().deposits == 5  # lifetime totals stay


def test_budget_is_named_and_listed_as_live() -> None:
    """name= labels the budget; it is registered under "budget" for exporters."""
    budget = RetryBudget(name="payments")
    assert budget.name == "payments"
    assert budget in _live.live("budget")
    assert repr(budget) == (
        "<RetryBudget 'payments' ratio=0.1 min_retries_per_second=10 window=10>"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"window": 5e-324}, ValueError, r"^window must be >= 1e-06, got 5e-324$"),
        ({"window": math.inf}, ValueError, r"^window must be finite, got inf$"),
        ({"name": ""}, ValueError, r"^name must not be empty, got ''$"),
        ({"name": 3}, TypeError, r"^name must be a str, got 3$"),
    ],
)
def test_budget_refuses_tiny_windows_and_bad_names(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """A window too short for its buckets and a bad name are refused at construction."""
    with pytest.raises(error, match=match):
        RetryBudget(**kwargs)


async def test_huge_reserve_never_overflows(autojump_clock: trio.testing.MockClock) -> None:
    """min_retries_per_second=1e308 over a 1e308 s window is capped, never OverflowError."""
    budget = RetryBudget(ratio=1000, min_retries_per_second=1e308, window=1e308)
    budget.deposit()
    assert budget.try_withdraw()
    assert budget.statistics().balance >= 2**52


# ------------------------------------------------------------------ the sharing port


async def test_sync_delta_reports_local_counts_since_the_previous_take(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """take_sync_delta() gives deposits and net withdrawals since the last call."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0)
    for _ in range(3):
        budget.deposit()
    assert budget.try_withdraw()
    assert budget.take_sync_delta() == RetryBudgetDelta(deposits=3, withdrawals=1)
    assert budget.take_sync_delta() == RetryBudgetDelta(deposits=0, withdrawals=0)
    budget.give_back()
    assert budget.take_sync_delta() == RetryBudgetDelta(deposits=0, withdrawals=-1)


async def test_remote_counts_including_local_fund_retries_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cluster totals that include this budget's own reports are not counted twice."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0)
    for _ in range(2):
        budget.deposit()
    delta = budget.take_sync_delta()
    # The sharing layer adds our delta to 5 deposits of other processes: total 7.
    assert budget.apply_remote_counts(delta.deposits + 5, delta.withdrawals)
    stats = budget.statistics()
    assert (stats.balance, stats.remote_deposits, stats.remote_withdrawals) == (7.0, 5, 0)
    budget.deposit()  # local, not yet synced
    assert budget.statistics().balance == 8.0


async def test_remote_counts_use_the_budgets_own_ratio_and_reserve(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Remote first attempts earn tokens at this budget's ratio, on top of its reserve."""
    budget = RetryBudget(ratio=0.5, min_retries_per_second=0.1, window=10.0)
    assert budget.apply_remote_counts(4, 1, includes_local=False)
    assert budget.statistics().balance == 1 + 4 * 0.5 - 1


async def test_remote_counts_expire_when_not_renewed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A sharer that goes quiet for a window is forgotten: local counts decide again."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, window=10.0)
    assert budget.apply_remote_counts(3, 0, includes_local=False)
    await trio.sleep(9.5)
    assert budget.statistics().balance == 3.0
    await trio.sleep(0.5)
    assert budget.statistics().balance == 0.0
    assert not budget.try_withdraw()


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, 1.5, "3", None, True, [1], 2**60, -(2**60), object()],
)
async def test_malformed_remote_counts_are_refused_and_change_nothing(
    autojump_clock: trio.testing.MockClock, value: object
) -> None:
    """Garbage from a sharing layer is refused (False) and never crashes or funds retries."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0)
    assert budget.apply_remote_counts(2, 0, includes_local=False)
    assert not budget.apply_remote_counts(value, 0)
    assert not budget.apply_remote_counts(0, value)
    assert budget.statistics().remote_deposits == 2


async def test_remote_counts_below_the_local_share_count_as_zero(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Totals smaller than what this budget reported (skewed buckets) clamp to zero."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0)
    for _ in range(4):
        budget.deposit()
    budget.take_sync_delta()
    assert budget.apply_remote_counts(1.0, -3)
    stats = budget.statistics()
    assert (stats.remote_deposits, stats.remote_withdrawals, stats.balance) == (0, 0, 4.0)


async def test_clear_remote_forgets_remote_counts_and_restarts_the_delta(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """clear_remote() (sharing attached or detached) drops remote counts and the delta."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0)
    budget.deposit()
    assert budget.apply_remote_counts(5, 0, includes_local=False)
    budget.clear_remote()
    assert budget.statistics().balance == 1.0
    assert budget.take_sync_delta() == RetryBudgetDelta(0, 0)


def test_sync_delta_outside_trio_run_works() -> None:
    """take_sync_delta() is sync and safe outside trio.run (nothing to remember)."""
    budget = RetryBudget()
    assert budget.take_sync_delta() == RetryBudgetDelta(0, 0)
    with pytest.raises(TypeError, match=r"^includes_local must be a bool, got 1$"):
        budget.apply_remote_counts(0, 0, includes_local=1)  # type: ignore[arg-type]


def test_deposits_of_an_earlier_run_never_fund_a_retry() -> None:
    """Deposits only in run 1 (same clock times in run 2) buy nothing in run 2; its own do."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0)

    async def deposit_only() -> None:
        for _ in range(5):
            budget.deposit()

    async def spend() -> None:
        budget.deposit()  # the new run's first deposit starts the window afresh
        assert budget.statistics().balance == 1.0
        assert budget.try_withdraw()
        assert not budget.try_withdraw()  # run 1's five deposits are gone
        budget.deposit()
        assert budget.try_withdraw()  # run 2's later deposits count

    trio.run(deposit_only, clock=trio.testing.MockClock())
    trio.run(spend, clock=trio.testing.MockClock())
    assert budget.statistics().deposits == 7
