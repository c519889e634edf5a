"""The same Prometheus scrape through the real daemons, demux-snapshotter and
http-address-resolver (static backend): VM targets come and go in Prometheus as the resolver's
map and the VMs do. The in-process demux's version: test_metrics_prometheus.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import require_binaries
from tests.support.containerd import Daemon
from tests.support.metrics_vms import (
    METRICS_PORT,
    NAMESPACES,
    SNAPSHOTTER_PORT,
    Vm,
    by_namespace,
    ctr_prepare,
    port_is_free,
    running_containerd,
    start_vm,
)
from tests.support.prometheus import free_port, free_port_range, require_prometheus, running_prometheus
from tests.support.resolver import running_resolver

pytestmark = pytest.mark.integration


def demux_config(folder: Path, resolver_url: str, ports: str, sd_port: int) -> Path:
    config = folder / "demux.toml"
    config.write_text(
        f"""
[snapshotter.listener]
address = "{folder / 'demux.sock'}"
[snapshotter.proxy.address.resolver]
type = "http"
address = "{resolver_url}"
[snapshotter.dialer]
timeout = "2s"
[snapshotter.cache]
poll_connection_frequency = "500ms"
[snapshotter.metrics]
enable = true
port_range = "{ports}"
[snapshotter.metrics.service_discovery]
enable = true
port = {sd_port}
"""
    )
    return config


def sd_answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.asynccontextmanager
async def running_demux_daemon(folder: Path, resolver_url: str):
    sd_port = free_port()
    config = demux_config(folder, resolver_url, str(free_port_range(4)), sd_port)
    script = shutil.which("demux-snapshotter")
    argv = [script] if script else [sys.executable, "-m", "snapmux.entrypoints.demux_snapshotter.main"]
    daemon = Daemon([*argv, "--config", str(config), "--log-level", "debug"], folder / "demux.log")
    sd_url = f"http://127.0.0.1:{sd_port}/"
    await asyncio.to_thread(daemon.start, lambda: os.path.exists(folder / "demux.sock") and sd_answers(sd_url))
    try:
        yield str(folder / "demux.sock"), sd_url, daemon
    finally:
        code = await asyncio.to_thread(daemon.stop)
    assert code == 0, daemon.log()  # a clean shutdown, proxies and SD server included


def address_map(vms: dict[str, Vm]) -> dict:
    return {
        ns: {"network": "unix", "address": vm.vsock.uds_path, "snapshotter_port": SNAPSHOTTER_PORT,
             "metrics_port": METRICS_PORT, "labels": {"vm_id": f"id-{ns}"}}
        for ns, vm in vms.items()
    }


async def test_real_daemons_vm_targets_come_and_go_in_prometheus():
    require_prometheus()
    require_binaries("containerd", "ctr")
    folder = Path(tempfile.mkdtemp(prefix="smx-d-", dir="/tmp"))
    vms = {ns: await start_vm(folder, ns) for ns in NAMESPACES}
    map_path = folder / "resolver" / "addresses.json"
    try:
        with running_resolver(folder / "resolver", static=address_map(vms)) as resolver:
            async with running_demux_daemon(folder, resolver.url) as (demux_socket, sd_url, demux):
                async with running_containerd(folder / "ctrd", demux_socket) as containerd:
                    async with running_prometheus(folder / "prometheus", sd_url) as prometheus:
                        await exercise(vms, containerd, prometheus, sd_url, map_path, demux)
    finally:
        for vm in vms.values():
            await vm.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def exercise(vms, containerd, prometheus, sd_url, map_path, demux) -> None:
    for namespace in NAMESPACES:
        await ctr_prepare(containerd, namespace, f"work-{namespace}")

    async def both_counted():
        result = await prometheus.query('snapmux_requests_total{method="Prepare",code="OK",daemon="cvmfs-snapshotter"}')
        counts = {r["metric"]["namespace"]: float(r["value"][1]) for r in result}
        return counts == {"vm1": 1.0, "vm2": 1.0}

    assert await prometheus.wait_for(both_counted, "each VM's Prepare counter"), demux.log()
    targets = by_namespace(await prometheus.active_targets())
    assert {ns: t["labels"]["vm_id"] for ns, t in targets.items()} == {"vm1": "id-vm1", "vm2": "id-vm2"}
    vm1_target = targets["vm1"]["labels"]["instance"]

    # vm1 stops: the resolver forgets it, the demux's health poll evicts it, its proxy closes.
    map_path.write_text(json.dumps(address_map({"vm2": vms["vm2"]})))
    await vms["vm1"].vsock.stop()

    async def only_vm2_up():
        targets = by_namespace(await prometheus.active_targets())
        return set(targets) == {"vm2"} and targets["vm2"]["health"] == "up"

    assert await prometheus.wait_for(only_vm2_up, "vm1 gone, vm2 up"), demux.log()
    listed = [group["targets"][0] for group in httpx.get(sd_url, timeout=5).json()]
    assert vm1_target not in listed
    host, port = vm1_target.rsplit(":", 1)
    assert port_is_free(int(port))

    async def one_client_cached():
        result = await prometheus.query('snapmux_remote_clients{daemon="demux-snapshotter"}')
        return result and float(result[0]["value"][1]) == 1.0

    assert await prometheus.wait_for(one_client_cached, "the demux's cached-clients gauge at 1")
