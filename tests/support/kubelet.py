"""A Kubernetes node for integration tests and the bench, and the pod lifecycle a kubelet drives.

    with CriNode.start(tmp_path / "node") as node:                  # cvmfs-snapshotter under CRI
        pod = node.kubelet.start_pod("web", node.publish(image, "app:v1"), ["sleep", "60"])
        node.kubelet.exec(pod, "cat", "/etc/hostname")
        node.kubelet.delete_pod(pod)

The node is containerd 1.6 with its CRI plugin (namespace k8s.io, snapshot annotations on,
`restrict_oom_score_adj`, host-network pods: no CNI), a docker-registry, a layout directory
and the snapshotter CRI unpacks into: `cvmfs-snapshotter` on a temp socket, or (with
`vms=(...)`) the demux in front of one "VM" per namespace (tests.support.demux_stack).
The sandbox image is built and imported by the node itself. Everything is torn down on exit,
also when the body fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from snapmux.adapters.grpc.client import GrpcSnapshotService
from snapmux.domain.model import Info
from snapmux.entrypoints.cvmfs_snapshotter.publish import main as publish
from tests.support.conformance import REPO
from tests.support.containerd import Containerd, CriConfig, Daemon, unmount_all_under, wait_until
from tests.support.cri import (
    CONTAINER_EXITED, CONTAINER_RUNNING, SANDBOX_NOTREADY, SANDBOX_READY, ContainerSpec, CriClient, ExecResult, PodSpec,
    Sandbox,
)
from tests.support.images import WHITEOUT_IMAGE_LISTING, BuiltImage, oci_archive, pause_image
from tests.support.registry import Registry
from tests.support.snapshot_dirs import owned_entries
from tests.support.sockets import unix_socket_listening

KUBELET_BINARIES = ("containerd", "ctr", "runc", "docker-registry", "skopeo", "tar", "cvmfs-snapshotter")
CRI_NAMESPACE = "k8s.io"
PAUSE_BASE_NAME = "localhost/snapmux/pause"
PAUSE_REFERENCE = f"{PAUSE_BASE_NAME}:v1"
READY_TIMEOUT = 120.0
LISTING = WHITEOUT_IMAGE_LISTING.split()
APP = ["/bin/sh", "-c", "echo started; find /data -type f | sort; trap 'exit 0' TERM; "
       "while true; do busybox sleep 1; done"]
"""For the whiteout image: prints its files to the log, runs until stopped (exit 0 on SIGTERM)."""


@dataclass(frozen=True)
class Pod:
    sandbox: Sandbox
    container_id: str
    log_file: Path


@dataclass
class Kubelet:
    """The CRI calls of a kubelet, in its order, for one-container host-network pods."""

    cri: CriClient
    log_root: Path

    def start_pod(self, name: str, image: str, command: Sequence[str]) -> Pod:
        """RunPodSandbox, CreateContainer, StartContainer; returns once ContainerStatus says running."""
        spec = PodSpec(name, log_directory=str(self.log_root / name))
        sandbox = self.cri.run_pod_sandbox(spec)
        container = ContainerSpec(name, image, list(command))
        container_id = self.cri.create_container(sandbox, container)
        self.cri.start_container(container_id)
        wait_until(lambda: self.cri.container_status(container_id).state == CONTAINER_RUNNING, READY_TIMEOUT,
                   f"container of pod {name}")
        return Pod(sandbox, container_id, Path(spec.log_directory) / container.log_path)

    def exec(self, pod: Pod, *cmd: str) -> ExecResult:
        return self.cri.exec_sync(pod.container_id, list(cmd))

    def logs(self, pod: Pod) -> list[str]:
        """The container's stdout lines, from the CRI log file (`<time> <stream> <F|P> <line>`)."""
        if not pod.log_file.exists():
            return []
        lines = pod.log_file.read_text(errors="replace").splitlines()
        return [line.split(" ", 3)[3] for line in lines if line.count(" ") >= 3 and line.split(" ")[1] == "stdout"]

    def delete_pod(self, pod: Pod, grace_seconds: int = 10) -> None:
        """StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox."""
        self.cri.stop_container(pod.container_id, grace_seconds)
        self.cri.remove_container(pod.container_id)
        self.cri.stop_pod_sandbox(pod.sandbox)
        self.cri.remove_pod_sandbox(pod.sandbox)


@dataclass
class CriNode:
    base: Path
    registry: Registry
    layout: Path
    vms: tuple[str, ...]
    snapshotter: Daemon
    containerd: Containerd = field(init=False)
    kubelet: Kubelet = field(init=False)
    snapshotter_name: str = ""  # CRI's snapshotter: "cvmfs", "demux" or "overlayfs"

    @classmethod
    @contextlib.contextmanager
    def start(cls, base: Path, vms: Sequence[str] = (), builtin: bool = False, registry: Registry | None = None,
              layout: Path | None = None) -> Iterator[CriNode]:
        """`vms`: CRI's snapshotter is the demux, each namespace its own VM; `builtin`: containerd's
        overlayfs. A `registry` or `layout` given is shared (the bench's modes use one of each)."""
        base.mkdir(parents=True, exist_ok=True)
        layout = layout or base / "layout"
        layout.mkdir(exist_ok=True)
        with contextlib.ExitStack() as stack:
            registry = registry or stack.enter_context(Registry.start(base / "registry"))
            node = cls(base, registry, layout, tuple(vms), Daemon([], base / "snapshotter.log"))
            stack.callback(unmount_all_under, base)
            stack.callback(lambda: node.snapshotter.kill())  # whichever process runs by then (restarts)
            name = node.snapshotter_name = "overlayfs" if builtin else node.start_snapshotter()
            cri = CriConfig(name, plain_http_registries=(registry.host,), sandbox_image=PAUSE_REFERENCE)
            proxies = {} if builtin else {name: node.socket}
            node.containerd = stack.enter_context(
                Containerd.start(base / "containerd", proxies, namespace=CRI_NAMESPACE, cri=cri))
            node.kubelet = Kubelet(stack.enter_context(CriClient(node.containerd.address)), base / "pod-logs")
            stack.callback(node.kubelet.cri.remove_leftover_pods)  # before containerd goes (LIFO)
            node.import_sandbox_image(name)
            yield node

    @property
    def socket(self) -> str:
        return str(self.base / ("demux.sock" if self.vms else "snapshotter.sock"))

    def start_snapshotter(self) -> str:
        """Starts (or restarts) what CRI unpacks into; returns its proxy plugin name."""
        if self.vms:
            argv = [sys.executable, "-m", "tests.support.demux_stack", "--root", str(self.base / "stack"),
                    "--socket", self.socket, "--log-level", "debug", *(a for ns in self.vms for a in ("--vm", ns))]
            env = {**os.environ, "PYTHONPATH": str(REPO), "SNAPMUX_CVMFS_ABSOLUTE_MOUNTPOINT": str(self.layout)}
            self.snapshotter = Daemon(argv, self.base / "stack.log", env)
        else:
            config = self.base / "cvmfs-snapshotter.toml"
            config.write_text(f'root = "{self.root()}"\naddress = "{self.socket}"\n'
                              f'absolute-mountpoint = "{self.layout}"\nlog-level = "debug"\n')
            self.snapshotter = Daemon(["cvmfs-snapshotter", "--config", str(config)], self.base / "snapshotter.log")
        self.snapshotter.start(lambda: unix_socket_listening(self.socket))
        return "demux" if self.vms else "cvmfs"

    def wait_until_containerd_reaches_the_snapshotter(self) -> None:
        """After a restart: containerd's proxy client redials with a backoff (up to 3 s in 1.6), and
        until it has, calls that need the snapshotter fail UNAVAILABLE (a kubelet retries them)."""
        wait_until(lambda: self.containerd_snapshots(check=False) is not None, READY_TIMEOUT,
                   f"containerd's connection to {self.snapshotter_name}")

    def containerd_snapshots(self, check: bool = True) -> list[str] | None:
        """The snapshot keys containerd lists for CRI's snapshotter (it asks the snapshotter to Stat
        each one); None when that failed and `check` is off."""
        done = self.containerd.ctr("snapshots", "--snapshotter", self.snapshotter_name, "ls", check=check)
        return [line.split()[0] for line in done.stdout.splitlines()[1:] if line.strip()] if done.returncode == 0 else None

    def import_sandbox_image(self, snapshotter: str) -> None:
        image = pause_image(str(self.base / "pause-oci"))
        archive = oci_archive(image, str(self.base / "pause.tar"))
        self.containerd.ctr("images", "import", "--snapshotter", snapshotter, "--base-name", PAUSE_BASE_NAME, archive)

    def push(self, image: BuiltImage, reference: str) -> str:
        return self.registry.push(image.layout, image.tag, reference)

    def publish(self, image: BuiltImage, reference: str) -> str:
        """Pushes the image and publishes it into the layout; returns the registry reference."""
        remote = self.push(image, reference)
        assert publish(["--plain-http", "--target", str(self.layout), remote]) == 0
        return remote

    def root(self, namespace: str = CRI_NAMESPACE) -> Path:
        """The root of the cvmfs-snapshotter that holds `namespace`'s snapshots."""
        return self.base / "stack" / "vms" / namespace / "root" if self.vms else self.base / "snap-root"

    def snapshots(self, namespace: str = CRI_NAMESPACE) -> list[Info]:
        """What that cvmfs-snapshotter holds, asked on its own socket (past the demux)."""
        vm = self.base / "stack" / "vms" / namespace
        path = vm / "snapshotter.sock" if self.vms else Path(self.socket)

        async def walk() -> list[Info]:
            async with grpc.aio.insecure_channel(f"unix://{path}") as channel:
                return [info async for info in GrpcSnapshotService(channel).walk()]

        return asyncio.run(walk())

    def snapshot_dirs(self, namespace: str = CRI_NAMESPACE) -> set[str]:
        """The snapshots' own directories: not the ones reserved for Prepares to come (`snapshot_dirs`)."""
        return set(owned_entries(self.root(namespace) / "snapshots"))


def layout_state(layout) -> list[tuple[str, int, int, int]]:
    """Every path under the layout with its mode, size and mtime: what "untouched" compares."""
    found = []
    for directory, dirs, files in os.walk(layout):
        for name in dirs + files:
            path = os.path.join(directory, name)
            stat = os.lstat(path)
            found.append((os.path.relpath(path, layout), stat.st_mode, stat.st_size, stat.st_mtime_ns))
    return sorted(found)


def check_root_filesystem(node: CriNode, pod: Pod) -> None:
    """ExecSync as a liveness probe would, reading the image's files in the running container."""
    listing = node.kubelet.exec(pod, "/bin/sh", "-c", "find /data -type f | sort")
    assert (listing.exit_code, listing.stdout.split()) == (0, LISTING)
    kept = node.kubelet.exec(pod, "cat", "/data/keep.txt")
    assert (kept.exit_code, kept.stdout) == (0, "kept from layer 1\n")
    gone = node.kubelet.exec(pod, "cat", "/data/gone.txt")  # deleted by the top layer
    assert gone.exit_code != 0 and "No such file" in gone.stderr
    replaced = node.kubelet.exec(pod, "ls", "/data/dir")  # made opaque by the top layer
    assert replaced.stdout.split() == ["new.txt"]
    whiteouts = node.kubelet.exec(pod, "/bin/sh", "-c", "find / -xdev -name '.wh.*'")
    assert (whiteouts.exit_code, whiteouts.stdout) == (0, "")


def start_checked_pod(node: CriNode, image: BuiltImage, reference: str, name: str) -> Pod:
    """PullImage to a running container of the whiteout image, checked as a kubelet and its probes would."""
    assert node.kubelet.cri.pull_image(reference).startswith("sha256:")
    pod = node.kubelet.start_pod(name, reference, APP)
    assert node.kubelet.cri.pod_sandbox_state(pod.sandbox) == SANDBOX_READY  # the pause command blocks
    status = node.kubelet.cri.container_status(pod.container_id)
    assert status.image_ref == f"{reference.rpartition(':')[0]}@{image.manifest.digest}"
    check_root_filesystem(node, pod)
    wait_until(lambda: len(node.kubelet.logs(pod)) > len(LISTING), 60, f"log of pod {name}")
    assert node.kubelet.logs(pod)[: len(LISTING) + 1] == ["started", *LISTING]
    return pod


def delete_checked_pod(node: CriNode, pod: Pod) -> None:
    """StopContainer (the app exits 0 on SIGTERM), RemoveContainer, StopPodSandbox, RemovePodSandbox."""
    node.kubelet.cri.stop_container(pod.container_id, 10)
    stopped = node.kubelet.cri.container_status(pod.container_id)
    assert (stopped.state, stopped.exit_code) == (CONTAINER_EXITED, 0)
    node.kubelet.cri.remove_container(pod.container_id)
    node.kubelet.cri.stop_pod_sandbox(pod.sandbox)
    assert node.kubelet.cri.pod_sandbox_state(pod.sandbox) == SANDBOX_NOTREADY
    node.kubelet.cri.remove_pod_sandbox(pod.sandbox)


def run_pod(node: CriNode, image: BuiltImage, reference: str, name: str) -> None:
    delete_checked_pod(node, start_checked_pod(node, image, reference, name))


def held(node: CriNode, namespace: str = CRI_NAMESPACE) -> tuple[set[str], set[str]]:
    """The snapshot names and snapshot directories of the snapshotter that holds `namespace`."""
    return {info.name for info in node.snapshots(namespace)}, node.snapshot_dirs(namespace)


def remove_image_and_check_gc(node: CriNode, reference: str, before: tuple[set[str], set[str]],
                              namespace: str = CRI_NAMESPACE) -> None:
    """RemoveImage, then containerd's GC: the snapshotter is back to what it held before the pull."""
    node.kubelet.cri.remove_image(reference)
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: held(node, namespace) == before, 60, f"GC of the image's snapshots in {namespace}")
    assert held(node, namespace) == before


def layer_fetches(node: CriNode, image: BuiltImage, since: int) -> list[str]:
    return [path for layer in image.layers for path in node.registry.blob_fetches(layer.digest, since)]
