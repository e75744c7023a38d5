"""The demo's main scene: one client fleet meets an outage and an overload, unguarded and guarded.

Everything here uses the public API only, as a user would. The core package never
imports this sub-package; only the command line does.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio
import trio.lowlevel
import trio.testing

from trio_resilience import (
    CircuitBreaker,
    CircuitOpenError,
    DecorrelatedJitterBackoff,
    ExponentialBackoff,
    FailAfter,
    LoadShedError,
    LoopBudget,
    Pipeline,
    ProbabilisticShedding,
    Retry,
    RetryBudget,
    StateChange,
    open_shedding_channel,
)

PHASES = ("healthy", "outage", "recovery", "overload", "calm")
SLO = 2.0  # seconds: a request served later than this was served too late to matter


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the scenario; every field is a command-line option."""

    seed: int = 1
    clients: int = 20
    rate: float = 4.0  # requests per second per client, outside the overload burst
    capacity: int = 10  # upstream requests served at once
    service_time: float = 0.1  # seconds per request: capacity / service_time per second
    workers: int = 20
    buffer: int = 50  # the front queue between clients and workers
    healthy: float = 10.0
    outage: float = 60.0
    recovery: float = 30.0
    overload: float = 30.0
    calm: float = 20.0

    @property
    def upstream_rate(self) -> float:
        """Requests per second the upstream can serve."""
        return self.capacity / self.service_time

    def phase_bounds(self) -> list[tuple[str, float, float]]:
        bounds, start = [], 0.0
        for name in PHASES:
            length = getattr(self, name)
            bounds.append((name, start, start + length))
            start += length
        return bounds

    @property
    def duration(self) -> float:
        return float(sum(getattr(self, name) for name in PHASES))

    def client_rate(self, now: float) -> float:
        """Per-client rate at ``now``: the burst offers twice the upstream's capacity."""
        if self.phase_at(now) == "overload":
            return 2.0 * self.upstream_rate / self.clients
        return self.rate

    def phase_at(self, now: float) -> str:
        for name, start, end in self.phase_bounds():
            if start <= now < end:
                return name
        return PHASES[-1]


def validate(config: DemoConfig) -> None:
    """Raise ValueError naming the option for any size out of range."""
    for name in ("clients", "capacity", "workers", "buffer"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name} must be an integer >= 1, got {value!r}")
    for name in ("rate", "service_time", *PHASES):
        value = getattr(config, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a number > 0, got {value!r}")
    if config.duration > 3600:
        raise ValueError(f"the phases must add up to at most 3600 s, got {config.duration:g}")


class UpstreamDown(Exception):
    """The upstream's answer during its outage."""


@dataclass
class PhaseFigures:
    requests: int = 0
    served: int = 0
    failed: int = 0
    shed: int = 0
    dead_upstream_calls: int = 0
    upstream_calls: int = 0
    retries: int = 0
    on_time: int = 0
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "requests": self.requests,
            "served": self.served,
            "failed": self.failed,
            "shed": self.shed,
            "upstream_calls": self.upstream_calls,
            "dead_upstream_calls": self.dead_upstream_calls,
            "retries": self.retries,
            "served_within_slo": self.on_time,
            "p50_latency": _quantile(lat, 0.50),
            "p99_latency": _quantile(lat, 0.99),
        }


def _quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return round(sorted_values[index], 4)


@dataclass
class RunResult:
    name: str
    phases: dict[str, PhaseFigures]
    transitions: list[StateChange]
    events: dict[str, list[float]]
    latency_points: list[tuple[float, float]]
    extra: dict[str, Any]

    def totals(self) -> dict[str, Any]:
        total = PhaseFigures()
        for figures in self.phases.values():
            for key in ("requests", "served", "failed", "shed", "retries", "on_time"):
                setattr(total, key, getattr(total, key) + getattr(figures, key))
            total.upstream_calls += figures.upstream_calls
            total.dead_upstream_calls += figures.dead_upstream_calls
            total.latencies.extend(figures.latencies)
        return total.summary()

    def to_json(self) -> dict[str, Any]:
        return {
            "phases": {name: f.summary() for name, f in self.phases.items()},
            "totals": self.totals(),
            "breaker_transitions": [
                {
                    "at": round(c.at, 3),
                    "from": str(c.old_state),
                    "to": str(c.new_state),
                    "reason": c.reason,
                }
                for c in self.transitions
            ],
            **self.extra,
        }


# The demo prints its own report: its policies log to a logger that drops everything.
QUIET = structlog.ReturnLogger()


class _Recorder:
    """Figures per phase, and the exact time of every event for the timeline."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.phases = {name: PhaseFigures() for name in PHASES}
        self.events: dict[str, list[float]] = {"served": [], "shed": [], "dead_calls": []}
        self.latency_points: list[tuple[float, float]] = []

    def at(self, when: float) -> PhaseFigures:
        return self.phases[self.config.phase_at(when)]

    def event(self, key: str, when: float) -> None:
        self.events[key].append(when)

    def served(self, created: float, now: float) -> None:
        figures = self.at(created)
        figures.served += 1
        if now - created <= SLO:
            figures.on_time += 1
        # Latency belongs to the phase in which the request was served: what users of
        # the service saw during that phase.
        self.at(now).latencies.append(now - created)
        self.event("served", now)
        self.latency_points.append((now, now - created))


class _Upstream:
    """An in-process service: ``capacity`` requests at once, dead during the outage."""

    def __init__(self, config: DemoConfig, recorder: _Recorder, rng: random.Random) -> None:
        self.config = config
        self.recorder = recorder
        self.rng = rng
        self.limiter = trio.CapacityLimiter(config.capacity)

    async def handle(self) -> str:
        now = trio.current_time()
        figures = self.recorder.at(now)
        figures.upstream_calls += 1
        if self.config.phase_at(now) == "outage":
            figures.dead_upstream_calls += 1
            self.recorder.event("dead_calls", now)
            await trio.sleep(self.config.service_time * 2.5)  # fails after some latency
            raise UpstreamDown
        async with self.limiter:
            await trio.sleep(self.config.service_time * self.rng.uniform(0.8, 1.2))
        return "ok"


async def _run(config: DemoConfig, guarded: bool, on_tick: Callable[..., None] | None) -> RunResult:
    rng = random.Random(config.seed)
    recorder = _Recorder(config)
    upstream = _Upstream(config, recorder, rng)
    transitions: list[StateChange] = []
    extra: dict[str, Any] = {}
    breaker = CircuitBreaker(
        "upstream",
        failure_threshold=10,
        failure_window=5.0,
        recovery_timeout=ExponentialBackoff(
            base=2.0, multiplier=2.0, max_delay=16.0, jitter_factor=0.0
        ),
        success_threshold=3,
        half_open_max_calls=2,
        on_state_change=transitions.append,
        logger=QUIET,
    )
    retry_budget = RetryBudget(ratio=0.1, min_retries_per_second=2.0)
    pipeline = Pipeline(
        Retry(
            attempts=3,
            backoff=DecorrelatedJitterBackoff(base=0.05, max_delay=1.0, rng=rng),
            retry_on=(UpstreamDown, trio.TooSlowError),
            max_total_duration=3.0,
            budget=retry_budget,
            name="upstream",
            logger=QUIET,
        ),
        breaker,
        FailAfter(1.0),
    )
    attempts_in_request = 0

    async def call_guarded() -> str:
        nonlocal attempts_in_request
        attempts_in_request += 1
        return await upstream.handle()

    shed_items: list[float] = []
    if guarded:
        send, receive = open_shedding_channel(
            config.buffer,
            policy=ProbabilisticShedding(rng=random.Random(config.seed + 1)),
            on_shed=lambda created, reason: shed_items.append(created),
            name="front",
            logger=QUIET,
        )
    else:
        send, receive = trio.open_memory_channel[float](config.buffer)  # type: ignore[assignment]

    async def worker() -> None:
        nonlocal attempts_in_request
        async for created in receive:
            figures = recorder.at(created)
            if guarded:
                attempts_in_request = 0
                try:
                    await pipeline.call(call_guarded)
                except (UpstreamDown, CircuitOpenError, trio.TooSlowError):
                    figures.failed += 1
                else:
                    recorder.served(created, trio.current_time())
                figures.retries += max(0, attempts_in_request - 1)
                continue
            for attempt in range(4):  # naive: up to three immediate retries
                if attempt:
                    figures.retries += 1
                try:
                    await upstream.handle()
                except UpstreamDown:
                    continue
                recorder.served(created, trio.current_time())
                break
            else:
                figures.failed += 1

    async def submit(created: float) -> None:
        try:
            await send.send(created)
        except LoadShedError:
            recorder.at(created).shed += 1
            recorder.event("shed", created)

    end = config.duration
    loop_stats: list[Any] = []

    async def client(index: int, nursery: trio.Nursery) -> None:
        client_rng = random.Random(config.seed * 1000 + index)
        await trio.sleep(client_rng.uniform(0, 1 / config.rate))
        if guarded:
            # Hold each client loop to its nominal rate (a spinning loop cannot flood the
            # queue) and stop it at the scenario's end through the budget's cancel scope.
            peak = 2.0 * config.upstream_rate / config.clients
            with LoopBudget(
                max(1, math.ceil(peak * 1.5)),
                window=1.0,
                max_duration=end - trio.current_time(),
                name=f"client-{index}",
                logger=QUIET,
            ) as budget:
                async for _ in budget:
                    now = trio.current_time()
                    recorder.at(now).requests += 1
                    nursery.start_soon(submit, now)
                    await trio.sleep(client_rng.expovariate(config.client_rate(now)))
            loop_stats.append(budget.statistics())
            return
        while trio.current_time() < end:
            now = trio.current_time()
            recorder.at(now).requests += 1
            nursery.start_soon(submit, now)
            await trio.sleep(client_rng.expovariate(config.client_rate(now)))

    async def progress() -> None:
        # Live progress for --realtime only: the figures never depend on sampling.
        assert on_tick is not None
        for second in range(math.ceil(end)):
            await trio.sleep_until(second + 0.5)
            on_tick(guarded, trio.current_time(), recorder, breaker)

    async with trio.open_nursery() as outer:
        for _ in range(config.workers):
            outer.start_soon(worker)
        if on_tick is not None:
            outer.start_soon(progress)
        serve = getattr(breaker, "serve", None)
        if guarded and serve is not None:
            # Wave 2: the breaker's duty applies open -> half-open on time, so every
            # transition is stamped when it happens, not when the next call arrives.
            outer.start_soon(serve)
        async with trio.open_nursery() as senders:
            async with trio.open_nursery() as clients:
                for index in range(config.clients):
                    clients.start_soon(client, index, senders)
            # The scenario is over: requests still waiting to enter the queue are the
            # unguarded run's backlog; count them as failed (never served) and stop.
            senders.cancel_scope.cancel()
        await trio.lowlevel.checkpoint()
        outer.cancel_scope.cancel()

    if guarded:
        stats = send.statistics()
        extra["channel"] = {
            "sent": stats.sent,
            "received": stats.received,
            "shed": stats.shed,
            "evicted": stats.evicted,
            "buffered": stats.current_buffer_used,
            "on_shed_calls": len(shed_items),
        }
        budget_stats = retry_budget.statistics()
        extra["retry_budget"] = {
            "retries_allowed": budget_stats.withdrawals,
            "retries_refused": budget_stats.rejected,
        }
        extra["client_loops"] = {
            "throttled": sum(s.throttled for s in loop_stats),
            "stopped_by_budget": sum(1 for s in loop_stats if s.exhausted),
        }
    else:
        stats = send.statistics()
        extra["channel"] = {
            "buffered": stats.current_buffer_used,
            "senders_still_waiting_at_end": stats.tasks_waiting_send,
        }
    extra["unserved_at_end"] = _unserved(recorder)
    return RunResult(
        name="guarded" if guarded else "unguarded",
        phases=recorder.phases,
        transitions=transitions if guarded else [],
        events=recorder.events,
        latency_points=recorder.latency_points,
        extra=extra,
    )


def _n(count: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{count:,} {noun if count == 1 else plural}"


def _unserved(recorder: _Recorder) -> int:
    return sum(f.requests - f.served - f.failed - f.shed for f in recorder.phases.values())


@dataclass
class DemoResult:
    config: DemoConfig
    unguarded: RunResult
    guarded: RunResult

    def findings(self) -> dict[str, Any]:
        """The comparisons the report's sentences are made of."""
        u, g = self.unguarded, self.guarded
        u_dead = sum(f.dead_upstream_calls for f in u.phases.values())
        g_dead = sum(f.dead_upstream_calls for f in g.phases.values())
        u_over = u.phases["overload"].summary()
        g_over = g.phases["overload"].summary()
        u_retries = sum(f.retries for f in u.phases.values())
        g_retries = sum(f.retries for f in g.phases.values())
        return {
            "dead_upstream_calls": {"unguarded": u_dead, "guarded": g_dead},
            "dead_upstream_ratio": g_dead / u_dead if u_dead else 0.0,
            "overload_p99": {"unguarded": u_over["p99_latency"], "guarded": g_over["p99_latency"]},
            "overload_p99_ratio": (
                (g_over["p99_latency"] or 0.0) / u_over["p99_latency"]
                if u_over["p99_latency"]
                else None
            ),
            "retries": {"unguarded": u_retries, "guarded": g_retries},
            "served": {"unguarded": u.totals()["served"], "guarded": g.totals()["served"]},
            "served_within_slo": {
                "unguarded": u.totals()["served_within_slo"],
                "guarded": g.totals()["served_within_slo"],
            },
            "shed": g.totals()["shed"],
            "opened": sum(1 for c in g.transitions if str(c.new_state) == "open"),
        }

    def sentences(self) -> list[str]:
        """One sentence per policy, computed from the figures."""
        f = self.findings()
        g = self.guarded
        dead = f["dead_upstream_calls"]
        first_open = next((c.at for c in g.transitions if str(c.new_state) == "open"), None)
        first_close = next((c.at for c in g.transitions if str(c.new_state) == "closed"), None)
        outage = self.config.phase_bounds()[1]
        lines = []
        if first_open is not None:
            lines.append(
                f"Circuit breaker: opened {first_open - outage[1]:.1f} s into the outage and let "
                f"{dead['guarded']:,} calls reach the dead upstream instead of "
                f"{dead['unguarded']:,} ({100 * f['dead_upstream_ratio']:.2f}%)"
                + (
                    f"; probes found it back and closed it at t={first_close:.1f} s."
                    if first_close is not None
                    else "."
                )
            )
        else:
            lines.append(
                f"Circuit breaker: never opened; {dead['guarded']:,} calls reached the dead "
                f"upstream against {dead['unguarded']:,} unguarded."
            )
        budget = g.extra.get("retry_budget", {})
        lines.append(
            f"Retry with jitter and a retry budget: {_n(f['retries']['guarded'], 'retry')} "
            f"instead of {f['retries']['unguarded']:,} naive immediate ones (a CircuitOpenError "
            f"is not retried); the budget refused {_n(budget.get('retries_refused', 0), 'retry')} "
            f"that would only have added load."
        )
        p99 = f["overload_p99"]
        channel = g.extra.get("channel", {})
        dropped = channel.get("shed", 0) + channel.get("evicted", 0)
        if p99["unguarded"] and p99["guarded"] is not None:
            lines.append(
                f"Load shedding: under twice the capacity the shedding channel refused "
                f"{g.phases['overload'].shed:,} requests at once and kept p99 latency at "
                f"{p99['guarded']:.2f} s against {p99['unguarded']:.2f} s "
                f"({p99['unguarded'] / max(p99['guarded'], 1e-9):.0f}x lower); every one of "
                f"{dropped:,} dropped items reached on_shed."
            )
        else:
            lines.append(
                f"Load shedding: the shedding channel refused {g.phases['overload'].shed:,} "
                f"requests during the overload; every one of {dropped:,} dropped items reached "
                f"on_shed."
            )
        loops = g.extra.get("client_loops", {})
        lines.append(
            f"Loop budget: client loops were throttled {loops.get('throttled', 0):,} times and "
            f"{loops.get('stopped_by_budget', 0)} of {self.config.clients} were stopped at the "
            f"end by their budget's cancel scope."
        )
        on_time = f["served_within_slo"]
        late = f["served"]["unguarded"] - on_time["unguarded"]
        if on_time["guarded"] >= on_time["unguarded"]:
            lines.append(
                f"Overall: {on_time['guarded']:,} requests served within {SLO:g} s against "
                f"{on_time['unguarded']:,} unguarded; the unguarded run served {late:,} more "
                f"only after they had stopped mattering, and failures came back fast "
                f"instead of queueing."
            )
        else:
            lines.append(
                f"Overall: {on_time['guarded']:,} requests served within {SLO:g} s against "
                f"{on_time['unguarded']:,} unguarded: in phases this short the breaker's "
                f"recovery timeout kept callers away longer than the outage cost them."
            )
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "config": {k: getattr(self.config, k) for k in self.config.__dataclass_fields__},
            "phases": [{"name": n, "start": s, "end": e} for n, s, e in self.config.phase_bounds()],
            "unguarded": self.unguarded.to_json(),
            "guarded": self.guarded.to_json(),
            "findings": self.findings(),
            "summary": self.sentences(),
        }


def run_scenario(
    config: DemoConfig,
    *,
    realtime: bool = False,
    speed: float = 1.0,
    on_tick: Callable[..., None] | None = None,
) -> DemoResult:
    """Run the scenario twice (unguarded, guarded), each in its own ``trio.run``."""
    validate(config)
    results = {}
    for guarded in (False, True):
        clock = (
            trio.testing.MockClock(rate=speed)
            if realtime
            else trio.testing.MockClock(autojump_threshold=0)
        )
        results[guarded] = trio.run(_run, config, guarded, on_tick, clock=clock)
    return DemoResult(config, results[False], results[True])


__all__ = ["PHASES", "SLO", "DemoConfig", "DemoResult", "RunResult", "run_scenario", "validate"]
