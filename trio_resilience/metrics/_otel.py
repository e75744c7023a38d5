"""OpenTelemetry observable instruments over the live policies (extra ``otel``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from ._read import SPECS, Reader, Spec


class OpenTelemetryInstruments:
    """The observable instruments made by :func:`instrument_opentelemetry`.

    Attributes:
        instruments: the instruments by metric name.
    """

    def __init__(self, meter_provider: MeterProvider) -> None:
        from .. import __version__

        self.reader = Reader()
        self._active = True
        meter = meter_provider.get_meter("trio_resilience", __version__)
        self.instruments: dict[str, Any] = {}
        for spec in SPECS:
            make = (
                meter.create_observable_counter
                if spec.type == "counter"
                else meter.create_observable_gauge
            )
            self.instruments[spec.name] = make(
                spec.name, callbacks=[self._callback(spec)], description=spec.help
            )

    def _callback(self, spec: Spec) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            if not self._active:
                return []
            for family in self.reader.read([spec.kind]):
                if family.spec is spec:
                    return [
                        Observation(value, dict(zip(spec.labels, labels, strict=True)))
                        for labels, value in family.samples.items()
                    ]
            return []  # pragma: no cover - every spec has a family

        return observe

    def uninstrument(self) -> None:
        """Stop reporting (OpenTelemetry cannot remove an instrument; it stays empty)."""
        self._active = False


def instrument_opentelemetry(
    meter_provider: MeterProvider | None = None,
) -> OpenTelemetryInstruments:
    """Export every live named policy through observable OpenTelemetry instruments.

    Args:
        meter_provider: where to create the meter ``trio_resilience``; None uses the
            global meter provider (``opentelemetry.metrics.get_meter_provider()``).

    Returns:
        The instruments; :meth:`~OpenTelemetryInstruments.uninstrument` stops the export.

    Raises:
        TypeError: ``meter_provider`` is not a meter provider.
    """
    provider = otel_metrics.get_meter_provider() if meter_provider is None else meter_provider
    if not callable(getattr(provider, "get_meter", None)):
        raise TypeError(f"meter_provider must be an OpenTelemetry MeterProvider, got {provider!r}")
    return OpenTelemetryInstruments(provider)
