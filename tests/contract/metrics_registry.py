"""The MetricsRegistry contract, for the in-memory fake and the Prometheus registry.

Subclass `MetricsRegistryContract` and provide `metrics` (the registry under test)
and `sample` (a `(name, labels) -> float | None` reader, get_sample_value style).
"""

from __future__ import annotations

import pytest

from snapmux.domain import metrics as m

CALL = {"service": "snapshots", "method": "Prepare"}


class MetricsRegistryContract:
    def test_is_a_metrics_registry(self, metrics):
        assert isinstance(metrics, m.MetricsRegistry)

    def test_a_successful_call_counts_once_and_no_error(self, metrics, sample):
        metrics.observe_call("snapshots", "Prepare", m.OK, 0.25)
        assert sample("snapmux_requests_total", {**CALL, "code": "OK"}) == 1
        assert not sample("snapmux_request_errors_total", {**CALL, "code": "OK"})
        assert sample("snapmux_request_duration_seconds_count", CALL) == 1
        assert sample("snapmux_request_duration_seconds_sum", CALL) == pytest.approx(0.25)

    def test_a_failed_call_counts_as_request_and_error_by_code(self, metrics, sample):
        metrics.observe_call("snapshots", "Prepare", "NOT_FOUND", 0.1)
        metrics.observe_call("snapshots", "Prepare", "NOT_FOUND", 0.1)
        assert sample("snapmux_requests_total", {**CALL, "code": "NOT_FOUND"}) == 2
        assert sample("snapmux_request_errors_total", {**CALL, "code": "NOT_FOUND"}) == 2
        assert sample("snapmux_request_duration_seconds_sum", CALL) == pytest.approx(0.2)

    def test_interleaved_calls_keep_each_method_and_code_apart(self, metrics, sample):
        for code in (m.OK, "NOT_FOUND", m.OK, "NOT_FOUND", m.OK):
            metrics.observe_call("snapshots", "Prepare", code, 0.5)
            metrics.observe_call("snapshots", "Stat", m.OK, 0.25)
        assert sample("snapmux_requests_total", {**CALL, "code": "OK"}) == 3
        assert sample("snapmux_requests_total", {**CALL, "code": "NOT_FOUND"}) == 2
        assert sample("snapmux_request_errors_total", {**CALL, "code": "NOT_FOUND"}) == 2
        assert not sample("snapmux_request_errors_total", {**CALL, "code": "OK"})
        assert sample("snapmux_request_duration_seconds_count", CALL) == 5
        stat = {**CALL, "method": "Stat"}
        assert sample("snapmux_requests_total", {**stat, "code": "OK"}) == 5
        assert sample("snapmux_request_duration_seconds_sum", stat) == pytest.approx(1.25)

    def test_counters_add_up_per_label_set(self, metrics, sample):
        metrics.count(m.VSOCK_DIALS, {"purpose": "metrics"})
        metrics.count(m.VSOCK_DIALS, {"purpose": "metrics"}, 2)
        metrics.count(m.VSOCK_DIALS, {"purpose": "snapshotter"})
        assert sample("snapmux_vsock_dials_total", {"purpose": "metrics"}) == 3
        assert sample("snapmux_vsock_dials_total", {"purpose": "snapshotter"}) == 1

    def test_label_less_counter(self, metrics, sample):
        metrics.count(m.METRICS_PROXY_PORT_EXHAUSTED)
        assert sample("snapmux_metrics_proxy_port_exhausted_total") == 1

    def test_gauges_take_the_last_value(self, metrics, sample):
        metrics.set_gauge(m.SNAPSHOTS, 3, {"kind": "active"})
        metrics.set_gauge(m.SNAPSHOTS, 1, {"kind": "active"})
        metrics.set_gauge(m.REMOTE_CLIENTS, 2)
        assert sample("snapmux_snapshots", {"kind": "active"}) == 1
        assert sample("snapmux_remote_clients") == 2

    def test_unknown_series_reads_as_none(self, metrics, sample):
        assert sample("snapmux_snapshots", {"kind": "view"}) is None

    def test_wrong_labels_are_a_bug(self, metrics):
        with pytest.raises(ValueError):
            metrics.count(m.VSOCK_DIALS, {"namespace": "x"})
        with pytest.raises(ValueError):
            metrics.count(m.VSOCK_DIALS)

    def test_counters_never_go_down(self, metrics):
        with pytest.raises(ValueError):
            metrics.count(m.VSOCK_DIALS, {"purpose": "metrics"}, -1)

    def test_kinds_are_not_interchangeable(self, metrics):
        with pytest.raises(ValueError):
            metrics.count(m.SNAPSHOTS, {"kind": "active"})  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            metrics.set_gauge(m.VSOCK_DIALS, 1, {"purpose": "x"})  # type: ignore[arg-type]

    def test_one_name_one_spec(self, metrics):
        metrics.count(m.CounterSpec("snapmux_x_total", "x"))
        with pytest.raises(ValueError):
            metrics.count(m.CounterSpec("snapmux_x_total", "x", ("other",)), {"other": "1"})
