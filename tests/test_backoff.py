"""Backoff strategies against their formulas, with seeded random.Random instances."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_resilience import (
    Backoff,
    ConstantBackoff,
    DecorrelatedJitterBackoff,
    ExponentialBackoff,
    FibonacciBackoff,
    FullJitterBackoff,
    LinearBackoff,
)


def take(backoff: Backoff, n: int) -> list[float]:
    return list(itertools.islice(backoff.delays(), n))


def test_exponential_defaults_are_the_seed() -> None:
    """100 ms x 2 up to 30 s with jitter 0.3."""
    b = ExponentialBackoff()
    assert (b.base, b.multiplier, b.max_delay, b.jitter_factor) == (0.1, 2.0, 30.0, 0.3)


def test_exponential_without_jitter_is_the_formula() -> None:
    """base * multiplier**(n-1), capped at max_delay."""
    b = ExponentialBackoff(base=0.5, multiplier=3.0, max_delay=20.0, jitter_factor=0.0)
    assert take(b, 5) == [0.5, 1.5, 4.5, 13.5, 20.0]


@given(
    base=st.floats(0, 10),
    multiplier=st.floats(1, 5),
    max_delay=st.floats(0, 100),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_exponential_jitter_is_capped_after_jitter(
    base: float, multiplier: float, max_delay: float, jitter: float, seed: int
) -> None:
    """min(max(d + uniform(-d*j, d*j), 0), max_delay) with the same rng stream."""
    b = ExponentialBackoff(base, multiplier, max_delay, jitter, rng=random.Random(seed))
    ref = random.Random(seed)
    for n, got in enumerate(take(b, 30), start=1):
        d = base * multiplier ** (n - 1)
        if jitter:
            d += ref.uniform(-d * jitter, d * jitter)
        assert got == min(max(d, 0.0), max_delay)
        assert 0.0 <= got <= max_delay


def test_linear_fibonacci_constant_formulas() -> None:
    """Linear base*n, Fibonacci base*F(n), Constant delay; all capped."""
    assert take(LinearBackoff(0.5, max_delay=2.0), 6) == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert take(FibonacciBackoff(1.0, max_delay=10.0), 8) == [1, 1, 2, 3, 5, 8, 10, 10]
    assert take(ConstantBackoff(0.25), 3) == [0.25, 0.25, 0.25]


def test_jittered_linear_and_constant_stay_in_range() -> None:
    """Jitter keeps delays within ±jitter_factor of the formula."""
    rng = random.Random(1)
    for n, d in enumerate(take(LinearBackoff(1.0, max_delay=1e9, jitter_factor=0.5, rng=rng), 50)):
        assert 0.5 * (n + 1) <= d <= 1.5 * (n + 1)
    for d in take(ConstantBackoff(2.0, jitter_factor=0.25, rng=rng), 50):
        assert 1.5 <= d <= 2.5


@given(seed=st.integers(0, 2**32))
def test_full_jitter_formula(seed: int) -> None:
    """uniform(0, min(max_delay, base * multiplier**(n-1)))."""
    b = FullJitterBackoff(0.1, 2.0, 5.0, rng=random.Random(seed))
    ref = random.Random(seed)
    for n, got in enumerate(take(b, 20), start=1):
        assert got == ref.uniform(0, min(5.0, 0.1 * 2.0 ** (n - 1)))


@given(seed=st.integers(0, 2**32))
def test_decorrelated_jitter_formula(seed: int) -> None:
    """min(max_delay, uniform(base, previous*3)), previous starting at base."""
    b = DecorrelatedJitterBackoff(0.1, 5.0, rng=random.Random(seed))
    ref = random.Random(seed)
    previous = 0.1
    for got in take(b, 30):
        previous = min(5.0, ref.uniform(0.1, previous * 3))
        assert got == previous
        assert 0.1 <= got <= 5.0


@pytest.mark.parametrize(
    "backoff",
    [
        ExponentialBackoff(),
        ExponentialBackoff(base=0.0),
        ExponentialBackoff(jitter_factor=1.0, max_delay=float("inf")),
        LinearBackoff(1.0, jitter_factor=1.0),
        FibonacciBackoff(1.0),
        FibonacciBackoff(1.0, jitter_factor=0.5, max_delay=float("inf")),
        FullJitterBackoff(),
        DecorrelatedJitterBackoff(),
        ConstantBackoff(1.0, jitter_factor=1.0),
    ],
)
def test_no_overflow_at_ten_thousand(backoff: Backoff) -> None:
    """Every strategy yields a finite-or-capped number at n = 10_000."""
    delays = take(backoff, 10_001)
    assert all(d >= 0 for d in delays)
    assert all(d == d for d in delays)  # no NaN


def test_iterators_are_independent_and_share_the_rng() -> None:
    """delays() gives fresh iterators; two clients draw different jitter from one rng."""
    b = ExponentialBackoff(jitter_factor=0.0)
    it1, it2 = b.delays(), b.delays()
    assert next(it1) == next(it2) == 0.1
    assert next(it1) == 0.2
    jittered = ExponentialBackoff(rng=random.Random(7))
    assert take(jittered, 5) != take(jittered, 5)
    again = ExponentialBackoff(rng=random.Random(7))
    assert take(again, 5) == take(ExponentialBackoff(rng=random.Random(7)), 5)


def test_strategies_are_immutable_and_readable() -> None:
    """Constructor arguments are attributes; assigning them fails."""
    b = ExponentialBackoff(base=1.0)
    assert b.base == 1.0
    with pytest.raises(AttributeError):
        b.base = 2.0  # type: ignore[misc]


def test_backoff_base_class_is_abstract() -> None:
    """The base class has no delays of its own."""
    with pytest.raises(NotImplementedError):
        Backoff().delays()


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "message"),
    [
        (ExponentialBackoff, {"base": -1}, ValueError, r"^base must be >= 0, got -1$"),
        (
            ExponentialBackoff,
            {"multiplier": 0.5},
            ValueError,
            r"^multiplier must be >= 1, got 0.5$",
        ),
        (ExponentialBackoff, {"max_delay": -1}, ValueError, r"^max_delay must be >= 0, got -1$"),
        (
            ExponentialBackoff,
            {"jitter_factor": 1.5},
            ValueError,
            r"^jitter_factor must be <= 1, got 1.5$",
        ),
        (
            ExponentialBackoff,
            {"jitter_factor": -0.1},
            ValueError,
            r"^jitter_factor must be >= 0, got -0.1$",
        ),
        (ExponentialBackoff, {"base": "1"}, TypeError, r"^base must be a number, got '1'$"),
        (
            ExponentialBackoff,
            {"rng": 3},
            TypeError,
            r"^rng must be a random.Random or None, got 3$",
        ),
        (LinearBackoff, {"base": -1}, ValueError, r"^base must be >= 0, got -1$"),
        (FibonacciBackoff, {"base": 1, "jitter_factor": 2}, ValueError, r"^jitter_factor"),
        (ConstantBackoff, {"delay": -1}, ValueError, r"^delay must be >= 0, got -1$"),
        (FullJitterBackoff, {"multiplier": 0}, ValueError, r"^multiplier must be >= 1, got 0$"),
        (DecorrelatedJitterBackoff, {"base": 0}, ValueError, r"^base must be > 0, got 0$"),
        (
            DecorrelatedJitterBackoff,
            {"base": 2, "max_delay": 1},
            ValueError,
            r"^max_delay must be >= base \(2.0\), got 1.0$",
        ),
    ],
)
def test_bad_arguments(cls: Any, kwargs: dict[str, Any], error: type, message: str) -> None:
    """Bad arguments raise at construction, naming the parameter and the value."""
    with pytest.raises(error, match=message):
        cls(**kwargs)
