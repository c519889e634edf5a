"""The floor for any Python gRPC proxy: a pass-through relay that does nothing but forward.

    python bench/grpc_relay.py --listen SOCK --vsock UDS --port 10000

Serves every method as raw bytes (no protobuf parsing, no routing, no metrics, no
domain types) and forwards it over the same VsockForwarder path the demux uses. The
demux benchmark runs it beside the demux: what the demux costs above this relay is
its own work; what the relay costs above a direct call is one grpc.aio server+client
hop, which no Python implementation of the demux can avoid.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402

from snapmux.adapters.vsock.connector import VsockSnapshotterConnector  # noqa: E402
from snapmux.domain.model import SnapshotterAddress  # noqa: E402

FORWARDED_METADATA = ("containerd-namespace",)


class PassThrough(grpc.GenericRpcHandler):
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}  # built once per method, as a servicer's are

    def service(self, details):  # type: ignore[no-untyped-def]
        handler = self._handlers.get(details.method)
        if handler is None:
            handler = self._handlers[details.method] = self._handler(details.method)
        return handler

    def _handler(self, method: str) -> grpc.RpcMethodHandler:
        if method.endswith("/List"):
            return grpc.unary_stream_rpc_method_handler(self._stream(self._channel.unary_stream(method)))
        return grpc.unary_unary_rpc_method_handler(self._unary(self._channel.unary_unary(method)))

    @staticmethod
    def _unary(call):  # type: ignore[no-untyped-def]
        async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                return await call(request, metadata=_metadata(context))
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "")

        return handler

    @staticmethod
    def _stream(call):  # type: ignore[no-untyped-def]
        async def handler(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
            try:
                async for reply in call(request, metadata=_metadata(context)):
                    yield reply
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "")

        return handler


def _metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in context.invocation_metadata() or () if k in FORWARDED_METADATA)


async def serve(listen: str, vsock: str, port: int) -> None:
    connector = VsockSnapshotterConnector(timeout=10, retry_interval=0.05)
    remote = await connector.connect("relay", SnapshotterAddress("unix", vsock, port))
    server = grpc.aio.server(handlers=[PassThrough(remote._channel)])
    server.add_insecure_port(f"unix://{listen}")
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await server.start()
    await stop.wait()
    await server.stop(1)
    await remote.close()
    await connector.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--vsock", required=True)
    parser.add_argument("--port", type=int, default=10000)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as the daemons do")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(serve(args.listen, args.vsock, args.port))


if __name__ == "__main__":
    main()
