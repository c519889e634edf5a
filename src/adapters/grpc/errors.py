"""The one error table, used both ways: domain error <-> gRPC status code.

The server side applies it once, in `DomainErrorInterceptor`, to unary and
streaming handlers alike; the client side applies it in `domain_error_from`.
Codes and messages cross unchanged, so a proxy in the middle is transparent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from snapmux.domain import errors as e
from snapmux.domain.deadlines import current_deadline, deadline_in
from snapmux.domain.namespaces import current_namespace

log = logging.getLogger(__name__)

ERROR_TABLE: dict[type[e.DomainError], grpc.StatusCode] = {
    e.NotFoundError: grpc.StatusCode.NOT_FOUND,
    e.AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    e.FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    e.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    e.UnavailableError: grpc.StatusCode.UNAVAILABLE,
    e.UnimplementedError: grpc.StatusCode.UNIMPLEMENTED,
    e.DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    e.CancelledError: grpc.StatusCode.CANCELLED,
    e.InternalError: grpc.StatusCode.INTERNAL,
    e.UnknownError: grpc.StatusCode.UNKNOWN,
}
_BY_CODE = {code: error for error, code in ERROR_TABLE.items()}

NAMESPACE_METADATA_KEY = "containerd-namespace"


def status_code_of(error: e.DomainError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return grpc.StatusCode.UNKNOWN


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


def _enter_caller(context: grpc.aio.ServicerContext) -> tuple[Any, Any]:
    """The caller's namespace and deadline, for the port and for the calls it makes onward.
    (Plain set/reset around each call rather than a context manager: this runs on every call.)"""
    return current_namespace.set(_namespace_from(context)), current_deadline.set(deadline_in(context.time_remaining()))


def _leave_caller(tokens: tuple[Any, Any]) -> None:
    current_deadline.reset(tokens[1])
    current_namespace.reset(tokens[0])


async def _abort(context: grpc.aio.ServicerContext, error: Exception) -> None:
    if isinstance(error, e.DomainError):
        await context.abort(status_code_of(error), str(error))
    log.exception("unexpected error in %s", type(error).__name__, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}")


def _wrap_unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        tokens = _enter_caller(context)
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - mapped, not swallowed
            await _abort(context, error)
        finally:
            _leave_caller(tokens)

    return handler


def _wrap_stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        tokens = _enter_caller(context)
        try:
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001
            await _abort(context, error)
        finally:
            _leave_caller(tokens)

    return handler


class DomainErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps domain errors to status codes and exposes the caller's namespace and deadline to the port.

    grpc.aio runs the interceptor on every call; the wrapped handler is built once per method
    handler and kept, so a call costs a dict lookup here instead of a new handler object."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method  # only served methods get here: one entry each
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = _wrapped(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _wrapped(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(handler.unary_stream), handler.request_deserializer, handler.response_serializer
        )
    return handler
