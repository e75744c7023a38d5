"""An httpx client behind ResilientTransport: Retry-After, per-host breakers, a shared budget.

It starts two small ASGI apps under hypercorn on loopback ports (a flaky one and one in
an outage), then talks to both through one client. Run it:
``python examples/httpx_client.py`` (needs the ``httpx`` extra and hypercorn).
"""

from __future__ import annotations

import random
from typing import Any

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from trio_resilience import BreakerRegistry, CircuitOpenError, FullJitterBackoff, Retry, RetryBudget
from trio_resilience.httpx import ResilientTransport


def make_app(answers: list[tuple[int, dict[str, str]]]) -> Any:
    """An ASGI app answering from ``answers`` in turn, then with the last one forever."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        status, headers = answers.pop(0) if len(answers) > 1 else answers[0]
        body = f"status {status}".encode()
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    return app


async def start(nursery: trio.Nursery, app: Any) -> str:
    config = Config()
    config.bind = ["127.0.0.1:0"]  # a free loopback port
    config.accesslog = None
    config.errorlog = None
    binds: list[str] = await nursery.start(serve, app, config)
    return binds[0]


async def main() -> list[str]:
    lines: list[str] = []
    async with trio.open_nursery() as servers:
        # Busy once (503 with Retry-After: 1), then fine.
        flaky = await start(servers, make_app([(503, {"Retry-After": "1"}), (200, {})]))
        down = await start(servers, make_app([(500, {})]))  # an outage

        rng = random.Random(3)
        transport = ResilientTransport(
            breakers=BreakerRegistry(failure_threshold=3, recovery_timeout=30.0),
            retry=Retry(attempts=3, backoff=FullJitterBackoff(rng=rng)),
            budget=RetryBudget(ratio=0.2),  # share it between every client of a service
            rng=rng,
        )
        async with httpx.AsyncClient(transport=transport) as client:
            start_time = trio.current_time()
            response = await client.get(f"{flaky}/orders")
            waited = trio.current_time() - start_time
            lines.append(f"flaky: {response.status_code} after a Retry-After wait of {waited:.2f}s")

            for _ in range(3):
                response = await client.get(f"{down}/orders")
                lines.append(f"down: {response.status_code} (a 500 reaches the caller)")
            try:
                await client.get(f"{down}/orders")
            except CircuitOpenError as exc:
                lines.append(f"down: rejected without connecting, retry in {exc.retry_after:.0f}s")

            response = await client.get(f"{flaky}/orders")
            lines.append(f"flaky: {response.status_code}: the other host's outage changes nothing")

        for role, url in (("flaky", flaky), ("down", down)):
            stats = transport.breaker_for(url).statistics()
            lines.append(
                f"{role} breaker {stats.state.value}: "
                f"{stats.total_failures} failures, {stats.total_rejected} rejected"
            )
        servers.cancel_scope.cancel()
    for line in lines:
        print(line)
    return lines


if __name__ == "__main__":
    trio.run(main)
