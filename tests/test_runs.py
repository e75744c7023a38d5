"""run_token(): one token per trio.run, the same throughout it."""

from __future__ import annotations

import trio

from trio_resilience._live import kinds, live, register
from trio_resilience._runs import run_token


def test_each_run_has_its_own_token() -> None:
    """Two trio.run calls see different tokens; one run sees one token."""
    seen: list[object] = []

    async def main() -> None:
        first = run_token()
        await trio.sleep(0)
        assert run_token() is first
        seen.append(first)

    trio.run(main)
    trio.run(main)
    assert seen[0] is not seen[1]


def test_live_registry_forgets_collected_policies() -> None:
    """A registered policy is listed while alive and gone once collected."""
    import gc

    class Thing:
        pass

    thing = Thing()
    register("test_thing", thing)
    assert live("test_thing") == [thing]
    assert "test_thing" in list(kinds())
    del thing
    gc.collect()
    assert live("test_thing") == []
    assert live("never_registered") == []
