"""A prometheus_client collector over the live policies (extra ``prometheus``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, CollectorRegistry

from ._read import SPECS, Family, Reader


def _metric(family: Family) -> Metric:
    spec = family.spec
    metric: Any
    if spec.type == "counter":
        metric = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    else:
        metric = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
    for labels, value in family.samples.items():
        metric.add_metric(list(labels), value)
    result: Metric = metric
    return result


class PrometheusCollector:
    """Reads ``statistics()`` of every live named policy each time it is collected.

    Made and registered by :func:`register_prometheus`; ``registry.unregister(it)``
    detaches it.
    """

    def __init__(self) -> None:
        self.reader = Reader()

    def collect(self) -> Iterator[Metric]:
        """The families of one scrape (never raises for a policy's sake)."""
        for family in self.reader.read():
            yield _metric(family)

    def describe(self) -> Iterator[Metric]:
        """The families' names without samples, for the registry's duplicate check."""
        for spec in SPECS:
            yield _metric(Family(spec))


def register_prometheus(registry: CollectorRegistry | None = None) -> PrometheusCollector:
    """Export every live named policy to ``registry`` (None: prometheus_client's ``REGISTRY``).

    Returns:
        The collector; ``registry.unregister(collector)`` stops the export.

    Raises:
        TypeError: ``registry`` is not a registry.
        ValueError: from prometheus_client, when ``registry`` already has these metrics
            (for example from an earlier call).
    """
    if registry is not None and not callable(getattr(registry, "register", None)):
        raise TypeError(f"registry must be a prometheus_client CollectorRegistry, got {registry!r}")
    collector = PrometheusCollector()
    (REGISTRY if registry is None else registry).register(collector)
    return collector
