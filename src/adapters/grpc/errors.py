"""The one error table, used both ways: domain error <-> gRPC status code.

The server side applies it once, in `DomainErrorInterceptor`, to unary and
streaming handlers alike; the client side applies it in `domain_error_from`.
Codes and messages cross unchanged, so a proxy in the middle is transparent.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc

from snapmux.adapters.grpc.convert import SNAPSHOTS_SERVICE
from snapmux.domain import errors as e
from snapmux.domain.deadlines import current_deadline, deadline_in
from snapmux.domain.namespaces import current_namespace

log = logging.getLogger(__name__)

ERROR_TABLE: dict[type[e.DomainError], grpc.StatusCode] = {
    error: grpc.StatusCode[error.code.name] for error in e.BY_CODE.values()
}  # derived from each domain error's declared `code`
_BY_CODE = {code: error for error, code in ERROR_TABLE.items()}

NAMESPACE_METADATA_KEY = "containerd-namespace"


def status_code_of(error: e.DomainError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code.name]


def domain_error_from(error: grpc.RpcError) -> e.DomainError:
    """Client side: the far side's status as a domain error, message untouched."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or ""
    return _BY_CODE.get(code, e.UnknownError)(details)


def _namespace_from(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == NAMESPACE_METADATA_KEY and value:
            return value if isinstance(value, str) else value.decode()
    return None


@contextlib.contextmanager
def _caller(context: grpc.aio.ServicerContext) -> Iterator[None]:
    """The caller's namespace and deadline, for the port and for the calls it makes onward."""
    namespace = current_namespace.set(_namespace_from(context))
    deadline = current_deadline.set(deadline_in(context.time_remaining()))
    try:
        yield
    finally:
        current_deadline.reset(deadline)
        current_namespace.reset(namespace)


async def _abort(context: grpc.aio.ServicerContext, error: Exception) -> None:
    if isinstance(error, e.DomainError):
        await context.abort(status_code_of(error), str(error))
    log.exception("unexpected error in %s", type(error).__name__, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}")


def _wrap_unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with _caller(context):
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as error:  # noqa: BLE001 - mapped, not swallowed
                await _abort(context, error)

    return handler


def _wrap_stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        with _caller(context):
            try:
                async for response in behavior(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as error:  # noqa: BLE001
                await _abort(context, error)

    return handler


SNAPSHOTS_METHODS = f"/{SNAPSHOTS_SERVICE}/"


class DomainErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps domain errors to status codes and exposes the caller's namespace and deadline to the port."""

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(SNAPSHOTS_METHODS):
            return handler  # e.g. grpc.health.v1: its own codes, no namespace
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream), handler.request_deserializer, handler.response_serializer
            )
        return handler
