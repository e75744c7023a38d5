"""The demo: run small, the guarded run must beat the unguarded one on the figures that matter."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from trio_resilience._cli import main
from trio_resilience._demo import PHASES, DemoConfig, DemoResult, run_scenario, validate

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
    assert main(["demo", "--json", "--seed", "3", *SMALL_ARGS]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document["unguarded"]["phases"]) == set(PHASES)
    assert document["config"]["seed"] == 3
    assert len(document["summary"]) == 5
    assert document["guarded"]["breaker_transitions"][0]["to"] == "open"


def test_cli_table_report(capsys: pytest.CaptureFixture[str]) -> None:
    """The default report is a table with both runs and the sentences."""
    assert main(["demo", *SMALL_ARGS]) == 0
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
    assert main(["demo", *SMALL_ARGS]) == 0
    out = capsys.readouterr().out
    assert "overload 85-100s" in out
    assert "- Circuit breaker:" in out


def test_cli_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--plot FILE.png draws the timeline."""
    pytest.importorskip("matplotlib")
    target = tmp_path / "timeline.png"
    assert main(["demo", "--plot", str(target), *SMALL_ARGS]) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "timeline written" in capsys.readouterr().err


def test_cli_plot_without_matplotlib_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing matplotlib is a one-line message and exit status 2."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
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
    monkeypatch.setattr("trio_resilience._demo.DemoConfig.duration", property(lambda self: 0.5))
    args = ["--healthy=0.1", "--outage=0.1", "--recovery=0.1", "--overload=0.1", "--calm=0.1"]
    assert main(["demo", "--realtime", "--speed", "1", "--clients=2", *args]) == 0
    err = capsys.readouterr().err
    assert "[unguarded] t=" in err
    assert "[  guarded] t=" in err


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
