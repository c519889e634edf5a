"""Python's floor for a snapshotter: a grpc.aio server that answers fixed messages and does nothing else.

    python bench/grpc_floor.py --listen SOCK [--list-size 201] [--uvloop]

containerd's snapshots service on a unix socket, every answer built once at startup
and shaped like cvmfs-snapshotter's (a committed Info with a gc.root label, an
overlay mount with workdir/upperdir/lowerdir): no interceptor, no metrics, no
domain types, no storage. Requests are still parsed and answers still serialized,
as any Python servicer must. The service is added as the daemons add theirs, as generic
handlers only (`method_wrapping.add_wrapped`): added the generated way, as registered methods
too, grpc.aio's server loop costs every call some 54k instructions more (bench/instructions_bench.py),
and that floor was one the daemons no longer stand on. The hot-path bench runs it beside cvmfs-snapshotter
with the same Go client: what cvmfs-snapshotter costs above it is the project's own.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402
from google.protobuf.empty_pb2 import Empty  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

from snapmux.adapters.grpc.method_wrapping import add_wrapped  # noqa: E402
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb  # noqa: E402
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc  # noqa: E402
from snapmux.adapters.pb.containerd.api.types import mount_pb2  # noqa: E402

ROOT = "/var/lib/containerd-cvmfs-grpc/snapshots"
STAMP = Timestamp(seconds=1_780_000_000, nanos=123_456_789)
INFO = pb.Info(name="bench-base", kind=pb.COMMITTED, created_at=STAMP, updated_at=STAMP,
               labels={"containerd.io/gc.root": "2026-01-01T00:00:00Z"})
MOUNTS = [mount_pb2.Mount(type="overlay", source="overlay", options=[
    "index=off", f"workdir={ROOT}/12/work", f"upperdir={ROOT}/12/fs", f"lowerdir={ROOT}/1/fs"])]


class FixedSnapshots(pb_grpc.SnapshotsServicer):
    def __init__(self, list_size: int) -> None:
        self._stat = pb.StatSnapshotResponse(info=INFO)
        self._mounts = pb.MountsResponse(mounts=MOUNTS)
        self._prepare = pb.PrepareSnapshotResponse(mounts=MOUNTS)
        self._empty = Empty()
        infos = [INFO] * list_size
        self._list = [pb.ListSnapshotsResponse(info=infos[i:i + 100]) for i in range(0, list_size, 100)]

    async def Stat(self, request, context):  # type: ignore[no-untyped-def]
        return self._stat

    async def Mounts(self, request, context):  # type: ignore[no-untyped-def]
        return self._mounts

    async def Prepare(self, request, context):  # type: ignore[no-untyped-def]
        return self._prepare

    async def Commit(self, request, context):  # type: ignore[no-untyped-def]
        return self._empty

    async def Remove(self, request, context):  # type: ignore[no-untyped-def]
        return self._empty

    async def List(self, request, context):  # type: ignore[no-untyped-def]
        for message in self._list:
            yield message


async def serve(listen: str, list_size: int) -> None:
    server = grpc.aio.server()
    add_wrapped(server, pb_grpc.add_SnapshotsServicer_to_server, FixedSnapshots(list_size), ())
    server.add_insecure_port(f"unix://{listen}")
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await server.start()
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--list-size", type=int, default=201, help="Infos answered by List")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as the daemons may")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(serve(args.listen, args.list_size))


if __name__ == "__main__":
    main()
