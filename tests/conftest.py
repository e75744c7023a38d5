"""Shared fixtures: every time-dependent test runs on an autojump MockClock."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import structlog


class Boom(Exception):
    """A failure raised by test bodies."""


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Captured structlog events (the library never configures structlog itself)."""
    with structlog.testing.capture_logs() as captured:
        yield captured


@pytest.fixture(autouse=True)
def _quiet_structlog() -> Iterator[None]:
    """Keep structlog's default console output out of test runs."""
    with structlog.testing.capture_logs():
        yield


def load_sim(name: str) -> ModuleType:
    """Import benchmarks/<name>.py (a simulation) as a module, for its fast unit variant."""
    path = Path(__file__).parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
