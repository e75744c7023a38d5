"""Export the live named policies to Prometheus and OpenTelemetry, read at scrape time.

``register_prometheus`` needs the extra ``prometheus`` (prometheus_client) and
``instrument_opentelemetry`` the extra ``otel`` (the OpenTelemetry API and SDK);
importing this module needs neither. See ``docs/metrics.md`` for every metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._read import BREAKER_OUTCOMES, BREAKER_STATES, SPECS, Reader

if TYPE_CHECKING:
    from ._otel import OpenTelemetryInstruments
    from ._prometheus import PrometheusCollector

__all__ = [
    "BREAKER_OUTCOMES",
    "BREAKER_STATES",
    "METRIC_NAMES",
    "Reader",
    "instrument_opentelemetry",
    "register_prometheus",
]

METRIC_NAMES = tuple(spec.name for spec in SPECS)
"""Every exported metric name, in export order."""


def register_prometheus(registry: Any = None) -> PrometheusCollector:
    """Export every live named policy to a prometheus_client registry.

    Args:
        registry: a ``prometheus_client.CollectorRegistry``; None: the default ``REGISTRY``.

    Returns:
        The collector (a custom collector read at scrape time);
        ``registry.unregister(collector)`` stops the export.

    Raises:
        ImportError: prometheus_client is missing (``pip install 'trio-resilience[prometheus]'``).
        TypeError: ``registry`` is not a registry.
        ValueError: the registry already exports these names (from prometheus_client).
    """
    try:
        from ._prometheus import register_prometheus as register
    except ImportError as exc:
        raise ImportError(
            "register_prometheus needs prometheus_client: pip install 'trio-resilience[prometheus]'"
        ) from exc
    return register(registry)


def instrument_opentelemetry(meter_provider: Any = None) -> OpenTelemetryInstruments:
    """Export every live named policy through observable OpenTelemetry instruments.

    Args:
        meter_provider: an ``opentelemetry.metrics.MeterProvider``; None: the global one.

    Returns:
        The instruments; ``uninstrument()`` stops their reports.

    Raises:
        ImportError: the OpenTelemetry API or SDK is missing
            (``pip install 'trio-resilience[otel]'``).
        TypeError: ``meter_provider`` is not a meter provider.
    """
    try:
        from ._otel import instrument_opentelemetry as instrument
    except ImportError as exc:
        raise ImportError(
            "instrument_opentelemetry needs opentelemetry-api and opentelemetry-sdk: "
            "pip install 'trio-resilience[otel]'"
        ) from exc
    return instrument(meter_provider)
