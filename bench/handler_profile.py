#!/usr/bin/env python3
"""Where cvmfs-snapshotter's own cost per Stat/Mounts goes: its wrapped handlers driven in-process.

    python bench/handler_profile.py [--calls 20000] [--ops stat mounts] [--profile] [--top 25]

The daemon's composition (OverlaySnapshotter, CvmfsSnapshotter, the metrics decorator over a
Prometheus registry, the servicer with the call log and the error mapping wrapped around each
handler) is built as the container builds it, and each call is what grpc.aio does with a handler:
deserialize the request's bytes, await the handler, serialize the reply. The floor's handler
(bench/grpc_floor.py) is driven the same way. No socket and no gRPC core: what is left is the
project's own part, per call, beside the floor's; --profile shows it function by function
(cProfile). bench/instructions_bench.py counts the whole server, gRPC included.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.grpc_floor import FixedSnapshots  # noqa: E402
from bench.harness import ratio, table  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from snapmux.adapters.cvmfs.layers import CvmfsLayerStore  # noqa: E402
from snapmux.adapters.cvmfs.snapshotter import CvmfsSnapshotter  # noqa: E402
from snapmux.adapters.grpc.call_log import CallLogInterceptor  # noqa: E402
from snapmux.adapters.grpc.convert import SNAPSHOTS_SERVICE  # noqa: E402
from snapmux.adapters.grpc.errors import DomainErrorInterceptor  # noqa: E402
from snapmux.adapters.grpc.method_wrapping import add_wrapped  # noqa: E402
from snapmux.adapters.grpc.servicer import add_snapshots_servicer  # noqa: E402
from snapmux.adapters.overlay.snapshotter import OverlaySnapshotter  # noqa: E402
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb  # noqa: E402
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc  # noqa: E402
from snapmux.adapters.prometheus.registry import PrometheusMetricsRegistry  # noqa: E402
from snapmux.application.metrics import MeasuredSnapshotService  # noqa: E402
from snapmux.domain.labels import GC_ROOT_LABEL  # noqa: E402

GC_ROOT = {GC_ROOT_LABEL: "2026-01-01T00:00:00Z"}


class _Handlers:
    """Stands in for grpc.aio.Server: keeps the generic handlers a service adds, finds a method's as gRPC does."""

    def __init__(self) -> None:
        self.generic: list[Any] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def handler(self, method: str) -> Any:
        details = SimpleNamespace(method=f"/{SNAPSHOTS_SERVICE}/{method}", invocation_metadata=())
        return next(found for found in (generic.service(details) for generic in self.generic) if found is not None)


class _Context:
    """The happy path reads nothing from its context."""

    def invocation_metadata(self) -> tuple[()]:
        return ()


async def snapmux_handlers(root: str, layers: str) -> tuple[_Handlers, OverlaySnapshotter]:
    store = await OverlaySnapshotter.open(root)
    metrics = PrometheusMetricsRegistry(CollectorRegistry())
    snapshots = CvmfsSnapshotter(store, CvmfsLayerStore(layers, "serve", None, 0.0), metrics=metrics)  # type: ignore[arg-type]
    await snapshots.prepare("base-a", "", GC_ROOT)
    await snapshots.commit("base", "base-a", GC_ROOT)
    await snapshots.prepare("active", "base", GC_ROOT)
    handlers = _Handlers()
    add_snapshots_servicer(handlers, MeasuredSnapshotService(snapshots, metrics),  # type: ignore[arg-type]
                           [CallLogInterceptor(), DomainErrorInterceptor(caller_context=False)])
    return handlers, store


def floor_handlers() -> _Handlers:
    handlers = _Handlers()
    add_wrapped(handlers, pb_grpc.add_SnapshotsServicer_to_server, FixedSnapshots(1), [])  # type: ignore[arg-type]
    return handlers


REQUESTS = {"stat": ("Stat", pb.StatSnapshotRequest(key="base")), "mounts": ("Mounts", pb.MountsRequest(key="active"))}


async def drive(handlers: _Handlers, op: str, calls: int) -> float:
    """Microseconds per call: bytes in, handler awaited, bytes out, as grpc.aio does it."""
    method, request = REQUESTS[op]
    handler, data, context = handlers.handler(method), request.SerializeToString(), _Context()
    deserialize, behavior, serialize = handler.request_deserializer, handler.unary_unary, handler.response_serializer
    serialize = serialize or bytes  # None: the handler answers serialized bytes, sent as they are
    for _ in range(200):  # warm: caches, memo, metric children
        serialize(await behavior(deserialize(data), context))
    started = time.perf_counter()
    for _ in range(calls):
        serialize(await behavior(deserialize(data), context))
    return (time.perf_counter() - started) / calls * 1e6


async def measure(args: argparse.Namespace, root: str, layers: str) -> None:
    ours, store = await snapmux_handlers(root, layers)
    floor = floor_handlers()
    if args.freeze:
        gc.freeze()
    try:
        rows = []
        for op in args.ops:
            best = {name: min([await drive(h, op, args.calls) for _ in range(args.repeat)])
                    for name, h in (("floor", floor), ("snapmux", ours))}
            rows.append([op, f"{best['floor']:.2f}", f"{best['snapmux']:.2f}",
                         f"{best['snapmux'] - best['floor']:.2f}", ratio(best["snapmux"], best["floor"])])
        print(table(["op", "floor us", "snapmux us", "above floor us", "snapmux/floor"], rows))
        if args.profile:
            for op in args.ops:
                profiler = cProfile.Profile()
                profiler.enable()
                await drive(ours, op, args.calls)
                profiler.disable()
                print(f"\n{op}: cProfile of {args.calls} calls, by own time\n")
                pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
    finally:
        await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the fastest is kept")
    parser.add_argument("--ops", nargs="+", default=["stat", "mounts"], choices=list(REQUESTS))
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--freeze", action="store_true", help="gc.freeze() after setup, as a daemon could")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="handler-profile-") as tmp:
        (Path(tmp) / "layers").mkdir()
        asyncio.run(measure(args, str(Path(tmp) / "root"), str(Path(tmp) / "layers")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
