"""Opens a gRPC client to a VM's snapshotter: Firecracker hybrid vsock or a plain unix socket.

`network = "unix"` with a snapshotter port is Firecracker's hybrid vsock: a private
VsockForwarder socket fronts the VM and gRPC dials that (always a `unix:` target,
so a socket path is never resolved as a host name, the bug grpc.NewClient brought
to the Go original). Without a port the unix socket is the snapshotter itself.
The first dial happens here, bounded by the dial timeout, so a missing or
refusing VM is reported at once by name instead of on some later call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from snapmux.adapters.grpc.client import GrpcSnapshotService
from snapmux.adapters.grpc.errors import domain_error_from
from snapmux.adapters.grpc.forwarding import RawSnapshotCalls, vm_local_mounts
from snapmux.adapters.grpc.health import GrpcHealthProbe, HealthUnimplemented
from snapmux.adapters.grpc.server import MAX_MESSAGE_BYTES
from snapmux.adapters.vsock.dialer import VsockDialer
from snapmux.adapters.vsock.forwarder import VsockForwarder
from snapmux.domain.errors import CancelledError, DeadlineExceededError, DomainError, UnavailableError
from snapmux.domain.model import Info, Mount, SnapshotterAddress, Usage

T = TypeVar("T")

HEALTH_PROBE_KEY = "snapmux.io/health-probe"
"""Stat of a key no snapshotter has: NotFound is a healthy answer. The probe of a VM snapshotter
that does not serve grpc.health.v1 (containerd's Go proxy snapshotters do not)."""


class GrpcRemoteSnapshotter(GrpcSnapshotService):
    """GrpcSnapshotService that owns its channel (and forwarder) and names transport failures."""

    def __init__(self, channel: grpc.aio.Channel, where: str, forwarder: VsockForwarder | None, probe_timeout: float):
        super().__init__(channel)
        self._channel = channel
        self._raw = RawSnapshotCalls(channel)
        self._where = where
        self._forwarder = forwarder
        self._probe_timeout = probe_timeout
        self._health: GrpcHealthProbe | None = GrpcHealthProbe(channel)
        self._closing = False

    def named(self, error: BaseException) -> BaseException:
        """A transport failure says which VM socket and port; a remote's own status passes unchanged."""
        if isinstance(error, (CancelledError, asyncio.CancelledError)) and self._cut_by_close():
            return UnavailableError(f"{self._where}: connection closed (VM unhealthy, replaced or shutting down)")
        if not isinstance(error, UnavailableError):
            return error
        failure = self._forwarder.last_failure if self._forwarder is not None else None
        return UnavailableError(f"{failure} ({error})") if failure else error

    def _cut_by_close(self) -> bool:
        """grpc.aio cancels calls when we close the channel; the caller itself was not cancelled."""
        task = asyncio.current_task()
        return self._closing and (task is None or not task.cancelling())

    async def _named_on_failure(self, call: Awaitable[T]) -> T:
        """Every call: a transport failure (or a cut by our own close) names the VM socket and port."""
        try:
            return await call
        except (UnavailableError, CancelledError, asyncio.CancelledError) as error:
            raise self.named(error) from None

    async def stat(self, key: str) -> Info:
        return await self._named_on_failure(super().stat(key))

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        return await self._named_on_failure(super().update(info, fieldpaths))

    async def usage(self, key: str) -> Usage:
        return await self._named_on_failure(super().usage(key))

    async def mounts(self, key: str) -> list[Mount]:
        return await self._named_on_failure(super().mounts(key))

    async def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        return await self._named_on_failure(super().prepare(key, parent, labels))

    async def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        return await self._named_on_failure(super().view(key, parent, labels))

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        await self._named_on_failure(super().commit(name, key, labels))

    async def remove(self, key: str) -> None:
        await self._named_on_failure(super().remove(key))

    async def cleanup(self) -> None:
        await self._named_on_failure(super().cleanup())

    async def walk(self, filters: Sequence[str] = ()) -> AsyncIterator[Info]:
        try:
            async for info in super().walk(filters):
                yield info
        except (UnavailableError, CancelledError, asyncio.CancelledError) as error:
            raise self.named(error) from None

    async def forward(self, method: str, request: bytes) -> bytes:
        """The demux's hot path: the caller's bytes to the VM, with its namespace and deadline."""
        call = self._raw.unary(method)
        try:
            return await call(request, **self._options())
        except grpc.RpcError as error:
            raise self.named(domain_error_from(error)) from None
        except asyncio.CancelledError as error:
            raise self.named(error) from None

    async def forward_mounts(self, method: str, request: bytes, type_prefix: str) -> bytes:
        return vm_local_mounts(method, await self.forward(method, request), type_prefix)

    async def forward_stream(self, method: str, request: bytes) -> AsyncIterator[bytes]:
        call = self._raw.stream(method)
        try:
            async for reply in call(request, **self._options()):
                yield reply
        except grpc.RpcError as error:
            raise self.named(domain_error_from(error)) from None
        except asyncio.CancelledError as error:
            raise self.named(error) from None

    async def healthy(self) -> bool:
        """Connected (re-dialling if needed) and answering a cheap call, both within the dial timeout.

        The call matters: a paused VM keeps its connection READY but never answers. It is the VM
        snapshotter's own gRPC health Check, so one that is starting or draining (NOT_SERVING) is
        unhealthy too; a snapshotter without the health service is asked a Stat instead.
        """
        try:
            await asyncio.wait_for(self._channel.channel_ready(), self._probe_timeout)
            return await asyncio.wait_for(self._answers(), self._probe_timeout)
        except (asyncio.TimeoutError, grpc.RpcError, UnavailableError, DeadlineExceededError, CancelledError):
            return False

    async def _answers(self) -> bool:
        if self._health is not None:
            try:
                return await self._health.serving()
            except HealthUnimplemented:
                self._health = None  # asked once: this snapshotter has no health service
        try:
            await GrpcSnapshotService.stat(self, HEALTH_PROBE_KEY)
        except (UnavailableError, DeadlineExceededError, CancelledError):
            raise
        except DomainError:  # NotFound (or any answer at all): the snapshotter is there
            return True
        return True

    async def close(self) -> None:
        self._closing = True
        await self._channel.close(grace=self._probe_timeout)
        if self._forwarder is not None:
            await self._forwarder.close()


class VsockSnapshotterConnector:
    """The SnapshotterConnector of the demux; owns the private folder of forwarding sockets."""

    def __init__(self, timeout: float = 5.0, retry_interval: float = 0.1, ack_timeout: float = 1.0) -> None:
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.ack_timeout = ack_timeout
        self._folder: str | None = None
        self._ids = itertools.count()

    def _channel_options(self) -> list[tuple[str, Any]]:
        backoff_ms = max(1, int(self.retry_interval * 1000))
        return [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # recover within ~1s once the VM is back, instead of grpc's default 1s..120s backoff
            ("grpc.initial_reconnect_backoff_ms", backoff_ms),
            ("grpc.min_reconnect_backoff_ms", backoff_ms),
            ("grpc.max_reconnect_backoff_ms", max(backoff_ms, 1000)),
            ("grpc.enable_retries", 0),
        ]

    async def connect(self, namespace: str, address: SnapshotterAddress) -> GrpcRemoteSnapshotter:
        if address.network != "unix":
            raise UnavailableError(
                f"namespace {namespace}: unsupported network {address.network!r} (want unix, with a port for vsock)"
            )
        forwarder = await self._forwarder(address) if address.snapshotter_port else None
        if forwarder is not None:
            target, where = forwarder.target, str(forwarder.dialer)
        else:
            await _probe_unix(address.address)
            target, where = f"unix://{os.path.abspath(address.address)}", f"unix socket {address.address}"
        channel = grpc.aio.insecure_channel(target, options=self._channel_options())
        try:
            await asyncio.wait_for(channel.channel_ready(), self.timeout)
        except BaseException as error:
            await channel.close(None)
            failure = forwarder.last_failure if forwarder is not None else None
            if forwarder is not None:
                await forwarder.close()
            if isinstance(error, asyncio.TimeoutError):
                raise UnavailableError(
                    f"namespace {namespace}: no gRPC snapshotter at {where} within {self.timeout:g}s"
                    + (f": {failure}" if failure else "")
                ) from None
            raise
        return GrpcRemoteSnapshotter(channel, where, forwarder, self.timeout)

    async def _forwarder(self, address: SnapshotterAddress) -> VsockForwarder:
        """Dial once here (a missing or refusing VM fails now, by name), then hand that socket to gRPC."""
        assert address.snapshotter_port is not None
        ack_timeout = min(self.ack_timeout, self.timeout)
        dialer = VsockDialer(address.address, address.snapshotter_port, self.timeout, self.retry_interval, ack_timeout)
        first = await dialer.dial()
        try:
            forwarder = await VsockForwarder(dialer, self._socket_path()).start()
        except BaseException:
            first.close()
            raise
        forwarder.adopt(first)
        return forwarder

    def _socket_path(self) -> str:
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="demux-snapshotter-")  # 0700, private to us
        return os.path.join(self._folder, f"vm-{next(self._ids)}.sock")

    async def close(self) -> None:
        """Remove the forwarding sockets' folder (clients are closed by their owner first)."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


async def _probe_unix(path: str) -> None:
    """Fail at once, by name, when nothing listens on a plain unix snapshotter socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, path)
    except OSError as error:
        raise UnavailableError(f"cannot connect to unix socket {path}: {error.strerror or error}") from None
    finally:
        with contextlib.suppress(OSError):
            sock.close()
