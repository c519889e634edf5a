"""The one way snapmux's server interceptors wrap the snapshots service's method handlers.

grpc.aio runs every interceptor on every call. Each snapshots method's handler is wrapped once
and the wrapper kept, so a call costs a dict lookup instead of new handler objects; other
services (grpc.health.v1) pass through untouched: their own codes, no namespace, no call log.
"""

from __future__ import annotations

import grpc

from snapmux.adapters.grpc.convert import SNAPSHOTS_SERVICE

SNAPSHOTS_METHODS = f"/{SNAPSHOTS_SERVICE}/"


class SnapshotsMethodInterceptor(grpc.aio.ServerInterceptor):
    """Subclasses say how to wrap one method's handler (`wrap`); this keeps the wrappers."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        raise NotImplementedError

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(SNAPSHOTS_METHODS):
            return handler
        known = self._wrapped.get(method)  # only served methods get here: one entry each
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self.wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
