"""A stand-in for Firecracker's host side of a hybrid vsock device (docs/vsock.md).

Host-initiated connections, as Firecracker implements them: the host connects to
the device's unix socket (`uds_path`), writes `CONNECT <port>\\n`; if a guest
process listens on that AF_VSOCK port, Firecracker answers `OK <host_port>\\n`
(the local port it assigned, counting up from 2^30) and from then on the
connection is a byte stream to the guest listener. With no listener on the port
the guest resets the connection and Firecracker closes the unix connection
without an answer. Here a "guest listener" is any local unix socket.

Faults, switchable at run time: `refuse` (close after CONNECT, as if no guest
listener), `ack_delay` (the OK comes late), `drop_connections()` (every live
stream is cut), `pause()`/`resume()` (a paused VM: nothing moves), `cut_next_request` (the next bytes the host sends are lost and
their stream cut: a VM dying in the middle of a call), `unlisten(port)` / `listen(port, ...)` (the guest agent
is not started yet / comes up), `stop(unlink=False)` (a stale socket: ECONNREFUSED).

Run standalone: python -m tests.support.firecracker_vsock --uds PATH --port 10000=TARGET.sock
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket

FIRST_HOST_PORT = 1 << 30
_CONNECT = re.compile(rb"^CONNECT (\d{1,10})\n$")
_MAX_COMMAND = 32


class FirecrackerVsockStandIn:
    def __init__(self, uds_path: str, ports: dict[int, str] | None = None) -> None:
        self.uds_path = uds_path
        self.ports: dict[int, str] = dict(ports or {})
        self.refuse = False
        self.ack_delay = 0.0
        self.cut_next_request = False
        self._running = asyncio.Event()
        self._running.set()
        self.handshakes = 0
        self.accepted = 0
        self._next_host_port = FIRST_HOST_PORT
        self._server: asyncio.Server | None = None
        self._live: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def listen(self, port: int, target: str) -> None:
        """A guest process starts listening on `port` (its traffic goes to unix socket `target`)."""
        self.ports[port] = target

    def unlisten(self, port: int) -> None:
        self.ports.pop(port, None)

    async def start(self) -> FirecrackerVsockStandIn:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.uds_path)
        self._server = await asyncio.start_unix_server(self._accept, self.uds_path)
        return self

    async def stop(self, unlink: bool = True) -> None:
        """Stop like Firecracker exiting; `unlink=False` leaves a stale socket file behind."""
        if self._server is not None:
            self._server.close()
            self.drop_connections()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.uds_path)
        elif not os.path.exists(self.uds_path):
            stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stale.bind(self.uds_path)
            stale.close()

    def pause(self) -> None:
        """Like a paused VM: connections stay open, nothing moves either way (new ones get no OK)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def drop_connections(self) -> int:
        """Cut every live stream, both ways, as a VM crash would."""
        dropped = len(self._live)
        for writer in list(self._live):
            writer.transport.abort()
        self._live.clear()
        return dropped

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        self._live.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass  # a cut connection (or stop()) ends this stream; nothing to report
        finally:
            self._tasks.discard(task)
            self._live.discard(writer)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = await reader.readuntil(b"\n")
        match = _CONNECT.match(command[: _MAX_COMMAND + 1])
        if match is None or self.refuse or int(match.group(1)) not in self.ports:
            return  # Firecracker closes: bad command or no guest listener on the port
        try:
            guest_reader, guest_writer = await asyncio.open_unix_connection(self.ports[int(match.group(1))])
        except OSError:
            return  # the guest side reset the connection
        self._live.add(guest_writer)
        try:
            if self.ack_delay:
                await asyncio.sleep(self.ack_delay)
            await self._running.wait()
            host_port, self._next_host_port = self._next_host_port, self._next_host_port + 1
            writer.write(b"OK %d\n" % host_port)
            self.handshakes += 1
            await asyncio.gather(
                self._pump_to_guest(reader, guest_writer, writer), _pump(guest_reader, writer, self._running)
            )
        finally:
            self._live.discard(guest_writer)
            guest_writer.transport.abort()


    async def _pump_to_guest(
        self, reader: asyncio.StreamReader, guest: asyncio.StreamWriter, host: asyncio.StreamWriter
    ) -> None:
        """Host -> guest; with `cut_next_request`, the next chunk is lost and the stream cut (a crash mid-call)."""
        try:
            while data := await reader.read(65536):
                await self._running.wait()
                if self.cut_next_request:
                    self.cut_next_request = False
                    guest.transport.abort()
                    host.transport.abort()
                    return
                guest.write(data)
                await guest.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not guest.is_closing():
                with contextlib.suppress(OSError):
                    guest.write_eof()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, running: asyncio.Event) -> None:
    try:
        while data := await reader.read(65536):
            await running.wait()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        if not writer.is_closing():
            with contextlib.suppress(OSError):
                writer.write_eof()


async def _main(args: argparse.Namespace) -> None:
    ports = {int(p): t for p, t in (spec.split("=", 1) for spec in args.port)}
    standin = await FirecrackerVsockStandIn(args.uds, ports).start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await standin.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uds", required=True, help="the vsock device's host unix socket")
    parser.add_argument("--port", action="append", default=[], help="GUESTPORT=TARGET_UNIX_SOCKET")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
