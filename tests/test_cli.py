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
