"""The one way snapmux wraps the snapshots service's method handlers (call log, error mapping).

Each method's handler is wrapped once, when the service is added to the server, and grpc.aio
dispatches every call straight to the wrapper. As grpc.aio server interceptors the same wrappers
cost every call two more coroutines, a continuation and a handler lookup per interceptor, and
the server's lookup of registered methods (measured with bench/hot_path_bench.py). Every service
is added as a generic handler only, never as grpc core's registered methods (`add_generic` says
why). Other services (grpc.health.v1) are never wrapped: their own codes, no namespace, no call log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

from snapmux.adapters.grpc.convert import SNAPSHOTS_SERVICE

SNAPSHOTS_METHODS = f"/{SNAPSHOTS_SERVICE}/"


class SnapshotsMethodInterceptor:
    """Subclasses say how to wrap one method's handler (`wrap`); `add_wrapped` applies them."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        raise NotImplementedError


class _Registrations:
    """Stands in for the server while a generated `add_*Servicer_to_server` registers its handlers."""

    def __init__(self) -> None:
        self.services: list[tuple[str, dict[str, grpc.RpcMethodHandler]]] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """The same handlers come again, by name, in `add_registered_method_handlers`."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.services.append((service, handlers))


def add_wrapped(
    server: grpc.aio.Server,
    add_to_server: Callable[[Any, Any], None],
    servicer: object,
    interceptors: Sequence[SnapshotsMethodInterceptor],
) -> None:
    """Registers `servicer` as the generated `add_to_server` does, every method's handler wrapped
    by `interceptors` (the first outermost), as a generic handler only (see `add_generic`)."""
    for service, handlers in _generated(add_to_server, servicer):
        wrapped = {name: _wrapped(handler, f"/{service}/{name}", interceptors) for name, handler in handlers.items()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))


def add_generic(server: grpc.aio.Server, add_to_server: Callable[[Any, Any], None], servicer: object) -> None:
    """Registers `servicer`'s handlers as a generic handler, not also as grpc core's registered
    methods as the generated `add_to_server` does: with registered methods grpc.aio's server (1.85)
    awaits every next call with asyncio.wait over one future per registered method plus the generic
    one (14 in the demux, snapshots and health), some 70k instructions per call, more than the
    demux's own work (bench/instructions_demux.py); a generic handler's lookup is one dict get."""
    for service, handlers in _generated(add_to_server, servicer):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))


def _generated(add_to_server: Callable[[Any, Any], None], servicer: object) -> list[tuple[str, dict[str, Any]]]:
    registrations = _Registrations()
    add_to_server(servicer, registrations)
    return registrations.services


def _wrapped(
    handler: grpc.RpcMethodHandler, method: str, interceptors: Sequence[SnapshotsMethodInterceptor]
) -> grpc.RpcMethodHandler:
    for interceptor in reversed(interceptors):
        handler = interceptor.wrap(handler, method)
    return handler
