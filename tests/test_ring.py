"""The shared time-bucket ring: sums over a sliding window, expiry bucket by bucket."""

from __future__ import annotations

import math

import pytest

from trio_resilience._ring import TimeRing


def test_counts_within_the_window_sum_up() -> None:
    """Counts added inside one window are all in the total."""
    ring = TimeRing(10.0, buckets=10, fields=2)
    ring.count(0.5, 0)
    ring.count(3.2, 0, 2)
    ring.count(9.9, 1, 5)
    assert ring.total(9.9, 0) == 3
    assert ring.total(9.9, 1) == 5


def test_buckets_expire_one_by_one() -> None:
    """A bucket leaves the total once the window has moved past it, not before."""
    ring = TimeRing(10.0, buckets=10)
    ring.count(0.0)
    ring.count(1.0)
    assert ring.total(9.99) == 2
    assert ring.total(10.0) == 1  # bucket [0, 1) expired
    assert ring.total(11.0) == 0


def test_a_long_gap_clears_everything() -> None:
    """Moving more than a window ahead empties every bucket."""
    ring = TimeRing(1.0, buckets=4, fields=3)
    for f in range(3):
        ring.count(0.1, f, 7)
    assert ring.total(100.0, 2) == 0
    assert ring.totals == [0, 0, 0]


def test_time_going_backwards_starts_afresh() -> None:
    """A time before the newest bucket (a new run's clock) forgets the old counts."""
    ring = TimeRing(10.0)
    ring.count(5000.0, 0, 3)
    assert ring.total(2.0) == 0
    ring.count(2.0)
    assert ring.total(2.0) == 1


def test_non_finite_time_clears() -> None:
    """A NaN or infinite time never poisons the ring."""
    ring = TimeRing(10.0)
    ring.count(1.0)
    assert ring.total(math.nan) == 0
    ring.count(2.0)
    assert ring.total(2.0) == 1


def test_add_writes_at_the_offset_advance_returned() -> None:
    """advance() + add() is the same as count()."""
    a = TimeRing(2.0, buckets=2, fields=2)
    b = TimeRing(2.0, buckets=2, fields=2)
    for t in (0.1, 0.7, 1.3, 2.2, 2.9):
        a.add(a.advance(t), 1, 1)
        b.count(t, 1)
    assert a.totals == b.totals == [0, 3]  # 1.3, 2.2, 2.9: [1, 3) is the window


def test_clear_forgets_every_count() -> None:
    """clear() empties the totals."""
    ring = TimeRing(1.0)
    ring.count(0.5, 0, 4)
    ring.clear()
    assert ring.total(0.5) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0.0}, r"^window must be > 0 and finite, got 0.0$"),
        ({"window": math.inf}, r"^window must be > 0 and finite, got inf$"),
        ({"window": 1.0, "buckets": 0}, r"^buckets must be >= 1, got 0$"),
        ({"window": 1.0, "fields": 0}, r"^fields must be >= 1, got 0$"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, float], message: str) -> None:
    """The ring refuses windows and sizes it cannot work with."""
    with pytest.raises(ValueError, match=message):
        TimeRing(**kwargs)  # type: ignore[arg-type]
