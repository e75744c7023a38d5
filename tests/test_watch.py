"""``trio-resilience watch``: scraping a real endpoint, rates, garbage, plain and rich output."""

from __future__ import annotations

import gc
import gzip
import importlib.util
import io
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, start_http_server

from trio_resilience import CircuitBreaker, CircuitOpenError, _cli, _live
from trio_resilience._watch import (
    FetchError,
    View,
    clean,
    fetch,
    parse_response,
    parse_scrape,
    watch,
)
from trio_resilience.metrics import register_prometheus

from .conftest import Boom

# Anything a terminal could act on: C0 controls but newline, DEL, C1 controls.
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def load_example() -> Any:
    path = Path(__file__).parent.parent / "examples" / "metrics_app.py"
    spec = importlib.util.spec_from_file_location("example_metrics_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def fail() -> None:
    await trio.lowlevel.checkpoint()
    raise Boom


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    gc.collect()  # policies other tests left to the collector would crowd the view
    registry = CollectorRegistry()
    collector = register_prometheus(registry)
    yield registry
    registry.unregister(collector)


@pytest.fixture
def endpoint(registry: CollectorRegistry) -> Iterator[str]:
    """prometheus_client's own HTTP server (a thread) on a free loopback port."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def serve(nursery: trio.Nursery, handler: Handler) -> str:
    """Serve ``handler`` on a free loopback port; its URL."""
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}/metrics"


def answering(raw: bytes) -> Handler:
    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)
            await stream.send_all(raw)

    return handler


def exposition(**values: float) -> str:
    """A small exposition: breaker "db" in a state, with rejected/failure counts."""
    lines = [
        f'trio_resilience_breaker_state{{breaker="db",state="{s}"}} '
        f"{1.0 if s == values.get('state_name', 'open') else 0.0}"
        for s in ("closed", "open", "half_open", "forced_open", "disabled")
    ]
    calls = "trio_resilience_breaker_calls_total"
    lines.append(f'{calls}{{breaker="db",outcome="rejected"}} {values["rejected"]}')
    lines.append(f'{calls}{{breaker="db",outcome="failure"}} {values.get("failure", 0)}')
    lines.append(f'trio_resilience_shed_total{{channel="q",reason="shed"}} {values.get("shed", 0)}')
    lines.append(
        f'trio_resilience_shed_total{{channel="q",reason="evicted"}} {values.get("evicted", 0)}'
    )
    lines.append('trio_resilience_channel_buffer_used{channel="q"} 3')
    lines.append('trio_resilience_channel_buffer_size{channel="q"} 10')
    lines.append('trio_resilience_concurrency_limit{limiter="pool"} 20')
    lines.append('trio_resilience_rate_limited_total{limiter="api"} 4')
    lines.append('trio_resilience_budget_throttled_total{budget="poll"} 2')
    lines.append('trio_resilience_retry_attempts_total{retry="r",kind="retry"} 5')
    lines.append('trio_resilience_retry_gave_up_total{retry="r",reason="attempts"} 1')
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- pure parts


def test_rates_come_from_successive_scrapes() -> None:
    """rejected/s and shed/s are increases over the time between two scrapes."""
    view = View()
    first = view.rows(parse_scrape(exposition(rejected=10, shed=1, evicted=1), at=100.0))
    assert "rejected -" in first[0].plain()
    rows = view.rows(parse_scrape(exposition(rejected=30, failure=4, shed=5, evicted=3), at=102.0))
    text = "\n".join(row.plain() for row in rows)
    assert "breaker db: state open, for >=2.0s, rejected 10.0/s, failures 2.0/s" in text
    assert "channel q: buffer 3/10, shed 3.0/s" in text
    assert "concurrency pool: limit 20" in text
    assert "rate limiter api: limited 0.0/s" in text
    assert "retry r: retries 0.0/s, gave up 0.0/s" in text


def test_a_counter_reset_counts_from_zero() -> None:
    """A counter lower than before (a restart) counts its new value as the increase."""
    view = View()
    view.rows(parse_scrape(exposition(rejected=100), at=0.0))
    rows = view.rows(parse_scrape(exposition(rejected=6), at=2.0))
    assert "rejected 3.0/s" in rows[0].plain()


def test_exported_time_in_state_is_shown() -> None:
    """trio_resilience_breaker_state_seconds, when exported, is the time in state."""
    text = exposition(rejected=0) + 'trio_resilience_breaker_state_seconds{breaker="db"} 150\n'
    rows = View().rows(parse_scrape(text, at=0.0))
    assert "for 2.5m" in rows[0].plain()


def test_long_times_and_unknown_states_are_readable() -> None:
    """Hours for long times; a breaker with no state at 1 reads unknown."""
    text = (
        'trio_resilience_breaker_state{breaker="db",state="open"} 0\n'
        'trio_resilience_breaker_state_seconds{breaker="db"} 9000\n'
        'trio_resilience_channel_buffer_used{channel="q"} 1\n'
    )
    rows = View().rows(parse_scrape(text, at=0.0))
    assert rows[0].plain() == "breaker db: state unknown, for 2.5h, rejected -, failures -"
    assert rows[1].plain() == "channel q: buffer 1, shed -"


def test_names_lose_their_control_characters() -> None:
    """A label value with escape sequences is shown without them."""
    assert clean("db\x1b[2J\x07\u202eevil") == "db?[2J??evil"
    assert len(clean("x" * 500)) == 60
    text = 'trio_resilience_concurrency_limit{limiter="a\\u001b[31m\x1b[31mred"} 1\n'
    rows = View().rows(parse_scrape(text, at=0.0))
    assert not CONTROL.search(rows[0].plain())


def test_http_responses_are_parsed_strictly() -> None:
    """200 with plain, chunked or gzip bodies; anything else is a FetchError."""
    assert parse_response(b"HTTP/1.1 200 OK\r\nX: y\r\n\r\nbody") == "body"
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n2\r\n!!\r\n0\r\n\r\n"
    )
    assert parse_response(chunked) == "body!!"
    zipped = b"HTTP/1.0 200 OK\r\nContent-Encoding: gzip\r\n\r\n" + gzip.compress(b"z")
    assert parse_response(zipped) == "z"
    for raw, message in [
        (b"HTTP/1.0 404 Not Found\r\n\r\n", "HTTP 404 Not Found"),
        (b"garbage", "no end of headers"),
        (b"SMTP 200\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab", "truncated"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9", "malformed chunked"),
        (b"HTTP/1.0 200 OK\r\nContent-Encoding: gzip\r\n\r\nnot gzip", "bad gzip"),
        (b"HTTP/1.0 200 OK\r\nContent-Encoding: br\r\n\r\nx", "unsupported"),
    ]:
        with pytest.raises(FetchError, match=message):
            parse_response(raw)


# ----------------------------------------------------------------- real endpoints


def test_watch_once_against_prometheus_client_server_prints_plain_lines(
    endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI scrapes a real endpoint once; piped output has no control characters."""
    breaker = CircuitBreaker("w-once\x1b[31m")
    _live.register("breaker", breaker)
    breaker.force_open()
    assert _cli.main(["watch", endpoint, "--once"]) == 0
    out = capsys.readouterr().out
    assert "breaker w-once?[31m: state forced_open, for " in out
    assert not CONTROL.search(out)


def test_piped_watch_process_writes_no_control_characters(endpoint: str) -> None:
    """``python -m trio_resilience watch URL --once | ...``: plain lines, status 0."""
    breaker = CircuitBreaker("w-pipe")
    _live.register("breaker", breaker)
    done = subprocess.run(
        [sys.executable, "-m", "trio_resilience", "watch", endpoint, "--once"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert out.startswith(f"== {endpoint} at ")
    # The child lists no policies of its own; the endpoint is this process's.
    assert "breaker w-pipe: state closed, for " in out
    assert not CONTROL.search(out)


async def test_watch_follows_the_example_app_over_loopback(
    registry: CollectorRegistry,
) -> None:
    """Two real scrapes of the example's Trio server: state, time in state and a rate."""
    example = load_example()
    breaker = CircuitBreaker("w-live", failure_threshold=1, recovery_timeout=60)
    _live.register("breaker", breaker)
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(example.serve_metrics, registry, 0)
        port = listeners[0].socket.getsockname()[1]

        async def rejections() -> None:
            with pytest.raises(Boom):
                await breaker.call(fail)
            while True:
                with pytest.raises(CircuitOpenError):
                    await breaker.call(fail)
                await trio.sleep(0.01)

        nursery.start_soon(rejections)
        url = f"http://127.0.0.1:{port}/metrics"
        assert await watch(url, interval=0.2, out=out, terminal=False, iterations=2) == 0
        nursery.cancel_scope.cancel()
    text = out.getvalue()
    assert not CONTROL.search(text)
    blocks = [b for b in text.split("\n\n") if "w-live" in b]
    assert len(blocks) == 2
    assert "breaker w-live: state open, for " in blocks[1]
    rate = re.search(r"breaker w-live: .* rejected ([0-9.]+)/s", blocks[1])
    assert rate is not None and float(rate.group(1)) > 0


async def test_garbage_from_the_endpoint_is_shown_and_retried() -> None:
    """Garbage, a 500 and a hang-up are errors on screen; watch keeps scraping."""
    answers = [
        b"HTTP/1.0 200 OK\r\n\r\n\x00\x1b[2J{{{ not metrics \xff\n",
        b"HTTP/1.0 500 Internal Server Error\r\n\r\n",
        b"",
        b"HTTP/1.0 200 OK\r\n\r\n" + exposition(rejected=1).encode(),
    ]
    served = iter(answers)

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)
            await stream.send_all(next(served))

    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        url = await serve(nursery, handler)
        assert await watch(url, interval=0.01, out=out, terminal=False, iterations=4) == 0
        nursery.cancel_scope.cancel()
    text = out.getvalue()
    assert not CONTROL.search(text)
    errors = re.findall(r"^error: .*\(retrying\)$", text, flags=re.MULTILINE)
    assert len(errors) == 3
    assert "HTTP 500" in errors[1]
    assert "breaker db: state open" in text


async def test_a_silent_endpoint_times_out(autojump_clock: trio.testing.MockClock) -> None:
    """No answer within max(2 s, 2 intervals) is an error, and --once fails with 1."""

    async def silent(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        url = await serve(nursery, silent)
        assert await watch(url, interval=1.0, once=True, out=out, terminal=False) == 1
        nursery.cancel_scope.cancel()
    assert "error: FetchError: no complete response within 2s\n" in out.getvalue()


async def test_an_oversized_response_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body beyond MAX_BYTES is an error, not a memory hog."""
    import trio_resilience._watch as watch_module

    monkeypatch.setattr(watch_module, "MAX_BYTES", 1000)
    async with trio.open_nursery() as nursery:
        url = await serve(nursery, answering(b"HTTP/1.0 200 OK\r\n\r\n" + b"#" * 5000))
        with pytest.raises(FetchError, match="larger than 1000 bytes"):
            await fetch(url)
        nursery.cancel_scope.cancel()


async def test_the_rich_view_draws_tables(registry: CollectorRegistry) -> None:
    """In a terminal the view is a rich table per section, redrawn in place."""
    example = load_example()
    breaker = CircuitBreaker("w-rich")
    _live.register("breaker", breaker)
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(example.serve_metrics, registry, 0)
        port = listeners[0].socket.getsockname()[1]
        url = f"http://127.0.0.1:{port}/metrics"
        assert await watch(url, interval=0.01, out=out, terminal=True, iterations=2) == 0
        assert await watch(url + "x", once=True, out=out, terminal=True) == 1
        nursery.cancel_scope.cancel()
    text = out.getvalue()
    assert "w-rich" in text
    assert "closed" in text
    assert "HTTP 404" in text


async def test_an_endpoint_without_our_metrics_says_so() -> None:
    """An exposition with no trio_resilience metric gets a line saying there are none."""
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        url = await serve(nursery, answering(b"HTTP/1.0 200 OK\r\n\r\nother_metric 1\n"))
        assert await watch(url, once=True, out=out, terminal=False) == 0
        nursery.cancel_scope.cancel()
    assert "no trio_resilience metrics at this endpoint" in out.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["watch", "ftp://x/metrics"], "URL must be an http:// or https:// address"),
        (["watch", "http://"], "URL must be"),
        (["watch", "http://x:99999/"], "out of range"),
        (["watch", "http://x/", "--interval", "0"], "--interval must be a finite number > 0"),
        (["watch", "http://x/", "--interval", "nan"], "--interval must be"),
    ],
)
def test_bad_arguments_exit_with_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad URL or interval is one error line and status 2."""
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_https_without_httpx_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """https:// needs httpx; without it the error says so."""
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(FetchError, match="needs httpx"):
        trio.run(fetch, "https://127.0.0.1:1/metrics")


async def test_output_that_is_not_a_terminal_gets_plain_lines() -> None:
    """terminal=None picks the plain view for a file that is not a tty."""
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        url = await serve(nursery, answering(b"HTTP/1.0 200 OK\r\n\r\n"))
        assert await watch(url, once=True, out=out) == 0
        nursery.cancel_scope.cancel()
    assert out.getvalue().startswith(f"== {url} at ")
    assert not CONTROL.search(out.getvalue())
