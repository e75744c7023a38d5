"""Backoff strategies: pure delay arithmetic with an injectable random.Random (no Trio here)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._validate import check_number

__all__ = [
    "Backoff",
    "ConstantBackoff",
    "DecorrelatedJitterBackoff",
    "ExponentialBackoff",
    "FibonacciBackoff",
    "FullJitterBackoff",
    "LinearBackoff",
]


class _Source(Protocol):
    def random(self) -> float: ...
    def uniform(self, a: float, b: float) -> float: ...


def _source(rng: random.Random | None) -> _Source:
    if rng is None:
        return random  # the module's functions use its global instance
    return rng


def _check_rng(rng: object) -> None:
    if rng is not None and not isinstance(rng, random.Random):
        raise TypeError(f"rng must be a random.Random or None, got {rng!r}")


_NON_NEGATIVE: dict[str, Any] = {"ge": 0}
_CAP: dict[str, Any] = {"ge": 0, "allow_inf": True}
_MULTIPLIER: dict[str, Any] = {"ge": 1}
_JITTER: dict[str, Any] = {"ge": 0, "le": 1}


def _validate(strategy: Any, **bounds: dict[str, Any]) -> None:
    """Check each named field of a frozen strategy (storing it as a float) and its rng."""
    for name, limits in bounds.items():
        object.__setattr__(strategy, name, check_number(name, getattr(strategy, name), **limits))
    _check_rng(strategy.rng)


def _jittered(d: float, jitter_factor: float, max_delay: float, src: _Source) -> float:
    """``min(max(d + uniform(-d*j, d*j), 0), max_delay)``, safe for huge or infinite d."""
    if jitter_factor:
        if d == math.inf:
            src.random()  # keep the stream aligned with the finite case
            return max_delay
        spread = d * jitter_factor
        d = d + src.uniform(-spread, spread)
    if d != d or d > max_delay:  # NaN only from inf arithmetic at absurd n
        return max_delay
    return d if d > 0.0 else 0.0


def _power(base: float, multiplier: float, exponent: int) -> float:
    """``base * multiplier ** exponent`` that saturates to inf instead of overflowing."""
    if base == 0.0:
        return 0.0
    try:
        return base * multiplier**exponent
    except OverflowError:
        return math.inf


class Backoff:
    """Base class of the immutable backoff strategies.

    :meth:`delays` returns a fresh, infinite iterator of the delays (in seconds)
    before retry 1, 2, 3, ... Every iterator of one strategy draws its jitter from the
    strategy's one ``rng``.
    """

    __slots__ = ()

    def delays(self) -> Iterator[float]:
        """Return a fresh iterator of the delays before retry 1, 2, 3, ..."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ExponentialBackoff(Backoff):
    """``base * multiplier**(n-1)``, jittered by ``±jitter_factor``, capped after jitter."""

    base: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter_factor: float = 0.3
    rng: random.Random | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _validate(
            self, base=_NON_NEGATIVE, multiplier=_MULTIPLIER, max_delay=_CAP, jitter_factor=_JITTER
        )

    def delays(self) -> Iterator[float]:
        src = _source(self.rng)
        base, multiplier, max_delay, jitter = (
            self.base,
            self.multiplier,
            self.max_delay,
            self.jitter_factor,
        )
        n = 0
        while True:
            yield _jittered(_power(base, multiplier, n), jitter, max_delay, src)
            n += 1


@dataclass(frozen=True, slots=True)
class LinearBackoff(Backoff):
    """``base * n``, jittered by ``±jitter_factor``, capped at ``max_delay``."""

    base: float
    max_delay: float = 30.0
    jitter_factor: float = 0.0
    rng: random.Random | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _validate(self, base=_NON_NEGATIVE, max_delay=_CAP, jitter_factor=_JITTER)

    def delays(self) -> Iterator[float]:
        src = _source(self.rng)
        n = 1
        while True:
            yield _jittered(self.base * n, self.jitter_factor, self.max_delay, src)
            n += 1


@dataclass(frozen=True, slots=True)
class FibonacciBackoff(Backoff):
    """``base * F(n)`` with F(1) = F(2) = 1, jittered, capped at ``max_delay``."""

    base: float
    max_delay: float = 30.0
    jitter_factor: float = 0.0
    rng: random.Random | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _validate(self, base=_NON_NEGATIVE, max_delay=_CAP, jitter_factor=_JITTER)

    def delays(self) -> Iterator[float]:
        src = _source(self.rng)
        a, b = 1, 1
        saturated = False
        while True:
            if saturated:
                d = math.inf
            else:
                try:
                    d = self.base * a if self.base else 0.0
                except OverflowError:
                    saturated = True
                    d = math.inf
                a, b = b, a + b
            yield _jittered(d, self.jitter_factor, self.max_delay, src)


@dataclass(frozen=True, slots=True)
class ConstantBackoff(Backoff):
    """The same ``delay`` every time, jittered by ``±jitter_factor``."""

    delay: float
    jitter_factor: float = 0.0
    rng: random.Random | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _validate(self, delay=_NON_NEGATIVE, jitter_factor=_JITTER)

    def delays(self) -> Iterator[float]:
        src = _source(self.rng)
        delay, jitter = self.delay, self.jitter_factor
        while True:
            yield _jittered(delay, jitter, math.inf, src)


@dataclass(frozen=True, slots=True)
class FullJitterBackoff(Backoff):
    """``uniform(0, min(max_delay, base * multiplier**(n-1)))`` (AWS "full jitter")."""

    base: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 30.0
    rng: random.Random | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _validate(self, base=_NON_NEGATIVE, multiplier=_MULTIPLIER, max_delay=_NON_NEGATIVE)

    def delays(self) -> Iterator[float]:
        src = _source(self.rng)
        n = 0
        while True:
            yield src.uniform(0.0, min(self.max_delay, _power(self.base, self.multiplier, n)))
            n += 1


@dataclass(frozen=True, slots=True)
class DecorrelatedJitterBackoff(Backoff):
    """``min(max_delay, uniform(base, previous * 3))``, ``previous`` starting at ``base``."""

    base: float = 0.1
    max_delay: float = 30.0
    rng: random.Random | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _validate(self, base={"gt": 0}, max_delay=_NON_NEGATIVE)
        if self.max_delay < self.base:
            raise ValueError(f"max_delay must be >= base ({self.base!r}), got {self.max_delay!r}")

    def delays(self) -> Iterator[float]:
        src = _source(self.rng)
        base, max_delay = self.base, self.max_delay
        previous = base
        while True:
            previous = min(max_delay, src.uniform(base, previous * 3))
            yield previous
