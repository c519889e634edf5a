"""A fake firecracker-containerd control plugin speaking real ttrpc frames on a unix socket.

It answers `Firecracker/GetVMInfo` from `vms` (VMID -> vsock path) like the real
plugin (NotFound for unknown VMs), records what it received, and can misbehave
on demand (`mode`) so the client's failure handling is tested against bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from snapmux.adapters.pb.firecracker import firecracker_pb2
from snapmux.adapters.pb.ttrpc import ttrpc_pb2
from snapmux.adapters.ttrpc.frames import HEADER, TYPE_RESPONSE, encode_frame, read_frame

NOT_FOUND, UNIMPLEMENTED = 5, 12
MODES = ("normal", "garbage-frame", "garbage-payload", "oversized", "wrong-type", "silent", "hang-up")


@dataclass
class Received:
    stream_id: int
    service: str
    method: str
    metadata: dict[str, str]
    timeout_nano: int
    vmid: str


@dataclass
class FakeTtrpcControlServer:
    path: str
    vms: dict[str, str] = field(default_factory=dict)
    mode: str = "normal"
    received: list[Received] = field(default_factory=list)
    connections: int = 0

    async def start(self) -> FakeTtrpcControlServer:
        self._server = await asyncio.start_unix_server(self._serve, self.path)
        self._tasks: set[asyncio.Task] = set()
        return self

    async def stop(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())
        self.connections += 1
        try:
            while True:
                frame = await read_frame(reader)
                request = ttrpc_pb2.Request.FromString(frame.payload)
                vmid = firecracker_pb2.GetVMInfoRequest.FromString(request.payload).VMID
                metadata = {kv.key: kv.value for kv in request.metadata}
                self.received.append(
                    Received(frame.stream_id, request.service, request.method, metadata, request.timeout_nano, vmid)
                )
                if not await self._answer(writer, frame.stream_id, request, vmid):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(asyncio.current_task())
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, stream_id: int, request, vmid: str) -> bool:
        if self.mode == "silent":
            await asyncio.Event().wait()
        if self.mode == "hang-up":
            return False
        if self.mode == "garbage-frame":
            writer.write(b"\x00\x00\x00\x03garbage-not-a-frame")
        elif self.mode == "oversized":
            writer.write(HEADER.pack((4 << 20) + 1, stream_id, TYPE_RESPONSE, 0))
        elif self.mode == "wrong-type":
            writer.write(encode_frame(stream_id, 1, b""))
        elif self.mode == "garbage-payload":
            writer.write(encode_frame(stream_id, TYPE_RESPONSE, b"\xff\xff\xff\xff"))
        else:
            writer.write(encode_frame(stream_id, TYPE_RESPONSE, self._response(request, vmid).SerializeToString()))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return True

    def _response(self, request, vmid: str) -> ttrpc_pb2.Response:
        if (request.service, request.method) != ("Firecracker", "GetVMInfo"):
            return ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=UNIMPLEMENTED, message="unknown method"))
        if vmid not in self.vms:
            return ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=NOT_FOUND, message=f"VM {vmid} not found"))
        info = firecracker_pb2.GetVMInfoResponse(VMID=vmid, SocketPath="/x/firecracker.sock", VSockPath=self.vms[vmid])
        return ttrpc_pb2.Response(payload=info.SerializeToString())
