"""The demo: run small, the guarded run must beat the unguarded one on the figures that matter."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_resilience
from trio_resilience._cli import main
from trio_resilience.demo import (
    PHASES,
    WIDTH,
    DemoConfig,
    DemoResult,
    Wave2Config,
    render_json,
    render_text,
    rows,
    run_scenario,
    run_wave2,
    validate,
)
from trio_resilience.demo._plot import bin_edges, breaker_steps, rates, timeline

SMALL = DemoConfig(
    clients=10, capacity=5, buffer=25, healthy=5, outage=60, recovery=20, overload=15, calm=5
)
SMALL_ARGS = [
    "--clients=10",
    "--capacity=5",
    "--buffer=25",
    "--healthy=5",
    "--outage=60",
    "--recovery=20",
    "--overload=15",
    "--calm=5",
]


@pytest.fixture(scope="module")
def result() -> DemoResult:
    return run_scenario(SMALL)


def test_breaker_keeps_calls_off_the_dead_upstream(result: DemoResult) -> None:
    """Calls reaching the dead upstream: at most 1% of the unguarded run's."""
    findings = result.findings()
    dead = findings["dead_upstream_calls"]
    assert dead["unguarded"] > 1000
    assert dead["guarded"] <= 0.01 * dead["unguarded"]
    assert findings["opened"] >= 1


def test_shedding_bounds_latency_under_overload(result: DemoResult) -> None:
    """p99 latency of served requests under overload: at most a fifth of unguarded."""
    p99 = result.findings()["overload_p99"]
    assert p99["guarded"] is not None
    assert p99["unguarded"] is not None
    assert p99["guarded"] <= p99["unguarded"] / 5
    assert result.guarded.phases["overload"].shed > 0


def test_every_request_and_shed_item_is_accounted_for(result: DemoResult) -> None:
    """Channel accounting balances; every request is served, failed, shed or unserved."""
    channel = result.guarded.extra["channel"]
    assert channel["sent"] == channel["received"] + channel["evicted"] + channel["buffered"]
    assert channel["on_shed_calls"] == channel["shed"] + channel["evicted"]
    for run in (result.unguarded, result.guarded):
        totals = run.totals()
        assert totals["requests"] == (
            totals["served"] + totals["failed"] + totals["shed"] + run.extra["unserved_at_end"]
        )
    assert result.guarded.totals()["shed"] == channel["shed"]


def test_more_served_in_time_and_sentences_from_figures(result: DemoResult) -> None:
    """The guarded run serves more requests within the SLO; the sentences quote figures."""
    findings = result.findings()
    on_time = findings["served_within_slo"]
    assert on_time["guarded"] > 2 * on_time["unguarded"]
    sentences = result.sentences()
    assert len(sentences) == 5
    dead = findings["dead_upstream_calls"]
    assert f"{dead['guarded']:,} calls reach the dead upstream" in sentences[0]
    assert f"{dead['unguarded']:,}" in sentences[0]
    assert f"{findings['overload_p99']['guarded']:.2f} s" in sentences[2]


def test_runs_are_reproducible_with_a_seed() -> None:
    """The same seed gives the same figures; a different one does not."""
    tiny = DemoConfig(clients=4, capacity=3, healthy=2, outage=10, recovery=4, overload=4, calm=2)
    first, again = run_scenario(tiny).to_json(), run_scenario(tiny).to_json()
    assert first == again
    other = run_scenario(DemoConfig(**{**tiny.__dict__, "seed": 2})).to_json()
    assert other["unguarded"] != first["unguarded"]


def test_cli_json_prints_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one JSON document with both runs per phase."""
    assert main(["demo", "--json", "--seed", "3", "--scene=outage", *SMALL_ARGS]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document["unguarded"]["phases"]) == set(PHASES)
    assert document["config"]["seed"] == 3
    assert len(document["summary"]) == 5
    assert document["guarded"]["breaker_transitions"][0]["to"] == "open"


def test_cli_table_report(capsys: pytest.CaptureFixture[str]) -> None:
    """The default report is a table with both runs and the sentences."""
    assert main(["demo", "--scene=outage", *SMALL_ARGS]) == 0
    out = capsys.readouterr().out
    assert "unguarded" in out
    assert "guarded" in out
    assert "What each policy bought" in out
    assert "failure_threshold" in out


def test_cli_plain_report_without_rich(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without rich the same report comes out as plain text."""
    monkeypatch.setitem(sys.modules, "rich.console", None)
    assert main(["demo", "--scene=outage", *SMALL_ARGS]) == 0
    out = capsys.readouterr().out
    assert "\n85-100s   guarded" in out
    assert "- Circuit breaker:" in out


def test_cli_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--plot FILE.png draws the timeline."""
    pytest.importorskip("matplotlib")
    target = tmp_path / "timeline.png"
    assert main(["demo", "--plot", str(target), "--scene=outage", *SMALL_ARGS]) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "timeline written" in capsys.readouterr().err


def _no_run(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the scenario ran before the options were checked")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plot", "x.txt"], "--plot must name a .png, .svg or .pdf file, got 'x.txt'"),
        (["--plot", "timeline"], "--plot must name a .png, .svg or .pdf file, got 'timeline'"),
        (
            ["--plot", "/no/such/folder/x.png"],
            "--plot: the folder '/no/such/folder' does not exist",
        ),
        (
            ["--plot", "x.png", "--scene", "wave2"],
            "--plot draws the outage story: use it with --scene all or outage",
        ),
    ],
)
def test_cli_plot_target_is_checked_before_the_run(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plot file the demo could not write fails at once with one line, before any run."""
    monkeypatch.setattr("trio_resilience.demo.run_scenario", _no_run)
    monkeypatch.setattr("trio_resilience.demo.run_wave2", _no_run)
    with pytest.raises(SystemExit) as info:
        main(["demo", *args])
    assert info.value.code == 2
    assert capsys.readouterr().err == f"trio-resilience: error: {message}\n"


def test_cli_plot_without_matplotlib_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing matplotlib is a one-line message and exit status 2."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr("trio_resilience.demo.run_scenario", _no_run)
    with pytest.raises(SystemExit) as info:
        main(["demo", "--plot", "x.png"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "trio-resilience: error: --plot needs matplotlib: pip install 'trio-resilience[plot]'\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clients", "0"], "--clients must be an integer >= 1, got 0"),
        (["--outage", "-5"], "--outage must be a number > 0, got -5.0"),
        (["--service-time", "nan"], "--service-time must be a number > 0, got nan"),
        (["--speed", "0"], "--speed must be a number > 0, got 0.0"),
        (["--clients", "many"], "argument --clients: invalid int value: 'many'"),
        (["--calm", "4000"], "the phases must add up to at most 3600 s, got 4130"),
    ],
)
def test_cli_bad_options_are_one_line_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad options exit with status 2 and one line, never a traceback."""
    with pytest.raises(SystemExit) as info:
        main(["demo", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"trio-resilience: error: {message}\n"


def test_validate_checks_types() -> None:
    """validate() refuses non-integers where integers are needed."""
    with pytest.raises(ValueError, match=r"--workers must be an integer >= 1, got 1\.5"):
        validate(DemoConfig(workers=1.5))  # type: ignore[arg-type]


def test_realtime_mode_shows_progress(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--realtime runs on a scaled real clock and shows progress on stderr."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    args = ["--healthy=0.5", "--outage=0.5", "--recovery=0.5", "--overload=0.5", "--calm=0.5"]
    assert (
        main(["demo", "--realtime", "--speed", "50", "--clients=2", "--scene=outage", *args]) == 0
    )
    err = capsys.readouterr().err
    assert "\r[unguarded] t=" in err
    assert "\r[  guarded] t=" in err


def test_realtime_progress_never_goes_into_a_pipe(capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal --realtime writes no progress (no carriage returns) at all."""
    args = ["--healthy=0.5", "--outage=0.5", "--recovery=0.5", "--overload=0.5", "--calm=0.5"]
    assert (
        main(["demo", "--realtime", "--speed", "50", "--clients=2", "--scene=outage", *args]) == 0
    )
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "\r" not in captured.out
    assert "What each policy bought" in captured.out


def test_overall_sentence_follows_the_figures() -> None:
    """When the guarded run serves fewer requests on time, the sentence says so."""
    short = DemoConfig(clients=4, healthy=1, outage=4, recovery=2, overload=2, calm=1)
    result = run_scenario(short)
    on_time = result.findings()["served_within_slo"]
    overall = result.sentences()[-1]
    assert f"{on_time['guarded']:,} requests served within 2 s" in overall
    if on_time["guarded"] < on_time["unguarded"]:
        assert "recovery timeout kept callers away" in overall
    else:
        assert "stopped mattering" in overall


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
def test_report_fits_80_columns_without_cutting_a_figure(
    result: DemoResult, rich: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off a terminal the report is at most 80 columns wide and shows every figure whole."""
    if not rich:
        monkeypatch.setitem(sys.modules, "rich.console", None)
    out = io.StringIO()
    render_text(result, out)
    text = out.getvalue()
    assert max(len(line) for line in _lines(text)) <= WIDTH
    assert "…" not in text
    lines = _lines(text)
    for row in rows(result):  # every row of figures appears whole, on one line
        assert any(line.split() == row for line in lines), row


def test_report_on_a_terminal_uses_its_width(result: DemoResult) -> None:
    """On a terminal rich sizes the tables to the terminal, never wider than 120."""
    out = _Tty()
    render_text(result, out)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())  # rich colours a terminal
    assert max(len(line) for line in _lines(plain)) <= 120
    assert "What each policy bought" in plain


def test_rates_are_counted_over_exact_bins() -> None:
    """A shorter last bin divides by its own width; events past the end are left out."""
    assert bin_edges(2.5) == [0.0, 1.0, 2.0, 2.5]
    assert rates([0.1, 0.2, 2.2, 2.3, 2.5, 9.0, -1.0], 2.5) == [2.0, 0.0, 4.0]


def test_plotted_goodput_never_exceeds_what_the_upstream_can_serve(result: DemoResult) -> None:
    """No bin shows more served per second than capacity / shortest service time allows."""
    config = result.config
    ceiling = config.capacity * (1 / (0.8 * config.service_time) + 1)
    for run in (result.unguarded, result.guarded):
        goodput = timeline(result, run)["goodput"]
        assert max(goodput) <= ceiling
        assert sum(goodput) > 0


def test_plot_marks_every_breaker_transition_at_its_exact_time(result: DemoResult) -> None:
    """The breaker's steps come from on_state_change: one point per change, same time."""
    xs, ys = breaker_steps(result.guarded, result.config.duration)
    changes = result.guarded.transitions
    assert xs[1:-1] == [c.at for c in changes]
    half_open = sum(1 for c in changes if str(c.new_state) == "half_open")
    assert half_open >= 2
    assert ys.count(0.5) == half_open
    assert xs[0] == 0.0
    assert xs[-1] == result.config.duration


def test_the_core_package_never_imports_the_demo() -> None:
    """import trio_resilience loads nothing of trio_resilience.demo (nor rich, matplotlib)."""
    code = (
        "import sys, trio_resilience, trio_resilience.testing\n"
        "bad = [m for m in sys.modules if m.startswith(('trio_resilience.demo', 'matplotlib'))]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    package = Path(trio_resilience.__file__).parent
    for source in package.glob("*.py"):
        if source.name != "_cli.py":
            assert ".demo" not in source.read_text(), source


TINY_WAVE2 = Wave2Config(duration=8.0, tail_duration=5.0, tail_rate=50.0)


class FakeAdaptiveConcurrency:
    """A stand-in with the contract's surface: a limit held at the upstream's capacity."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.limit = 10
        self._limiter = trio.CapacityLimiter(10)

    async def call(self, fn: Any, *args: Any) -> Any:
        token = object()
        try:
            self._limiter.acquire_on_behalf_of_nowait(token)
        except trio.WouldBlock:
            raise trio_resilience.BulkheadFullError("fake", self.limit) from None
        try:
            return await fn(*args)
        finally:
            self._limiter.release_on_behalf_of(token)


class FakeHedge:
    """A stand-in with the contract's surface: a second attempt after ``delay``."""

    def __init__(self, *, delay: float, max_hedges: int, name: str) -> None:
        self.delay, self.max_hedges = delay, max_hedges

    async def call(self, fn: Any, *args: Any) -> Any:
        result = None
        async with trio.open_nursery() as nursery:

            async def attempt() -> None:
                nonlocal result
                result = await fn(*args)
                nursery.cancel_scope.cancel()

            nursery.start_soon(attempt)
            for _ in range(self.max_hedges):
                await trio.sleep(self.delay)
                nursery.start_soon(attempt)
        return result


def test_wave2_scenes_are_skipped_with_a_reason_without_the_features(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before wave 2 is merged each scene says what it needs instead of failing."""
    monkeypatch.delattr(trio_resilience, "AdaptiveConcurrency", raising=False)
    monkeypatch.delattr(trio_resilience, "Hedge", raising=False)
    wave2 = run_wave2(TINY_WAVE2)
    assert wave2.admission is None
    assert wave2.hedge is None
    assert wave2.skipped == {
        "admission": "needs trio_resilience.AdaptiveConcurrency (wave 2)",
        "hedge": "needs trio_resilience.Hedge (wave 2)",
    }
    out = io.StringIO()
    render_text(None, out, wave2)
    assert "Skipped the hedge scene: it needs trio_resilience.Hedge (wave 2)." in out.getvalue()


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
def test_wave2_scenes_run_and_report_in_80_columns_with_the_features(
    monkeypatch: pytest.MonkeyPatch, rich: bool
) -> None:
    """With classes of the contract's shape both scenes run, balance, and fit 80 columns."""
    monkeypatch.setattr(
        trio_resilience, "AdaptiveConcurrency", FakeAdaptiveConcurrency, raising=False
    )
    monkeypatch.setattr(trio_resilience, "Hedge", FakeHedge, raising=False)
    if not rich:
        monkeypatch.setitem(sys.modules, "rich.console", None)
    wave2 = run_wave2(TINY_WAVE2)
    assert wave2.skipped == {}
    assert wave2.admission is not None
    assert wave2.hedge is not None
    for figures in wave2.admission:
        s = figures.summary()
        assert s["requests"] == s["served"] + s["rejected"] + s["timed_out"]
    fixed, adaptive = (f.summary() for f in wave2.admission)
    assert adaptive["served"] > fixed["served"]
    plain, hedged = (f.summary() for f in wave2.hedge)
    assert hedged["upstream_calls"] > plain["upstream_calls"]
    out = io.StringIO()
    render_text(None, out, wave2)
    text = out.getvalue()
    assert max(len(line) for line in _lines(text)) <= WIDTH
    assert "…" not in text
    assert f"{adaptive['served']:,} requests within 1 s" in " ".join(text.split())
    document = io.StringIO()
    render_json(None, document, wave2)
    assert json.loads(document.getvalue())["wave2"]["hedge"]["no hedge"] == plain


@pytest.mark.skipif(
    not (hasattr(trio_resilience, "AdaptiveConcurrency") and hasattr(trio_resilience, "Hedge")),
    reason="needs wave 2's AdaptiveConcurrency and Hedge",
)
def test_wave2_scenes_show_what_the_real_policies_buy() -> None:
    """Adaptive concurrency serves more in time than a fixed limit; hedging cuts p99.9."""
    wave2 = run_wave2(Wave2Config(duration=30.0))
    assert wave2.admission is not None
    assert wave2.hedge is not None
    fixed, adaptive = (f.summary() for f in wave2.admission)
    assert adaptive["served"] > 2 * fixed["served"]
    plain, hedged = (f.summary() for f in wave2.hedge)
    assert hedged["p999_latency"] < plain["p999_latency"] / 5
