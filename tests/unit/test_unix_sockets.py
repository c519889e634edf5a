"""unix_sockets / file_modes: modes never follow the umask, stale sockets go, live ones and files stay."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

import grpc
import pytest

from snapmux.adapters.file_modes import create_private_file, make_dirs
from snapmux.adapters.grpc.server import start_unix_snapshots_server
from snapmux.adapters.http.messages import HttpResponse
from snapmux.adapters.http.server import HttpServer
from snapmux.adapters.unix_sockets import SocketAccess, bind_unix, group_id, unix_listener
from snapmux.adapters.vsock.dialer import VsockDialer
from snapmux.adapters.vsock.forwarder import VsockForwarder
from tests.fakes.snapshots import InMemorySnapshotService


@pytest.fixture
def umask_000():
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_listener_is_0600_in_new_0700_folders_under_umask_000(tmp_path, umask_000):
    path = tmp_path / "a" / "b" / "s.sock"
    with contextlib.closing(unix_listener(str(path))):
        assert mode(path) == 0o600
        assert mode(path.parent) == mode(path.parent.parent) == 0o700
        assert os.listdir(path.parent) == ["s.sock"]  # the private bind folder is gone


def test_a_group_gets_0660_and_0710(tmp_path, umask_000):
    gid = os.getgid()
    path = tmp_path / "run" / "s.sock"
    with contextlib.closing(unix_listener(str(path), SocketAccess(gid))):
        assert (mode(path), os.lstat(path).st_gid) == (0o660, gid)
        assert mode(path.parent) == 0o710


def test_the_socket_is_never_reachable_at_its_path_before_its_mode_is_set(tmp_path, umask_000):
    path = tmp_path / "s.sock"
    seen = []

    def bind(staged: str) -> None:
        seen.append((os.path.lexists(path), mode(os.path.dirname(staged))))
        socket.socket(socket.AF_UNIX).bind(staged)

    bind_unix(str(path), SocketAccess(), bind)
    assert seen == [(False, 0o700)] and mode(path) == 0o600


def test_a_stale_socket_is_replaced_a_file_or_a_live_socket_is_not(tmp_path):
    stale = tmp_path / "stale.sock"
    socket.socket(socket.AF_UNIX).bind(str(stale))
    unix_listener(str(stale)).close()
    afile = tmp_path / "file"
    afile.write_text("keep")
    with pytest.raises(FileExistsError):
        unix_listener(str(afile))
    assert afile.read_text() == "keep"
    with contextlib.closing(unix_listener(str(tmp_path / "live.sock"))):
        with pytest.raises(OSError) as live:
            unix_listener(str(tmp_path / "live.sock"))
        assert live.value.errno == errno.EADDRINUSE
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_a_path_too_long_for_the_private_bind_is_refused_by_name(tmp_path):
    path = tmp_path / ("d" * (100 - len(str(tmp_path)))) / "s"
    with pytest.raises(OSError) as error:
        unix_listener(str(path))
    assert error.value.errno == errno.ENAMETOOLONG and str(path) in str(error.value)


def test_group_id_takes_names_and_numbers():
    assert group_id("0") == 0 and group_id(0) == 0 and group_id("root") == 0
    with pytest.raises(ValueError, match="no such group 'no-such-group-snapmux'"):
        group_id("no-such-group-snapmux")


def test_make_dirs_and_private_files_ignore_the_umask(tmp_path, umask_000):
    make_dirs(str(tmp_path / "x" / "y"), 0o700)
    assert mode(tmp_path / "x") == mode(tmp_path / "x" / "y") == 0o700
    create_private_file(str(tmp_path / "x" / "f"))
    assert mode(tmp_path / "x" / "f") == 0o600
    (tmp_path / "x" / "f").write_text("data")
    create_private_file(str(tmp_path / "x" / "f"))
    assert (tmp_path / "x" / "f").read_text() == "data"


async def test_grpc_http_and_forwarder_sockets_are_0600_under_umask_000(tmp_path, umask_000):
    server = await start_unix_snapshots_server(InMemorySnapshotService(), str(tmp_path / "g" / "grpc.sock"))
    http = HttpServer(lambda request: HttpResponse(200, b""))
    await http.start_unix(str(tmp_path / "h" / "http.sock"))
    forwarder = await VsockForwarder(VsockDialer(str(tmp_path / "none"), 1, 1.0), str(tmp_path / "f.sock")).start()
    try:
        async with grpc.aio.insecure_channel(f"unix://{tmp_path / 'g' / 'grpc.sock'}") as channel:
            await channel.channel_ready()
        for path in ("g/grpc.sock", "h/http.sock", "f.sock"):
            assert mode(tmp_path / path) == 0o600, path
    finally:
        await forwarder.close()
        await http.stop()
        await server.stop(None)


def test_a_socket_swapped_for_a_symlink_is_never_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("secret")
    os.chmod(victim, 0o640)

    def bind_then_swap(staged: str) -> None:
        socket.socket(socket.AF_UNIX).bind(staged)
        os.unlink(staged)
        os.symlink(victim, staged)  # what someone able to write the folder could try

    with pytest.raises(OSError):
        bind_unix(str(tmp_path / "s.sock"), SocketAccess(os.getgid()), bind_then_swap)
    assert mode(victim) == 0o640 and not (tmp_path / "s.sock").exists()
    assert sorted(os.listdir(tmp_path)) == ["victim"]
