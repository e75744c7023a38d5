"""Replies and messages from Redis are untrusted: unit tests of the checks (no server)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio

coredis = pytest.importorskip("coredis")

from trio_resilience import CircuitBreaker, CircuitState, RetryBudget  # noqa: E402
from trio_resilience.redis import SharedState, _errors, _keys, _trust, escape  # noqa: E402
from trio_resilience.redis._keys import BreakerKeys, budget_key, channel, limiter_key  # noqa: E402


class Capture:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    warning = error = info


def state(*breakers: CircuitBreaker, budgets: tuple[RetryBudget, ...] = (), **kw: Any) -> Any:
    options: dict[str, Any] = {
        "prefix": "p",
        "sync_interval": 0.25,
        "share_counts": False,
        "permit_timeout": 0.05,
        "permit_lease": 30.0,
        "trip_quorum": 1,
        "logger": Capture(),
    }
    options.update(kw)
    return SharedState("redis://x", breakers, budgets, (), **options)


NOW_US = 1_800_000_000 * 1_000_000


def reply(*, version: int = 1, trips: list[Any] = (), changed: int = 1, **kw: Any) -> list[Any]:
    base = [NOW_US, version, 0, kw.get("closed", 0), kw.get("f", 0), kw.get("c", 0)]
    return [*base, kw.get("o", 0), changed, *trips]


def apply(shared: Any, entry: Any, value: Any) -> None:
    """Apply a sync reply as if it had just come back, with no round-trip time."""
    now = trio.current_time()
    shared._apply_breaker(entry, value, now, now)


def test_escaping_is_injective_and_keeps_one_hash_tag() -> None:
    """Names with colons, braces and percent signs get distinct, single-tag keys."""
    names = ["db", "db:probes", "{db}", "db%3Aprobes", "%", "}{", "a:b:c", "a|b"]
    tags = [BreakerKeys("p", n, 60000).tag for n in names]
    assert len(set(tags)) == len(names)
    for tag in tags:
        assert tag.count("{") == 1
        assert tag.count("}") == 1
        assert tag.count(":") == 1
    assert escape("a:{b}%") == "a%3A%7Bb%7D%25"
    assert budget_key("p", "x", 10000) == "{p:budget:x}:10000"
    assert limiter_key("p:q", "x") == "{p%3Aq:limiter:x}:tat"
    assert channel("p") == "p:events"
    assert BreakerKeys("p", "db", 60000).counts != BreakerKeys("p", "db", 1000).counts


def test_trust_helpers_refuse_what_they_should() -> None:
    """integer, text, reply_list and hint refuse wrong types, bounds and sizes."""
    assert _trust.integer(5) == 5
    assert _trust.integer(True) is None
    assert _trust.integer(5.0) is None
    assert _trust.integer(-1) is None
    assert _trust.integer(2**60) is None
    assert _trust.text(b"abc") == "abc"
    assert _trust.text(b"\xff") is None
    assert _trust.text(b"x" * 500) is None
    assert _trust.text(42) is None
    assert _trust.reply_list((1, 2), 2) == [1, 2]
    assert _trust.reply_list([1], 2) is None
    assert _trust.reply_list("ab", 1) is None
    assert _trust.hint(b"v2|db|o1") == ("db", "o1")
    assert _trust.hint("v2|db|o1") == ("db", "o1")
    for bad in (b"v1|db|o", b"v2|db", b"v2||o", b"v2|db|o|x", None, 3, b"[" * 600):
        assert _trust.hint(bad) is None


def test_down_errors_and_data_errors_are_told_apart() -> None:
    """Connection errors, time-outs and a closed pool's RuntimeError mean Redis is down;
    a ResponseError (WRONGTYPE, a script error) or garbage is a data error."""
    cx = coredis.exceptions
    for down in (
        cx.ConnectionError("x"),
        TimeoutError(),
        OSError(),
        trio.TooSlowError(),
        RuntimeError("pool closed"),
        cx.ClusterDownError("x"),
        ExceptionGroup("g", [OSError(), TimeoutError()]),
    ):
        assert _errors.is_down(down), down
    for data in (
        cx.ResponseError("WRONGTYPE"),
        cx.NoScriptError("x"),
        ValueError(),
        ExceptionGroup("g", [OSError(), ValueError()]),
    ):
        assert not _errors.is_down(data), data


async def test_malformed_replies_change_nothing_and_are_counted() -> None:
    """Short, mistyped, negative or float replies are refused; the breaker is unchanged."""
    breaker = CircuitBreaker("db", failure_threshold=1)
    shared = state(breaker)
    entry = shared._shared["db"]
    for bad in (
        None,
        "garbage",
        [1, 2, 3],
        reply(version=-1),
        [*reply()[:7], 2],
        [math.nan, *reply()[1:]],
        [*reply(), "origin"],  # not a whole triple
        [True, *reply()[1:]],
    ):
        apply(shared, entry, bad)
    assert breaker.state is CircuitState.CLOSED
    assert shared.statistics().malformed == 8
    logged = [kw for e, kw in shared._logger.events if e == "trio_resilience.redis.malformed"]
    assert len(logged) == 1  # once per second at most


async def test_trips_out_of_the_window_or_malformed_do_not_count() -> None:
    """A trip dated in the future, older than the window, or unparsable never opens."""
    breaker = CircuitBreaker("db", failure_window=10.0, recovery_timeout=5.0)
    shared = state(breaker)
    entry = shared._shared["db"]
    far = NOW_US + 5 * 1_000_000
    trips = [
        "old",
        NOW_US - 11 * 1_000_000,
        far,
        "future",
        NOW_US + 2 * 1_000_000,
        far,
        b"\xff",
        NOW_US,
        far,
        "bad",
        NOW_US,
        NOW_US - 1,  # until before trip
    ]
    apply(shared, entry, reply(trips=trips))
    assert breaker.state is CircuitState.CLOSED
    assert shared.statistics().malformed == 2
    apply(shared, entry, reply(version=2, trips=["ok", NOW_US, far]))
    assert breaker.state is CircuitState.OPEN
    assert 4.9 < breaker.retry_after <= 5.0


async def test_a_remote_deadline_is_capped_from_the_trip() -> None:
    """A trip's deadline is cut to the breaker's own longest open period from the trip."""
    breaker = CircuitBreaker("db", recovery_timeout=1.0)
    shared = state(breaker)
    entry = shared._shared["db"]
    offset_ref = trio.current_time()
    trip_us = NOW_US - 500_000  # half a second ago
    shared._apply_breaker(
        entry, reply(trips=["x", trip_us, trip_us + 10**15]), offset_ref, offset_ref
    )
    assert breaker.state is CircuitState.OPEN
    assert 0.45 < breaker.retry_after <= 0.5


async def test_shared_counts_trip_only_with_a_quorum_of_origins() -> None:
    """Cluster counts over the threshold trip a closed breaker only when failures came
    from at least trip_quorum processes."""
    breaker = CircuitBreaker("db", failure_threshold=3)
    shared = state(breaker, share_counts=True, trip_quorum=2)
    entry = shared._shared["db"]
    apply(shared, entry, reply(changed=0, f=5, c=5, o=1))
    assert breaker.state is CircuitState.CLOSED
    apply(shared, entry, reply(changed=0, f=5, c=5, o=2))
    assert breaker.state is CircuitState.OPEN


async def test_a_remote_close_applies_only_to_an_earlier_opening() -> None:
    """A close recorded before this breaker opened leaves it open; a later one closes it."""
    from trio_resilience.testing import set_breaker_state

    breaker = CircuitBreaker("db")
    shared = state(breaker)
    shared._attach()
    try:
        entry = shared._shared["db"]
        now = trio.current_time()
        offset = NOW_US / 1e6 - now
        set_breaker_state(breaker, "open")
        entry.opened_at = now
        early = round((now - 1 + offset) * 1e6)
        shared._apply_breaker(entry, reply(changed=0, closed=early), now, now)
        assert breaker.state is CircuitState.OPEN
        later = round((now + offset) * 1e6) + 1000
        entry.offset = None
        shared._apply_breaker(entry, reply(changed=0, closed=later), now, now)
        assert breaker.state is CircuitState.CLOSED
        assert shared.statistics().received == 1
    finally:
        shared._detach()


async def test_budget_replies_are_checked() -> None:
    """A budget reply that is short, mistyped or out of range is refused and counted."""
    budget = RetryBudget(name="api")
    shared = state(budgets=(budget,))
    for bad in (None, [1, 2, 3], [NOW_US, "x", 0, 0], [NOW_US, 1.5, 0, 0], [NOW_US, 2**60, 0, 0]):
        shared._apply_budget(budget, bad)
    assert shared.statistics().malformed == 5
    shared._apply_budget(budget, [NOW_US, 10, 0, 0])
    assert shared.statistics().malformed == 5


async def test_hints_wake_the_sync_only_for_shared_breakers_of_others() -> None:
    """A hint for a shared breaker from another origin wakes the sync; one's own, or
    one for another breaker, does not; garbage is counted."""
    shared = state(CircuitBreaker("db:x|y"))
    shared._hint({"data": f"v2|db%3Ax%7Cy|{shared.origin}"})
    shared._hint({"data": "v2|other|someone"})
    assert not shared._wake.is_set()
    shared._hint({"data": "v2|db%3Ax%7Cy|someone"})
    assert shared._wake.is_set()
    shared._hint("not a dict")
    shared._hint({"data": b"\x00" * 10_000})
    assert shared.statistics().malformed == 2


async def test_hints_of_long_names_carry_a_digest_that_fits() -> None:
    """A name whose escaped form passes 256 bytes is hinted by digest: the hint the
    library sends parses (it fits the 512-byte cap) and wakes the other sharer."""
    name = "a:" * 300
    sender, receiver = state(CircuitBreaker(name)), state(CircuitBreaker(name))
    entry = sender._shared[name]
    message = entry.hint + sender.origin
    assert len(message.encode()) <= _trust.MAX_MESSAGE
    assert _keys.hint_name(escape(name)).startswith("%h")
    assert _keys.hint_name("db%3Ax") == "db%3Ax"  # short names go as they are
    receiver._hint({"data": message.encode()})
    assert receiver._wake.is_set()
    assert receiver.statistics().malformed == 0


async def test_a_trip_answered_by_an_error_reply_is_sent_again() -> None:
    """A sync whose script answered an error (it may have stopped before recording the
    trip) keeps the trip pending; the next valid reply marks it sent."""
    breaker = CircuitBreaker("db", failure_threshold=1, recovery_timeout=30)
    shared = state(breaker)
    shared._attach()
    answers: list[Any] = [coredis.exceptions.ResponseError("script error"), None]

    async def pipeline(client: Any, commands: Any) -> list[Any]:
        answer = answers.pop(0)
        return [answer if answer is not None else [8, *reply(version=1, changed=0)]]

    async def fail() -> None:
        raise ZeroDivisionError

    shared._pipeline = pipeline
    shared._client = object()
    try:
        with pytest.raises(ZeroDivisionError):
            await breaker.call(fail)
        entry = shared._shared["db"]
        assert entry.event is not None
        await shared._sync()
        assert entry.event is not None  # not delivered: goes again
        assert shared.statistics().published == 0
        assert shared.statistics().malformed == 1
        await shared._sync()
        assert entry.event is None
        assert shared.statistics().published == 1
    finally:
        shared._detach()


def test_describe_survives_a_raising_repr() -> None:
    """A value whose repr raises is still described (for the malformed log)."""

    class Nasty:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert _errors.describe(Nasty()) == "<unrepresentable Nasty>"
    assert len(_errors.describe("x" * 1000)) == 200


def test_pending_releases_are_bounded() -> None:
    """However many releases wait for a sync, at most 10,000 are kept (oldest dropped)."""
    breaker = CircuitBreaker("db")
    shared = state(breaker)
    for i in range(10_005):
        shared.release(breaker, f"lease-{i}")
    assert len(shared._releases) == 10_000
    assert ("db", "lease-0") not in shared._releases
    assert ("db", "lease-10004") in shared._releases


def test_a_many_breaker_reply_is_cut_per_breaker() -> None:
    """The reply of the one-script-for-all sync is split by its lengths; a reply that
    does not add up gives None (malformed) for the breakers it cannot cover."""
    shared = state()
    assert shared._split([2, "a", "b", 1, "c"], 2) == [["a", "b"], ["c"]]
    assert shared._split([2, "a", "b", 5, "c"], 2) == [["a", "b"], None]
    assert shared._split([True, "a"], 1) == [None]
    assert shared._split(ValueError("x"), 2) == [None, None]
