"""MetricsRegistry over prometheus-client, on an injected CollectorRegistry.

Never the global registry: each daemon (and each test) owns its registry, so
two snapshotters in one process, or one test after another, never share series.
Metrics are created on first use from their domain spec; declaring specs up
front makes label-less ones visible at 0 before anything happens. Every call a
daemon serves passes through `observe_call`, which counts in plain Python
(`calls.CallsCollector`, registered in the same registry) rather than through
prometheus-client's locked metrics; the series a scrape sees are the same.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from snapmux.adapters.prometheus.calls import CallsCollector
from snapmux.domain import metrics as m

CALL_SPECS = (m.REQUESTS, m.REQUEST_ERRORS)
"""Counted by `observe_call` only (`CallsCollector`): a second metric of the same name would export twice."""


class PrometheusMetricsRegistry:
    def __init__(self, registry: CollectorRegistry, declared: Iterable[m.CounterSpec | m.GaugeSpec] = ()) -> None:
        self.registry = registry
        self._metrics: dict[str, tuple[object, Counter | Gauge]] = {}
        self._lock = threading.Lock()
        self._calls = CallsCollector()
        registry.register(self._calls)
        self.observe_call = self._calls.observe  # type: ignore[method-assign]  # bound once: one frame less per call
        for spec in declared:
            self._metric(spec)

    def _metric(self, spec: m.CounterSpec | m.GaugeSpec) -> Counter | Gauge:
        if spec in CALL_SPECS:
            raise ValueError(f"metric {spec.name} counts calls: observe_call records it")
        with self._lock:
            known = self._metrics.get(spec.name)
            if known is not None:
                if known[0] != spec:
                    raise ValueError(f"metric {spec.name} is already declared as {known[0]!r}")
                return known[1]
            kind = Counter if isinstance(spec, m.CounterSpec) else Gauge
            metric = kind(spec.name, spec.help, spec.labels, registry=self.registry)
            self._metrics[spec.name] = (spec, metric)
            return metric

    def _child(self, spec: m.CounterSpec | m.GaugeSpec, labels: Mapping[str, str] | None) -> Counter | Gauge:
        labels = dict(labels or {})
        if set(labels) != set(spec.labels):
            raise ValueError(f"metric {spec.name} takes labels {spec.labels}, got {tuple(labels)}")
        metric = self._metric(spec)
        return metric.labels(**labels) if spec.labels else metric

    def observe_call(self, service: str, method: str, code: str, seconds: float) -> None:
        """Replaced in __init__ by the collector's own bound `observe`; kept for the port's shape."""
        self._calls.observe(service, method, code, seconds)

    def count(self, counter: m.CounterSpec, labels: Mapping[str, str] | None = None, amount: float = 1.0) -> None:
        if not isinstance(counter, m.CounterSpec):
            raise ValueError(f"{counter!r} is not a counter")
        self._child(counter, labels).inc(amount)  # prometheus-client refuses negative amounts

    def set_gauge(self, gauge: m.GaugeSpec, value: float, labels: Mapping[str, str] | None = None) -> None:
        if not isinstance(gauge, m.GaugeSpec):
            raise ValueError(f"{gauge!r} is not a gauge")
        self._child(gauge, labels).set(value)
