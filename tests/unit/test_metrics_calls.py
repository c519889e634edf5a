"""The calls' series, counted in plain Python (`CallsCollector`), are exactly what prometheus-client's
own Counter and Histogram export for the same calls: names, labels, HELP/TYPE, buckets, `_sum`,
`_count` and `_created` (whose values are timestamps and so are compared by presence only)."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import metrics as prometheus_metrics

from snapmux.adapters.prometheus.registry import PrometheusMetricsRegistry
from snapmux.domain import metrics as m

CALLS = [
    ("snapshots", "Stat", "OK", 0.0003),
    ("snapshots", "Stat", "OK", 0.0005),  # on a bound: `le` includes it
    ("snapshots", "Stat", "NOT_FOUND", 0.002),
    ("snapshots", "Prepare", "OK", 0.7),
    ("snapshots", "Prepare", "ALREADY_EXISTS", 31.0),  # above the last bound: +Inf only
    ("snapshots", "Mounts", "OK", 0.0),
    ("resolver", "Stat", "UNAVAILABLE", 10.0),
]


def reference(calls: list[tuple[str, str, str, float]]) -> str:
    """What prometheus-client's own metrics say, children made on first use as the registry did."""
    registry = CollectorRegistry()
    duration = Histogram(m.REQUEST_DURATION_NAME, m.REQUEST_DURATION_HELP, ("service", "method"), registry=registry,
                         buckets=m.REQUEST_DURATION_BUCKETS)
    counters: dict[str, Counter] = {}
    for service, method, code, seconds in calls:
        labels = {"service": service, "method": method, "code": code}
        for spec in (m.REQUESTS, m.REQUEST_ERRORS) if code != m.OK else (m.REQUESTS,):
            if spec.name not in counters:
                counters[spec.name] = Counter(spec.name, spec.help, spec.labels, registry=registry)
            counters[spec.name].labels(**labels).inc()
        duration.labels(service=service, method=method).observe(seconds)
    return generate_latest(registry).decode()


def ours(calls: list[tuple[str, str, str, float]]) -> str:
    registry = CollectorRegistry()
    metrics = PrometheusMetricsRegistry(registry)
    for call in calls:
        metrics.observe_call(*call)
    return generate_latest(registry).decode()


def families(text: str) -> dict[str, list[str]]:
    """Lines by family, in order, with each `_created` value masked: the families' order is free."""
    by_family: dict[str, list[str]] = {}
    family = ""
    for line in text.splitlines():
        if line.startswith("# HELP "):
            family = line.split()[2]
        by_family.setdefault(family, []).append(re.sub(r"(_created\{[^}]*\}) \S+$", r"\1 T", line))
    return by_family


@pytest.mark.parametrize("calls", [[], CALLS[:2], CALLS], ids=["none", "ok only", "mixed"])
def test_the_series_are_prometheus_client_s_own(calls):
    assert families(ours(calls)) == families(reference(calls))


def test_without_created_series_as_prometheus_client_is_told(monkeypatch):
    monkeypatch.setattr(prometheus_metrics, "_use_created", False)
    text = ours(CALLS)
    assert "_created" not in text
    assert families(text) == families(reference(CALLS))


def test_created_is_when_the_series_first_appeared():
    registry = CollectorRegistry()
    metrics = PrometheusMetricsRegistry(registry)
    metrics.observe_call("snapshots", "Stat", "NOT_FOUND", 0.001)
    first = registry.get_sample_value("snapmux_requests_created", {"service": "snapshots", "method": "Stat",
                                                                   "code": "NOT_FOUND"})
    metrics.observe_call("snapshots", "Stat", "NOT_FOUND", 0.001)
    assert first is not None
    assert registry.get_sample_value("snapmux_request_errors_created", {"service": "snapshots", "method": "Stat",
                                                                        "code": "NOT_FOUND"}) == first
    assert registry.get_sample_value("snapmux_requests_created", {"service": "snapshots", "method": "Stat",
                                                                  "code": "NOT_FOUND"}) == first


@pytest.mark.parametrize("spec", [m.REQUESTS, m.REQUEST_ERRORS], ids=lambda s: s.name)
def test_the_calls_counters_are_counted_by_observe_call_only(spec):
    """A second metric of the same name would export the family twice."""
    metrics = PrometheusMetricsRegistry(CollectorRegistry())
    with pytest.raises(ValueError, match="observe_call"):
        metrics.count(spec, {"service": "snapshots", "method": "Stat", "code": "OK"})
