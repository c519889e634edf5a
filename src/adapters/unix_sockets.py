"""Every unix socket a daemon listens on: who may connect, and a bind no one can race.

A unix socket's mode is what decides who may call a snapshotter (full control of the store),
and bind() creates it with 0777 & ~umask. So the mode is never left to the umask: each socket
is bound under a fresh 0700 directory beside its final path, given its mode (0600, or 0660
with a group, as containerd does for its own socket with `[grpc] uid/gid`) and owner, then
renamed into place. Until the rename only this process can reach it, so no client ever
connects while it is 0777; the rename also atomically replaces a stale socket. gRPC binds
its sockets itself, which is why the binding is a callback: gRPC's `add_insecure_port` and a
plain `socket.bind` go through the same steps. The umask is never touched: it is
process-wide and would race with every other thread creating files.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import socket
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from snapmux.adapters.file_modes import make_dirs

T = TypeVar("T")

MAX_PATH_BYTES = 107
"""sun_path holds 108 bytes including the terminating NUL."""


@dataclass(frozen=True)
class SocketAccess:
    """Who may connect: the daemon's user only, or also the members of group `gid`."""

    gid: int | None = None

    @property
    def mode(self) -> int:
        return 0o600 if self.gid is None else 0o660

    @property
    def dir_mode(self) -> int:
        """Directories we create for sockets: the group may traverse, never list or write."""
        return 0o700 if self.gid is None else 0o710


OWNER_ONLY = SocketAccess()


def group_id(group: str | int) -> int:
    """A group name or number as a gid; ValueError says what is wrong (settings report it by key)."""
    if isinstance(group, int) or (isinstance(group, str) and group.isdigit()):
        gid = int(group)
        if not 0 <= gid < 2**32 - 1:
            raise ValueError(f"group id {gid} is out of range")
        return gid
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"no such group {group!r}") from None


def check_replaceable(path: str) -> None:
    """Only a stale socket may be replaced: refuse to clobber a file, or a socket someone listens on."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, "refusing to replace a non-socket", path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        if probe.connect_ex(path) in (errno.ECONNREFUSED, errno.ENOENT):
            return  # stale: nobody listens
    raise OSError(errno.EADDRINUSE, "another process is listening there", path)


def bind_unix(path: str, access: SocketAccess, bind: Callable[[str], T]) -> T:
    """Runs `bind(private_path)`, sets the socket's mode and group, then renames it to `path`.

    `path`'s folder is created (with `access.dir_mode`) when missing. Returns what `bind` returns.
    After the bind everything goes through descriptors of the directories as created, never
    through a name someone else could swap for a symlink (the folder may be writable by others).
    """
    path = os.path.abspath(path)
    folder, name = os.path.split(path)
    make_dirs(folder, access.dir_mode, access.gid)
    check_replaceable(path)
    private = tempfile.mkdtemp(prefix=".", dir=folder)  # 0700 whatever the umask
    folder_fd = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    private_fd = os.open(private, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        staged = os.path.join(private, "s")
        if len(os.fsencode(staged)) > MAX_PATH_BYTES:
            raise OSError(errno.ENAMETOOLONG, f"socket path too long to bind safely (max {MAX_PATH_BYTES - 11}"
                          " bytes with a short file name)", path)
        bound = bind(staged)
        _restrict(private_fd, access)
        os.rename("s", name, src_dir_fd=private_fd, dst_dir_fd=folder_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink("s", dir_fd=private_fd)  # a bind that failed half-way
        with contextlib.suppress(OSError):
            os.rmdir(private)
        os.close(private_fd)
        os.close(folder_fd)
    return bound


def _restrict(private_fd: int, access: SocketAccess) -> None:
    """chmod/chown the bound socket itself: Linux has no lchmod, so through an O_PATH descriptor."""
    fd = os.open("s", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=private_fd)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "the bound socket was replaced before its mode was set")
        os.chmod(f"/proc/self/fd/{fd}", access.mode)
        if access.gid is not None:
            os.chown(f"/proc/self/fd/{fd}", -1, access.gid)
    finally:
        os.close(fd)


def unix_listener(path: str, access: SocketAccess = OWNER_ONLY, backlog: int = 128) -> socket.socket:
    """A listening, non-blocking AF_UNIX socket at `path` (for asyncio servers: `sock=`)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        bind_unix(path, access, lambda staged: (sock.bind(staged), sock.listen(backlog)))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
