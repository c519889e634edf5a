"""The one error table, used both ways: domain error <-> gRPC status code.

The server side applies it once, in `DomainErrorInterceptor`, to unary and
streaming handlers alike; the client side applies it in `domain_error_from`.
Codes and messages cross unchanged, so a proxy in the middle is transparent.
It is also the one place a status leaves the server, so it bounds every message
(`bounded_details`: they echo keys and filters) and answers a request that is not
valid protobuf INVALID_ARGUMENT, with one log line at most every few seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from snapmux.adapters.grpc.method_wrapping import SNAPSHOTS_METHODS, SnapshotsMethodInterceptor
from snapmux.domain import errors as e
from snapmux.domain.deadlines import current_deadline, deadline_in
from snapmux.domain.namespaces import current_namespace

log = logging.getLogger(__name__)

ERROR_TABLE: dict[type[e.DomainError], grpc.StatusCode] = {
    error: grpc.StatusCode[error.code.name] for error in e.BY_CODE.values()
}  # derived from each domain error's declared `code`
_BY_CODE = {code: error for error, code in ERROR_TABLE.items()}

NAMESPACE_METADATA_KEY = "containerd-namespace"

DETAILS_HEAD, DETAILS_TAIL = 256, 64
"""Characters of a status message kept from its start and its end. Percent-encoded, even 4-byte
characters stay well under the 8 KiB of metadata a gRPC peer accepts by default."""

LOG_INTERVAL_SECONDS = 10.0


class RateLimitedLog:
    """At most one line per interval; the next line says how many were held back. A client
    repeating a bad call must not be able to fill the disk with our logs."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self._logger, self._interval = logger, interval
        self._next, self._held = 0.0, 0

    def log(self, level: int, message: str, *args: object, exc_info: BaseException | None = None) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return
        self._next = now + self._interval
        if self._held:
            message, args = message + " (and %d more like it since the last line)", (*args, self._held)
            self._held = 0
        self._logger.log(level, message, *args, exc_info=exc_info)


_malformed_log = RateLimitedLog(log)
_unexpected_log = RateLimitedLog(log)


def bounded_details(message: str) -> str:
    """A status message cut to its start and end: a 1 MB key echoed in NOT_FOUND overflowed the
    peer's metadata limit, and the client saw RESOURCE_EXHAUSTED instead of the real code."""
    elided = len(message) - DETAILS_HEAD - DETAILS_TAIL
    if elided <= 32:
        return message
    return f"{message[:DETAILS_HEAD]}...[{elided} characters elided]...{message[-DETAILS_TAIL:]}"


@dataclass(frozen=True)
class _Malformed:
    """What the tolerant deserializer hands the handler instead of raising (see `_tolerant`)."""

    reason: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """grpc.aio turns a deserializer's exception into UNKNOWN plus an ERROR traceback per call;
    handing the handler a `_Malformed` lets it answer INVALID_ARGUMENT itself."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:  # noqa: BLE001 - DecodeError, bad UTF-8, ...: all the caller's
            return _Malformed(f"{type(error).__name__}: {error}")

    return deserialize


async def _refuse_malformed(context: grpc.aio.ServicerContext, method: str, request: _Malformed) -> None:
    _malformed_log.log(logging.WARNING, "malformed request to %s: %s", method, bounded_details(request.reason))
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, bounded_details(f"malformed request: {request.reason}"))


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


def _enter_caller(context: grpc.aio.ServicerContext) -> tuple[Any, Any]:
    """The caller's namespace and deadline, for the port and for the calls it makes onward.
    (Plain set/reset around each call rather than a context manager: this runs on every call.
    A variable is only set when it changes: each call runs in a task of its own whose copy of
    the context holds neither, and containerd 1.6 sends no namespace, most callers no deadline.)"""
    namespace, remaining = _namespace_from(context), context.time_remaining()
    return (
        None if namespace is None and current_namespace.get() is None else current_namespace.set(namespace),
        None if remaining is None and current_deadline.get() is None else current_deadline.set(deadline_in(remaining)),
    )


def _leave_caller(tokens: tuple[Any, Any]) -> None:
    if tokens[1] is not None:
        current_deadline.reset(tokens[1])
    if tokens[0] is not None:
        current_namespace.reset(tokens[0])


async def _abort(context: grpc.aio.ServicerContext, error: Exception) -> None:
    if isinstance(error, e.DomainError):
        await context.abort(status_code_of(error), bounded_details(str(error)))
    _unexpected_log.log(logging.ERROR, "unexpected error %s", type(error).__name__, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, bounded_details(f"internal error: {type(error).__name__}: {error}"))


def _wrap_unary(behavior: Callable[..., Awaitable[Any]], method: str, caller: bool) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Malformed):
            await _refuse_malformed(context, method, request)
        tokens = _enter_caller(context) if caller else None
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - mapped, not swallowed
            await _abort(context, error)
        finally:
            if tokens is not None:
                _leave_caller(tokens)

    return handler


def _wrap_stream(
    behavior: Callable[..., AsyncIterator[Any]], method: str, caller: bool
) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, _Malformed):
            await _refuse_malformed(context, method, request)
        tokens = _enter_caller(context) if caller else None
        try:
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001
            await _abort(context, error)
        finally:
            if tokens is not None:
                _leave_caller(tokens)

    return handler


class DomainErrorInterceptor(SnapshotsMethodInterceptor):
    """Maps domain errors to status codes (bounded messages; malformed requests are INVALID_ARGUMENT)
    and, with `caller_context`, exposes the caller's namespace and deadline to the port. A port that
    acts on no caller's behalf (cvmfs-snapshotter: no onward call, no routing) goes without: reading
    the metadata and the deadline and setting both variables cost more per call than its Stat."""

    def __init__(self, caller_context: bool = True) -> None:
        self._caller_context = caller_context

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return _wrapped(handler, method, self._caller_context)


def is_malformed(request: object) -> bool:
    """Whether the request was not valid protobuf: already answered and logged (rate-limited) here."""
    return isinstance(request, _Malformed)


def _wrapped(handler: grpc.RpcMethodHandler, method: str, caller: bool) -> grpc.RpcMethodHandler:
    deserializer = _tolerant(handler.request_deserializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler.unary_unary, method, caller), deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(handler.unary_stream, method, caller), deserializer, handler.response_serializer
        )
    return handler
