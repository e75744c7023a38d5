"""The cost and speed of sharing on Redis: round trips per sync, trip propagation.

1. One process shares 10 breakers and 2 retry budgets (sync_interval 0.25 s) for a few
   seconds: round trips per sync (the process's own count) and commands per second on
   the server (``INFO commandstats``), against wave 1's 41.7 round trips/s.
2. Twelve worker processes (tests/redis_worker.py) and one that trips: the time from
   the trip to each worker seeing OPEN, against sync_interval + 50 ms.

Needs ``redis-server`` (Debian's package); prints nothing to compare without it.
Run: ``python benchmarks/bench_redis.py``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio
from _common import Row, report

sys.path.insert(0, str(Path(__file__).parent.parent))
from tests.redis_servers import REDIS, RedisServer
from trio_resilience import CircuitBreaker, RetryBudget
from trio_resilience.redis import open_shared_state

WORKER = Path(__file__).parent.parent / "tests" / "redis_worker.py"
WAVE1_ROUND_TRIPS_PER_SECOND = 41.7  # 10 breakers, sync_interval 0.25 (issue 18)
SYNC_INTERVAL = 0.25
SECONDS = 4.0
WORKERS = 12


def commandstats(server: RedisServer) -> dict[str, int]:
    calls: dict[str, int] = {}
    for line in server.cli("info", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            fields = dict(part.split("=") for part in rest.split(","))
            calls[name[len("cmdstat_") :]] = int(fields["calls"])
    return calls


async def cost(server: RedisServer) -> dict[str, float]:
    breakers = [CircuitBreaker(f"svc{i}") for i in range(10)]
    budgets = [RetryBudget(name="api"), RetryBudget(name="db")]
    async with open_shared_state(
        server.url, *breakers, retry_budgets=budgets, prefix="cost", sync_interval=SYNC_INTERVAL
    ) as shared:
        await trio.sleep(1.0)  # scripts loaded, steady state
        before, stats_before = commandstats(server), shared.statistics()
        await trio.sleep(SECONDS)
        after, stats_after = commandstats(server), shared.statistics()
    syncs = stats_after.syncs - stats_before.syncs
    round_trips = stats_after.round_trips - stats_before.round_trips
    evalsha = after.get("evalsha", 0) - before.get("evalsha", 0)
    every = sum(after.values()) - sum(before.values()) - 1  # less our own INFO
    return {
        "round_trips_per_sync": round_trips / syncs,
        "round_trips_per_second": round_trips / SECONDS,
        "evalsha_per_second": evalsha / SECONDS,
        "server_commands_per_second": every / SECONDS,
    }


def propagation(server: RedisServer) -> list[float]:
    roles = ["tripper"] + [f"w{i}" for i in range(WORKERS)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), server.url, role, "bench", "fanout"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=WORKER.parent.parent,
        )
        for role in roles
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["event"] == "ready"
    time.sleep(0.5)
    assert procs[0].stdin is not None
    procs[0].stdin.write("go\n")
    procs[0].stdin.flush()
    events: list[list[dict[str, Any]]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        if proc.returncode:
            raise SystemExit(err)
        events.append([json.loads(line) for line in out.splitlines() if line])
    for ev in events:
        if not any(e["event"] in ("open", "tripped") for e in ev):
            raise SystemExit(f"a worker never saw the trip: {ev}")
    tripped = next(e["time"] for e in events[0] if e["event"] == "tripped")
    return [next(e["time"] for e in ev if e["event"] == "open") - tripped for ev in events[1:]]


def main() -> None:
    if REDIS is None:
        print("redis-server is not installed: nothing to measure", file=sys.stderr)
        return
    server = RedisServer()
    server.start()
    try:
        figures = trio.run(cost, server)
        latencies = propagation(server)
    finally:
        server.stop()
    limit = SYNC_INTERVAL + 0.05
    wave1_per_sync = WAVE1_ROUND_TRIPS_PER_SECOND * SYNC_INTERVAL
    per_sync = figures["round_trips_per_sync"]
    worst = max(latencies)
    rows = [
        Row(
            "round trips per sync, 10 breakers + 2 budgets",
            "wave 1 (41.7/s at 0.25 s)",
            per_sync,
            wave1_per_sync,
            per_sync / wave1_per_sync,
            "<= 1 per sync",
            per_sync <= 1.0,
        ),
        Row(
            f"trip to OPEN in {WORKERS} processes (worst, us)",
            "sync_interval + 50 ms",
            worst * 1e6,
            limit * 1e6,
            worst / limit,
            "<= 1x",
            worst <= limit,
        ),
    ]
    report(
        "redis sharing",
        rows,
        {
            "round trips per second per process": round(figures["round_trips_per_second"], 2),
            "EVALSHA per second per process": round(figures["evalsha_per_second"], 1),
            "server commands per second per process (scripts' own included)": round(
                figures["server_commands_per_second"], 1
            ),
            "trip propagation median ms": round(statistics.median(latencies) * 1000, 1),
            "trip propagation worst ms": round(worst * 1000, 1),
        },
    )


if __name__ == "__main__":
    main()
