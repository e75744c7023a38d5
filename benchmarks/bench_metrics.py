"""The exporters cost nothing per call: closed breaker.call with and without them attached.

Both exporters read ``statistics()`` at scrape time only, so attaching them must not move
the closed ``breaker.call`` by more than 3% (ratio in one run, rounds interleaved, the
same loop with the exporters detached and attached). Also shown: what one scrape of 100
breakers costs, against reading their statistics directly.

Run: ``python benchmarks/bench_metrics.py`` (``make bench`` runs every benchmark).
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

import trio
from _common import ROUNDS, SCALE, Row, ratio_row, report, time_loops
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

from trio_resilience import CircuitBreaker, _live
from trio_resilience.metrics import Reader, instrument_opentelemetry, register_prometheus

NO_EXPORTER = "breaker.call (closed), no exporter"
EXPORTERS = "breaker.call (closed), Prometheus + OTel attached"


async def work() -> int:
    return 1


class Exporters:
    """Attach both exporters (and scrape once), or detach them."""

    def __init__(self) -> None:
        self.attached: dict[str, Any] | None = None

    def attach(self) -> dict[str, Any]:
        if self.attached is None:
            registry = CollectorRegistry()
            collector = register_prometheus(registry)
            reader = InMemoryMetricReader()
            provider = MeterProvider(metric_readers=[reader])
            instruments = instrument_opentelemetry(provider)
            generate_latest(registry)
            reader.get_metrics_data()
            self.attached = {
                "registry": registry,
                "collector": collector,
                "reader": reader,
                "provider": provider,
                "instruments": instruments,
            }
        return self.attached

    def detach(self) -> None:
        if self.attached is not None:
            a = self.attached
            a["registry"].unregister(a["collector"])
            a["instruments"].uninstrument()
            a["provider"].shutdown()
            self.attached = None


async def main() -> None:
    breaker = CircuitBreaker("bench")
    others = [CircuitBreaker(f"bench-{i}") for i in range(99)]
    for b in [breaker, *others]:
        _live.register("breaker", b)  # constructors do this too once every policy lists itself
    exporters = Exporters()

    async def calls(n: int) -> None:
        call = breaker.call
        for _ in range(n):
            await call(work)

    # The exporters are attached and detached between timed runs, never inside one.
    n = max(1, int(20_000 * SCALE))
    await calls(1000)
    samples: dict[str, list[float]] = {NO_EXPORTER: [], EXPORTERS: []}
    for round_ in range(max(ROUNDS, 80)):
        order = (NO_EXPORTER, EXPORTERS) if round_ % 2 else (EXPORTERS, NO_EXPORTER)
        for name in order:  # ABBA: drift of a shared machine hits both alike
            if name == EXPORTERS:
                exporters.attach()
            else:
                exporters.detach()
            await calls(2000)  # warm caches again after the attach's first scrape
            gc.collect()
            gc.disable()
            start = time.perf_counter()
            await calls(n)
            samples[name].append((time.perf_counter() - start) / n)
            gc.enable()
    # Each round's two timings ran back to back: the median of their ratios cancels the
    # load swings of a shared machine better than a ratio of two medians.
    paired = statistics.median(
        a / b for a, b in zip(samples[EXPORTERS], samples[NO_EXPORTER], strict=True)
    )
    us, baseline_us = (statistics.median(samples[k]) * 1e6 for k in (EXPORTERS, NO_EXPORTER))
    rows = [Row(EXPORTERS, NO_EXPORTER, us, baseline_us, paired, "<= 1.03x", paired <= 1.03)]

    attached = exporters.attach()
    everyone = [breaker, *others]

    async def read_statistics(n: int) -> None:
        for _ in range(n):
            for b in everyone:
                b.statistics()

    async def prometheus_scrape(n: int) -> None:
        for _ in range(n):
            generate_latest(attached["registry"])

    reader = Reader()

    async def read(n: int) -> None:
        for _ in range(n):
            reader.read()

    async def otel_collect(n: int) -> None:
        for _ in range(n):
            attached["reader"].get_metrics_data()

    scrape_times = await time_loops(
        {
            "100 x breaker.statistics()": read_statistics,
            "Reader.read(), 100 breakers": read,
            "Prometheus scrape, 100 breakers": prometheus_scrape,
            "OTel collection, 100 breakers": otel_collect,
        },
        n=200,
    )
    rows.append(
        ratio_row("Reader.read(), 100 breakers", "100 x breaker.statistics()", scrape_times)
    )
    rows.append(
        ratio_row("Prometheus scrape, 100 breakers", "100 x breaker.statistics()", scrape_times)
    )
    rows.append(
        ratio_row("OTel collection, 100 breakers", "100 x breaker.statistics()", scrape_times)
    )
    exporters.detach()
    report("metrics exporters", rows)


if __name__ == "__main__":
    trio.run(main)
