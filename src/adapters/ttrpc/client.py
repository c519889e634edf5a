"""An asyncio ttrpc client over a unix socket, multiplexing calls on one connection.

Only unary calls are needed (GetVMInfo). Client stream ids are odd and increase
from 1 per connection, as in ttrpc. Failures arrive as domain errors: the far
side's status code as the domain error declaring it, a dead or garbled connection as
`UnavailableError`, a missed deadline as `DeadlineExceededError`. A connection
that saw garbage is dropped and the next call dials again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from google.protobuf.message import DecodeError

from snapmux.adapters.pb.ttrpc import ttrpc_pb2
from snapmux.adapters.ttrpc.frames import MAX_MESSAGE, TYPE_REQUEST, TYPE_RESPONSE, FrameError, encode_frame, read_frame
from snapmux.domain import errors as e

_MAX_STREAM_ID = 0xFFFFFFFF


def status_error(status: ttrpc_pb2.Status, what: str) -> e.DomainError:
    """The far side's status as a domain error; the message keeps its text."""
    return e.error_for(status.code)(f"{what}: {status.message}")


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, max_size: int) -> None:
        self._reader, self._writer, self._path, self._max = reader, writer, path, max_size
        self._next_stream = 1
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self.failure: e.DomainError | None = None
        self._task = asyncio.create_task(self._read_loop())

    def send(self, request: bytes) -> asyncio.Future[bytes]:
        stream_id = self._next_stream
        self._next_stream += 2
        if self._next_stream > _MAX_STREAM_ID:
            self.failure = e.UnavailableError(f"ttrpc {self._path}: stream ids exhausted")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._writer.write(encode_frame(stream_id, TYPE_REQUEST, request, max_size=self._max))
        self._pending[stream_id] = future
        future.add_done_callback(lambda _: self._pending.pop(stream_id, None))
        return future

    async def _read_loop(self) -> None:
        try:
            while True:
                frame = await read_frame(self._reader, self._max)
                if frame.type != TYPE_RESPONSE:
                    raise FrameError(f"unexpected frame type {frame.type} on stream {frame.stream_id}")
                future = self._pending.get(frame.stream_id)
                if future is not None and not future.done():
                    future.set_result(frame.payload)
        except (FrameError, OSError, asyncio.IncompleteReadError) as error:
            reason = "closed the connection" if isinstance(error, asyncio.IncompleteReadError) else str(error)
            self._fail(e.UnavailableError(f"ttrpc {self._path}: {reason}"))

    def _fail(self, failure: e.DomainError) -> None:
        self.failure = failure
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(failure)
        self._writer.close()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._fail(e.UnavailableError(f"ttrpc {self._path}: client closed"))


class TtrpcClient:
    def __init__(self, path: str, *, timeout: float = 2.0, max_message: int = MAX_MESSAGE) -> None:
        self.path = path
        self.timeout = timeout
        self._max = max_message
        self._connection: _Connection | None = None
        self._dialing = asyncio.Lock()

    async def call(
        self, service: str, method: str, payload: bytes, metadata: Mapping[str, str] | None = None
    ) -> bytes:
        """One unary call; returns the response payload bytes."""
        what = f"ttrpc {service}/{method} on {self.path}"
        request = ttrpc_pb2.Request(service=service, method=method, payload=payload)
        request.timeout_nano = int(self.timeout * 1e9)
        request.metadata.extend(ttrpc_pb2.KeyValue(key=k, value=v) for k, v in (metadata or {}).items())
        try:
            async with asyncio.timeout(self.timeout):
                connection = await self._connect()
                answer = await connection.send(request.SerializeToString())
        except TimeoutError:
            raise e.DeadlineExceededError(f"{what}: no answer within {self.timeout}s") from None
        except FrameError as error:
            raise e.InvalidArgumentError(f"{what}: {error}") from None
        return self._unwrap(answer, what)

    @staticmethod
    def _unwrap(answer: bytes, what: str) -> bytes:
        try:
            response = ttrpc_pb2.Response.FromString(answer)
        except DecodeError as error:
            raise e.UnavailableError(f"{what}: undecodable response: {error}") from None
        if response.HasField("status") and response.status.code != 0:
            raise status_error(response.status, what)
        return response.payload

    async def connected(self) -> None:
        """Dials unless a live connection exists: whether the far side can answer now (health)."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._connect()
        except TimeoutError:
            raise e.UnavailableError(f"ttrpc {self.path}: cannot connect within {self.timeout}s") from None

    async def _connect(self) -> _Connection:
        async with self._dialing:
            if self._connection is not None and self._connection.failure is None:
                return self._connection
            try:
                reader, writer = await asyncio.open_unix_connection(self.path)
            except OSError as error:
                raise e.UnavailableError(f"ttrpc {self.path}: cannot connect: {error.strerror or error}") from None
            self._connection = _Connection(reader, writer, self.path, self._max)
            return self._connection

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
