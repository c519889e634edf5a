"""Paths and listeners an attacker could bend: roots behind symlinks, umask-born modes, exposed TCP ports."""

from __future__ import annotations

import ipaddress
import os
import stat

import pytest

from snapmux.adapters.overlay.snapshotter import OverlaySnapshotter
from snapmux.adapters.state.namespace_file import JsonFileNamespaceMemory
from snapmux.domain.errors import InvalidArgumentError
from snapmux.entrypoints.cvmfs_snapshotter.settings import load_settings as cvmfs_settings
from snapmux.entrypoints.demux_snapshotter.settings import DemuxSettings
from snapmux.entrypoints.http_address_resolver.settings import load_settings as resolver_settings
from snapmux.entrypoints.http_address_resolver.settings import split_address


async def test_a_root_behind_a_symlink_still_refuses_sources_inside_the_real_root(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "inside").mkdir()
    os.symlink(real, tmp_path / "link")
    snapshotter = await OverlaySnapshotter.open(str(tmp_path / "link"))
    try:
        assert snapshotter.layout.root == str(real)
        with pytest.raises(InvalidArgumentError, match="outside the snapshotter root"):
            await snapshotter.adopt("layer", "", {}, str(real / "inside"))
    finally:
        await snapshotter.close()


async def test_the_known_namespaces_file_and_its_folders_are_private_under_umask_000(tmp_path):
    path = tmp_path / "a" / "b" / "known.json"
    old = os.umask(0)
    try:
        await JsonFileNamespaceMemory(str(path)).save(frozenset({"vm-a"}))
    finally:
        os.umask(old)
    assert [stat.S_IMODE(os.stat(p).st_mode) for p in (path.parent.parent, path.parent, path)] == [0o700, 0o700, 0o600]


def loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


def test_no_daemon_listens_beyond_loopback_by_default(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("SNAPMUX_", "DEMUX_SNAPSHOTTER_")):
            monkeypatch.delenv(name)
    assert cvmfs_settings().metrics_listen_address() is None  # on the host: off; in a VM: vsock only
    assert cvmfs_settings(address="vsock://10000").metrics_listen_address() == "vsock://10001"
    assert loopback(DemuxSettings().snapshotter.metrics.host)  # metrics proxies and service discovery
    assert loopback(split_address(resolver_settings().address)[0])


def test_the_socket_group_keys_give_group_access():
    from snapmux.adapters.unix_sockets import SocketAccess

    assert DemuxSettings().snapshotter.listener.access == SocketAccess()
    listener = DemuxSettings(snapshotter={"listener": {"socket_group": "root"}}).snapshotter.listener
    assert listener.access == SocketAccess(0) and listener.access.mode == 0o660
    assert cvmfs_settings(socket_group=0).socket_access() == SocketAccess(0)
    assert cvmfs_settings().socket_access().mode == 0o600
