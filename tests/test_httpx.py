"""trio_resilience.httpx: ResilientTransport and parse_retry_after.

Two kinds of tests: the transport's decisions against ``httpx.MockTransport`` on an
autojump clock (exact virtual times), and its behaviour against a real ASGI app under
hypercorn on loopback (real sockets, real clock, short real waits only).
"""

from __future__ import annotations

import email.utils
import math
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trio_resilience import (
    BreakerRegistry,
    CircuitOpenError,
    CircuitState,
    ConstantBackoff,
    FullJitterBackoff,
    Retry,
    RetryBudget,
)
from trio_resilience.httpx import (
    DEFAULT_FAILURE_STATUSES,
    DEFAULT_RETRY_METHODS,
    DEFAULT_RETRY_STATUSES,
    FailedResponse,
    ResilientTransport,
    origin_of,
    parse_retry_after,
)

from .http_app import ScriptedApp, closed_port, serve_app

NOW = 1_700_000_000.0  # a fixed POSIX time for HTTP-date tests


# ----------------------------------------------------------------- parse_retry_after


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 7\t", 7.0),
        (b"5", 5.0),
        ("007", 7.0),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),
        ("Tuesday, 14-Nov-23 22:13:50 GMT", 30.0),
        ("Tue Nov 14 22:13:50 2023", 30.0),
    ],
)
def test_parse_retry_after_reads_both_forms(value: object, expected: float) -> None:
    """Delta-seconds and HTTP-dates (IMF-fixdate, RFC 850, asctime) give seconds from now."""
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        12,
        12.5,
        "",
        "   ",
        "-1",
        "+5",
        "1.5",
        "1e3",
        "0x10",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        "١٢",  # Arabic-Indic digits: str.isdigit() says yes, HTTP says no
        "²",
        "soon",
        "Wed, 31 Feb 2015 07:28:00 GMT",
        "Wed, 21 Oct 99999 07:28:00 GMT",
        "Wed, 21 Oct 2015 07:28:00 +9999",
        b"\xff\xfe",
        "1 2",
        "5, 6",
    ],
)
def test_parse_retry_after_gives_none_for_garbage(value: object) -> None:
    """Signs, fractions, exponents, nan/inf, non-ASCII digits and bad dates give None."""
    assert parse_retry_after(value, now=NOW) is None


def test_parse_retry_after_huge_delta_is_finite() -> None:
    """A delta too large for a float is a huge finite number, not inf or an error."""
    assert parse_retry_after("9" * 400) == sys.float_info.max
    assert parse_retry_after("9" * 100) == float("9" * 100)


def test_parse_retry_after_defaults_now_to_the_wall_clock() -> None:
    """Without ``now``, an HTTP-date is measured from time.time()."""
    import time

    date = email.utils.formatdate(time.time() + 3600, usegmt=True)
    delay = parse_retry_after(date)
    assert delay is not None
    assert 3590 < delay <= 3600


@pytest.mark.parametrize(
    ("now", "error", "message"),
    [
        ("1", TypeError, r"^now must be a number, got '1'$"),
        (True, TypeError, r"^now must be a number, got True$"),
        (math.nan, ValueError, r"^now must not be NaN, got nan$"),
        (math.inf, ValueError, r"^now must be finite, got inf$"),
    ],
)
def test_parse_retry_after_validates_now(now: object, error: type[Exception], message: str) -> None:
    """``now`` is a finite POSIX time; anything else is the caller's bug, not garbage."""
    with pytest.raises(error, match=message):
        parse_retry_after("5", now=now)  # type: ignore[arg-type]


@given(st.one_of(st.text(), st.binary(), st.integers(), st.floats(), st.none()))
def test_parse_retry_after_never_raises_on_garbage(value: object) -> None:
    """Any header value gives None or a finite delay >= 0, never an exception."""
    delay = parse_retry_after(value, now=NOW)
    assert delay is None or (math.isfinite(delay) and delay >= 0.0)


@given(
    st.from_regex(
        r"\A(Mon|Tue|Wed|Thu|Fri|Sat|Sun|[a-z]{0,4}), ?[0-9]{0,6} ?"
        r"(Jan|Feb|Oct|[A-Za-z]{0,4}) ?[0-9]{0,6} [0-9]{0,3}:[0-9]{0,3}:[0-9]{0,3} "
        r"(GMT|UTC|[+-][0-9]{0,5}|[A-Z]{0,4})\Z"
    )
)
def test_parse_retry_after_survives_date_like_garbage(value: str) -> None:
    """Nearly-dates (bad days, hours, years, zones) give None or a finite delay >= 0."""
    delay = parse_retry_after(value, now=NOW)
    assert delay is None or (math.isfinite(delay) and delay >= 0.0)


@given(st.integers(0, 10**30))
def test_parse_retry_after_reads_every_delta(seconds: int) -> None:
    """Every digit string is its own value in seconds."""
    assert parse_retry_after(str(seconds)) == float(seconds)


# ----------------------------------------------------------------- construction


def test_defaults_follow_the_contract() -> None:
    """3 attempts of full jitter, 429 and every 5xx fail, idempotent methods, 60 s cap."""
    t = ResilientTransport()
    assert isinstance(t.inner, httpx.AsyncHTTPTransport)
    assert isinstance(t.breakers, BreakerRegistry)
    assert t.retry.attempts == 3
    assert isinstance(t.retry.backoff, FullJitterBackoff)
    assert t.budget is None
    assert t.failure_statuses == DEFAULT_FAILURE_STATUSES == {429, *range(500, 600)}
    assert 404 not in t.failure_statuses
    assert t.retry_statuses == DEFAULT_RETRY_STATUSES == {429, 502, 503, 504}
    assert t.retry_methods == DEFAULT_RETRY_METHODS
    assert t.retry_methods == {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}
    assert t.max_retry_after == 60.0
    assert t.hint_jitter == 0.1


def test_budget_defaults_to_the_retrys() -> None:
    """Without ``budget``, the Retry's own budget is used; the same one twice is fine."""
    budget = RetryBudget()
    assert ResilientTransport(retry=Retry(budget=budget)).budget is budget
    assert ResilientTransport(retry=Retry(budget=budget), budget=budget).budget is budget
    other = RetryBudget()
    assert ResilientTransport(retry=Retry(), budget=other).budget is other


def test_methods_are_normalised_to_upper_case() -> None:
    """retry_methods=["get"] retries GET."""
    assert ResilientTransport(retry_methods=["get", "Put"]).retry_methods == {"GET", "PUT"}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"inner": object()}, TypeError, r"^inner must be an httpx.AsyncBaseTransport or None"),
        ({"breakers": {}}, TypeError, r"^breakers must be a BreakerRegistry or None, got \{\}$"),
        ({"retry": 3}, TypeError, r"^retry must be a Retry or None, got 3$"),
        ({"budget": 1.0}, TypeError, r"^budget must be a RetryBudget or None, got 1.0$"),
        ({"rng": 1}, TypeError, r"^rng must be a random.Random or None, got 1$"),
        ({"failure_statuses": 500}, TypeError, r"^failure_statuses must be a collection"),
        ({"failure_statuses": "500"}, TypeError, r"^failure_statuses must be a collection"),
        ({"failure_statuses": [True]}, TypeError, r"^failure_statuses must hold ints, got True$"),
        ({"retry_statuses": [5.0]}, TypeError, r"^retry_statuses must hold ints, got 5.0$"),
        ({"retry_statuses": [99]}, ValueError, r"^retry_statuses must hold HTTP .* got 99$"),
        ({"failure_statuses": [600]}, ValueError, r"^failure_statuses must hold HTTP .*600$"),
        ({"retry_methods": "GET"}, TypeError, r"^retry_methods must be a collection of str"),
        ({"retry_methods": [1]}, TypeError, r"^retry_methods must hold str, got 1$"),
        ({"retry_methods": [""]}, ValueError, r"^retry_methods must hold HTTP method names"),
        ({"retry_methods": ["G T"]}, ValueError, r"^retry_methods must hold HTTP method names"),
        ({"max_retry_after": -1}, ValueError, r"^max_retry_after must be >= 0, got -1$"),
        ({"max_retry_after": math.nan}, ValueError, r"^max_retry_after must not be NaN, got nan$"),
        ({"max_retry_after": "1"}, TypeError, r"^max_retry_after must be a number, got '1'$"),
        ({"hint_jitter": 1.5}, ValueError, r"^hint_jitter must be <= 1, got 1.5$"),
        ({"hint_jitter": math.nan}, ValueError, r"^hint_jitter must not be NaN, got nan$"),
        ({"hint_jitter": False}, TypeError, r"^hint_jitter must be a number, got False$"),
        ({"logger": 1}, TypeError, r"^logger must have sync info/warning/error methods"),
    ],
)
def test_arguments_are_validated_at_construction(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A wrong type raises TypeError, a wrong value ValueError naming the parameter."""
    with pytest.raises(error, match=message):
        ResilientTransport(**kwargs)


def test_two_different_budgets_are_refused() -> None:
    """``budget`` and ``retry.budget`` must not disagree."""
    with pytest.raises(ValueError, match=r"^budget must be retry.budget when both are given"):
        ResilientTransport(retry=Retry(budget=RetryBudget()), budget=RetryBudget())


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://example.org/a?b", "http://example.org:80"),
        ("https://Example.ORG/", "https://example.org:443"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("https://[::1]:8443/x", "https://[::1]:8443"),
        ("wss://example.org/", "wss://example.org:443"),
    ],
)
def test_breakers_are_keyed_by_scheme_host_and_port(url: str, origin: str) -> None:
    """Default ports are filled in, hosts lower-cased, IPv6 hosts bracketed."""
    assert origin_of(httpx.URL(url)) == origin
    t = ResilientTransport()
    assert t.breaker_for(url).name == origin
    assert t.breaker_for(httpx.URL(url)) is t.breaker_for(url)


def test_import_without_httpx_names_the_extra() -> None:
    """Without httpx the module fails with an ImportError naming the extra; the core never
    imports httpx."""
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import trio_resilience\n"
        "assert 'trio_resilience.httpx' not in sys.modules\n"
        "try:\n"
        "    import trio_resilience.httpx\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "pip install 'trio-resilience[httpx]'" in out


# ----------------------------------------------------------------- decisions (mock transport)


Handler = Callable[[httpx.Request], Any]


class Recorder:
    """A MockTransport handler answering from a script, recording the time of each request."""

    def __init__(self, *answers: int | tuple[int, dict[str, str]] | Exception) -> None:
        self.answers = list(answers)
        self.times: list[float] = []
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.times.append(trio.current_time())
        self.requests.append(request)
        await trio.lowlevel.checkpoint()
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, tuple):
            return httpx.Response(answer[0], headers=answer[1])
        return httpx.Response(answer)


def mock(recorder: Recorder, **kwargs: Any) -> ResilientTransport:
    kwargs.setdefault("retry", Retry(attempts=3, backoff=ConstantBackoff(1.0)))
    return ResilientTransport(httpx.MockTransport(recorder), **kwargs)


URL = "http://service.test/x"


async def test_a_healthy_response_passes_once(autojump_clock: trio.testing.MockClock) -> None:
    """A 200 is returned after one attempt, counted as a success."""
    rec = Recorder(200)
    t = mock(rec)
    async with httpx.AsyncClient(transport=t) as client:
        response = await client.get(URL)
    assert response.status_code == 200
    assert rec.times == [0.0]
    stats = t.breaker_for(URL).statistics()
    assert (stats.total_successes, stats.total_failures) == (1, 0)


@pytest.mark.parametrize(("status", "failed"), [(404, False), (400, False), (429, True)])
async def test_statuses_count_for_the_breaker(
    autojump_clock: trio.testing.MockClock, status: int, failed: bool
) -> None:
    """A 404 is a success, a 429 a failure; both reach the caller when not retried."""
    rec = Recorder(status)
    t = mock(rec, retry_statuses=())
    async with httpx.AsyncClient(transport=t) as client:
        response = await client.get(URL)
    assert response.status_code == status
    stats = t.breaker_for(URL).statistics()
    assert stats.total_failures == int(failed)
    assert stats.total_successes == int(not failed)


async def test_5xx_is_a_failure_and_still_reaches_the_caller(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 500 (not retried by default) counts as a failure and is returned as is."""
    rec = Recorder(500)
    t = mock(rec)
    async with httpx.AsyncClient(transport=t) as client:
        response = await client.get(URL)
    assert response.status_code == 500
    assert len(rec.times) == 1
    assert t.breaker_for(URL).statistics().total_failures == 1


async def test_retry_statuses_are_retried_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """502, 503 then 200: three attempts, one backoff delay apart, the 200 returned."""
    rec = Recorder(502, 503, 200)
    t = mock(rec)
    async with httpx.AsyncClient(transport=t) as client:
        response = await client.get(URL)
    assert response.status_code == 200
    assert rec.times == [0.0, 1.0, 2.0]
    stats = t.breaker_for(URL).statistics()
    assert (stats.total_failures, stats.total_successes) == (2, 1)


async def test_the_last_retried_response_reaches_the_caller(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """When attempts run out, the last 503 is returned (not an exception), and logged."""
    rec = Recorder(503)
    t = mock(rec, retry=Retry(attempts=2, backoff=ConstantBackoff(1.0), name="api"))
    async with httpx.AsyncClient(transport=t) as client:
        response = await client.get(URL)
    assert response.status_code == 503
    assert rec.times == [0.0, 1.0]
    assert logs == [
        {
            "event": "trio_resilience.retry.scheduled",
            "log_level": "warning",
            "retry": "api",
            "attempt": 1,
            "delay": 1.0,
            "error": "status 503",
            "method": "GET",
            "origin": "http://service.test:80",
        },
        {
            "event": "trio_resilience.retry.gave_up",
            "log_level": "error",
            "retry": "api",
            "attempts": 2,
            "elapsed": 1.0,
            "error": "status 503",
            "reason": "attempts",
            "method": "GET",
            "origin": "http://service.test:80",
        },
    ]


async def test_retry_after_seconds_replaces_the_backoff_jittered_upward(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Retry-After: 7 waits 7 * (1 + hint_jitter * u) with u from the injected rng."""
    rec = Recorder((503, {"Retry-After": "7"}), 200)
    t = mock(rec, rng=random.Random(5), hint_jitter=0.5)
    async with httpx.AsyncClient(transport=t) as client:
        await client.get(URL)
    u = random.Random(5).random()
    assert rec.times[1] == pytest.approx(7.0 * (1 + 0.5 * u), abs=1e-9)
    assert 7.0 <= rec.times[1] <= 10.5


async def test_retry_after_is_capped_before_the_jitter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Retry-After: 3600 with max_retry_after=2 waits in [2, 2.2] (jitter 0.1 on the cap)."""
    rec = Recorder((429, {"Retry-After": "3600"}), 200)
    t = mock(rec, max_retry_after=2.0, rng=random.Random(1))
    async with httpx.AsyncClient(transport=t) as client:
        assert (await client.get(URL)).status_code == 200
    u = random.Random(1).random()
    assert rec.times[1] == pytest.approx(2.0 * (1 + 0.1 * u), abs=1e-9)


async def test_retry_after_http_date_uses_the_wall_clock(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HTTP-date 4 s after the (wall-clock) now waits 4 s of Trio time."""
    import trio_resilience.httpx as module

    monkeypatch.setattr(module.time, "time", lambda: NOW)
    date = email.utils.formatdate(NOW + 4, usegmt=True)
    rec = Recorder((503, {"Retry-After": date}), 200)
    t = mock(rec, hint_jitter=0.0)
    async with httpx.AsyncClient(transport=t) as client:
        await client.get(URL)
    assert rec.times == [0.0, 4.0]


async def test_an_infinite_cap_waits_as_long_as_the_server_asks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """max_retry_after=inf: Retry-After: 3000 waits 3000 s (within max_total_duration)."""
    rec = Recorder((503, {"Retry-After": "3000"}), 200)
    retry = Retry(backoff=ConstantBackoff(1.0), max_total_duration=None)
    t = mock(rec, retry=retry, max_retry_after=math.inf, hint_jitter=0.0)
    async with httpx.AsyncClient(transport=t) as client:
        assert (await client.get(URL)).status_code == 200
    assert rec.times == [0.0, 3000.0]
    huge = Recorder((503, {"Retry-After": "9" * 400}), 200)
    t = mock(huge, retry=retry, max_retry_after=math.inf, rng=random.Random(0))
    async with httpx.AsyncClient(transport=t) as client:
        assert (await client.get(URL)).status_code == 503  # an endless wait: given up at once
    assert trio.current_time() == 3000.0


async def test_garbage_retry_after_keeps_the_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Retry-After: soon is ignored: the backoff's 1 s is used."""
    rec = Recorder((503, {"Retry-After": "soon"}), 200)
    t = mock(rec)
    async with httpx.AsyncClient(transport=t) as client:
        await client.get(URL)
    assert rec.times == [0.0, 1.0]


async def test_a_retry_past_the_deadline_is_not_made(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """Retry-After longer than the caller's deadline: the 503 is returned at once."""
    rec = Recorder((503, {"Retry-After": "30"}), 200)
    t = mock(rec)
    async with httpx.AsyncClient(transport=t) as client:
        with trio.fail_after(10):
            response = await client.get(URL)
    assert response.status_code == 503
    assert trio.current_time() == 0.0
    assert logs[-1]["reason"] == "deadline"


async def test_max_total_duration_bounds_the_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No retry starts whose delay would end past the Retry's max_total_duration."""
    rec = Recorder(503)
    t = mock(rec, retry=Retry(attempts=None, backoff=ConstantBackoff(4.0), max_total_duration=10))
    async with httpx.AsyncClient(transport=t) as client:
        response = await client.get(URL)
    assert response.status_code == 503
    assert rec.times == [0.0, 4.0, 8.0]


async def test_post_is_not_retried_after_it_was_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A POST that got a 503 or a read error is not sent again."""
    rec = Recorder(503)
    t = mock(rec)
    async with httpx.AsyncClient(transport=t) as client:
        assert (await client.post(URL, content=b"order")).status_code == 503
        rec.answers = [httpx.ReadError("reset")]
        with pytest.raises(httpx.ReadError):
            await client.post(URL, content=b"order")
    assert len(rec.times) == 2


async def test_post_is_retried_when_never_sent(autojump_clock: trio.testing.MockClock) -> None:
    """Connect errors and pool timeouts are retried whatever the method."""
    rec = Recorder(httpx.ConnectError("refused"), httpx.PoolTimeout("full"), 201)
    t = mock(rec)
    async with httpx.AsyncClient(transport=t) as client:
        response = await client.post(URL, content=b"order")
    assert response.status_code == 201
    assert rec.times == [0.0, 1.0, 2.0]
    assert [r.content for r in rec.requests] == [b"order"] * 3


async def test_streamed_bodies_are_retried_only_when_never_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A PUT with a one-shot async body is not resent after a 503, but after a connect error."""

    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    rec = Recorder(503)
    t = mock(rec)
    async with httpx.AsyncClient(transport=t) as client:
        assert (await client.put(URL, content=body())).status_code == 503
        assert len(rec.times) == 1
        rec.answers = [httpx.ConnectTimeout("slow"), 200]
        assert (await client.put(URL, content=body())).status_code == 200
    assert len(rec.times) == 3


async def test_errors_that_are_not_transient_are_not_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An unsupported scheme (or any non-transport error) is raised after one attempt."""
    rec = Recorder(httpx.UnsupportedProtocol("gopher"))
    t = mock(rec)
    async with httpx.AsyncClient(transport=t) as client:
        with pytest.raises(httpx.UnsupportedProtocol) as info:
            await client.get(URL)
    assert len(rec.times) == 1
    assert not getattr(info.value, "__notes__", [])


async def test_retries_ending_on_an_error_reraise_it_with_a_note(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three read timeouts: the third is raised, noting the attempts and the time."""
    rec = Recorder(httpx.ReadTimeout("slow"))
    t = mock(rec)
    async with httpx.AsyncClient(transport=t) as client:
        with pytest.raises(httpx.ReadTimeout) as info:
            await client.get(URL)
    assert rec.times == [0.0, 1.0, 2.0]
    assert info.value.__notes__ == [
        "trio_resilience: ResilientTransport gave up on GET http://service.test:80 after "
        "3 attempts over 2.000s: no attempts left"
    ]


async def test_the_retrys_retry_on_narrows_what_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Retry(retry_on=httpx.ConnectError) does not retry read errors."""
    rec = Recorder(httpx.ReadError("reset"), 200)
    t = mock(rec, retry=Retry(retry_on=httpx.ConnectError, backoff=ConstantBackoff(1.0)))
    async with httpx.AsyncClient(transport=t) as client:
        with pytest.raises(httpx.ReadError):
            await client.get(URL)
    assert len(rec.times) == 1


async def test_a_non_idempotent_retry_after_a_never_sent_one_gives_up_noted(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """POST: a connect error is retried, the read error that follows is not (noted)."""
    rec = Recorder(httpx.ConnectError("refused"), httpx.ReadError("reset"))
    t = mock(rec)
    async with httpx.AsyncClient(transport=t) as client:
        with pytest.raises(httpx.ReadError) as info:
            await client.post(URL, content=b"x")
    assert len(rec.times) == 2
    assert "the request was sent and is not idempotent" in info.value.__notes__[0]
    assert logs[-1]["reason"] == "not_retryable"


async def test_a_shared_budget_caps_retries(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """With an empty RetryBudget the 503 is returned at once, counted as refused."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.0)
    rec = Recorder(503, 200)
    t = mock(rec, budget=budget)
    async with httpx.AsyncClient(transport=t) as client:
        assert (await client.get(URL)).status_code == 503
    assert len(rec.times) == 1
    stats = budget.statistics()
    assert (stats.deposits, stats.withdrawals, stats.rejected) == (1, 0, 1)
    assert logs[-1]["reason"] == "budget"


async def test_a_budget_token_pays_for_each_retry(autojump_clock: trio.testing.MockClock) -> None:
    """Each request deposits, each retry withdraws one token."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0)
    rec = Recorder(503, 200)
    t = mock(rec, budget=budget)
    async with httpx.AsyncClient(transport=t) as client:
        assert (await client.get(URL)).status_code == 200
    stats = budget.statistics()
    assert (stats.deposits, stats.withdrawals) == (1, 1)


async def cancelled_at(when: float, client: httpx.AsyncClient) -> trio.CancelScope:
    """GET URL in a scope that another task cancels at ``when`` (no deadline to see)."""
    scope = trio.CancelScope()

    async def cancel() -> None:
        await trio.sleep(when)
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel)
        with scope:
            await client.get(URL)
    return scope


async def test_a_cancelled_backoff_sleep_sends_nothing_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelled while sleeping before a retry: Cancelled propagates, no further attempt."""
    rec = Recorder(503)
    t = mock(rec, budget=RetryBudget())
    async with httpx.AsyncClient(transport=t) as client:
        scope = await cancelled_at(0.5, client)
    assert scope.cancelled_caught
    assert trio.current_time() == 0.5
    assert rec.times == [0.0]


async def test_zero_backoff_skips_the_sleeps(autojump_clock: trio.testing.MockClock) -> None:
    """Inside testing.zero_backoff(), even a Retry-After retry is immediate."""
    from trio_resilience.testing import zero_backoff

    rec = Recorder((503, {"Retry-After": "9"}), 503, 200)
    t = mock(rec)
    async with httpx.AsyncClient(transport=t) as client:
        with zero_backoff():
            assert (await client.get(URL)).status_code == 200
    assert rec.times == [0.0, 0.0, 0.0]


async def test_a_retried_body_that_fails_to_read_is_closed_anyway(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 503 whose body breaks while drained is closed and the retry goes on."""
    closed: list[bool] = []

    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            raise httpx.ReadError("reset")
            yield b""  # pragma: no cover

        async def aclose(self) -> None:
            closed.append(True)

    answers = [
        httpx.Response(503, headers={"content-length": "10"}, stream=Broken()),
        httpx.Response(200),
    ]

    async def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    t = ResilientTransport(httpx.MockTransport(handler), retry=Retry(backoff=ConstantBackoff(1)))
    async with httpx.AsyncClient(transport=t) as client:
        assert (await client.get(URL)).status_code == 200
    assert closed == [True]


@pytest.mark.skipif(
    not hasattr(RetryBudget, "give_back"), reason="RetryBudget.give_back() is wave 2 (core)"
)
async def test_a_cancelled_backoff_sleep_gives_the_token_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelled while sleeping before a retry: the withdrawn token is returned."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=1.0, window=10.0)
    rec = Recorder(503)
    t = mock(rec, budget=budget)
    async with httpx.AsyncClient(transport=t) as client:
        assert (await cancelled_at(0.5, client)).cancelled_caught
    assert budget.statistics().balance == 10.0


async def test_cancellation_is_never_retried_nor_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request cancelled by the caller's scope counts nothing and is not retried."""

    async def slow(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    t = ResilientTransport(httpx.MockTransport(slow))
    async with httpx.AsyncClient(transport=t) as client:
        with trio.move_on_after(3) as scope:
            await client.get(URL)
    assert scope.cancelled_caught
    assert trio.current_time() == 3.0
    stats = t.breaker_for(URL).statistics()
    assert (stats.total_failures, stats.total_successes) == (0, 0)


async def test_no_retry_is_slept_for_while_the_breaker_stays_open(
    autojump_clock: trio.testing.MockClock, logs: list[dict[str, Any]]
) -> None:
    """A 503 that opens the breaker is returned at once: the retry would be rejected."""
    rec = Recorder(503, 200)
    t = mock(rec, breakers=BreakerRegistry(failure_threshold=1, recovery_timeout=30.0))
    async with httpx.AsyncClient(transport=t) as client:
        assert (await client.get(URL)).status_code == 503
        assert trio.current_time() == 0.0
        assert logs[-1]["reason"] == "circuit_open"
        with pytest.raises(CircuitOpenError) as info:
            await client.get(URL)
    assert info.value.name == "http://service.test:80"
    assert len(rec.times) == 1


async def test_a_retry_rejected_after_its_sleep_raises_circuit_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Another request opens the breaker during the sleep: CircuitOpenError, nothing sent."""
    rec = Recorder(503)
    t = mock(rec, breakers=BreakerRegistry(failure_threshold=2))
    errors: list[BaseException] = []

    async def first(client: httpx.AsyncClient) -> None:
        try:
            await client.get(URL)  # 503 at 0, sleeps until 1
        except CircuitOpenError as exc:
            errors.append(exc)

    async with httpx.AsyncClient(transport=t) as client, trio.open_nursery() as nursery:
        nursery.start_soon(first, client)
        await trio.sleep(0.5)
        assert (await client.get(URL)).status_code == 503  # opens it
    assert [type(e) for e in errors] == [CircuitOpenError]
    assert rec.times == [0.0, 0.5]


async def test_an_open_breaker_rejects_before_the_inner_transport(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A forced-open host breaker raises CircuitOpenError; the inner transport is not called."""
    rec = Recorder(200)
    t = mock(rec)
    t.breaker_for(URL).force_open()
    async with httpx.AsyncClient(transport=t) as client:
        with pytest.raises(CircuitOpenError) as info:
            await client.get(URL)
    assert info.value.state is CircuitState.FORCED_OPEN
    assert rec.times == []


async def test_failing_statuses_raise_failed_response_inside_the_breaker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The breaker sees a FailedResponse (an httpx.HTTPStatusError) carrying the response."""
    seen: list[BaseException] = []
    rec = Recorder(500)
    registry = BreakerRegistry(failure_on=lambda e: seen.append(e) or True)
    t = mock(rec, breakers=registry)
    async with httpx.AsyncClient(transport=t) as client:
        await client.get(URL)
    (error,) = seen
    assert isinstance(error, FailedResponse)
    assert isinstance(error, httpx.HTTPStatusError)
    assert error.response.status_code == 500
    assert str(error) == "500 from http://service.test:80"


async def test_aclose_closes_the_inner_transport() -> None:
    """Closing the client closes the wrapped transport."""
    closed: list[bool] = []

    class Inner(httpx.AsyncBaseTransport):
        async def aclose(self) -> None:
            closed.append(True)

    async with httpx.AsyncClient(transport=ResilientTransport(Inner())):
        pass
    assert closed == [True]


def test_repr_shows_hosts_and_retry() -> None:
    """The repr names the number of hosts seen and the retry policy."""
    t = ResilientTransport()
    t.breaker_for("http://a.test/")
    assert repr(t) == "<ResilientTransport 1 hosts retry='httpx' attempts=3>"


# ----------------------------------------------------------------- a real server on loopback


@pytest.fixture
async def app(nursery: trio.Nursery) -> tuple[ScriptedApp, str]:
    """A ScriptedApp served by hypercorn on a free loopback port, and its base URL."""
    scripted = ScriptedApp()
    base: str = await nursery.start(serve_app, scripted)
    return scripted, base


def fast_retry(attempts: int = 3) -> Retry:
    return Retry(attempts=attempts, backoff=ConstantBackoff(0.001))


async def test_loopback_outage_opens_the_breaker_then_rejects_without_connecting(
    app: tuple[ScriptedApp, str],
) -> None:
    """500s reach the caller until the breaker opens; then no request reaches the server."""
    scripted, base = app
    scripted.status = 500
    t = ResilientTransport(breakers=BreakerRegistry(failure_threshold=3), retry=fast_retry())
    async with httpx.AsyncClient(transport=t) as client:
        for _ in range(3):
            assert (await client.get(base)).status_code == 500
        with pytest.raises(CircuitOpenError) as info:
            await client.get(base)
    assert info.value.name == origin_of(httpx.URL(base))
    assert scripted.requests == 3
    assert len(scripted.clients) == 1


async def test_loopback_circuit_open_before_any_connection(
    app: tuple[ScriptedApp, str],
) -> None:
    """A fresh client on an open breaker opens no connection at all."""
    scripted, base = app
    t = ResilientTransport()
    t.breaker_for(base).force_open()
    async with httpx.AsyncClient(transport=t) as client:
        with pytest.raises(CircuitOpenError):
            await client.get(base)
    assert scripted.requests == 0
    assert scripted.clients == set()
    assert isinstance(t.inner, httpx.AsyncHTTPTransport)
    assert t.inner._pool.connections == []


async def test_loopback_503_with_retry_after_seconds(app: tuple[ScriptedApp, str]) -> None:
    """503 + Retry-After: 1 is retried no sooner than 1 s later; the 200 is returned."""
    scripted, base = app
    scripted.script.append((503, [(b"retry-after", b"1")]))
    t = ResilientTransport(retry=fast_retry(), rng=random.Random(0))
    async with httpx.AsyncClient(transport=t) as client:
        start = trio.current_time()
        response = await client.get(base)
        elapsed = trio.current_time() - start
    assert response.status_code == 200
    assert scripted.requests == 2
    assert 1.0 <= elapsed < 3.0


async def test_loopback_503_with_retry_after_date(app: tuple[ScriptedApp, str]) -> None:
    """503 + Retry-After as an HTTP-date 2 s ahead: retried about 1-2 s later."""
    import time

    scripted, base = app
    date = email.utils.formatdate(time.time() + 2, usegmt=True).encode()
    scripted.script.append((503, [(b"retry-after", date)]))
    t = ResilientTransport(retry=fast_retry(), hint_jitter=0.0)
    async with httpx.AsyncClient(transport=t) as client:
        start = trio.current_time()
        response = await client.get(base)
        elapsed = trio.current_time() - start
    assert response.status_code == 200
    assert 0.9 <= elapsed < 4.0


async def test_loopback_retry_after_is_capped(app: tuple[ScriptedApp, str]) -> None:
    """Retry-After: 3600 with max_retry_after=0.2 waits 0.2-0.22 s, not an hour."""
    scripted, base = app
    scripted.script.append((429, [(b"retry-after", b"3600")]))
    t = ResilientTransport(retry=fast_retry(), max_retry_after=0.2)
    async with httpx.AsyncClient(transport=t) as client:
        start = trio.current_time()
        response = await client.get(base)
        elapsed = trio.current_time() - start
    assert response.status_code == 200
    assert 0.2 <= elapsed < 2.0


async def test_loopback_hang_is_bounded_by_the_callers_scope(
    app: tuple[ScriptedApp, str],
) -> None:
    """A server that never answers: move_on_after(0.3) ends the request; nothing counted."""
    scripted, base = app
    t = ResilientTransport(retry=fast_retry())
    async with httpx.AsyncClient(transport=t) as client:
        start = trio.current_time()
        with trio.move_on_after(0.3) as scope:
            await client.get(base + "/hang")
        elapsed = trio.current_time() - start
    assert scope.cancelled_caught
    assert 0.3 <= elapsed < 2.0
    assert scripted.requests == 1
    stats = t.breaker_for(base).statistics()
    assert (stats.total_failures, stats.total_successes) == (0, 0)


async def test_loopback_refused_connections_are_retried_then_raised() -> None:
    """A closed port: every attempt is refused (also for POST), then ConnectError is raised."""
    base = f"http://127.0.0.1:{closed_port()}"
    t = ResilientTransport(retry=fast_retry(), breakers=BreakerRegistry(failure_threshold=None))
    async with httpx.AsyncClient(transport=t) as client:
        for method in ("GET", "POST"):
            with pytest.raises(httpx.ConnectError) as info:
                await client.request(method, base)
            assert "after 3 attempts" in info.value.__notes__[-1]
    assert t.breaker_for(base).statistics().total_failures == 6


async def test_loopback_recovery_after_an_outage(app: tuple[ScriptedApp, str]) -> None:
    """Open on failures, half-open after recovery_timeout, closed on the first success."""
    scripted, base = app
    scripted.status = 500
    registry = BreakerRegistry(failure_threshold=2, recovery_timeout=0.2, success_threshold=1)
    t = ResilientTransport(breakers=registry, retry=fast_retry())
    async with httpx.AsyncClient(transport=t) as client:
        for _ in range(2):
            await client.get(base)
        with pytest.raises(CircuitOpenError):
            await client.get(base)
        scripted.status = 200
        await trio.sleep(0.25)
        assert (await client.get(base)).status_code == 200
    assert t.breaker_for(base).state is CircuitState.CLOSED


async def test_loopback_one_failing_host_never_rejects_another(nursery: trio.Nursery) -> None:
    """Two servers: the failing one's breaker opens, the healthy one's requests all pass."""
    sick, healthy = ScriptedApp(), ScriptedApp()
    sick.status = 503
    sick_url = await nursery.start(serve_app, sick)
    healthy_url = await nursery.start(serve_app, healthy)
    t = ResilientTransport(breakers=BreakerRegistry(failure_threshold=3), retry=fast_retry())
    async with httpx.AsyncClient(transport=t) as client:
        assert (await client.get(sick_url)).status_code == 503  # 3 failed attempts: open
        for _ in range(5):
            with pytest.raises(CircuitOpenError):
                await client.get(sick_url)
            assert (await client.get(healthy_url)).status_code == 200
    assert t.breaker_for(sick_url).state is CircuitState.OPEN
    assert t.breaker_for(healthy_url).state is CircuitState.CLOSED
    assert (sick.requests, healthy.requests) == (3, 5)


async def test_loopback_post_is_not_retried_after_send(app: tuple[ScriptedApp, str]) -> None:
    """A POST answered 503 reaches the server once; a GET is sent three times."""
    scripted, base = app
    scripted.status = 503
    t = ResilientTransport(retry=fast_retry(), breakers=BreakerRegistry(failure_threshold=None))
    async with httpx.AsyncClient(transport=t) as client:
        assert (await client.post(base, content=b"order")).status_code == 503
        assert (await client.get(base)).status_code == 503
    assert scripted.methods == ["POST", "GET", "GET", "GET"]


async def test_loopback_no_leaked_connections_after_200_retried_requests(
    app: tuple[ScriptedApp, str],
) -> None:
    """200 GETs each answered 503 then 200 reuse one pooled connection, idle at the end."""
    scripted, base = app
    scripted.body_size = 4096
    t = ResilientTransport(retry=fast_retry(), breakers=BreakerRegistry(failure_threshold=None))
    async with httpx.AsyncClient(transport=t) as client:
        for _ in range(200):
            assert (await client.get(base + "/alternate")).status_code == 200
        assert isinstance(t.inner, httpx.AsyncHTTPTransport)
        connections = t.inner._pool.connections
        assert len(connections) == 1
        assert connections[0].is_idle()
    assert scripted.requests == 400
    assert len(scripted.clients) == 1


async def test_loopback_huge_retried_bodies_are_cut_off_not_leaked(
    app: tuple[ScriptedApp, str],
) -> None:
    """A 503 body over the drain limit closes its connection: the pool stays at <= 1."""
    scripted, base = app
    scripted.body_size = 1_000_000
    t = ResilientTransport(retry=fast_retry(), breakers=BreakerRegistry(failure_threshold=None))
    async with httpx.AsyncClient(transport=t) as client:
        for _ in range(10):
            assert (await client.get(base + "/alternate")).status_code == 200
        assert isinstance(t.inner, httpx.AsyncHTTPTransport)
        assert len(t.inner._pool.connections) <= 1
    assert scripted.requests == 20


def test_the_example_tells_the_story(capsys: pytest.CaptureFixture[str]) -> None:
    """examples/httpx_client.py waits out Retry-After, opens one host's breaker only."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "examples" / "httpx_client.py"
    spec = importlib.util.spec_from_file_location("example_httpx_client", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = trio.run(module.main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert lines[0].startswith("flaky: 200 after a Retry-After wait of 1.")
    assert lines[1:4] == ["down: 500 (a 500 reaches the caller)"] * 3
    assert lines[4] == "down: rejected without connecting, retry in 30s"
    assert lines[-2:] == [
        "flaky breaker closed: 1 failures, 0 rejected",
        "down breaker open: 3 failures, 1 rejected",
    ]


@given(value=st.binary(max_size=64), seed=st.integers(0, 2**32))
def test_garbage_retry_after_headers_never_break_a_request(value: bytes, seed: int) -> None:
    """Whatever a server puts in Retry-After, the retry waits within [0, cap * (1 + j)]."""
    answers = [httpx.Response(503, headers=[(b"Retry-After", value)]), httpx.Response(200)]
    times: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        return answers.pop(0)

    async def main() -> int:
        t = ResilientTransport(
            httpx.MockTransport(handler),
            retry=Retry(backoff=ConstantBackoff(0.5)),
            max_retry_after=5.0,
            rng=random.Random(seed),
        )
        async with httpx.AsyncClient(transport=t) as client:
            return (await client.get(URL)).status_code

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == 200
    assert 0.0 <= times[1] <= 5.0 * 1.1


async def test_a_storm_of_cancelled_requests_leaks_no_half_open_permit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """200 requests on a half-open host, cancelled at random: every probe permit returns."""
    rng = random.Random(11)

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(rng.uniform(0, 2))
        return httpx.Response(rng.choice([200, 503, 500]))

    registry = BreakerRegistry(
        failure_threshold=1, recovery_timeout=1.0, success_threshold=1000, half_open_max_calls=3
    )
    t = ResilientTransport(
        httpx.MockTransport(handler), breakers=registry, retry=Retry(backoff=ConstantBackoff(0.1))
    )
    breaker = t.breaker_for(URL)
    outcomes: dict[str, int] = {}

    async def one(client: httpx.AsyncClient) -> None:
        with trio.move_on_after(rng.uniform(0, 3)) as scope:
            try:
                response = await client.get(URL)
                key = str(response.status_code)
            except CircuitOpenError:
                key = "rejected"
        if scope.cancelled_caught:
            key = "cancelled"
        outcomes[key] = outcomes.get(key, 0) + 1

    async with httpx.AsyncClient(transport=t) as client:
        for _ in range(20):
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(one, client)
            await trio.sleep(1.0)
    stats = breaker.statistics()
    assert stats.half_open_in_flight == 0
    assert sum(outcomes.values()) == 200
    assert outcomes.get("cancelled", 0) > 0 and outcomes.get("rejected", 0) > 0
    assert breaker.half_open_limiter.borrowed_tokens == 0
