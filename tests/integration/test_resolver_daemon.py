"""The real `http-address-resolver` process, started from its console script with a TOML config."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import httpx
import pytest

from snapmux.adapters.resolver.http_client import http_address_resolver
from snapmux.domain.errors import NotFoundError
from tests.contract.address_resolver import AddressResolverContract
from tests.fakes.ttrpc_server import FakeTtrpcControlServer
from tests.support.resolver import command, running_resolver, stop, wait_until_ready, write_config

pytestmark = pytest.mark.integration

STATIC = {
    "vm-a": {"network": "unix", "address": "/run/vm-a.vsock"},
    "vm-b": {"network": "unix", "address": "/run/vm-b.vsock", "snapshotter_port": 20000},
}


@pytest.fixture(scope="module")
def static_daemon(tmp_path_factory):
    with running_resolver(tmp_path_factory.mktemp("static"), static=STATIC) as daemon:
        yield daemon


class TestHttpClientOverDaemonContract(AddressResolverContract):
    def expected_address(self, namespace):
        return f"/run/{namespace}.vsock"

    @pytest.fixture
    async def resolver(self, static_daemon):
        async with http_address_resolver(static_daemon.url) as client:
            yield client


def test_daemon_answers_the_documented_document_and_logs_access(static_daemon):
    response = httpx.get(f"{static_daemon.url}/address", params={"namespace": "vm-b"})
    assert response.status_code == 200
    assert response.json() == {"network": "unix", "address": "/run/vm-b.vsock", "snapshotter_port": "20000",
                               "metrics_port": "10001", "labels": {"namespace": "vm-b"}}
    assert "GET /address?namespace=vm-b HTTP/1.1' 200" in static_daemon.log()


async def test_static_map_edits_are_picked_up(tmp_path):
    with running_resolver(tmp_path, static=STATIC) as daemon:
        async with http_address_resolver(daemon.url) as client:
            assert (await client.resolve("vm-a")).address == "/run/vm-a.vsock"
            map_path = tmp_path / "addresses.json"
            map_path.write_text(json.dumps({"vm-c": {"network": "unix", "address": "/run/vm-c-new.vsock"}}))
            assert (await client.resolve("vm-c")).address == "/run/vm-c-new.vsock"
            map_path.write_text("{broken")
            assert (await client.resolve("vm-c")).address == "/run/vm-c-new.vsock"
            with pytest.raises(NotFoundError):
                await client.resolve("vm-a")


async def test_shim_base_daemon(tmp_path):
    base = tmp_path / "shim-base"
    (base / "default#vm-a").mkdir(parents=True)
    (base / "default#vm-a" / "firecracker.vsock").touch()
    with running_resolver(tmp_path, shim_base_dir=base) as daemon:
        async with http_address_resolver(daemon.url) as client:
            address = await client.resolve("vm-a")
            assert address.address == str(base / "default#vm-a" / "firecracker.vsock")
            assert (address.snapshotter_port, address.metrics_port) == (10000, 10001)
            with pytest.raises(NotFoundError):
                await client.resolve("vm-b")


async def test_firecracker_control_daemon_asks_the_control_plugin(tmp_path):
    socket_path = str(tmp_path / "containerd.sock")
    control = await FakeTtrpcControlServer(socket_path + ".ttrpc", {"vm-a": "/fc/vm-a.vsock"}).start()
    extra = f'backend = "firecracker-control"\n[firecracker_control]\ncontainerd_socket = {json.dumps(socket_path)}\n'
    config = tmp_path / "fc.toml"
    config.write_text('address = "127.0.0.1:0"\n' + extra)
    try:
        with running_resolver(tmp_path, config=config) as daemon:
            async with httpx.AsyncClient() as client:
                found = await client.get(f"{daemon.url}/address", params={"namespace": "vm-a"})
                missing = await client.get(f"{daemon.url}/address", params={"namespace": "vm-x"})
            assert (found.status_code, found.json()["address"]) == (200, "/fc/vm-a.vsock")
            assert missing.status_code == 404 and "not found" in missing.json()["error"]
            assert control.received[0].metadata["containerd-namespace-ttrpc"] == "vm-a"
    finally:
        await control.stop()


def test_sigterm_shuts_down_gracefully(tmp_path):
    with running_resolver(tmp_path, static=STATIC) as daemon:
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(10) == 0
        assert "shutting down" in daemon.log()


def test_sigint_shuts_down_gracefully(tmp_path):
    with running_resolver(tmp_path, static=STATIC) as daemon:
        daemon.process.send_signal(signal.SIGINT)
        assert daemon.process.wait(10) == 0


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ('backend = "nope"\n', {}, "backend"),
        ("snapshotter_port = 0\n", {}, "snapshotter_port"),
        ("typo_key = 1\n", {}, "typo_key"),
        ('address = "0.0.0.0:10001"\n', {}, "address"),
        ('backend = "static"\n', {}, "static.path"),
        ("[shim_base]\ncache_ttl_seconds = -1\n", {}, "shim_base.cache_ttl_seconds"),
        ("", {"SNAPMUX_RESOLVER_METRICS_PORT": "99999"}, "metrics_port"),
        ("= broken", {}, "resolver.toml"),
    ],
)
def test_config_error_is_one_line_naming_the_key(tmp_path, toml, env, key):
    config = tmp_path / "resolver.toml"
    config.write_text(toml)
    result = subprocess.run([*command(), "--config", str(config)], capture_output=True, text=True, timeout=30,
                            env={**os.environ, **env})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "config error" in lines[0] and key in lines[0]


def test_environment_overrides_the_file(tmp_path):
    config = write_config(tmp_path, static=STATIC)
    env = {**os.environ, "SNAPMUX_RESOLVER_SNAPSHOTTER_PORT": "12345"}
    with open(tmp_path / "log", "wb") as log:
        process = subprocess.Popen([*command(), "--config", str(config)], env=env, stdout=log, stderr=log)
    try:
        url = wait_until_ready(process, tmp_path / "log", 20)
        assert httpx.get(f"{url}/address", params={"namespace": "vm-a"}).json()["snapshotter_port"] == "12345"
    finally:
        assert stop(process) == 0
