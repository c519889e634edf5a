"""The standard gRPC health service (`grpc.health.v1.Health`) of a snapshots server.

`grpc_health_probe`, kubelet gRPC probes and grpc clients' health checking read it.
The status is NOT_SERVING until the daemon says it listens with everything it needs
open, SERVING then, and NOT_SERVING for good once it stops. The messages and stubs
are grpcio-health-checking's; the servicer is ours because the library's aio Watch
never ends, so one watching client would hold every shutdown for the whole grace
period: ours sends the final NOT_SERVING and ends the stream, and `stopping` waits until
every watch has sent its end, so the end is on the wire before the server's GOAWAY:
a client that answers the GOAWAY's ping after the daemon has exited would otherwise
lose the end it had not read yet (UNAVAILABLE, "Broken pipe") instead of a clean EOF.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from snapmux.adapters.grpc.convert import SNAPSHOTS_SERVICE
from snapmux.adapters.grpc.method_wrapping import add_wrapped
from snapmux.domain.errors import UnavailableError

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

# How long `stopping` waits for open watches to end: a watcher that reads its stream ends
# within milliseconds; one that does not read is left to the server's shutdown grace.
WATCH_END_SECONDS = 2.0


class SnapshotsHealth(health_pb2_grpc.HealthServicer):
    """The overall status ("") and the snapshots service's, always the same; also the
    `HealthCheck` port, so HTTP `/healthz` endpoints report the same truth."""

    def __init__(self, services: tuple[str, ...] = (SNAPSHOTS_SERVICE,)) -> None:
        self._status = dict.fromkeys(("", *services), NOT_SERVING)
        self._reason = "not listening yet"
        self._final = False
        self._changed = asyncio.Condition()
        self._watches: set[asyncio.Future[None]] = set()

    def add_to(self, server: grpc.aio.Server) -> None:
        """As a generic handler, unwrapped (`method_wrapping.add_wrapped`): a registered method
        would cost every snapshots call too."""
        add_wrapped(server, health_pb2_grpc.add_HealthServicer_to_server, self, ())

    async def serving(self) -> None:
        await self._set(SERVING, "")

    async def stopping(self) -> None:
        """Final NOT_SERVING; returns once every open watch has sent it and its end (or after
        WATCH_END_SECONDS), so the caller stops the server only then."""
        await self._set(NOT_SERVING, "shutting down", final=True)
        if self._watches:
            await asyncio.wait(self._watches, timeout=WATCH_END_SECONDS)

    async def check(self) -> None:
        if self._status[""] != SERVING:
            raise UnavailableError(self._reason)

    async def _set(self, status: int, reason: str, *, final: bool = False) -> None:
        async with self._changed:
            if self._final:
                return
            self._status = dict.fromkeys(self._status, status)
            self._reason, self._final = reason, final
            self._changed.notify_all()

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        """Sends the status now and on every change; ends after the final NOT_SERVING."""
        def status() -> int:
            return self._status.get(request.service, SERVICE_UNKNOWN)

        self._track(context)
        sent = None
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: status() != sent or self._final)
                sent, final = status(), self._final
            await context.write(health_pb2.HealthCheckResponse(status=sent))
            if final:
                return

    def _track(self, context: grpc.aio.ServicerContext) -> None:
        """Until grpc has sent the call's status (its done callback), the watch is open."""
        ended = asyncio.get_running_loop().create_future()
        self._watches.add(ended)

        def done(_context: object) -> None:
            self._watches.discard(ended)
            if not ended.done():
                ended.set_result(None)

        context.add_done_callback(done)


class HealthUnimplemented(Exception):
    """The peer serves no grpc.health.v1 (UNIMPLEMENTED), or not for the snapshots service (NOT_FOUND)."""


class GrpcHealthProbe:
    """The client side: is the peer's snapshots service SERVING, by its own health Check."""

    def __init__(self, channel: grpc.aio.Channel, service: str = SNAPSHOTS_SERVICE) -> None:
        self._stub = health_pb2_grpc.HealthStub(channel)
        self._request = health_pb2.HealthCheckRequest(service=service)

    async def serving(self) -> bool:
        try:
            reply = await self._stub.Check(self._request)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND):
                raise HealthUnimplemented(error.details()) from None
            raise
        return reply.status == SERVING
