"""A GET through ResilientTransport against the bare httpx transport, on a healthy server.

Both clients talk to the same hypercorn app on loopback, in the same Trio run, requests
interleaved one by one; the ratio of medians is the whole overhead (breaker, status check, retry
bookkeeping) on the happy path. Run: ``python benchmarks/bench_httpx.py``.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

import httpx
import trio
from _common import SCALE, ratio_row, report
from hypercorn.config import Config
from hypercorn.trio import serve

from trio_resilience.httpx import ResilientTransport

BODY = b"ok"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


async def paired(
    bare: httpx.AsyncClient, resilient: httpx.AsyncClient, url: str, n: int
) -> dict[str, float]:
    """Median seconds of a GET by each client, requests interleaved one by one.

    On a shared, noisy machine a request takes hundreds of microseconds give or take
    more than the transport's few microseconds; timing the two clients' requests in
    alternation (the order flipped every pair) and taking medians lets both see the
    same load.
    """
    clients = {"bare httpx transport GET": bare, "ResilientTransport GET": resilient}
    samples: dict[str, list[float]] = {name: [] for name in clients}
    order = list(clients.items())
    for client in clients.values():  # warm up: connect, fill caches
        for _ in range(200):
            await client.get(url)
    gc.collect()
    gc.disable()
    try:
        for i in range(max(1, n)):
            for name, client in order if i % 2 else order[::-1]:
                start = time.perf_counter()
                await client.get(url)
                samples[name].append(time.perf_counter() - start)
            if i % 500 == 499:
                gc.enable()
                gc.collect()
                gc.disable()
    finally:
        gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


async def main() -> None:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 600.0
    async with trio.open_nursery() as nursery:
        (base,) = await nursery.start(serve, app, config)
        bare = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport())
        resilient = httpx.AsyncClient(transport=ResilientTransport())
        async with bare, resilient:
            times = await paired(bare, resilient, base, n=int(4000 * SCALE))
        nursery.cancel_scope.cancel()
    report(
        "httpx",
        [ratio_row("ResilientTransport GET", "bare httpx transport GET", times, at_most=1.05)],
    )


if __name__ == "__main__":
    trio.run(main)
