"""DomainErrorInterceptor runs on every call: it wraps each method's handler once and reuses it."""

from __future__ import annotations

from types import SimpleNamespace

import grpc

from snapmux.adapters.grpc.errors import SNAPSHOTS_METHODS, DomainErrorInterceptor

STAT, MOUNTS = f"{SNAPSHOTS_METHODS}Stat", f"{SNAPSHOTS_METHODS}Mounts"
"""Only the snapshots service's methods are wrapped (health and others pass through)."""


async def _stat(request, context):  # pragma: no cover - never called here
    return request


def _continuation(handlers):
    async def continuation(details):
        return handlers.get(details.method)

    return continuation


async def test_each_method_is_wrapped_once_and_the_wrapper_reused():
    stat, mounts = grpc.unary_unary_rpc_method_handler(_stat), grpc.unary_unary_rpc_method_handler(_stat)
    interceptor = DomainErrorInterceptor()
    served = _continuation({STAT: stat, MOUNTS: mounts})
    first = await interceptor.intercept_service(served, SimpleNamespace(method=STAT))
    again = await interceptor.intercept_service(served, SimpleNamespace(method=STAT))
    other = await interceptor.intercept_service(served, SimpleNamespace(method=MOUNTS))
    assert first is again and first is not stat and first.unary_unary is not _stat
    assert other is not first


async def test_a_method_served_by_a_new_handler_gets_a_new_wrapper_and_unknown_methods_none():
    interceptor = DomainErrorInterceptor()
    old = await interceptor.intercept_service(
        _continuation({STAT: grpc.unary_unary_rpc_method_handler(_stat)}), SimpleNamespace(method=STAT))
    new = await interceptor.intercept_service(
        _continuation({STAT: grpc.unary_unary_rpc_method_handler(_stat)}), SimpleNamespace(method=STAT))
    assert new is not old
    assert await interceptor.intercept_service(_continuation({}), SimpleNamespace(method="/s/Nope")) is None
