"""Which ``trio.run`` is this? Lets policies built at module scope forget earlier runs.

A policy object may be used in several ``trio.run`` calls (module-level objects,
pytest-trio tests). Trio's clock of one run means nothing in the next, so a policy
that stored times compares its saved token with :func:`run_token` where it reads the
clock, and starts its windows afresh when they differ.
"""

from __future__ import annotations

import trio

_TOKEN: trio.lowlevel.RunVar[object] = trio.lowlevel.RunVar("trio_resilience_run")


def run_token() -> object:
    """An object unique to the current Trio run (the same one for the whole run)."""
    try:
        return _TOKEN.get()
    except LookupError:
        token = object()
        _TOKEN.set(token)
        return token
