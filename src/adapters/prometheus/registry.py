"""MetricsRegistry over prometheus-client, on an injected CollectorRegistry.

Never the global registry: each daemon (and each test) owns its registry, so
two snapshotters in one process, or one test after another, never share series.
Metrics are created on first use from their domain spec; declaring specs up
front makes label-less ones visible at 0 before anything happens. Every call a
daemon serves passes through `observe_call`, so its children (requests, errors,
latency) are resolved once per (service, method, code) and kept: prometheus-client's
`labels()` takes a lock and builds a key on every use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from snapmux.domain import metrics as m


class PrometheusMetricsRegistry:
    def __init__(self, registry: CollectorRegistry, declared: Iterable[m.CounterSpec | m.GaugeSpec] = ()) -> None:
        self.registry = registry
        self._metrics: dict[str, tuple[object, Counter | Gauge]] = {}
        self._lock = threading.Lock()
        self._calls: dict[tuple[str, str, str], Callable[[float], None]] = {}
        self._duration = Histogram(
            m.REQUEST_DURATION_NAME,
            m.REQUEST_DURATION_HELP,
            ("service", "method"),
            registry=registry,
            buckets=m.REQUEST_DURATION_BUCKETS,
        )
        for spec in declared:
            self._metric(spec)

    def _metric(self, spec: m.CounterSpec | m.GaugeSpec) -> Counter | Gauge:
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
        observe = self._calls.get((service, method, code))
        if observe is None:
            observe = self._calls[(service, method, code)] = self._call_observer(service, method, code)
        observe(seconds)

    def _call_observer(self, service: str, method: str, code: str) -> Callable[[float], None]:
        """The three children one kind of call updates, bound once."""
        labels = {"service": service, "method": method, "code": code}
        requests = self._child(m.REQUESTS, labels)
        errors = self._child(m.REQUEST_ERRORS, labels) if code != m.OK else None
        duration = self._duration.labels(service=service, method=method)

        def observe(seconds: float) -> None:
            requests.inc()
            if errors is not None:
                errors.inc()
            duration.observe(seconds)

        return observe

    def count(self, counter: m.CounterSpec, labels: Mapping[str, str] | None = None, amount: float = 1.0) -> None:
        if not isinstance(counter, m.CounterSpec):
            raise ValueError(f"{counter!r} is not a counter")
        self._child(counter, labels).inc(amount)  # prometheus-client refuses negative amounts

    def set_gauge(self, gauge: m.GaugeSpec, value: float, labels: Mapping[str, str] | None = None) -> None:
        if not isinstance(gauge, m.GaugeSpec):
            raise ValueError(f"{gauge!r} is not a gauge")
        self._child(gauge, labels).set(value)
