"""Real Redis servers on loopback for the Redis tests: one server, or a 3-master Cluster.

``redis-server`` and ``redis-cli`` come from Debian's package (``make services``
installs it where missing); without them the Redis tests skip. Ports are chosen free,
data lives in a temporary directory, nothing is saved.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REDIS = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (its +10000 bus port too)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"redis-server on port {port} did not start")


class RedisServer:
    """One redis-server process; ``stop()`` kills it, ``start()`` brings it back."""

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    def start(self, *extra: str) -> None:
        assert REDIS is not None
        args = [
            REDIS,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *extra,
        ]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
        )
        _wait_listening(self.port)

    def pause(self) -> None:
        """Stop the process (SIGSTOP): connections stay open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(19)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(18)
        self.paused = False

    def cli(self, *args: str) -> str:
        assert REDIS_CLI is not None
        done = subprocess.run(
            [REDIS_CLI, "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout

    def stop(self) -> None:
        if self.process is not None:
            if self.paused:
                self.resume()
            self.process.kill()
            self.process.wait()
            self.process = None


class RedisCluster:
    """Three cluster-enabled redis-servers joined as 3 masters with 0 replicas."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="trio-resilience-cluster-")
        self.nodes: list[RedisServer] = []
        for i in range(3):
            workdir = Path(self._tmp.name) / str(i)
            workdir.mkdir()
            self.nodes.append(RedisServer(workdir=workdir))
        self.host = "127.0.0.1"
        self.port = self.nodes[0].port

    def start(self) -> None:
        assert REDIS_CLI is not None
        for node in self.nodes:
            node.start(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            )
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in n.cli("cluster", "info") for n in self.nodes):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self._tmp.cleanup()


# ------------------------------------------------------------------ pytest fixtures

try:
    import pytest
except ImportError:  # benchmarks import this module without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    from collections.abc import Iterator

    @pytest.fixture(scope="session")
    def shared_server() -> Iterator[RedisServer]:
        """One redis-server for the tests that do not stop it (each uses its own prefix)."""
        server = RedisServer()
        server.start()
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture
    def redis_server() -> Iterator[RedisServer]:
        """A redis-server of this test alone: it may be killed, paused or restarted."""
        server = RedisServer()
        server.start()
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture
    def redis_sentinel() -> Iterator[RedisSentinel]:
        """A primary and one Sentinel that monitors it as ``shop``."""
        sentinel = RedisSentinel()
        try:
            sentinel.start()
            yield sentinel
        finally:
            sentinel.stop()

    @pytest.fixture(scope="session")
    def redis_cluster() -> Iterator[RedisCluster]:
        """A real 3-master Redis Cluster on loopback."""
        cluster = RedisCluster()
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


class RedisSentinel:
    """A primary redis-server watched by one redis-sentinel (service name ``shop``)."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="trio-resilience-sentinel-")
        self.primary = RedisServer()
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS is not None
        self.primary.start()
        config = Path(self._tmp.name) / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\n"
            f"sentinel monitor shop 127.0.0.1 {self.primary.port} 1\n"
        )
        self.process = subprocess.Popen(
            [REDIS, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self._tmp.name,
        )
        _wait_listening(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        self.primary.stop()
        self._tmp.cleanup()
