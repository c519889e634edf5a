"""The MetricsRegistry contract against the fake and PrometheusMetricsRegistry."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from snapmux.adapters.prometheus.registry import PrometheusMetricsRegistry
from snapmux.domain import metrics as m
from tests.contract.metrics_registry import MetricsRegistryContract
from tests.fakes.metrics import InMemoryMetricsRegistry


class TestInMemoryMetricsRegistry(MetricsRegistryContract):
    @pytest.fixture
    def metrics(self):
        return InMemoryMetricsRegistry()

    @pytest.fixture
    def sample(self, metrics):
        return metrics.sample


class TestPrometheusMetricsRegistry(MetricsRegistryContract):
    @pytest.fixture
    def registry(self):
        return CollectorRegistry()

    @pytest.fixture
    def metrics(self, registry):
        return PrometheusMetricsRegistry(registry)

    @pytest.fixture
    def sample(self, registry):
        return registry.get_sample_value


def test_declared_label_less_metrics_show_zero_before_any_event():
    registry = CollectorRegistry()
    PrometheusMetricsRegistry(registry, declared=[m.METRICS_PROXY_PORT_EXHAUSTED, m.REMOTE_CLIENTS])
    assert registry.get_sample_value("snapmux_metrics_proxy_port_exhausted_total") == 0
    assert registry.get_sample_value("snapmux_remote_clients") == 0


def test_two_registries_never_share_series():
    first, second = CollectorRegistry(), CollectorRegistry()
    PrometheusMetricsRegistry(first).count(m.METRICS_PROXY_PORT_EXHAUSTED)
    PrometheusMetricsRegistry(second)
    assert first.get_sample_value("snapmux_metrics_proxy_port_exhausted_total") == 1
    assert second.get_sample_value("snapmux_metrics_proxy_port_exhausted_total") is None


def test_exposition_uses_conventional_names():
    registry = CollectorRegistry()
    metrics = PrometheusMetricsRegistry(registry)
    metrics.observe_call("snapshots", "Stat", "OK", 0.001)
    text = generate_latest(registry).decode()
    assert 'snapmux_requests_total{code="OK",method="Stat",service="snapshots"} 1.0' in text
    assert "# TYPE snapmux_request_duration_seconds histogram" in text


def test_every_catalogued_name_follows_prometheus_conventions():
    for spec in m.ALL_SPECS:
        assert spec.name.startswith("snapmux_")
        assert spec.name.endswith("_total") == isinstance(spec, m.CounterSpec), spec.name
