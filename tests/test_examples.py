"""Every example runs to completion under an autojump MockClock."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import trio
import trio.testing

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_examples() -> None:
    """The examples folder is not empty (a glob that finds nothing would pass vacuously)."""
    assert len(EXAMPLES) >= 1


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The example's main() finishes in virtual time and prints something."""
    module = load(path)
    trio.run(module.main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert capsys.readouterr().out.strip()


def test_breaker_example_tells_the_whole_story(capsys: pytest.CaptureFixture[str]) -> None:
    """The breaker example opens, probes and closes again."""
    module = load(Path(__file__).parent.parent / "examples" / "breaker_basics.py")
    story = trio.run(module.main, clock=trio.testing.MockClock(autojump_threshold=0))
    transitions = [line.split("s ", 1)[1] for line in story[:-1]]
    assert transitions[0].startswith("closed -> open")
    assert transitions[-1].startswith("half_open -> closed")
    assert story[-1].startswith("closed:")
