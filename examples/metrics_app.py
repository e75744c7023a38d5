"""Serve the policies' metrics over HTTP for Prometheus and ``trio-resilience watch``.

A breaker guards a flaky service (down 10 s of every 30 s), a shedding channel feeds a
slow worker and a loop budget paces a poller; a tiny Trio HTTP server answers
``GET /metrics`` with prometheus_client's text format (``register_prometheus``).

Run it and watch it from another terminal::

    python examples/metrics_app.py --port 8000
    trio-resilience watch http://127.0.0.1:8000/metrics

Needs the extras ``prometheus`` (and ``demo`` for watch's rich view).
``main()`` alone runs a few (virtual) seconds, scrapes itself once and prints the states.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from typing import Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from trio_resilience import (
    CircuitBreaker,
    CircuitOpenError,
    DropNewest,
    LoadShedError,
    LoopBudget,
    open_shedding_channel,
)
from trio_resilience.metrics import register_prometheus


class Outage(Exception):
    """The flaky service is down."""


async def flaky_service() -> str:
    await trio.sleep(0.05)
    if trio.current_time() % 30 < 10:
        raise Outage("service down")
    return "ok"


async def handle(stream: trio.SocketStream, registry: CollectorRegistry) -> None:
    """Answer one HTTP/1.x request: the metrics at /metrics, 404 elsewhere."""
    async with stream:
        request = b""
        with trio.move_on_after(5):
            while b"\r\n\r\n" not in request and len(request) < 65536:
                data = await stream.receive_some(4096)
                if not data:
                    break
                request += data
        path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
        if path.split(b"?")[0] == b"/metrics":
            status, body, kind = b"200 OK", generate_latest(registry), CONTENT_TYPE_LATEST
        else:
            status, body, kind = b"404 Not Found", b"not found\n", "text/plain"
        head = (
            b"HTTP/1.0 " + status + b"\r\nContent-Type: " + kind.encode() + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(trio.BrokenResourceError):  # the client went away
            await stream.send_all(head + body)


async def serve_metrics(
    registry: CollectorRegistry,
    port: int = 0,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``registry`` at http://127.0.0.1:port/metrics (port 0: any free port)."""

    async def handler(stream: trio.SocketStream) -> None:
        await handle(stream, registry)

    await trio.serve_tcp(handler, port, host="127.0.0.1", task_status=task_status)


def make_policies() -> dict[str, Any]:
    """The named policies the app runs (each lists itself for the exporter)."""
    send, receive = open_shedding_channel(10, policy=DropNewest(), name="jobs")
    return {
        "breaker": CircuitBreaker("payments", failure_threshold=5, recovery_timeout=5.0),
        "send": send,
        "receive": receive,
        "budget": LoopBudget(5, window=1.0, name="poller"),
    }


async def clients(breaker: CircuitBreaker) -> None:
    while True:
        with contextlib.suppress(Outage, CircuitOpenError):
            await breaker.call(flaky_service)
        await trio.sleep(0.1)


async def producer(send: Any) -> None:
    while True:
        for job in range(4):
            with contextlib.suppress(LoadShedError):  # shed: counted by the channel
                await send.send(job)
        await trio.sleep(0.1)


async def worker(receive: Any) -> None:
    async for _job in receive:
        await trio.sleep(0.05)  # 20 jobs/s against 40 offered: the rest is shed


async def poller(budget: LoopBudget) -> None:
    with budget:
        while True:
            await budget.tick()  # at most 5 polls a second, however fast the loop


async def scrape(port: int) -> str:
    """GET our own /metrics over loopback, as Prometheus or watch would."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        chunks = []
        while data := await stream.receive_some(65536):
            chunks.append(data)
    return b"".join(chunks).partition(b"\r\n\r\n")[2].decode()


async def main(port: int = 0, seconds: float = 12.0) -> dict[str, Any]:
    """Run the app for ``seconds`` (inf: until interrupted); print the breaker's state."""
    registry = CollectorRegistry()
    register_prometheus(registry)
    policies = make_policies()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve_metrics, registry, port)
        bound = listeners[0].socket.getsockname()[1]
        print(f"metrics at http://127.0.0.1:{bound}/metrics")
        nursery.start_soon(clients, policies["breaker"])
        nursery.start_soon(producer, policies["send"])
        nursery.start_soon(worker, policies["receive"])
        nursery.start_soon(poller, policies["budget"])
        if math.isinf(seconds):
            await trio.sleep_forever()
        await trio.sleep(seconds)
        text = await scrape(bound)
        nursery.cancel_scope.cancel()
    for line in text.splitlines():
        if line.startswith("trio_resilience_breaker_state{") and line.endswith(" 1.0"):
            print(line)
        if line.startswith("trio_resilience_shed_total"):
            print(line)
    print(f"{len(text.splitlines())} lines of metrics scraped")
    return policies


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--seconds", type=float, default=math.inf)
    options = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main, options.port, options.seconds)
