"""Who may reach the daemons' unix sockets, under the worst umask (issue 9, defect 4).

Each daemon runs as root under `umask 000`, its sockets in a 0777 directory every local user
can reach: each socket must still be 0600 (0660 with a socket group), the directories it
creates 0700 (0710), its state files 0600, and an unprivileged user must never connect, not
even during startup (a watcher process as `nobody` keeps trying from before the daemon starts).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import pytest

from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from tests.integration.conftest import require_binaries, require_root, unix_socket_listening
from tests.support.containerd import wait_until
from tests.support.demux_stack import demux_config
from tests.support.hostile_users import NOBODY, NOGROUP, STRANGER, connect_watcher, connects_as

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def under_umask_000(argv: list[str]) -> list[str]:
    return ["sh", "-c", 'umask 000; exec "$@"', "sh", *argv]


@pytest.fixture
def open_dir():
    """A 0777 directory in /tmp: every local user can reach what is inside (pytest's tmp_path is 0700)."""
    require_root()
    path = Path(tempfile.mkdtemp(prefix="snapmux-open-", dir="/tmp"))
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def sockets_under(top: Path) -> list[Path]:
    return [Path(d) / n for d, _, names in os.walk(top) for n in names if stat.S_ISSOCK(os.lstat(Path(d) / n).st_mode)]


def cvmfs_argv(root: Path, address: str, *extra: str) -> list[str]:
    require_binaries("cvmfs-snapshotter")
    return under_umask_000(["cvmfs-snapshotter", "--root", str(root), "--address", address, *extra])


def test_cvmfs_snapshotter_sockets_and_state_are_root_only_under_umask_000(daemons, open_dir):
    run = open_dir / "run"
    run.mkdir(mode=0o777)
    os.chmod(run, 0o777)
    sock, metrics = run / "s.sock", open_dir / "new" / "dirs" / "metrics.sock"
    config = open_dir / "c.toml"
    config.write_text(f'metrics-address = "unix://{metrics}"\n')
    root = open_dir / "a" / "b" / "root"
    with connect_watcher(NOBODY, [sock, metrics]) as watched:
        daemons.start(cvmfs_argv(root, str(sock), "--config", str(config)), open_dir / "d.log",
                      lambda: unix_socket_listening(sock) and unix_socket_listening(metrics))
        with grpc.insecure_channel(f"unix://{sock}") as channel:  # root still may
            pb_grpc.SnapshotsStub(channel).Prepare(pb.PrepareSnapshotRequest(snapshotter="cvmfs", key="k"))
        assert connects_as(NOBODY, sock) == errno.EACCES
        assert connects_as(NOBODY, metrics) == errno.EACCES
        assert watched.read_text() == ""
    assert {p: mode(p) for p in sockets_under(open_dir)} == {sock: 0o600, metrics: 0o600}
    for created in (metrics.parent, metrics.parent.parent, root, root.parent, root.parent.parent):
        assert mode(created) == 0o700, created
    for name in ("metadata.db", "metadata.db-wal", "metadata.db-shm", "lock"):
        assert mode(root / name) == 0o600, name


def test_cvmfs_snapshotter_socket_group_gets_0660_and_only_that_group_connects(daemons, open_dir):
    sock = open_dir / "run" / "s.sock"
    config = open_dir / "c.toml"
    config.write_text(f'socket-group = "{NOGROUP}"\n')
    daemons.start(cvmfs_argv(open_dir / "root", str(sock), "--config", str(config)), open_dir / "d.log",
                  lambda: unix_socket_listening(sock))
    assert (mode(sock), os.lstat(sock).st_gid) == (0o660, NOGROUP)
    assert (mode(sock.parent), os.lstat(sock.parent).st_gid) == (0o710, NOGROUP)
    assert connects_as(NOBODY, sock, gids=[NOGROUP]) == 0
    assert connects_as(STRANGER, sock) == errno.EACCES


def test_cvmfs_snapshotter_vsock_bridge_socket_is_private(daemons, open_dir):
    tmp = open_dir / "tmp"
    tmp.mkdir()
    os.chmod(tmp, 0o777)
    port = 20000 + (os.getpid() + 7) % 10000
    log = open_dir / "d.log"
    daemons.start(cvmfs_argv(open_dir / "root", f"vsock://{port}"), log,
                  lambda: log.exists() and f"ready on vsock://{port}" in log.read_text(),
                  env={**os.environ, "TMPDIR": str(tmp)})
    [bridged] = sockets_under(tmp)
    assert mode(bridged) == 0o600 and mode(bridged.parent) == 0o700
    assert connects_as(NOBODY, bridged) == errno.EACCES


@pytest.mark.parametrize("daemon, text, key", [
    ("cvmfs-snapshotter", 'socket-group = "no-such-group-snapmux"\n', "socket-group"),
    ("demux-snapshotter", '[snapshotter.listener]\nsocket_group = "no-such-group-snapmux"\n',
     "snapshotter.listener.socket_group"),
])
def test_an_unknown_socket_group_is_a_config_error_naming_the_key(tmp_path, daemon, text, key):
    require_binaries(daemon)
    config = tmp_path / "c.toml"
    config.write_text(text)
    done = subprocess.run([daemon, "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == f"{daemon}: config error: {key}: no such group 'no-such-group-snapmux'\n"


def test_demux_stack_sockets_are_root_only_under_umask_000(daemons, open_dir):
    """The demux's socket, each in-VM snapshotter's socket (in 0777 directories the harness made)
    and the demux's per-VM forwarding sockets; the harness's own Firecracker stand-in (v.sock) is not ours."""
    require_binaries("demux-snapshotter", "cvmfs-snapshotter", "http-address-resolver")
    tmp, stack, listen = open_dir / "tmp", open_dir / "stack", open_dir / "demux" / "demux.sock"
    tmp.mkdir()
    os.chmod(tmp, 0o777)
    vm_sock = stack / "vms" / "testsuite" / "snapshotter.sock"
    argv = under_umask_000([sys.executable, "-m", "tests.support.demux_stack", "--root", str(stack),
                            "--socket", str(listen), "--vm", "testsuite"])
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
    with connect_watcher(NOBODY, [listen, vm_sock]) as watched:
        daemons.start(argv, open_dir / "stack.log", lambda: unix_socket_listening(listen), env=env)
        with grpc.insecure_channel(f"unix://{listen}") as channel:  # makes the demux dial the VM
            stub = pb_grpc.SnapshotsStub(channel)
            stub.Prepare(pb.PrepareSnapshotRequest(snapshotter="demux", key="k"),
                         metadata=[("containerd-namespace", "testsuite")], timeout=60)
        wait_until(lambda: any("demux-snapshotter-" in str(p) for p in sockets_under(tmp)), 30, "forwarder socket")
        for path in (listen, vm_sock):
            assert connects_as(NOBODY, path) == errno.EACCES
        assert watched.read_text() == ""
    ours = [p for p in sockets_under(open_dir) if p.name != "v.sock"]
    assert {mode(p) for p in ours} == {0o600} and {listen, vm_sock} <= set(ours) and len(ours) >= 3
    assert mode(listen.parent) == 0o700
    for private in {p.parent for p in ours if p.is_relative_to(tmp)}:
        assert mode(private) == 0o700


@pytest.mark.parametrize("planted", ["symlink", "file", "directory"])
def test_what_an_attacker_planted_at_the_socket_path_is_refused_and_left_alone(tmp_path, planted):
    """A symlink to a file root owns (the chmod would follow it), a file, a directory: one line, exit 1."""
    require_binaries("cvmfs-snapshotter")
    victim, sock = tmp_path / "victim", tmp_path / "run" / "s.sock"
    victim.write_text("precious")
    os.chmod(victim, 0o644)
    sock.parent.mkdir()
    {"symlink": lambda: sock.symlink_to(victim), "file": lambda: sock.write_text("x"), "directory": sock.mkdir}[planted]()
    before = os.lstat(sock)
    done = subprocess.run(under_umask_000(["cvmfs-snapshotter", "--root", str(tmp_path / "root"), "--address",
                                           str(sock)]), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == f"cvmfs-snapshotter: cannot listen on {sock}: refusing to replace a non-socket"
    assert "Traceback" not in done.stderr
    after = os.lstat(sock)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert (mode(victim), victim.read_text()) == (0o644, "precious")
    assert [n for n in os.listdir(sock.parent) if n.startswith(".")] == []
