"""The resolver agent's HTTP API over any `AddressResolver`.

`GET /address?namespace=<ns>` answers the address document (see `wire`);
`GET /healthz` answers whether the backend can answer now (see `adapters.http.health`:
200, or 503 naming the reason), not merely that the process runs. Status codes follow the
domain error's code (`wire.http_status_of`): invalid namespace 400, unknown 404, anything
else from the backend 503. The backend's own failures must never turn into a 500, so anything
unexpected is logged and answered as 503 too.
"""

from __future__ import annotations

import logging

from snapmux.adapters.http.health import PATH as HEALTH_PATH
from snapmux.adapters.http.health import healthz
from snapmux.adapters.http.messages import HttpRequest, HttpResponse, error_response, json_response
from snapmux.adapters.resolver.wire import UNAVAILABLE_STATUS, address_to_json, http_status_of
from snapmux.domain.errors import DomainError, InvalidArgumentError
from snapmux.domain.namespaces import validate_namespace
from snapmux.domain.ports import AddressResolver, HealthCheck

log = logging.getLogger(__name__)

ALLOW = (("Allow", "GET"),)


def namespace_parameter(request: HttpRequest) -> str:
    """Exactly one `namespace`; one pair of surrounding double quotes is tolerated,
    because firecracker-containerd's documented example sends `namespace="ns-1"`."""
    values = request.query.get("namespace", ())
    if len(values) != 1:
        raise InvalidArgumentError("exactly one 'namespace' query parameter is required")
    namespace = values[0]
    if len(namespace) >= 2 and namespace[0] == namespace[-1] == '"':
        namespace = namespace[1:-1]
    return validate_namespace(namespace)


class AddressApi:
    def __init__(self, resolver: AddressResolver, health: HealthCheck | None = None) -> None:
        self._resolver, self._health = resolver, health

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path not in ("/address", HEALTH_PATH):
            return error_response(404, f"no such endpoint: {request.path[:100]!r}")
        if request.method != "GET":
            return error_response(405, f"method {request.method} not allowed", ALLOW)
        if request.path == HEALTH_PATH:
            return await healthz(self._health)
        return await self._address(request)

    async def _address(self, request: HttpRequest) -> HttpResponse:
        try:
            namespace = namespace_parameter(request)
            address = await self._resolver.resolve(namespace)
        except DomainError as error:
            status = http_status_of(error)
            if status == UNAVAILABLE_STATUS:
                log.warning("resolver backend failed: %s: %s", type(error).__name__, error)
            return error_response(status, str(error))
        except Exception as error:  # noqa: BLE001 - a backend bug is still "unavailable" to the demux
            log.exception("resolver backend raised unexpectedly")
            return error_response(UNAVAILABLE_STATUS, f"resolver backend failed: {type(error).__name__}")
        payload = address_to_json(address)
        payload["labels"] = {**address.labels, "namespace": namespace}
        return json_response(200, payload)
