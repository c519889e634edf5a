"""The resolver's JSON wire format, both ways, in one place.

The shape follows firecracker-containerd's example agent: `network`, `address`,
ports as strings (`snapshotter_port`, `metrics_port`) and `labels`. Readers accept
ports as strings or integers. A malformed document is the far side's fault, so
it is an `UnavailableError` whose message names the offending field.

Failures cross as HTTP statuses derived from the domain error's declared code:
the two the demux acts on keep theirs (a bad namespace 400, an unknown one 404),
every other failure is 503, which the demux reads as "unavailable".
"""

from __future__ import annotations

from collections.abc import Mapping

from snapmux.domain.errors import Code, DomainError, UnavailableError, error_for
from snapmux.domain.model import SnapshotterAddress

HTTP_STATUS: Mapping[Code, int] = {Code.INVALID_ARGUMENT: 400, Code.NOT_FOUND: 404}
UNAVAILABLE_STATUS = 503
_ERROR_BY_STATUS = {status: error_for(code) for code, status in HTTP_STATUS.items()}


def http_status_of(error: DomainError) -> int:
    """The agent's answer to a failure: its code's status, or 503 for any other code."""
    return HTTP_STATUS.get(error.code, UNAVAILABLE_STATUS)


def error_from_http(status: int) -> type[DomainError] | None:
    """The client's reading of a status that stands for a code; None for any other (unavailable)."""
    return _ERROR_BY_STATUS.get(status)


def address_to_json(address: SnapshotterAddress) -> dict[str, object]:
    payload: dict[str, object] = {"network": address.network, "address": address.address}
    if address.snapshotter_port is not None:
        payload["snapshotter_port"] = str(address.snapshotter_port)
    if address.metrics_port is not None:
        payload["metrics_port"] = str(address.metrics_port)
    payload["labels"] = dict(address.labels)
    return payload


def address_from_json(
    payload: object,
    namespace: str,
    *,
    default_snapshotter_port: int | None = None,
    default_metrics_port: int | None = None,
    source: str = "resolver response",
) -> SnapshotterAddress:
    """Validates one address document; `labels["namespace"]` is always `namespace`."""
    if not isinstance(payload, Mapping):
        raise UnavailableError(f"{source}: expected a JSON object, got {type(payload).__name__}")
    network = _required_text(payload, "network", source)
    address = _required_text(payload, "address", source)
    snapshotter_port = parse_port(payload.get("snapshotter_port"), "snapshotter_port", source)
    metrics_port = parse_port(payload.get("metrics_port"), "metrics_port", source)
    labels = _labels(payload.get("labels"), source)
    if labels.get("namespace", namespace) != namespace:
        raise UnavailableError(f"{source}: field 'labels.namespace' is {labels['namespace']!r}, asked for {namespace!r}")
    labels["namespace"] = namespace
    return SnapshotterAddress(
        network,
        address,
        default_snapshotter_port if snapshotter_port is None else snapshotter_port,
        default_metrics_port if metrics_port is None else metrics_port,
        labels,
    )


def parse_port(value: object, field: str, source: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UnavailableError(f"{source}: field {field!r} must be a port number, got {type(value).__name__}")
    text = str(value)
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise UnavailableError(f"{source}: field {field!r} must be a port in 1..65535, got {text[:20]!r}")
    return int(text)


def _required_text(payload: Mapping, field: str, source: str) -> str:
    value = payload.get(field)
    if not isinstance(value, str) or not value:
        raise UnavailableError(f"{source}: field {field!r} must be a non-empty string")
    return value


def _labels(value: object, source: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UnavailableError(f"{source}: field 'labels' must be an object of strings")
    for key, text in value.items():
        if not isinstance(key, str) or not isinstance(text, str):
            raise UnavailableError(f"{source}: field 'labels.{key}' must be a string")
    return dict(value)
