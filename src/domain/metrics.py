"""The MetricsRegistry port and the catalog of every metric snapmux exports.

Metrics are declared here once, as domain values, so that decorators in the
application and adapters count against the same names and label sets, and so
that the fake and the Prometheus registry agree on what exists. Names follow
Prometheus conventions: `snapmux_` prefix, base units, `_total` on counters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from snapmux.domain.errors import Code


@dataclass(frozen=True)
class CounterSpec:
    """A monotonically increasing count; `name` ends in `_total`."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class GaugeSpec:
    """A value that goes up and down (cached clients, snapshots by kind)."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


OK = Code.OK.name
"""The `code` of a call that succeeded; failures use the status name their domain error declares (NOT_FOUND, ...)."""

# Calls (observe_call): one counter with a `code` label, an errors-only counter, a latency histogram.
REQUESTS = CounterSpec(
    "snapmux_requests_total", "Calls handled, by service, method and status code.", ("service", "method", "code")
)
REQUEST_ERRORS = CounterSpec(
    "snapmux_request_errors_total", "Calls that failed, by service, method and status code.", ("service", "method", "code")
)
REQUEST_DURATION_NAME = "snapmux_request_duration_seconds"
REQUEST_DURATION_HELP = "Latency of calls, by service and method."
REQUEST_DURATION_LABELS = ("service", "method")
REQUEST_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Snapshotter.
SNAPSHOTS = GaugeSpec("snapmux_snapshots", "Snapshots stored, by kind (sampled on scrape).", ("kind",))
SNAPSHOTS_USAGE_BYTES = GaugeSpec("snapmux_snapshots_usage_bytes", "Disk used by committed snapshots (sampled on scrape).")
REMOTE_SNAPSHOT_HITS = CounterSpec(
    "snapmux_remote_snapshot_hits_total",
    "Prepares of a layer (containerd.io/snapshot.ref) answered with a remote snapshot: no download needed.",
)
REMOTE_SNAPSHOT_FALLBACKS = CounterSpec(
    "snapmux_remote_snapshot_fallbacks_total",
    "Prepares of a layer (containerd.io/snapshot.ref) that fell back to a local snapshot: containerd downloads it.",
)
FOREIGN_LAYER_PREPARES = CounterSpec(
    "snapmux_foreign_layer_prepares_total",
    "Prepares of a foreign layer (no publisher marker), by outcome: chain (DUCC's flattened chain), scanned "
    "(an earlier scan), scan-in-budget (scanned now, served), scan-over-budget or scan-failed (downloaded), "
    "foreign-served (served without deletions).",
    ("outcome",),
)

# Demux.
VSOCK_DIALS = CounterSpec(
    "snapmux_vsock_dials_total",
    "Vsock connections attempted to microVMs, by purpose (snapshotter: one per client connect; metrics: one per scrape).",
    ("purpose",),
)
VSOCK_DIAL_FAILURES = CounterSpec(
    "snapmux_vsock_dial_failures_total", "Vsock connections to microVMs that failed, by purpose.", ("purpose",)
)
REMOTE_CLIENTS = GaugeSpec("snapmux_remote_clients", "Remote snapshotter clients cached by the demux.")
METRICS_PROXIES = GaugeSpec("snapmux_metrics_proxies", "Per-VM metrics proxy listeners open on the host.")
METRICS_PROXY_PORT_EXHAUSTED = CounterSpec(
    "snapmux_metrics_proxy_port_exhausted_total", "VMs left without a metrics proxy because the port range was full."
)
METRICS_PROXY_SCRAPE_FAILURES = CounterSpec(
    "snapmux_metrics_proxy_scrape_failures_total", "Scrapes a per-VM proxy could not forward to its VM."
)

# HTTP servers (resolver, metrics endpoints).
HTTP_REQUESTS = CounterSpec("snapmux_http_requests_total", "HTTP requests served, by server and status.", ("server", "code"))

ALL_SPECS: tuple[CounterSpec | GaugeSpec, ...] = (
    REQUESTS,
    REQUEST_ERRORS,
    SNAPSHOTS,
    SNAPSHOTS_USAGE_BYTES,
    REMOTE_SNAPSHOT_HITS,
    REMOTE_SNAPSHOT_FALLBACKS,
    FOREIGN_LAYER_PREPARES,
    VSOCK_DIALS,
    VSOCK_DIAL_FAILURES,
    REMOTE_CLIENTS,
    METRICS_PROXIES,
    METRICS_PROXY_PORT_EXHAUSTED,
    METRICS_PROXY_SCRAPE_FAILURES,
    HTTP_REQUESTS,
)


@runtime_checkable
class MetricsRegistry(Protocol):
    """Where measurements go. Plain methods: updates are cheap and never block.

    `labels` must name exactly the spec's label names; anything else is a bug
    in the caller and raises ValueError, in the fake and the real registry alike.
    """

    def observe_call(self, service: str, method: str, code: str, seconds: float) -> None:
        """One finished call: counts it by `code` (OK or a status name) and records its latency."""
        ...

    def count(self, counter: CounterSpec, labels: Mapping[str, str] | None = None, amount: float = 1.0) -> None: ...

    def set_gauge(self, gauge: GaugeSpec, value: float, labels: Mapping[str, str] | None = None) -> None: ...
