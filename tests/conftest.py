"""Shared fixtures: every time-dependent test runs on an autojump MockClock."""

from __future__ import annotations

from collections.abc import Iterator
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
