"""``trio-resilience watch URL``: a live view of a process's Prometheus endpoint.

It scrapes the endpoint every ``interval`` seconds (a small HTTP/1.0 GET over
``trio.open_tcp_stream``; ``https://`` through httpx when it is installed), parses the
text with ``prometheus_client.parser`` and shows breakers with their time in state,
rejection and shed rates from successive scrapes, and limits. In a terminal the view is
drawn with rich; piped, it prints plain lines without control characters. Nothing the
endpoint sends crashes it: an error is shown and the next scrape tries again.
"""

from __future__ import annotations

import gzip
import importlib
import math
import sys
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

import trio

MAX_BYTES = 16 << 20
"""The largest response body read; a bigger one is an error."""
_MAX_ROWS = 200
_MAX_LABEL = 60

Fetch = Callable[[str], Awaitable[str]]


class FetchError(Exception):
    """The endpoint could not be read (connection, HTTP status or framing)."""


def check_url(url: str) -> str:
    """``url`` if watch can fetch it, else ValueError saying why."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"URL must be an http:// or https:// address, got {url!r}")
    parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    return url


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while True:
        line, sep, rest = body.partition(b"\r\n")
        if not sep:
            raise FetchError("malformed chunked body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise FetchError("malformed chunk size") from None
        if size == 0:
            return bytes(out)
        if size < 0 or len(rest) < size:
            raise FetchError("truncated chunked body")
        out += rest[:size]
        body = rest[size + 2 :]


def parse_response(raw: bytes) -> str:
    """The body of an HTTP/1.x response ``raw`` as text; FetchError if not a 200."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise FetchError("malformed HTTP response (no end of headers)")
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/") or not status[1].isdigit():
        raise FetchError("malformed HTTP status line")
    if status[1] != b"200":
        reason = status[2] if len(status) > 2 else b""
        raise FetchError(f"HTTP {status[1].decode()} {reason.decode('latin-1')}".strip())
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, colon, value = line.partition(b":")
        if colon:
            headers[key.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    encoding = headers.get("content-encoding", "identity").lower()
    if encoding == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError) as exc:
            raise FetchError(f"bad gzip body: {exc}") from None
    elif encoding != "identity":
        raise FetchError(f"unsupported content-encoding {encoding!r}")
    return body.decode("utf-8", errors="replace")


async def fetch(url: str) -> str:
    """GET ``url`` and return the body; FetchError or OSError when it cannot.

    **Cancellation**: a checkpoint; the connection is closed on cancellation. The
    caller's cancel scope bounds the whole request.
    """
    parts = urlsplit(url)
    if parts.scheme == "https":
        return await _fetch_httpx(url)
    host = parts.hostname or ""
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    netloc = parts.netloc.rpartition("@")[2]
    request = (
        f"GET {path} HTTP/1.0\r\nHost: {netloc}\r\nAccept: text/plain\r\n"
        "User-Agent: trio-resilience-watch\r\nConnection: close\r\n\r\n"
    ).encode("latin-1", errors="replace")
    chunks: list[bytes] = []
    size = 0
    stream = await trio.open_tcp_stream(host, parts.port or 80)
    async with stream:
        await stream.send_all(request)
        while data := await stream.receive_some(65536):
            size += len(data)
            if size > MAX_BYTES:
                raise FetchError(f"response larger than {MAX_BYTES} bytes")
            chunks.append(data)
    return parse_response(b"".join(chunks))


async def _fetch_httpx(url: str) -> str:
    try:
        httpx: Any = importlib.import_module("httpx")
    except ImportError:
        raise FetchError("https:// needs httpx: pip install httpx") from None
    async with httpx.AsyncClient(timeout=None) as client:  # pragma: no cover - optional httpx
        response = await client.get(url)
    if response.status_code != 200:
        raise FetchError(f"HTTP {response.status_code}")
    return str(response.text)


def clean(text: object) -> str:
    """``text`` without control or format characters, at most 60 characters."""
    out = "".join(
        c if unicodedata.category(c)[0] not in "CZ" or c == " " else "?" for c in str(text)
    )
    return out if len(out) <= _MAX_LABEL else out[: _MAX_LABEL - 3] + "..."


@dataclass
class Scrape:
    """What one scrape said, by metric name then label values."""

    at: float
    values: dict[str, dict[tuple[tuple[str, str], ...], float]] = field(default_factory=dict)
    _sums: dict[tuple[str, str, str | None], dict[tuple[str, str], float]] = field(
        default_factory=dict
    )

    def total(
        self, name: str, key: str, label: str, sub: str | None = None, value: str = ""
    ) -> float:
        """Sum of ``name``'s series with ``key=label`` (and ``sub=value`` when given)."""
        index = self._sums.get((name, key, sub))
        if index is None:  # one pass per metric and label pair, however many rows ask
            index = self._sums[(name, key, sub)] = {}
            for labels, number in self.series(name).items():
                d = dict(labels)
                if key in d:
                    slot = (d[key], d.get(sub, "") if sub else "")
                    index[slot] = index.get(slot, 0.0) + number
        return index.get((label, value if sub else ""), 0.0)

    def series(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return self.values.get(name, {})

    def by(self, name: str, key: str, sub: str | None = None) -> dict[str, dict[str, float]]:
        """``{labels[key]: {labels[sub] or "": value}}`` of metric ``name``."""
        out: dict[str, dict[str, float]] = {}
        for labels, value in self.series(name).items():
            d = dict(labels)
            if key not in d:
                continue
            out.setdefault(d[key], {})[d.get(sub, "") if sub else ""] = value
        return out


def parse_scrape(text: str, at: float) -> Scrape:
    """The trio_resilience samples of a Prometheus text exposition ``text``."""
    from prometheus_client.parser import text_string_to_metric_families

    scrape = Scrape(at)
    count = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if not name.startswith("trio_resilience_"):
                continue
            value = sample.value
            if not isinstance(value, int | float) or not math.isfinite(value):
                continue
            labels = tuple(sorted((str(k), str(v)) for k, v in sample.labels.items()))
            scrape.values.setdefault(name, {})[labels] = float(value)
            count += 1
            if count > 50_000:
                raise ValueError("more than 50000 trio_resilience samples")
    return scrape


def _rate(now: Scrape, before: Scrape | None, name: str, key: str, label: str) -> float | None:
    """Per-second increase of the sum of ``name``'s series whose ``key`` label is ``label``."""
    if before is None or now.at <= before.at:
        return None
    current, previous = now.total(name, key, label), before.total(name, key, label)
    increase = current - previous if current >= previous else current  # a reset
    return increase / (now.at - before.at)


def _fmt_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1f}/s"


def _fmt_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


@dataclass
class Row:
    """One line of the view: a section, a name and its columns."""

    section: str
    name: str
    cells: list[tuple[str, str]]

    def plain(self) -> str:
        return f"{self.section} {clean(self.name)}: " + ", ".join(f"{k} {v}" for k, v in self.cells)


class View:
    """Turns successive scrapes into rows; remembers what the rates need."""

    def __init__(self) -> None:
        self.previous: Scrape | None = None
        self._first_seen: dict[str, tuple[str, float]] = {}

    def rows(self, scrape: Scrape) -> list[Row]:
        """The rows of ``scrape``, rates against the scrape before it."""
        before, self.previous = self.previous, scrape
        rows: list[Row] = []
        states = scrape.by("trio_resilience_breaker_state", "breaker", "state")
        seconds = scrape.by("trio_resilience_breaker_state_seconds", "breaker")
        for name in sorted(states)[:_MAX_ROWS]:
            by_state = states[name]
            state = max(by_state, key=lambda s: (by_state[s], s))
            if by_state[state] <= 0:
                state = "unknown"
            exported = seconds.get(name, {}).get("")
            if exported is not None:
                in_state = _fmt_seconds(exported)
            else:
                seen = self._first_seen.get(name)
                if seen is None or seen[0] != state:
                    seen = self._first_seen[name] = (state, scrape.at)
                in_state = ">=" + _fmt_seconds(scrape.at - seen[1])
            rejected = _outcome_rate(scrape, before, name)
            failures = _outcome_rate(scrape, before, name, "failure")
            cells = [("state", clean(state)), ("for", in_state)]
            cells += [("rejected", _fmt_rate(rejected)), ("failures", _fmt_rate(failures))]
            rows.append(Row("breaker", name, cells))
        for name in sorted(scrape.by("trio_resilience_retry_attempts_total", "retry"))[:_MAX_ROWS]:
            retries = _labelled_rate(
                scrape,
                before,
                "trio_resilience_retry_attempts_total",
                "retry",
                name,
                "kind",
                "retry",
            )
            gave_up = _rate(scrape, before, "trio_resilience_retry_gave_up_total", "retry", name)
            rows.append(
                Row(
                    "retry",
                    name,
                    [("retries", _fmt_rate(retries)), ("gave up", _fmt_rate(gave_up))],
                )
            )
        used = scrape.by("trio_resilience_channel_buffer_used", "channel")
        size = scrape.by("trio_resilience_channel_buffer_size", "channel")
        shed_names = scrape.by("trio_resilience_shed_total", "channel")
        for name in sorted(set(used) | set(shed_names))[:_MAX_ROWS]:
            buffer = f"{used.get(name, {}).get('', 0):g}"
            if name in size:
                buffer += f"/{size[name].get('', 0):g}"
            shed = _rate(scrape, before, "trio_resilience_shed_total", "channel", name)
            rows.append(Row("channel", name, [("buffer", buffer), ("shed", _fmt_rate(shed))]))
        for section, metric, key, what in (
            ("loop budget", "trio_resilience_budget_throttled_total", "budget", "throttled"),
            ("rate limiter", "trio_resilience_rate_limited_total", "limiter", "limited"),
        ):
            for name in sorted(scrape.by(metric, key))[:_MAX_ROWS]:
                rate = _rate(scrape, before, metric, key, name)
                rows.append(Row(section, name, [(what, _fmt_rate(rate))]))
        limits = scrape.by("trio_resilience_concurrency_limit", "limiter")
        for name in sorted(limits)[:_MAX_ROWS]:
            rows.append(Row("concurrency", name, [("limit", f"{limits[name].get('', 0):g}")]))
        return rows


def _labelled_rate(
    now: Scrape, before: Scrape | None, metric: str, key: str, name: str, sub: str, value: str
) -> float | None:
    if before is None or now.at <= before.at:
        return None
    current = now.total(metric, key, name, sub, value)
    previous = before.total(metric, key, name, sub, value)
    increase = current - previous if current >= previous else current
    return increase / (now.at - before.at)


def _outcome_rate(
    now: Scrape, before: Scrape | None, name: str, outcome: str = "rejected"
) -> float | None:
    return _labelled_rate(
        now, before, "trio_resilience_breaker_calls_total", "breaker", name, "outcome", outcome
    )


def render_plain(
    url: str, rows: Iterable[Row], error: str | None, out: TextIO, *, retrying: bool = True
) -> None:
    """One block of plain lines (no control characters), then a blank line."""
    stamp = time.strftime("%H:%M:%S")
    lines = [f"== {clean(url)} at {stamp} =="]
    if error is not None:
        lines.append(f"error: {clean(error)}" + (" (retrying)" if retrying else ""))
    else:
        rows = list(rows)
        lines.extend(row.plain() for row in rows)
        if not rows:
            lines.append("no trio_resilience metrics at this endpoint")
    out.write("\n".join(lines) + "\n\n")
    out.flush()


def render_rich(url: str, rows: list[Row], error: str | None) -> Any:
    """A rich renderable: one table per section, or the error."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = Text(f"trio-resilience watch {clean(url)}  {time.strftime('%H:%M:%S')}", style="bold")
    parts: list[Any] = [title]
    if error is not None:
        parts.append(Text(f"error: {clean(error)} (retrying)", style="red"))
        return Group(*parts)
    if not rows:
        parts.append(Text("no trio_resilience metrics at this endpoint", style="dim"))
    sections: dict[str, list[Row]] = {}
    for row in rows:
        sections.setdefault(row.section, []).append(row)
    styles = {"closed": "green", "open": "red", "forced_open": "red", "half_open": "yellow"}
    for section, members in sections.items():
        table = Table(title=section, title_justify="left", expand=False)
        table.add_column("name")
        for key, _ in members[0].cells:
            table.add_column(key, justify="right")
        for row in members:
            cells = [Text(clean(row.name))]
            for key, value in row.cells:
                cells.append(Text(value, style=styles.get(value, "") if key == "state" else ""))
            table.add_row(*cells)
        parts.append(table)
    return Group(*parts)


async def watch(
    url: str,
    *,
    interval: float = 1.0,
    once: bool = False,
    out: TextIO,
    terminal: bool | None = None,
    iterations: int | None = None,
    fetcher: Fetch = fetch,
) -> int:
    """Scrape ``url`` every ``interval`` seconds and show it; 0, or 1 if ``once`` failed.

    Args:
        terminal: draw with rich (None: when ``out`` is a terminal and rich is installed).
        iterations: stop after this many scrapes (None: run until cancelled).

    **Cancellation**: a checkpoint; cancel it to stop watching.
    """
    if terminal is None:
        terminal = _isatty(out) and _has_rich()
    view = View()
    live: Any = None
    if terminal and not once:
        from rich.console import Console
        from rich.live import Live

        live = Live(console=Console(file=out), auto_refresh=False, transient=False)
        live.start()
    try:
        done = 0
        while True:
            started = trio.current_time()
            error: str | None = None
            rows: list[Row] = []
            try:
                timeout = max(2.0, 2 * interval)
                with trio.move_on_after(timeout) as scope:
                    text = await fetcher(url)
                if scope.cancelled_caught:
                    raise FetchError(f"no complete response within {timeout:g}s")
                rows = view.rows(parse_scrape(text, trio.current_time()))
            except Exception as exc:  # garbage or an outage: show it, try again
                error = f"{type(exc).__name__}: {exc}"
            if live is not None:
                live.update(render_rich(url, rows, error), refresh=True)
            elif terminal:
                from rich.console import Console

                Console(file=out).print(render_rich(url, rows, error))
            else:
                render_plain(url, rows, error, out, retrying=not once)
            done += 1
            if once:
                return 1 if error is not None else 0
            if iterations is not None and done >= iterations:
                return 0
            await trio.sleep_until(started + interval)
    finally:
        if live is not None:
            live.stop()


def _isatty(out: TextIO) -> bool:
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:  # pragma: no cover - rich comes with the demo extra
        return False
    return True


def main(url: str, interval: float, once: bool, out: TextIO) -> int:
    """Run :func:`watch` in a new ``trio.run``; Ctrl-C ends it with status 0."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:  # pragma: no cover - installed with the prometheus extra
        sys.stderr.write(
            "trio-resilience: error: watch needs prometheus_client: "
            "pip install 'trio-resilience[prometheus]'\n"
        )
        return 2
    try:
        return trio.run(lambda: watch(url, interval=interval, once=once, out=out))
    except KeyboardInterrupt:  # pragma: no cover - Ctrl-C
        return 0
