"""Read the live policies' ``statistics()`` into metric families, at scrape time.

Both exporters (Prometheus, OpenTelemetry) are thin shells around :class:`Reader`:
it walks the weak registry of :mod:`trio_resilience._live`, reads each policy's
statistics defensively (a policy whose ``statistics()`` raises, or lacks a field, is
skipped or loses only that sample) and sums policies that share a name.

Nothing here runs per call: the policies count what they always count, and only a
scrape reads it.
"""

from __future__ import annotations

import math
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .. import _live

BREAKER_STATES = ("closed", "open", "half_open", "forced_open", "disabled")
"""Every value of the ``state`` label (the :class:`~trio_resilience.CircuitState` names)."""

BREAKER_OUTCOMES = {
    "success": "total_successes",
    "failure": "total_failures",
    "ignored": "total_ignored",
    "cancelled": "total_cancelled",
    "rejected": "total_rejected",
}
"""``outcome`` label -> the :class:`~trio_resilience.CircuitBreakerStatistics` field."""

_REASON = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_MAX_REASONS = 32


@dataclass(frozen=True, slots=True)
class Spec:
    """The fixed description of one metric family."""

    name: str
    type: Literal["gauge", "counter"]
    labels: tuple[str, ...]
    help: str
    kind: str
    """The registry kind it is read from."""


SPECS: tuple[Spec, ...] = (
    Spec(
        "trio_resilience_breaker_state",
        "gauge",
        ("breaker", "state"),
        "Breakers of this name in this state (1 for the current state of a single breaker).",
        "breaker",
    ),
    Spec(
        "trio_resilience_breaker_state_seconds",
        "gauge",
        ("breaker",),
        "Seconds since the exporter first saw the breaker in its current state.",
        "breaker",
    ),
    Spec(
        "trio_resilience_breaker_calls_total",
        "counter",
        ("breaker", "outcome"),
        "Calls through the breaker by outcome (rejected calls never reached the service).",
        "breaker",
    ),
    Spec(
        "trio_resilience_retry_attempts_total",
        "counter",
        ("retry", "kind"),
        "Attempts made by the retry policy: first attempts and retries.",
        "retry",
    ),
    Spec(
        "trio_resilience_retry_gave_up_total",
        "counter",
        ("retry", "reason"),
        "Calls on which the retry policy gave up, by reason.",
        "retry",
    ),
    Spec(
        "trio_resilience_shed_total",
        "counter",
        ("channel", "reason"),
        "Items shed by a shedding channel: refused sends (shed) and dropped items (evicted).",
        "channel",
    ),
    Spec(
        "trio_resilience_channel_buffer_used",
        "gauge",
        ("channel",),
        "Items in the shedding channel's buffer now.",
        "channel",
    ),
    Spec(
        "trio_resilience_channel_buffer_size",
        "gauge",
        ("channel",),
        "Capacity of the shedding channel's buffer.",
        "channel",
    ),
    Spec(
        "trio_resilience_budget_throttled_total",
        "counter",
        ("budget",),
        "Loop budget ticks that had to wait for the window.",
        "loop_budget",
    ),
    Spec(
        "trio_resilience_rate_limited_total",
        "counter",
        ("limiter",),
        "Acquisitions refused by the rate limiter.",
        "rate_limiter",
    ),
    Spec(
        "trio_resilience_concurrency_limit",
        "gauge",
        ("limiter",),
        "The adaptive concurrency limit now.",
        "concurrency",
    ),
)
"""Every family, in export order."""


@dataclass(slots=True)
class Family:
    """One metric family of one scrape: samples keyed by label values, summed by name."""

    spec: Spec
    samples: dict[tuple[str, ...], float] = field(default_factory=dict)

    def add(self, labels: tuple[str, ...], value: float) -> None:
        self.samples[labels] = self.samples.get(labels, 0.0) + value


def _number(value: Any) -> float | None:
    """A finite, non-negative float, or None for anything else (bool, NaN, str ...)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError):
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number


def _field(stats: Any, *names: str) -> float | None:
    """The first of ``names`` that ``stats`` has as a number."""
    for name in names:
        try:
            value = getattr(stats, name)
        except Exception:
            continue
        number = _number(value)
        if number is not None:
            return number
    return None


def _name(policy: Any) -> str | None:
    """The policy's name (a shedding channel's lives in its shared accounting)."""
    for path in (("name",), ("_acct", "name"), ("_state", "acct", "name"), ("acct", "name")):
        obj = policy
        try:
            for attr in path:
                obj = getattr(obj, attr)
        except Exception:
            continue
        if isinstance(obj, str):
            return obj
    return None


def _identity(kind: str, policy: Any) -> Any:
    """What two registered objects share when they are one thing (ends of one channel)."""
    if kind != "channel":
        return policy
    for path in (("_state", "acct"), ("_acct",), ("acct",)):
        obj = policy
        try:
            for attr in path:
                obj = getattr(obj, attr)
        except Exception:
            continue
        if obj is not None:
            return obj
    return policy


def _live_policies(kind: str) -> list[Any]:
    # Another thread (a scrape server) may read while the Trio thread registers.
    for _ in range(3):
        try:
            return _live.live(kind)
        except RuntimeError:
            continue
    return []


class Reader:
    """Read the live policies into :class:`Family` objects; thread-safe.

    Args:
        clock: seconds for ``trio_resilience_breaker_state_seconds`` (the wall clock:
            scrapes may run outside any ``trio.run``, in a server thread).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._since: weakref.WeakKeyDictionary[Any, tuple[str, float]]
        self._since = weakref.WeakKeyDictionary()

    def read(self, kinds: Iterable[str] | None = None) -> list[Family]:
        """The families of ``kinds`` (registry kinds; None: all), in :data:`SPECS` order."""
        wanted = None if kinds is None else set(kinds)
        families = {spec.name: Family(spec) for spec in SPECS}
        with self._lock:
            now = self.clock()
            for kind, reader in _READERS.items():
                if wanted is not None and kind not in wanted:
                    continue
                seen: set[int] = set()
                for policy in _live_policies(kind):
                    identity = _identity(kind, policy)
                    if id(identity) in seen:
                        continue
                    seen.add(id(identity))
                    name = _name(policy)
                    if name is None:
                        continue
                    try:
                        stats = policy.statistics()
                        reader(self, policy, name, stats, families, now)
                    except Exception:
                        continue  # one broken policy never breaks a scrape
        return [families[spec.name] for spec in SPECS if wanted is None or spec.kind in wanted]

    def _state_seconds(self, policy: Any, state: str, now: float) -> float:
        last = self._since.get(policy)  # listed policies are weakly referenceable
        if last is None or last[0] != state:
            last = (state, now)
            self._since[policy] = last
        return max(0.0, now - last[1])


_FamilyMap = dict[str, Family]


def _read_breaker(
    reader: Reader, policy: Any, name: str, stats: Any, fam: _FamilyMap, now: float
) -> None:
    state = str(getattr(stats, "state", ""))
    if state not in BREAKER_STATES:
        return
    family = fam["trio_resilience_breaker_state"]
    for candidate in BREAKER_STATES:
        family.add((name, candidate), 1.0 if candidate == state else 0.0)
    seconds = reader._state_seconds(policy, state, now)
    family = fam["trio_resilience_breaker_state_seconds"]
    old = family.samples.get((name,))
    family.samples[(name,)] = seconds if old is None else min(old, seconds)
    family = fam["trio_resilience_breaker_calls_total"]
    for outcome, attr in BREAKER_OUTCOMES.items():
        value = _field(stats, attr)
        if value is not None:
            family.add((name, outcome), value)


def _read_retry(
    reader: Reader, policy: Any, name: str, stats: Any, fam: _FamilyMap, now: float
) -> None:
    first = _field(stats, "calls", "first_attempts")
    retries = _field(stats, "retries")
    if retries is None:
        attempts = _field(stats, "attempts")
        if attempts is not None and first is not None:
            retries = max(0.0, attempts - first)
    family = fam["trio_resilience_retry_attempts_total"]
    if first is not None:
        family.add((name, "first"), first)
    if retries is not None:
        family.add((name, "retry"), retries)
    gave_up = getattr(stats, "gave_up", None)
    if isinstance(gave_up, Mapping):
        family = fam["trio_resilience_retry_gave_up_total"]
        for count, (reason, value) in enumerate(list(gave_up.items())):
            if count >= _MAX_REASONS:
                break
            number = _number(value)
            if isinstance(reason, str) and _REASON.match(reason) and number is not None:
                family.add((name, reason), number)


def _read_channel(
    reader: Reader, policy: Any, name: str, stats: Any, fam: _FamilyMap, now: float
) -> None:
    family = fam["trio_resilience_shed_total"]
    for reason in ("shed", "evicted"):
        value = _field(stats, reason)
        if value is not None:
            family.add((name, reason), value)
    used = _field(stats, "current_buffer_used")
    if used is not None:
        fam["trio_resilience_channel_buffer_used"].add((name,), used)
    size = _field(stats, "max_buffer_size")
    if size is not None:
        fam["trio_resilience_channel_buffer_size"].add((name,), size)


def _read_loop_budget(
    reader: Reader, policy: Any, name: str, stats: Any, fam: _FamilyMap, now: float
) -> None:
    value = _field(stats, "throttled")
    if value is not None:
        fam["trio_resilience_budget_throttled_total"].add((name,), value)


def _read_rate_limiter(
    reader: Reader, policy: Any, name: str, stats: Any, fam: _FamilyMap, now: float
) -> None:
    value = _field(stats, "rejected", "limited", "total_rejected", "rate_limited", "refused")
    if value is not None:
        fam["trio_resilience_rate_limited_total"].add((name,), value)


def _read_concurrency(
    reader: Reader, policy: Any, name: str, stats: Any, fam: _FamilyMap, now: float
) -> None:
    value = _field(policy, "limit")
    if value is None:
        value = _field(stats, "limit", "current_limit")
    if value is not None:
        fam["trio_resilience_concurrency_limit"].add((name,), value)


_READERS: dict[str, Callable[[Reader, Any, str, Any, _FamilyMap, float], None]] = {
    "breaker": _read_breaker,
    "retry": _read_retry,
    "channel": _read_channel,
    "loop_budget": _read_loop_budget,
    "rate_limiter": _read_rate_limiter,
    "concurrency": _read_concurrency,
}
