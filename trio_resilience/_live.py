"""A weak registry of live named policies, read by exporters at scrape time.

Every named policy calls :func:`register` from its constructor; nothing is recorded
per call. A policy that is garbage-collected disappears from :func:`live` on its own.
Exporters (``trio_resilience.metrics``) read each policy's ``statistics()``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

_LIVE: dict[str, weakref.WeakSet[Any]] = {}


def register(kind: str, policy: Any) -> None:
    """List ``policy`` under ``kind`` (``"breaker"``, ``"retry"``, ``"budget"``, ...)."""
    group = _LIVE.get(kind)
    if group is None:
        group = _LIVE[kind] = weakref.WeakSet()
    group.add(policy)


def live(kind: str) -> list[Any]:
    """The live policies of ``kind``, in no particular order (a snapshot list)."""
    group = _LIVE.get(kind)
    return list(group) if group is not None else []


def kinds() -> Iterator[str]:
    """Every kind that has had a policy registered."""
    return iter(list(_LIVE))
