"""The snapmux demo stack, end to end, on one machine (run by `scripts/demo`, as root).

What it starts, all on temp sockets and loopback ports, all torn down at the end:
  - a docker-registry on 127.0.0.1 holding a 3-layer image whose top layer deletes a file,
    published with `cvmfs-snapshotter publish` into a CVMFS-style layout directory;
  - two "microVMs", vm-a and vm-b: each a Firecracker hybrid-vsock stand-in in front of its own
    `cvmfs-snapshotter` (serving the published layout, metrics on guest port 10001);
  - `http-address-resolver` with a static map of the two VMs;
  - `demux-snapshotter` with per-VM metrics proxies and Prometheus service discovery;
  - containerd 1.6 with the demux as proxy snapshotter `demux`.
Then it pulls the image into each namespace with remote-snapshot labels (no layer download),
runs a container in each, and shows where the snapshots landed and what Prometheus would see.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.containerd import Containerd, Daemon  # noqa: E402
from tests.support.firecracker_vsock import FirecrackerVsockStandIn  # noqa: E402
from tests.support.images import whiteout_image  # noqa: E402
from tests.support.registry import Registry, free_loopback_port  # noqa: E402
from tests.support.resolver import running_resolver  # noqa: E402
from tests.support.sockets import unix_socket_listening  # noqa: E402

NAMESPACES = ("vm-a", "vm-b")
SNAPSHOTTER_PORT, METRICS_PORT = 10000, 10001


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def start_vm(base: Path, namespace: str, layout: Path, stack: contextlib.ExitStack) -> dict:
    """One "microVM": cvmfs-snapshotter on unix sockets that the vsock stand-in exposes as guest ports."""
    vm = base / "vms" / namespace
    vm.mkdir(parents=True)
    grpc_sock, metrics_sock = vm / "snapshotter.sock", vm / "metrics.sock"
    config = vm / "cvmfs-snapshotter.toml"
    config.write_text(f'root = "{vm / "root"}"\naddress = "{grpc_sock}"\n'
                      f'absolute-mountpoint = "{layout}"\nmetrics-address = "unix://{metrics_sock}"\n')
    daemon = Daemon(["cvmfs-snapshotter", "--config", str(config)], vm / "snapshotter.log")
    daemon.start(lambda: unix_socket_listening(grpc_sock) and unix_socket_listening(metrics_sock))
    stack.callback(daemon.stop)
    return {"network": "unix", "address": str(vm / "firecracker.vsock"), "snapshotter_port": SNAPSHOTTER_PORT,
            "metrics_port": METRICS_PORT, "labels": {"vm_id": namespace},
            "_targets": {SNAPSHOTTER_PORT: str(grpc_sock), METRICS_PORT: str(metrics_sock)}}


def start_demux(base: Path, resolver_url: str, stack: contextlib.ExitStack) -> tuple[Path, int]:
    socket_path, sd_port, first = base / "demux" / "snapshotter.sock", free_loopback_port(), free_loopback_port()
    (base / "demux").mkdir()
    config = base / "demux" / "config.toml"
    config.write_text(
        f'[snapshotter]\nmount_type_prefix = ""   # the "VMs" are local processes\n'
        f'[snapshotter.listener]\ntype = "unix"\naddress = "{socket_path}"\n'
        f'[snapshotter.proxy.address.resolver]\ntype = "http"\naddress = "{resolver_url}"\n'
        f'[snapshotter.metrics]\nenable = true\nport_range = "{first}-{first + 20}"\n'
        f'[snapshotter.metrics.service_discovery]\nenable = true\nport = {sd_port}\n')
    daemon = Daemon(["demux-snapshotter", "--config", str(config)], base / "demux" / "demux.log")
    daemon.start(lambda: unix_socket_listening(socket_path))
    stack.callback(daemon.stop)
    return socket_path, sd_port


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


async def demo(base: Path) -> None:
    """The vsock stand-ins run on this event loop; everything blocking runs in a worker thread."""
    with contextlib.ExitStack() as stack:
        say("building a 3-layer image (the top layer deletes /data/gone.txt) and a local registry")
        image = whiteout_image(str(base / "image"), "v1")
        registry = stack.enter_context(Registry.start(base / "registry"))
        reference = registry.push(image.layout, image.tag, "snapmux/demo:v1")
        say(f"publishing {reference} into a CVMFS-style layout (what unpacked.cern.ch holds)")
        layout = base / "layout"
        print(run("cvmfs-snapshotter", "publish", "--plain-http", "--target", str(layout), reference), end="")

        say("starting two microVMs (vsock stand-in + cvmfs-snapshotter each), the resolver and the demux")
        addresses, standins = {}, []
        for namespace in NAMESPACES:
            address = start_vm(base, namespace, layout, stack)
            standins.append(await FirecrackerVsockStandIn(address["address"], address.pop("_targets")).start())
            addresses[namespace] = address
        try:
            await asyncio.to_thread(on_the_host, base, addresses, registry, reference, image)
        finally:
            for standin in standins:
                await standin.stop()


def on_the_host(base: Path, addresses: dict, registry: Registry, reference: str, image) -> None:
    with contextlib.ExitStack() as stack:
        resolver = stack.enter_context(running_resolver(base / "resolver", static=addresses))
        demux_socket, sd_port = start_demux(base, resolver.url, stack)
        containerd = stack.enter_context(Containerd.start(base / "containerd", {"demux": str(demux_socket)}))
        print(f"resolver {resolver.url}, demux {demux_socket}, containerd {containerd.address}")
        pull_and_run(containerd, registry, reference, image)
        show_metrics(sd_port)


def pull_and_run(containerd: Containerd, registry: Registry, reference: str, image) -> None:
    mark = len(registry.requests())
    for namespace in NAMESPACES:
        say(f"ctr-remote -n {namespace} images rpull (layers come from the layout, not the registry)")
        run("ctr-remote", "--address", containerd.address, "--namespace", namespace, "images", "rpull",
            "--plain-http", "--snapshotter", "demux", reference)
        say(f"ctr -n {namespace} run: the container's /data (gone.txt must be absent)")
        print(containerd.ctr("run", "--rm", "--snapshotter", "demux", reference, f"demo-{namespace}",
                             namespace=namespace).stdout, end="")
        print(containerd.ctr("snapshots", "--snapshotter", "demux", "ls", namespace=namespace).stdout, end="")
    fetched = [d.digest for d in image.layers if registry.blob_fetches(d.digest, since=mark)]
    print(f"\nlayer blobs downloaded from the registry during the pulls: {len(fetched)}")


def show_metrics(sd_port: int) -> None:
    say(f"Prometheus HTTP service discovery on 127.0.0.1:{sd_port}")
    targets = json.loads(http_get(f"http://127.0.0.1:{sd_port}/"))
    print(json.dumps(targets, indent=2))
    vm_target = next(t for t in targets if t["labels"].get("namespace") == NAMESPACES[0])["targets"][0]
    scraped = [line for line in http_get(f"http://{vm_target}/metrics").splitlines()
               if line.startswith("snapmux_requests_total")]
    say(f"a scrape of {NAMESPACES[0]}'s snapshotter through its demux metrics proxy {vm_target}")
    print("\n".join(scraped[:8]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="snapmux-demo-"))
    try:
        asyncio.run(demo(base))
        say("demo finished: everything stopped")
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)
        else:
            print(f"logs kept in {base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
