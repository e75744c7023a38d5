"""The trio-resilience command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trio_resilience._cli import main


def test_demo_prints_the_story(capsys: pytest.CaptureFixture[str]) -> None:
    """demo runs in virtual time and prints the breaker's transitions."""
    assert (
        main(
            ["demo", "--seed", "3", "--overload=10", "--calm=5", "--recovery=10", "--scene=outage"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "failure_threshold" in out
    assert "success_threshold" in out


def test_unknown_command_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad command is a usage error, not a traceback."""
    with pytest.raises(SystemExit) as info:
        main(["nope"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("trio-resilience: error: argument command: invalid choice")
    assert err.count("\n") == 1


def test_module_entry_point() -> None:
    """python -m trio_resilience --help works."""
    done = subprocess.run(
        [sys.executable, "-m", "trio_resilience", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "demo" in done.stdout


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the program name and trio_resilience.__version__, exit status 0."""
    import trio_resilience

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"trio-resilience {trio_resilience.__version__}\n"


def test_demo_subcommand_is_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    """demo --help lists the scenes and the plot formats."""
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "{all,outage,wave2}" in out
    assert ".png, .svg, .pdf" in out


class _ClosedPipe:
    """A stdout whose reader went away (`trio-resilience demo | head -1`)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError

    def flush(self) -> None:
        raise BrokenPipeError

    def isatty(self) -> bool:
        return False


def test_demo_into_a_closed_pipe_ends_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that leaves early ends the demo with status 0, not a traceback."""
    monkeypatch.setitem(sys.modules, "rich.console", None)
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    closed = []
    monkeypatch.setattr(sys, "stderr", type("E", (), {"close": lambda self: closed.append(1)})())
    args = ["--healthy=1", "--outage=2", "--recovery=1", "--overload=1", "--calm=1"]
    assert main(["demo", "--scene=outage", "--clients=2", *args]) == 0
    assert closed == [1]
