"""A scriptable ASGI app served by hypercorn on loopback, for the httpx transport's tests."""

from __future__ import annotations

import socket
from collections import deque
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

Headers = list[tuple[bytes, bytes]]


class ScriptedApp:
    """An ASGI app whose answers the test sets; it counts requests and connections.

    ``GET /`` (any method) answers with the next scripted ``(status, headers)`` or, when
    the script is empty, with ``status`` and ``headers``. ``/hang`` never answers.
    ``/alternate`` answers 503 and 200 in turn. Every body is ``body_size`` bytes.
    """

    def __init__(self) -> None:
        self.status = 200
        self.headers: Headers = []
        self.script: deque[tuple[int, Headers]] = deque()
        self.body_size = 16
        self.requests = 0
        self.methods: list[str] = []
        self.clients: set[tuple[str, int]] = set()
        self._alternate = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "http"
        self.requests += 1
        self.methods.append(scope["method"])
        client = scope.get("client")
        if client is not None:
            self.clients.add((client[0], client[1]))
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        if scope["path"] == "/hang":
            await trio.sleep_forever()
        if scope["path"] == "/alternate":
            self._alternate += 1
            status, headers = (503, []) if self._alternate % 2 else (200, [])
        elif self.script:
            status, headers = self.script.popleft()
        else:
            status, headers = self.status, self.headers
        body = b"x" * self.body_size
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def serve_app(
    app: ScriptedApp, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``app`` on a free loopback port; ``nursery.start`` returns its base URL."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 60.0
    config.graceful_timeout = 0.1

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serve, app, config)
        task_status.started(binds[0])


def closed_port() -> int:
    """A loopback port with nothing listening on it (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
