"""Each snapshots call in the daemon's log: at debug all of them, at info the failures that matter.

An interceptor outside `DomainErrorInterceptor`, so it hears the status the caller gets (a domain
error already mapped, INTERNAL for a bug). At debug every call is one line with its method,
namespace, key, code and duration; otherwise only failures are looked at, and those that are
not a normal protocol answer (NOT_FOUND on Stat: containerd asks whether a snapshot exists;
ALREADY_EXISTS on Prepare/View: a layer that is there remotely) are a warning with the cause.
A successful call at info costs one `isEnabledFor` and a try block: no clock, no string.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from snapmux.adapters.grpc.errors import NAMESPACE_METADATA_KEY, is_malformed
from snapmux.adapters.grpc.method_wrapping import SNAPSHOTS_METHODS, SnapshotsMethodInterceptor

log = logging.getLogger("snapmux.calls")

EXPECTED_ANSWERS = {
    ("Stat", grpc.StatusCode.NOT_FOUND),
    ("Prepare", grpc.StatusCode.ALREADY_EXISTS),
    ("View", grpc.StatusCode.ALREADY_EXISTS),
}


def _fields(method: str, request: Any, context: grpc.aio.ServicerContext) -> dict[str, Any]:
    """Only built for a line that is written: the namespace from metadata, the key from the request."""
    namespace = next((value for key, value in context.invocation_metadata() or () if key == NAMESPACE_METADATA_KEY), "")
    info = getattr(request, "info", None)
    key = getattr(request, "key", "") or (getattr(info, "name", "") if info is not None else "")
    fields = {"method": method, "namespace": namespace, "key": key}
    if method == "Commit":
        fields["commit_name"] = request.name  # "name" is LogRecord's own attribute
    return fields


def _finished(method: str, request: Any, context: grpc.aio.ServicerContext, started: float | None, failed: bool) -> None:
    code = (context.code() or grpc.StatusCode.UNKNOWN) if failed else grpc.StatusCode.OK
    if started is not None:
        fields = _fields(method, request, context) | {"code": code.name, "duration_ms": round((time.perf_counter() - started) * 1e3, 3)}
        log.debug("%s %s", method, code.name, extra=fields)
    if failed and (method, code) not in EXPECTED_ANSWERS and not is_malformed(request) and log.isEnabledFor(logging.WARNING):
        fields = _fields(method, request, context) | {"code": code.name, "error": context.details() or ""}
        log.warning("%s failed: %s: %s", method, code.name, fields["error"], extra=fields)


def _unary(method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter() if log.isEnabledFor(logging.DEBUG) else None
        try:
            response = await behavior(request, context)
        except grpc.aio.AbortError:
            _finished(method, request, context, started, failed=True)
            raise
        if started is not None:
            _finished(method, request, context, started, failed=False)
        return response

    return handler


def _stream(method: str, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter() if log.isEnabledFor(logging.DEBUG) else None
        try:
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            _finished(method, request, context, started, failed=True)
            raise
        if started is not None:
            _finished(method, request, context, started, failed=False)

    return handler


class CallLogInterceptor(SnapshotsMethodInterceptor):
    """Outermost on the snapshots server; the health service and others pass untouched. A
    malformed request is left to DomainErrorInterceptor's rate-limited line."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        name = method[len(SNAPSHOTS_METHODS):]
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _unary(name, handler.unary_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _stream(name, handler.unary_stream), handler.request_deserializer, handler.response_serializer
            )
        return handler
