"""The agent's backends, directly: the contract for each, then what only one of them does."""

from __future__ import annotations

import json
import os
import socket

import pytest

from snapmux.adapters.resolver.shim_base import ShimBaseAddressResolver
from snapmux.adapters.resolver.static import StaticFileAddressResolver
from snapmux.domain.errors import NotFoundError, UnavailableError
from snapmux.domain.model import SnapshotterAddress
from tests.contract.address_resolver import AddressResolverContract
from tests.fakes.resolver import InMemoryAddressResolver


def make_vm(base, namespace, containerd_namespace="default", as_socket=False):
    directory = base / f"{containerd_namespace}#{namespace}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "firecracker.vsock"
    if as_socket:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    else:
        path.touch()
    return path


def write_map(path, mapping):
    path.write_text(json.dumps(mapping))
    return path


STATIC = {
    "vm-a": {"network": "unix", "address": "/run/vm-a.vsock", "labels": {"team": "x"}},
    "vm-b": {"network": "unix", "address": "/run/vm-b.vsock", "snapshotter_port": "20000", "metrics_port": 20001},
}


class TestInMemoryFakeContract(AddressResolverContract):
    def expected_address(self, namespace):
        return f"/run/{namespace}.vsock"

    @pytest.fixture
    async def resolver(self):
        return InMemoryAddressResolver(
            {ns: SnapshotterAddress("unix", f"/run/{ns}.vsock", 10000, 10001, {"namespace": ns}) for ns in ("vm-a", "vm-b")}
        )


class TestShimBaseContract(AddressResolverContract):
    @pytest.fixture
    async def resolver(self, tmp_path):
        self.base = tmp_path / "shim-base"
        make_vm(self.base, "vm-a", as_socket=True)
        make_vm(self.base, "vm-b")
        make_vm(self.base, "nope", containerd_namespace="other")
        return ShimBaseAddressResolver(str(self.base))

    def expected_address(self, namespace):
        return str(self.base / f"default#{namespace}" / "firecracker.vsock")


class TestStaticJsonContract(AddressResolverContract):
    def expected_address(self, namespace):
        return f"/run/{namespace}.vsock"

    @pytest.fixture
    async def resolver(self, tmp_path):
        return StaticFileAddressResolver(str(write_map(tmp_path / "map.json", STATIC)))


class TestStaticTomlContract(TestStaticJsonContract):
    @pytest.fixture
    async def resolver(self, tmp_path):
        path = tmp_path / "map.toml"
        path.write_text(
            '[vm-a]\nnetwork = "unix"\naddress = "/run/vm-a.vsock"\n'
            '[vm-b]\nnetwork = "unix"\naddress = "/run/vm-b.vsock"\nsnapshotter_port = 20000\n'
        )
        return StaticFileAddressResolver(str(path))


async def test_shim_base_answers_configured_ports_and_containerd_namespace(tmp_path):
    make_vm(tmp_path, "vm-a", containerd_namespace="fc")
    resolver = ShimBaseAddressResolver(str(tmp_path), containerd_namespace="fc", snapshotter_port=1, metrics_port=2)
    address = await resolver.resolve("vm-a")
    assert (address.snapshotter_port, address.metrics_port, dict(address.labels)) == (1, 2, {"namespace": "vm-a"})
    assert address.address == str(tmp_path / "fc#vm-a" / "firecracker.vsock")


async def test_shim_base_caches_hits_briefly_and_never_misses(tmp_path):
    resolver = ShimBaseAddressResolver(str(tmp_path), cache_ttl=60)
    with pytest.raises(NotFoundError):
        await resolver.resolve("vm-a")
    path = make_vm(tmp_path, "vm-a")
    assert (await resolver.resolve("vm-a")).address == str(path)
    path.unlink()
    assert (await resolver.resolve("vm-a")).address == str(path)
    uncached = ShimBaseAddressResolver(str(tmp_path), cache_ttl=0)
    with pytest.raises(NotFoundError):
        await uncached.resolve("vm-a")


async def test_shim_base_refuses_a_symlink_leading_out_of_the_base(tmp_path):
    base, outside = tmp_path / "base", tmp_path / "outside"
    make_vm(outside, "vm-a")
    base.mkdir()
    os.symlink(outside / "default#vm-a", base / "default#vm-a")
    with pytest.raises(NotFoundError):
        await ShimBaseAddressResolver(str(base)).resolve("vm-a")


async def test_shim_base_paths_stay_inside_the_base(tmp_path):
    resolver = ShimBaseAddressResolver(str(tmp_path))
    for namespace in ("vm-a", "a.b", "x" * 76, "a_b-c.d"):
        path = resolver.socket_path(namespace)
        assert os.path.commonpath([str(tmp_path.resolve()), path]) == str(tmp_path.resolve())


async def test_static_defaults_ports_and_keeps_labels(tmp_path):
    resolver = StaticFileAddressResolver(str(write_map(tmp_path / "m.json", STATIC)), snapshotter_port=7, metrics_port=8)
    a, b = await resolver.resolve("vm-a"), await resolver.resolve("vm-b")
    assert (a.snapshotter_port, a.metrics_port, dict(a.labels)) == (7, 8, {"team": "x", "namespace": "vm-a"})
    assert (b.snapshotter_port, b.metrics_port) == (20000, 20001)


async def test_static_reloads_when_the_file_changes(tmp_path):
    path = write_map(tmp_path / "m.json", STATIC)
    resolver = StaticFileAddressResolver(str(path))
    assert (await resolver.resolve("vm-a")).address == "/run/vm-a.vsock"
    write_map(path, {"vm-c": {"network": "unix", "address": "/run/vm-c-longer.vsock"}})
    assert (await resolver.resolve("vm-c")).address == "/run/vm-c-longer.vsock"
    with pytest.raises(NotFoundError):
        await resolver.resolve("vm-a")


async def test_static_broken_edit_keeps_the_last_good_map(tmp_path, caplog):
    path = write_map(tmp_path / "m.json", STATIC)
    resolver = StaticFileAddressResolver(str(path))
    await resolver.resolve("vm-a")
    path.write_text("{ this is not json at all")
    assert (await resolver.resolve("vm-a")).address == "/run/vm-a.vsock"
    assert "keeping the last good map" in caplog.text
    path.unlink()
    assert (await resolver.resolve("vm-b")).address == "/run/vm-b.vsock"


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[1, 2]",
        json.dumps({"../x": {"network": "unix", "address": "/a"}}),
        json.dumps({"vm-a": {"network": "unix"}}),
        json.dumps({"vm-a": {"network": "unix", "address": "/a", "snapshotter_port": "http"}}),
        json.dumps({"vm-a": {"network": "unix", "address": "/a", "metrics_port": 70000}}),
        json.dumps({"vm-a": {"network": "unix", "address": "/a", "labels": {"k": 1}}}),
        json.dumps({"vm-a": {"network": "unix", "address": "/a", "labels": {"namespace": "other"}}}),
    ],
)
async def test_static_without_a_good_map_is_unavailable(tmp_path, content):
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(UnavailableError):
        await StaticFileAddressResolver(str(path)).resolve("vm-a")


async def test_static_missing_file_is_unavailable_until_it_appears(tmp_path):
    path = tmp_path / "later.json"
    resolver = StaticFileAddressResolver(str(path))
    with pytest.raises(UnavailableError, match="no usable content"):
        await resolver.resolve("vm-a")
    write_map(path, STATIC)
    assert (await resolver.resolve("vm-a")).address == "/run/vm-a.vsock"
