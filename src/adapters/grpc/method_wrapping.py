"""The one way snapmux adds a service to a grpc.aio server, and wraps the snapshots service's
method handlers (call log, error mapping).

Each method's handler is wrapped once, when the service is added to the server, and grpc.aio
dispatches every call straight to the wrapper. As grpc.aio server interceptors the same wrappers
cost every call two more coroutines, a continuation and a handler lookup per interceptor, and
the server's lookup of registered methods (measured with bench/hot_path_bench.py). Other services
(grpc.health.v1) are never wrapped: their own codes, no namespace, no call log.

Handlers are added as generic handlers only, never as grpc.aio's "registered methods": its server
loop keeps one pending request per registered method and, for every call it accepts, waits on all
of them again (asyncio.wait over 13 futures with the health service), which cost more per call
than everything snapmux does for a Stat (callgrind: 54k instructions of the event loop's thread
per call; the generic handler's lookup by method name is a dict).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import grpc

from snapmux.adapters.grpc.convert import SNAPSHOTS_SERVICE

SNAPSHOTS_METHODS = f"/{SNAPSHOTS_SERVICE}/"


class SnapshotsMethodInterceptor:
    """Subclasses say how to wrap one method's handler (`wrap`); `add_wrapped` applies them."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        raise NotImplementedError


class _Registrations:
    """Stands in for the server while a generated `add_*Servicer_to_server` registers its handlers,
    which reach the real server as generic handlers only (see above)."""

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
    serialized: Collection[str] = (),
) -> None:
    """Registers `servicer` as the generated `add_to_server` does, every method's handler wrapped
    by `interceptors` (the first outermost). The methods named in `serialized` answer bytes
    already serialized, which gRPC then sends as they are (no response serializer)."""
    registrations = _Registrations()
    add_to_server(servicer, registrations)
    for service, handlers in registrations.services:
        wrapped = {name: _wrapped(_answering_bytes(handler) if name in serialized else handler, f"/{service}/{name}",
                                  interceptors) for name, handler in handlers.items()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))


def _wrapped(
    handler: grpc.RpcMethodHandler, method: str, interceptors: Sequence[SnapshotsMethodInterceptor]
) -> grpc.RpcMethodHandler:
    for interceptor in reversed(interceptors):
        handler = interceptor.wrap(handler, method)
    return handler


def _answering_bytes(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    if not handler.unary_unary:
        raise ValueError("only a unary method can answer serialized bytes")
    return grpc.unary_unary_rpc_method_handler(handler.unary_unary, handler.request_deserializer, None)
