"""A resilient httpx transport for Trio: per-host breakers, retries and Retry-After.

``from trio_resilience.httpx import ResilientTransport`` (needs the ``httpx`` extra:
``pip install 'trio-resilience[httpx]'``). Nothing here is imported by
``trio_resilience`` itself. Wrap any ``httpx.AsyncBaseTransport``::

    transport = ResilientTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get("https://example.org/")

See ``docs/http.md`` for what counts as a failure, what is retried and how.
"""

from __future__ import annotations

import email.utils
import random
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC
from typing import Any

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "trio_resilience.httpx needs httpx; install the extra: pip install 'trio-resilience[httpx]'"
    ) from exc
import trio

from ._backoff import FullJitterBackoff
from ._breaker import BreakerRegistry, CircuitBreaker, CircuitState
from ._classify import Matcher, is_retryable
from ._log import RETRY_GAVE_UP, RETRY_SCHEDULED, get_logger
from ._retry import Retry, RetryBudget
from ._testing_flags import ZERO_BACKOFF
from ._validate import check_logger, check_number

__all__ = [
    "DEFAULT_FAILURE_STATUSES",
    "DEFAULT_RETRY_METHODS",
    "DEFAULT_RETRY_STATUSES",
    "FailedResponse",
    "ResilientTransport",
    "parse_retry_after",
]

#: 429 and every 5xx: responses the host's breaker counts as failures.
DEFAULT_FAILURE_STATUSES: frozenset[int] = frozenset({429, *range(500, 600)})
#: Responses retried (for idempotent methods) by default.
DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({429, 502, 503, 504})
#: The idempotent methods of RFC 9110 section 9.2.2: retried after they were sent.
DEFAULT_RETRY_METHODS: frozenset[str] = frozenset(
    {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}
)

#: Errors raised before any byte of the request left: retried whatever the method.
_NEVER_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
#: Transport errors worth another try (for idempotent methods once sent).
_RETRYABLE: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: A retried response's body of at most this many bytes (by Content-Length) is read to
#: keep its connection in the pool; a longer or unsized one is closed unread.
_DRAIN_LIMIT = 65536
_current_time = trio.current_time


class FailedResponse(httpx.HTTPStatusError):
    """A response whose status the transport counts as a failure of its host.

    Raised inside the host's breaker only, so that the breaker counts the failure (its
    ``failure_on`` must match it: the default ``Exception`` does); the caller gets the
    response itself. It is what ``CircuitOpenError.last_failure`` holds when failing
    statuses opened the breaker.
    """


def parse_retry_after(value: object, now: float | None = None) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header value, or None.

    Accepts the two forms of RFC 9110 section 10.2.3: delta-seconds (ASCII digits only)
    and an HTTP-date (anything :func:`email.utils.parsedate_to_datetime` reads; a date
    without a zone is taken as GMT). Tolerant of garbage: anything else (signs,
    fractions, exponents, ``nan``, ``inf``, dates out of range, non-strings) gives None.
    A date in the past gives ``0.0``; a huge delta gives a huge finite float.

    Args:
        value: the header's value (``str`` or ``bytes``).
        now: the current POSIX time for HTTP-dates; default ``time.time()``.

    Raises:
        TypeError: ``now`` is not a number.
        ValueError: ``now`` is NaN or infinite.
    """
    if now is not None:
        now = check_number("now", now)
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    text = value.strip(" \t")
    if text.isascii() and text.isdigit():
        # float() of a long digit string is inf rather than an error: clamp to finite.
        return min(float(text), sys.float_info.max)
    if not text or len(text) > 100:  # an HTTP-date has 29 characters
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        stamp = when.timestamp()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if now is None:
        # The one wall-clock read of this library, on purpose: an HTTP-date is wall-clock
        # time on the server, so only the wall clock can say how far away it is.
        now = time.time()
    delay = stamp - now
    return delay if delay > 0.0 else 0.0


def _statuses(name: str, value: object) -> frozenset[int]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a collection of ints, got {value!r}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, int) or isinstance(item, bool):
            raise TypeError(f"{name} must hold ints, got {item!r}")
        if not 100 <= item <= 599:
            raise ValueError(f"{name} must hold HTTP statuses in 100..599, got {item!r}")
    return frozenset(items)


def _methods(value: object) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"retry_methods must be a collection of str, got {value!r}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"retry_methods must hold str, got {item!r}")
        if not item or not item.isascii() or not item.isalpha():
            raise ValueError(f"retry_methods must hold HTTP method names, got {item!r}")
    return frozenset(item.upper() for item in items)


def origin_of(url: httpx.URL) -> str:
    """The breaker name of a URL's host: ``scheme://host:port``, default ports filled in."""
    scheme = url.scheme
    host = url.host
    if ":" in host:
        host = f"[{host}]"
    port = url.port
    if port is None:
        port = _DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://{host}:{port}"


async def _drain(response: httpx.Response) -> None:
    """Read a retried response's small body and close it, keeping its connection pooled.

    A body of unknown or large length is not read: closing the response unread drops
    its connection instead (a reconnect is cheaper than reading megabytes to discard).
    """
    try:
        length = response.headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) <= _DRAIN_LIMIT:
            async for _ in response.aiter_raw():
                pass
    except Exception:  # the connection is closed below either way
        pass
    finally:
        await response.aclose()


class ResilientTransport(httpx.AsyncBaseTransport):
    """An httpx transport that puts every attempt through its host's circuit breaker.

    Responses whose status is in ``failure_statuses`` (429 and every 5xx) count as
    failures of their host (``scheme://host:port``); the caller still gets them when
    no retry follows. Transport errors and ``retry_statuses`` are retried, for methods
    in ``retry_methods`` with a replayable body, and for any request that was never
    sent (connect errors, pool timeouts). ``Retry-After`` replaces the backoff delay,
    capped at ``max_retry_after`` and then jittered upward by up to ``hint_jitter``.

    The attempt loop is the transport's own and reads from ``retry`` its ``attempts``,
    ``backoff``, ``max_total_duration``, ``retry_on`` (exceptions not matching it are
    not retried), ``budget``, ``name`` and ``logger``; its ``retry_if_result`` and
    ``delay_hint`` are not used (statuses and ``Retry-After`` take their place).

    Args:
        inner: the transport that sends; default a new ``httpx.AsyncHTTPTransport()``.
        breakers: where the per-host breakers come from; default a new
            :class:`~trio_resilience.BreakerRegistry`.
        retry: attempts, backoff and time limit; default
            ``Retry(attempts=3, backoff=FullJitterBackoff())``.
        budget: a :class:`~trio_resilience.RetryBudget` shared with other clients;
            default ``retry.budget``.
        failure_statuses: statuses counted as failures of the host.
        retry_statuses: statuses retried (for idempotent methods).
        retry_methods: methods retried after the request was sent.
        max_retry_after: the cap, in seconds, on a server's ``Retry-After``
            (``math.inf``: no cap; the deadlines still apply).
        hint_jitter: a ``Retry-After`` delay ``d`` becomes a draw in
            ``[d, d * (1 + hint_jitter)]``.
        rng: the source of that jitter (and of the default backoff's).
        logger: a structlog-like logger; default ``retry.logger`` or the library's.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument has a wrong value; the message names it.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        breakers: BreakerRegistry | None = None,
        retry: Retry | None = None,
        budget: RetryBudget | None = None,
        failure_statuses: Iterable[int] = DEFAULT_FAILURE_STATUSES,
        retry_statuses: Iterable[int] = DEFAULT_RETRY_STATUSES,
        retry_methods: Iterable[str] = DEFAULT_RETRY_METHODS,
        max_retry_after: float = 60.0,
        hint_jitter: float = 0.1,
        rng: random.Random | None = None,
        logger: Any = None,
    ) -> None:
        if inner is not None and not isinstance(inner, httpx.AsyncBaseTransport):
            raise TypeError(f"inner must be an httpx.AsyncBaseTransport or None, got {inner!r}")
        if breakers is not None and not isinstance(breakers, BreakerRegistry):
            raise TypeError(f"breakers must be a BreakerRegistry or None, got {breakers!r}")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be a Retry or None, got {retry!r}")
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget or None, got {budget!r}")
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random or None, got {rng!r}")
        if retry is not None and budget is not None and retry.budget not in (None, budget):
            raise ValueError(
                f"budget must be retry.budget when both are given, got {budget!r} "
                f"and retry.budget {retry.budget!r}"
            )
        self.failure_statuses = _statuses("failure_statuses", failure_statuses)
        self.retry_statuses = _statuses("retry_statuses", retry_statuses)
        self.retry_methods = _methods(retry_methods)
        self.max_retry_after = check_number(
            "max_retry_after", max_retry_after, ge=0, allow_inf=True
        )
        self.hint_jitter = check_number("hint_jitter", hint_jitter, ge=0, le=1)
        self.logger = check_logger(logger)
        self.rng = rng
        self.inner: httpx.AsyncBaseTransport = (
            inner if inner is not None else httpx.AsyncHTTPTransport()
        )
        self.breakers = breakers if breakers is not None else BreakerRegistry()
        if retry is None:
            retry = Retry(attempts=3, backoff=FullJitterBackoff(rng=rng), name="httpx")
        self.retry = retry
        self.budget = budget if budget is not None else retry.budget
        self._retry_on = Matcher("retry_on", retry.retry_on)
        self._logger = get_logger(logger if logger is not None else retry.logger)
        self._random = rng if rng is not None else random.Random()

    def breaker_for(self, url: httpx.URL | str) -> CircuitBreaker:
        """The breaker of ``url``'s host (``scheme://host:port``), made on first use."""
        if isinstance(url, str):
            url = httpx.URL(url)
        return self.breakers.get(origin_of(url))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through its host's breaker, retrying as configured.

        Returns:
            The first response that is not retried (a failing status included).

        Raises:
            CircuitOpenError: the host's breaker refused the attempt; no connection
                was made for it.
            httpx.TransportError: the last attempt's error, with a PEP 678 note when
                retries ended on it.

        **Cancellation**: every attempt and every backoff sleep runs in the caller's
        task, under the caller's cancel scope; a cancellation propagates at once, is
        never retried or counted by the breaker, and gives back a withdrawn budget token.
        """
        breaker = self.breakers.get(origin_of(request.url))
        # Decided before the first send: an inner transport may replace the stream.
        replayable = request.stream.__class__ is httpx.ByteStream
        budget = self.budget
        if budget is not None:
            budget.deposit()
        try:
            response = await breaker.call(self._send, request)
        except FailedResponse as failed:
            response = failed.response
        except Exception as exc:
            if not isinstance(exc, _RETRYABLE) or not is_retryable(exc, self._retry_on):
                raise
            return await self._again(request, breaker, replayable, exc, None)
        if response.status_code not in self.retry_statuses:
            return response
        return await self._again(request, breaker, replayable, None, response)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if response.status_code in self.failure_statuses:
            raise FailedResponse(
                f"{response.status_code} from {origin_of(request.url)}",
                request=request,
                response=response,
            )
        return response

    async def _again(
        self,
        request: httpx.Request,
        breaker: CircuitBreaker,
        replayable: bool,
        error: Exception | None,
        response: httpx.Response | None,
    ) -> httpx.Response:
        """The retry loop, entered after a first attempt that may be retried."""
        start = _current_time()
        attempt = 1
        delays: Iterator[float] | None = None
        idempotent = replayable and request.method in self.retry_methods
        while True:
            if response is not None:
                sendable = idempotent
                what = f"status {response.status_code}"
            else:
                assert error is not None
                sendable = idempotent or isinstance(error, _NEVER_SENT)
                what = repr(error)
            reason = None
            delay = 0.0
            attempts = self.retry.attempts
            if not sendable:
                reason = "not_retryable"
            elif attempts is not None and attempt >= attempts:
                reason = "attempts"
            else:
                if delays is None:
                    delays = self.retry.backoff.delays()
                delay = next(delays)
                if response is not None:
                    hint = parse_retry_after(response.headers.get("retry-after"))
                    if hint is not None:
                        delay = min(hint, self.max_retry_after)
                        delay += delay * self.hint_jitter * self._random.random()
                if ZERO_BACKOFF.get():
                    delay = 0.0
                reason = self._refusal(breaker, start, delay)
            if reason is not None:
                if attempt > 1 or reason != "not_retryable":
                    self._give_up(request, attempt, start, what, reason, error)
                if error is not None:
                    raise error
                assert response is not None
                return response
            self._logger.warning(
                RETRY_SCHEDULED,
                retry=self.retry.name,
                attempt=attempt,
                delay=delay,
                error=what,
                method=request.method,
                origin=breaker.name,
            )
            try:
                if response is not None:
                    await _drain(response)
                await trio.sleep(delay)
            except BaseException:
                self._give_back()
                raise
            attempt += 1
            error = response = None
            try:
                response = await breaker.call(self._send, request)
            except FailedResponse as failed:
                response = failed.response
            except Exception as exc:
                if not isinstance(exc, _RETRYABLE) or not is_retryable(exc, self._retry_on):
                    raise
                error = exc
                continue
            if response.status_code not in self.retry_statuses:
                return response

    def _refusal(self, breaker: CircuitBreaker, start: float, delay: float) -> str | None:
        """Why no retry may follow after ``delay`` (None: it may; a token was taken)."""
        now = _current_time()
        total = self.retry.max_total_duration
        if (total is not None and now + delay > start + total) or (
            now + delay >= trio.current_effective_deadline()
        ):
            return "deadline"
        state = breaker.state
        if (
            state is CircuitState.OPEN or state is CircuitState.FORCED_OPEN
        ) and breaker.retry_after > delay:
            return "circuit_open"
        budget = self.budget
        if budget is not None and not budget.try_withdraw():
            return "budget"
        return None

    def _give_back(self) -> None:
        """Return the budget token of a retry whose sleep was cancelled."""
        give_back = getattr(self.budget, "give_back", None)
        if give_back is not None:
            give_back()

    def _give_up(
        self,
        request: httpx.Request,
        attempt: int,
        start: float,
        what: str,
        reason: str,
        error: Exception | None,
    ) -> None:
        elapsed = _current_time() - start
        self._logger.error(
            RETRY_GAVE_UP,
            retry=self.retry.name,
            attempts=attempt,
            elapsed=elapsed,
            error=what,
            reason=reason,
            method=request.method,
            origin=origin_of(request.url),
        )
        if error is not None:
            why = _WHY[reason]
            error.add_note(
                f"trio_resilience: ResilientTransport gave up on {request.method} "
                f"{origin_of(request.url)} after {attempt} attempt"
                f"{'s' if attempt != 1 else ''} over {elapsed:.3f}s: {why}"
            )

    async def aclose(self) -> None:
        """Close the inner transport (its connection pool).

        **Cancellation**: as the inner transport's ``aclose()``.
        """
        await self.inner.aclose()

    def __repr__(self) -> str:
        return (
            f"<ResilientTransport {len(self.breakers)} hosts retry={self.retry.name!r} "
            f"attempts={self.retry.attempts}>"
        )


_WHY = {
    "attempts": "no attempts left",
    "deadline": "the next delay would pass the deadline",
    "budget": "the retry budget had no token",
    "circuit_open": "the host's breaker would still be open",
    "not_retryable": "the request was sent and is not idempotent",
}
