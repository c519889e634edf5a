"""In-memory MetricsRegistry: plain dicts, read back like prometheus-client's get_sample_value.

The contract suite (tests/contract/metrics_registry.py) holds it to the same
behaviour as PrometheusMetricsRegistry, so unit tests can assert on it instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from snapmux.domain import metrics as m

Key = tuple[str, tuple[tuple[str, str], ...]]


def _key(name: str, labels: Mapping[str, str] | None) -> Key:
    return name, tuple(sorted((labels or {}).items()))


class InMemoryMetricsRegistry:
    def __init__(self) -> None:
        self.samples: dict[Key, float] = {}
        self._specs: dict[str, m.CounterSpec | m.GaugeSpec] = {}
        self.calls: list[tuple[str, str, str, float]] = []

    def _check(self, spec: m.CounterSpec | m.GaugeSpec, labels: Mapping[str, str] | None) -> None:
        known = self._specs.setdefault(spec.name, spec)
        if known != spec:
            raise ValueError(f"metric {spec.name} is already declared as {known!r}")
        if set(labels or {}) != set(spec.labels):
            raise ValueError(f"metric {spec.name} takes labels {spec.labels}, got {tuple(labels or {})}")

    def observe_call(self, service: str, method: str, code: str, seconds: float) -> None:
        self.calls.append((service, method, code, seconds))
        labels = {"service": service, "method": method, "code": code}
        self.count(m.REQUESTS, labels)
        if code != m.OK:
            self.count(m.REQUEST_ERRORS, labels)
        for suffix, amount in (("_count", 1.0), ("_sum", seconds)):
            key = _key(m.REQUEST_DURATION_NAME + suffix, {"service": service, "method": method})
            self.samples[key] = self.samples.get(key, 0.0) + amount

    def count(self, counter: m.CounterSpec, labels: Mapping[str, str] | None = None, amount: float = 1.0) -> None:
        if not isinstance(counter, m.CounterSpec):
            raise ValueError(f"{counter!r} is not a counter")
        if amount < 0:
            raise ValueError("counters only go up")
        self._check(counter, labels)
        key = _key(counter.name, labels)
        self.samples[key] = self.samples.get(key, 0.0) + amount

    def set_gauge(self, gauge: m.GaugeSpec, value: float, labels: Mapping[str, str] | None = None) -> None:
        if not isinstance(gauge, m.GaugeSpec):
            raise ValueError(f"{gauge!r} is not a gauge")
        self._check(gauge, labels)
        self.samples[_key(gauge.name, labels)] = float(value)

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """Like CollectorRegistry.get_sample_value: None when the series does not exist."""
        return self.samples.get(_key(name, labels))
