"""trio_resilience.metrics: Prometheus and OpenTelemetry export of the live policies."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trio_resilience import (
    CircuitBreaker,
    CircuitOpenError,
    DropOldest,
    LoopBudget,
    _live,
    open_shedding_channel,
)
from trio_resilience.metrics import (
    BREAKER_STATES,
    METRIC_NAMES,
    instrument_opentelemetry,
    register_prometheus,
)

from .conftest import Boom

CONTRACT = {
    "trio_resilience_breaker_state": ("breaker", "state"),
    "trio_resilience_breaker_calls_total": ("breaker", "outcome"),
    "trio_resilience_retry_attempts_total": ("retry", "kind"),
    "trio_resilience_retry_gave_up_total": ("retry", "reason"),
    "trio_resilience_shed_total": ("channel", "reason"),
    "trio_resilience_channel_buffer_used": ("channel",),
    "trio_resilience_budget_throttled_total": ("budget",),
    "trio_resilience_rate_limited_total": ("limiter",),
    "trio_resilience_concurrency_limit": ("limiter",),
}


def listed(kind: str, policy: Any) -> Any:
    """List ``policy`` in the weak registry (a no-op where its constructor already does)."""
    _live.register(kind, policy)
    return policy


class WeakLoopBudget(LoopBudget):
    """A LoopBudget that can be weakly referenced even before LoopBudget itself can."""


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    collector = register_prometheus(registry)
    yield registry
    registry.unregister(collector)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """The sample of ``name`` with exactly ``labels`` in a fresh scrape."""
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def series(registry: CollectorRegistry, name: str, key: str, label: str) -> dict[str, float]:
    """``{other label value: value}`` of the samples of ``name`` whose ``key`` is ``label``."""
    out: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels.get(key) == label:
                rest = [v for k, v in sample.labels.items() if k != key]
                out[rest[0] if rest else ""] = float(sample.value)
    return out


async def fail() -> None:
    await trio.lowlevel.checkpoint()
    raise Boom


async def succeed() -> int:
    await trio.lowlevel.checkpoint()
    return 1


# ----------------------------------------------------------------- breakers


async def test_breaker_state_has_one_series_per_state_and_one_for_current(
    registry: CollectorRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    """All five states are exported; only the current one reads 1, and it follows a trip."""
    breaker = listed("breaker", CircuitBreaker("m-state", failure_threshold=2))
    states = series(registry, "trio_resilience_breaker_state", "breaker", "m-state")
    assert states == {s: (1.0 if s == "closed" else 0.0) for s in BREAKER_STATES}
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call(fail)
    states = series(registry, "trio_resilience_breaker_state", "breaker", "m-state")
    assert states == {s: (1.0 if s == "open" else 0.0) for s in BREAKER_STATES}
    breaker.force_open()
    assert value(registry, "trio_resilience_breaker_state", breaker="m-state", state="forced_open")
    breaker.disable()
    assert value(registry, "trio_resilience_breaker_state", breaker="m-state", state="disabled")


async def test_breaker_calls_are_counted_by_outcome(
    registry: CollectorRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    """success, failure, ignored, cancelled and rejected come from the breaker's totals."""
    breaker = listed("breaker", CircuitBreaker("m-calls", failure_threshold=2, ignore_on=KeyError))
    await breaker.call(succeed)
    await breaker.call(succeed)

    async def missing() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await breaker.call(missing)
    with trio.move_on_after(1):
        await breaker.call(trio.sleep_forever)
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call(fail)
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            await breaker.call(succeed)
    calls = series(registry, "trio_resilience_breaker_calls_total", "breaker", "m-calls")
    assert calls == {
        "success": 2.0,
        "failure": 2.0,
        "ignored": 1.0,
        "cancelled": 1.0,
        "rejected": 3.0,
    }


async def test_calls_do_no_export_work(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With both exporters attached, breaker calls never touch them; scrapes do."""
    from trio_resilience.metrics import _read

    reads: list[object] = []
    real = _read.Reader.read

    def counted(self: _read.Reader, kinds: Any = None) -> list[_read.Family]:
        reads.append(kinds)
        return real(self, kinds)

    monkeypatch.setattr(_read.Reader, "read", counted)
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    instrument_opentelemetry(provider)
    breaker = listed("breaker", CircuitBreaker("m-percall"))
    for _ in range(100):
        await breaker.call(succeed)
    assert reads == []
    generate_latest(registry)
    assert len(reads) == 1
    provider.shutdown()


def test_a_collected_policy_disappears_from_the_export(registry: CollectorRegistry) -> None:
    """The registry is weak: once the breaker is garbage, its series are gone."""
    breaker = listed("breaker", CircuitBreaker("m-gone"))
    assert value(registry, "trio_resilience_breaker_state", breaker="m-gone", state="closed") == 1
    del breaker
    gc.collect()
    assert series(registry, "trio_resilience_breaker_state", "breaker", "m-gone") == {}
    assert series(registry, "trio_resilience_breaker_calls_total", "breaker", "m-gone") == {}


async def test_policies_with_one_name_are_summed(
    registry: CollectorRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    """Two breakers named alike: one series per state counting breakers, calls added up."""
    first = listed("breaker", CircuitBreaker("m-twin", failure_threshold=1))
    second = listed("breaker", CircuitBreaker("m-twin"))
    with pytest.raises(Boom):
        await first.call(fail)
    await second.call(succeed)
    await second.call(succeed)
    states = series(registry, "trio_resilience_breaker_state", "breaker", "m-twin")
    assert states["open"] == 1.0
    assert states["closed"] == 1.0
    assert sum(states.values()) == 2.0
    calls = series(registry, "trio_resilience_breaker_calls_total", "breaker", "m-twin")
    assert (calls["success"], calls["failure"]) == (2.0, 1.0)


def test_time_in_state_restarts_when_the_state_changes() -> None:
    """state_seconds counts from the first scrape that saw the current state."""
    registry = CollectorRegistry()
    collector = register_prometheus(registry)
    now = [100.0]
    collector.reader.clock = lambda: now[0]
    breaker = listed("breaker", CircuitBreaker("m-since"))
    name = "trio_resilience_breaker_state_seconds"
    assert value(registry, name, breaker="m-since") == 0.0
    now[0] = 112.5
    assert value(registry, name, breaker="m-since") == 12.5
    breaker.force_open()
    now[0] = 113.0
    assert value(registry, name, breaker="m-since") == 0.0
    now[0] = 120.0
    assert value(registry, name, breaker="m-since") == 7.0


async def test_a_scrape_from_another_thread_reads_the_breakers(
    registry: CollectorRegistry,
) -> None:
    """A server thread outside trio.run (prometheus_client's) still sees every breaker."""
    breaker = listed("breaker", CircuitBreaker("m-thread"))
    await breaker.call(succeed)
    text = await trio.to_thread.run_sync(generate_latest, registry)
    assert b'trio_resilience_breaker_calls_total{breaker="m-thread",outcome="success"} 1.0' in (
        text
    )


# ----------------------------------------------------------------- bad policies


@dataclass(eq=False)
class Fake:
    """A policy stand-in whose statistics() returns ``stats`` (or raises it)."""

    name: Any
    stats: Any
    limit: Any = None

    def statistics(self) -> Any:
        if isinstance(self.stats, BaseException):
            raise self.stats
        return self.stats


@dataclass
class Stats:
    values: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def test_a_raising_or_odd_policy_is_skipped_and_the_rest_exported(
    registry: CollectorRegistry,
) -> None:
    """statistics() raising, a missing field, NaN, a bool or a non-str name never break a scrape."""
    good = listed("breaker", CircuitBreaker("m-good"))
    broken = listed("breaker", Fake("m-broken", RuntimeError("no run")))
    nameless = listed("breaker", Fake(42, Stats({"state": "closed"})))
    odd = listed(
        "breaker",
        Fake(
            "m-odd",
            Stats(
                {
                    "state": "closed",
                    "total_successes": float("nan"),
                    "total_failures": True,
                    "total_rejected": "3",
                    "total_ignored": -1,
                    "total_cancelled": 4,
                }
            ),
        ),
    )
    unknown_state = listed("breaker", Fake("m-unknown", Stats({"state": "melted"})))
    text = generate_latest(registry).decode()
    assert 'breaker="m-good"' in text
    assert 'breaker="m-broken"' not in text
    assert 'breaker="m-unknown"' not in text
    calls = series(registry, "trio_resilience_breaker_calls_total", "breaker", "m-odd")
    assert calls == {"cancelled": 4.0}
    assert value(registry, "trio_resilience_breaker_state", breaker="m-odd", state="closed") == 1
    del good, broken, nameless, odd, unknown_state


def test_retry_attempts_and_give_ups_by_reason(registry: CollectorRegistry) -> None:
    """first = calls, retry = retries; gave_up keys become reasons, garbage keys do not."""
    retry = listed(
        "retry",
        Fake(
            "m-retry",
            Stats(
                {
                    "calls": 10,
                    "attempts": 14,
                    "retries": 4,
                    "gave_up": {
                        "attempts": 2,
                        "budget": 1,
                        "circuit_open": 3,
                        "Bad Reason\x1b[2J": 5,
                        7: 1,
                        "deadline": float("inf"),
                    },
                    "budget_refused": 1,
                }
            ),
        ),
    )
    assert series(registry, "trio_resilience_retry_attempts_total", "retry", "m-retry") == {
        "first": 10.0,
        "retry": 4.0,
    }
    assert series(registry, "trio_resilience_retry_gave_up_total", "retry", "m-retry") == {
        "attempts": 2.0,
        "budget": 1.0,
        "circuit_open": 3.0,
    }
    del retry


def test_huge_numbers_raising_fields_and_too_many_reasons_are_survived(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An int too big for a float, a property that raises, 40 reasons: still a scrape."""

    class Raising:
        @property
        def calls(self) -> int:
            raise RuntimeError("broken field")

        retries = 10**400
        gave_up: ClassVar[dict[str, int]] = {f"r{i}": 1 for i in range(40)}

    retry = listed("retry", Fake("m-huge", Raising()))
    assert series(registry, "trio_resilience_retry_attempts_total", "retry", "m-huge") == {}
    reasons = series(registry, "trio_resilience_retry_gave_up_total", "retry", "m-huge")
    assert len(reasons) == 32
    del retry


def test_a_registry_changing_under_a_scrape_thread_is_retried(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WeakSet iteration racing a registration (another thread) retries, then gives up."""
    breaker = listed("breaker", CircuitBreaker("m-race"))
    real = _live.live
    failures = {"breaker": 2}

    def flaky(kind: str) -> list[Any]:
        if failures.get(kind, 0) > 0:
            failures[kind] -= 1
            raise RuntimeError("Set changed size during iteration")
        return real(kind)

    monkeypatch.setattr(_live, "live", flaky)
    assert value(registry, "trio_resilience_breaker_state", breaker="m-race", state="closed") == 1
    failures["breaker"] = 3
    assert series(registry, "trio_resilience_breaker_state", "breaker", "m-race") == {}
    del breaker


def test_retry_without_a_retries_field_counts_attempts_beyond_the_first(
    registry: CollectorRegistry,
) -> None:
    """Where statistics() has only calls and attempts, retries = attempts - calls."""
    retry = listed("retry", Fake("m-retry2", Stats({"calls": 3, "attempts": 5})))
    assert series(registry, "trio_resilience_retry_attempts_total", "retry", "m-retry2") == {
        "first": 3.0,
        "retry": 2.0,
    }
    del retry


async def test_a_shedding_channel_is_counted_once_for_both_ends(
    registry: CollectorRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    """Both ends listed: shed and evicted counts, buffer used and size, once each."""
    send, receive = open_shedding_channel(2, policy=DropOldest(), name="m-chan")
    listed("channel", send)
    listed("channel", receive)
    listed("channel", send.clone())
    for item in range(5):
        await send.send(item)
    assert series(registry, "trio_resilience_shed_total", "channel", "m-chan") == {
        "shed": 0.0,
        "evicted": 3.0,
    }
    assert value(registry, "trio_resilience_channel_buffer_used", channel="m-chan") == 2.0
    assert value(registry, "trio_resilience_channel_buffer_size", channel="m-chan") == 2.0
    await receive.receive()
    assert value(registry, "trio_resilience_channel_buffer_used", channel="m-chan") == 1.0


async def test_loop_budget_throttled_ticks(
    registry: CollectorRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    """budget_throttled_total is the LoopBudget's throttled count."""
    budget = listed("loop_budget", WeakLoopBudget(2, window=1.0, name="m-loop"))
    with budget:
        for _ in range(5):
            await budget.tick()
    throttled = budget.statistics().throttled
    assert throttled > 0
    assert value(registry, "trio_resilience_budget_throttled_total", budget="m-loop") == throttled


def test_rate_limiter_and_concurrency_limit(registry: CollectorRegistry) -> None:
    """rate_limited_total from the limiter's rejections; concurrency_limit from .limit."""
    limiter = listed("rate_limiter", Fake("m-rate", Stats({"rejected": 9})))
    concurrency = listed("concurrency", Fake("m-conc", Stats({}), limit=17))
    from_stats = listed("concurrency", Fake("m-conc2", Stats({"limit": 5})))
    assert value(registry, "trio_resilience_rate_limited_total", limiter="m-rate") == 9.0
    assert value(registry, "trio_resilience_concurrency_limit", limiter="m-conc") == 17.0
    assert value(registry, "trio_resilience_concurrency_limit", limiter="m-conc2") == 5.0
    del limiter, concurrency, from_stats


# ----------------------------------------------------------------- Prometheus


def test_the_text_format_has_the_contract_names_and_labels(registry: CollectorRegistry) -> None:
    """Every contract name is exported with its labels, as prometheus_client writes it."""
    keep = [
        listed("breaker", CircuitBreaker("m-text")),
        listed("retry", Fake("m-text", Stats({"calls": 1, "retries": 0, "gave_up": {"a": 1}}))),
        listed("channel", open_shedding_channel(1, name="m-text")[0]),
        listed("loop_budget", WeakLoopBudget(1, name="m-text")),
        listed("rate_limiter", Fake("m-text", Stats({"rejected": 1}))),
        listed("concurrency", Fake("m-text", Stats({}), limit=3)),
    ]
    text = generate_latest(registry).decode()
    seen: dict[str, set[frozenset[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "m-text" in sample.labels.values():
                seen.setdefault(sample.name, set()).add(frozenset(sample.labels))
    for name, labels in CONTRACT.items():
        assert seen[name] == {frozenset(labels)}, name
    assert set(CONTRACT) <= set(METRIC_NAMES)
    del keep


def test_default_registry_and_unregister() -> None:
    """registry=None registers with prometheus_client's REGISTRY; unregister detaches."""
    from prometheus_client import REGISTRY

    breaker = listed("breaker", CircuitBreaker("m-default"))
    collector = register_prometheus()
    try:
        assert b'breaker="m-default"' in generate_latest(REGISTRY)
    finally:
        REGISTRY.unregister(collector)
    assert b'breaker="m-default"' not in generate_latest(REGISTRY)
    del breaker


def test_wrong_registry_or_meter_provider_types_are_refused() -> None:
    """Something that is not a registry or a meter provider is a TypeError naming it."""
    with pytest.raises(
        TypeError, match=r"^registry must be a prometheus_client CollectorRegistry, got 'x'$"
    ):
        register_prometheus("x")
    with pytest.raises(
        TypeError, match=r"^meter_provider must be an OpenTelemetry MeterProvider, got 3$"
    ):
        instrument_opentelemetry(3)


def test_registering_twice_on_one_registry_is_refused(registry: CollectorRegistry) -> None:
    """The names are already there: prometheus_client's duplicate check says so."""
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register_prometheus(registry)


# ----------------------------------------------------------------- OpenTelemetry


def otel_points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], float]]]:
    data = reader.get_metrics_data()
    out: dict[str, list[tuple[dict[str, Any], float]]] = {}
    if data is None:
        return out
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points = out.setdefault(metric.name, [])
                for point in metric.data.data_points:  # type: ignore[union-attr]
                    points.append((dict(point.attributes or {}), float(point.value)))  # type: ignore[union-attr]
    return out


async def test_opentelemetry_instruments_report_the_same_figures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Observable gauges and counters with the contract names, read at collection."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instruments = instrument_opentelemetry(provider)
    breaker = listed("breaker", CircuitBreaker("m-otel", failure_threshold=1))
    with pytest.raises(Boom):
        await breaker.call(fail)
    with pytest.raises(CircuitOpenError):
        await breaker.call(succeed)
    retry = listed(
        "retry", Fake("m-otel", Stats({"calls": 4, "retries": 2, "gave_up": {"budget": 1}}))
    )
    points = otel_points(reader)
    assert set(CONTRACT) <= set(instruments.instruments)
    state = {
        a["state"]: v
        for a, v in points["trio_resilience_breaker_state"]
        if a["breaker"] == "m-otel"
    }
    assert state == {s: (1.0 if s == "open" else 0.0) for s in BREAKER_STATES}
    calls = {
        a["outcome"]: v
        for a, v in points["trio_resilience_breaker_calls_total"]
        if a["breaker"] == "m-otel"
    }
    assert (calls["failure"], calls["rejected"], calls["success"]) == (1.0, 1.0, 0.0)
    gave_up = [
        (a, v) for a, v in points["trio_resilience_retry_gave_up_total"] if a["retry"] == "m-otel"
    ]
    assert gave_up == [({"retry": "m-otel", "reason": "budget"}, 1.0)]
    instruments.uninstrument()
    after = otel_points(reader)
    assert not any(
        a.get("breaker") == "m-otel" for a, _ in after.get("trio_resilience_breaker_state", [])
    )
    provider.shutdown()
    del breaker, retry


def test_opentelemetry_defaults_to_the_global_meter_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """meter_provider=None asks opentelemetry.metrics.get_meter_provider()."""
    from opentelemetry import metrics as otel_metrics

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monkeypatch.setattr(otel_metrics, "get_meter_provider", lambda: provider)
    instruments = instrument_opentelemetry()
    breaker = listed("breaker", CircuitBreaker("m-global"))
    points = otel_points(reader)
    assert ({"breaker": "m-global", "state": "closed"}, 1.0) in points[
        "trio_resilience_breaker_state"
    ]
    assert set(instruments.instruments) == set(METRIC_NAMES)
    provider.shutdown()
    del breaker


# ----------------------------------------------------------------- extras missing


def test_each_function_names_its_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without prometheus_client or OpenTelemetry each function names the extra to install."""
    for module in list(sys.modules):
        if module.startswith(("trio_resilience.metrics._", "prometheus_client", "opentelemetry")):
            monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"trio-resilience\[prometheus\]"):
        register_prometheus()
    with pytest.raises(ImportError, match=r"trio-resilience\[otel\]"):
        instrument_opentelemetry()


def test_importing_metrics_needs_neither_extra() -> None:
    """``import trio_resilience.metrics`` works where neither extra is installed."""
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"
        "sys.modules['opentelemetry'] = None\n"
        "import trio_resilience.metrics as m\n"
        "print(len(m.METRIC_NAMES))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(METRIC_NAMES)
