"""RetryBudget: retries capped at a share of first attempts, with a port for sharing it.

The budget keeps two counts over a sliding window of Trio time on the shared
:class:`~trio_resilience._ring.TimeRing`: first attempts (deposits) and retries
(withdrawals). Its balance is exact: ``ratio`` is kept as a fraction, so ``1/k`` earns
one retry per ``k`` first attempts and ``0.0005`` one per 2,000, with no rounding.

The sharing port (:meth:`RetryBudget.take_sync_delta`,
:meth:`RetryBudget.apply_remote_counts`, :meth:`RetryBudget.clear_remote`) lets a
sharing layer such as ``trio_resilience.redis`` pool the counts of many processes
without touching private state; see ``docs/retry.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import trio

from . import _live
from ._ring import TimeRing
from ._runs import run_token
from ._validate import MAX_COUNT, check_bool, check_number, check_str, check_window

_current_time = trio.current_time
_current_clock = trio.lowlevel.current_clock
_BUCKETS = 10
_DEP, _WD = 0, 1  # the ring's fields
#: Denominators of ``ratio`` and of the reserve's factors are limited to this: 0.1 is 1/10.
_MAX_DENOMINATOR = 10**9
#: The reserve never exceeds this many tokens (a larger one is "always allow").
_MAX_RESERVE = 2**53


@dataclass(frozen=True, slots=True)
class RetryBudgetStatistics:
    """A snapshot of a :class:`RetryBudget`."""

    balance: float
    """Retries that could be made now (reserve and remote counts included)."""
    deposits: int
    """First attempts seen over the budget's life."""
    withdrawals: int
    """Retries allowed over the budget's life (net of tokens given back)."""
    rejected: int
    """Retries refused for want of a token."""
    given_back: int = 0
    """Tokens given back for retries that were not made (their sleep was cancelled)."""
    deposits_in_window: int = 0
    """Local first attempts in the current window."""
    withdrawals_in_window: int = 0
    """Local retries in the current window (net of tokens given back)."""
    remote_deposits: int = 0
    """Other sharers' first attempts in the window, as last applied by the port."""
    remote_withdrawals: int = 0
    """Other sharers' retries in the window, as last applied by the port."""


@dataclass(frozen=True, slots=True)
class RetryBudgetDelta:
    """What a budget counted locally since the previous :meth:`RetryBudget.take_sync_delta`."""

    deposits: int
    """First attempts since the previous call (>= 0)."""
    withdrawals: int
    """Retries since the previous call, net of tokens given back (may be < 0 when more
    tokens were given back than taken since then)."""


class RetryBudget:
    """A token bucket that caps retries at a share of first attempts, against retry storms.

    Each first attempt deposits ``ratio`` tokens and each retry withdraws one; deposits
    and withdrawals expire after ``window`` seconds (ten time buckets, so expiry is
    approximate to one bucket). A reserve of ``min_retries_per_second * window`` tokens
    lets a quiet client retry at all. Share one budget between many :class:`Retry`
    objects. O(1) per call, fixed memory.

    ``ratio`` is exact: it is kept as the nearest fraction with a denominator up to
    10**9 (``0.1`` is 1/10, ``1/3`` is 1/3), and balances are compared in integers.

    A budget used in a new ``trio.run`` starts with an empty window, which the new
    run's first deposit already counts in. (The first deposit notices the new run by
    its clock object; a run given the very clock object of an earlier run is noticed
    at its first withdrawal instead, and its deposits until then are forgotten.)

    Args:
        ratio: tokens deposited per first attempt (0.1: one retry per ten calls).
        min_retries_per_second: retries always allowed, per second of the window.
        window: seconds a deposit or withdrawal counts for (>= 1e-6).
        name: a label for logs and metrics, and the key by which sharing layers match
            budgets across processes.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument has a wrong value; the message names it.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_dep_unit",
        "_deposits",
        "_given_back",
        "_rejected",
        "_remote_at",
        "_remote_dep",
        "_remote_wd",
        "_reserve_units",
        "_ring",
        "_run",
        "_synced_dep",
        "_synced_wd",
        "_token",
        "_unsynced_dep",
        "_unsynced_wd",
        "_withdrawals",
        "min_retries_per_second",
        "name",
        "ratio",
        "window",
    )

    def __init__(
        self,
        ratio: float = 0.1,
        min_retries_per_second: float = 10.0,
        window: float = 10.0,
        *,
        name: str = "default",
    ) -> None:
        self.ratio = check_number("ratio", ratio, ge=0, le=1000)
        self.min_retries_per_second = check_number(
            "min_retries_per_second", min_retries_per_second, ge=0
        )
        self.window = check_window("window", window)
        self.name = check_str("name", name)
        exact_ratio = Fraction(self.ratio).limit_denominator(_MAX_DENOMINATOR)
        reserve = Fraction(self.min_retries_per_second).limit_denominator(
            _MAX_DENOMINATOR
        ) * Fraction(self.window).limit_denominator(_MAX_DENOMINATOR)
        reserve = min(reserve, Fraction(_MAX_RESERVE))
        # Integer units: one token is `_token` units; a deposit `_dep_unit` units.
        scale = math.lcm(exact_ratio.denominator, reserve.denominator)
        self._token = scale
        self._dep_unit = exact_ratio.numerator * (scale // exact_ratio.denominator)
        self._reserve_units = reserve.numerator * (scale // reserve.denominator)
        self._ring = TimeRing(self.window, _BUCKETS, 2)
        self._run: object = None
        self._clock: object = None  # the clock of the run last seen by deposit()
        self._deposits = 0
        self._withdrawals = 0
        self._rejected = 0
        self._given_back = 0
        # The sharing port's state.
        self._unsynced_dep = 0
        self._unsynced_wd = 0
        self._synced_dep = 0  # the ring's totals when the last delta was taken
        self._synced_wd = 0
        self._remote_dep = 0
        self._remote_wd = 0
        self._remote_at = -math.inf
        _live.register("budget", self)

    # ------------------------------------------------------------ the call path

    def _now(self) -> float:
        now = _current_time()
        token = run_token()
        if token is not self._run:
            self._run = token
            self._clock = _current_clock()
            self._ring.clear()
            self._remote_dep = self._remote_wd = 0
            self._remote_at = -math.inf
        return now

    def deposit(self) -> None:
        """Count one first attempt (``ratio`` tokens). Needs ``trio.run``."""
        # The hot path reads the clock through its clock object (as trio.current_time
        # does, at the same cost): a different clock object is a new run, whose first
        # deposit then starts the window afresh and counts in it.
        clock = _current_clock()
        if clock is not self._clock:
            self._clock = clock
            self._now()
        self._ring.count(clock.current_time(), _DEP, 1)
        self._deposits += 1
        self._unsynced_dep += 1

    def _units(self, now: float) -> int:
        """The balance in integer units (a token is ``self._token`` units)."""
        ring = self._ring
        ring.advance(now)
        deposits, withdrawals = ring.totals
        if self._remote_dep or self._remote_wd:
            if now - self._remote_at >= self.window:  # the sharer went quiet: forget it
                self._remote_dep = self._remote_wd = 0
            else:
                deposits += self._remote_dep
                withdrawals += self._remote_wd
        if withdrawals < 0:
            withdrawals = 0
        units = self._reserve_units + int(deposits) * self._dep_unit
        units -= int(withdrawals) * self._token
        return units

    def try_withdraw(self) -> bool:
        """Take a token for one retry; False (and nothing taken) when there is none.

        Needs ``trio.run``. A retry that is then not made should :meth:`give_back`.
        """
        now = self._now()
        if self._units(now) < self._token:
            self._rejected += 1
            return False
        self._ring.count(now, _WD, 1)
        self._withdrawals += 1
        self._unsynced_wd += 1
        return True

    def give_back(self) -> None:
        """Return the token of a retry that was not made (e.g. its sleep was cancelled).

        Call it once per successful :meth:`try_withdraw` at most. Needs ``trio.run``.
        """
        self._ring.count(self._now(), _WD, -1)
        self._withdrawals -= 1
        self._given_back += 1
        self._unsynced_wd -= 1

    def _undo_withdraw(self) -> None:
        """Cancel the :meth:`try_withdraw` just made (Retry gave up before sleeping).

        Unlike :meth:`give_back` it is not counted in ``given_back``: nothing was
        withdrawn, as far as the statistics go.
        """
        self._ring.count(self._now(), _WD, -1)
        self._withdrawals -= 1
        self._unsynced_wd -= 1

    # ------------------------------------------------------------ the sharing port

    def take_sync_delta(self) -> RetryBudgetDelta:
        """Report the local counts since the previous call, for a sharing layer to publish.

        Returns the first attempts and (net) retries counted since the previous call
        (or since the budget was created or :meth:`clear_remote` was called) and marks
        them as published. The budget also remembers its own window totals at this
        moment, so that :meth:`apply_remote_counts` can tell the others' share from
        its own. Sync; never touches the network; O(1).
        """
        delta = RetryBudgetDelta(self._unsynced_dep, self._unsynced_wd)
        self._unsynced_dep = self._unsynced_wd = 0
        try:
            now = self._now()
        except RuntimeError:  # outside trio.run: nothing in the window to remember
            self._synced_dep = self._synced_wd = 0
        else:
            self._ring.advance(now)
            self._synced_dep = int(self._ring.totals[_DEP])
            self._synced_wd = int(self._ring.totals[_WD])
        return delta

    def apply_remote_counts(
        self, deposits: object, withdrawals: object, *, includes_local: bool = True
    ) -> bool:
        """Accept the cluster's counts over the window, from a sharing layer.

        ``deposits`` and ``withdrawals`` are the first attempts and retries of every
        sharer over the last ``window`` seconds. With ``includes_local`` (the default)
        they include what this budget reported through :meth:`take_sync_delta`, and the
        budget subtracts its own window totals as of that call; otherwise they are the
        other sharers' counts alone. The budget then allows a retry when
        ``reserve + (local + remote deposits) * ratio - (local + remote retries) >= 1``,
        always with its own ``ratio`` and reserve. Remote counts that are not renewed
        within ``window`` seconds are forgotten (a sharer that lost its connection
        falls back to local counts).

        Values are untrusted: anything but an integral, finite number (an ``int`` or a
        ``float`` with no fraction; not a bool) within ``[-2**53, 2**53]`` is refused and
        nothing changes. A negative result after subtracting the local share counts as
        zero (buckets of two clocks never line up exactly).

        Returns:
            True if the counts were applied, False if they were refused as malformed.

        Needs ``trio.run`` (it stamps the counts with Trio's clock).
        """
        check_bool("includes_local", includes_local)
        remote_dep = _count(deposits)
        remote_wd = _count(withdrawals)
        if remote_dep is None or remote_wd is None:
            return False
        now = self._now()
        if includes_local:
            remote_dep -= self._synced_dep
            remote_wd -= self._synced_wd
        self._remote_dep = max(0, remote_dep)
        self._remote_wd = max(0, remote_wd)
        self._remote_at = now
        return True

    def clear_remote(self) -> None:
        """Forget the remote counts and start a fresh delta (sharing attached or detached)."""
        self._remote_dep = self._remote_wd = 0
        self._remote_at = -math.inf
        self._unsynced_dep = self._unsynced_wd = 0
        self._synced_dep = self._synced_wd = 0

    # ------------------------------------------------------------ introspection

    def statistics(self) -> RetryBudgetStatistics:
        """Return a frozen snapshot of the budget (works outside ``trio.run`` too)."""
        try:
            now = self._now()
        except RuntimeError:
            now = None
        units = self._units(now) if now is not None else self._reserve_units
        deposits, withdrawals = self._ring.totals
        return RetryBudgetStatistics(
            balance=max(0, units) / self._token,
            deposits=self._deposits,
            withdrawals=self._withdrawals,
            rejected=self._rejected,
            given_back=self._given_back,
            deposits_in_window=int(deposits),
            withdrawals_in_window=int(withdrawals),
            remote_deposits=self._remote_dep,
            remote_withdrawals=self._remote_wd,
        )

    def __repr__(self) -> str:
        name = "" if self.name == "default" else f"{self.name!r} "
        return (
            f"<RetryBudget {name}ratio={self.ratio:g} min_retries_per_second="
            f"{self.min_retries_per_second:g} window={self.window:g}>"
        )


def _count(value: object) -> int | None:
    """``value`` as an int if it is an integral finite number within +-2**53, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        number = int(value)
    else:
        return None
    if -MAX_COUNT <= number <= MAX_COUNT:
        return number
    return None
