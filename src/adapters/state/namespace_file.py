"""NamespaceMemory in a small JSON file: `{"namespaces": ["vm-a", ...]}`, replaced atomically.

Losing it costs little (a restarted demux then reaches only the VMs containerd calls again)
and a crash must never leave half of it, so: written beside itself and renamed into place
(fsynced), read leniently (a missing, unreadable or malformed file is an empty memory with a
warning; an invalid name is skipped), never a reason for the daemon not to start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

from snapmux.adapters.durable import write_atomically
from snapmux.adapters.file_modes import make_dirs
from snapmux.domain.errors import InvalidArgumentError
from snapmux.domain.namespaces import validate_namespace

log = logging.getLogger(__name__)


class JsonFileNamespaceMemory:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    async def load(self) -> frozenset[str]:
        return await asyncio.to_thread(self._read)

    async def save(self, namespaces: frozenset[str]) -> None:
        await asyncio.to_thread(self._write, sorted(namespaces))

    def _read(self) -> frozenset[str]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                names = json.load(handle)["namespaces"]
            if not isinstance(names, list):
                raise TypeError("namespaces is not a list")
        except FileNotFoundError:
            return frozenset()
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("ignoring the known-namespaces file %s: %s", self.path, error)
            return frozenset()
        return frozenset(name for name in names if _valid(name, self.path))

    def _write(self, names: list[str]) -> None:
        folder = os.path.dirname(self.path)
        make_dirs(folder, 0o700)
        write_atomically(self.path, json.dumps({"namespaces": names}).encode(), prefix=".known-namespaces-")


def _valid(name: object, path: str) -> bool:
    try:
        if not isinstance(name, str):
            raise InvalidArgumentError(f"{name!r} is not a namespace name")
        validate_namespace(name)
    except InvalidArgumentError as error:
        log.warning("%s: skipping %s", path, error)
        return False
    return True
