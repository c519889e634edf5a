"""Real containerd (and any other daemon) for integration tests: started in a temp dir, always torn down.

    with Containerd.start(tmp_path / "ctrd", proxy_snapshotters={"cvmfs": sock}) as containerd:
        image = import_busybox_image(containerd, tmp_path, snapshotter="cvmfs")
        containerd.ctr("run", "--rm", "--snapshotter", "cvmfs", image, "c1", "sh", "-c", "echo hi")

containerd 1.6 runs with its own config, root, state and grpc socket; the CRI
plugin is disabled unless `cri=CriConfig(...)` asks for it (image pulls, and host-network
pods when it names a `sandbox_image`: no CNI); each proxy snapshotter becomes a
`[proxy_plugins.NAME]`.
Teardown kills the process group and the shims it spawned for this instance,
lazily unmounts whatever is left under the temp dir, then deletes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT = 60.0


def wait_until(ready: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool] = lambda: True) -> None:
    """Polls with a deadline; fails fast if the process died."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not alive():
            raise RuntimeError(f"{what}: process exited before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready within {timeout}s")
        time.sleep(0.05)


@dataclass
class Daemon:
    """A process group started for a test; `kill()` is kill -9, `stop()` is SIGTERM then wait."""

    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool], timeout: float = READY_TIMEOUT) -> Daemon:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            list(self.argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(self.env) if self.env is not None else None,
        )
        log.close()
        try:
            wait_until(ready, timeout, " ".join(self.argv[:1]), self.alive)
        except BaseException:
            self.kill()
            raise
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _signal_group(self, signum: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status of a clean stop."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self._signal_group(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def mounts_under(path: Path) -> list[str]:
    """Mount points below `path`, deepest first (from /proc/self/mountinfo)."""
    prefix = str(path.resolve())
    points = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(set(points), key=len, reverse=True)


def unmount_all_under(path: Path) -> None:
    for point in mounts_under(path):
        subprocess.run(["umount", "-R", "-l", point], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _pids_with_argument(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    pids.append(int(entry))
    return pids


@dataclass(frozen=True)
class CriConfig:
    """CRI as a kubelet's containerd runs it for a remote snapshotter: layers unpacked into
    `snapshotter` with snapshot annotations on (containerd 1.6 defaults them off), images
    from plain-HTTP loopback registries, pod sandboxes from `sandbox_image`.

    `restrict_oom_score_adj`: CRI gives every sandbox oomScoreAdj -998, which runc may only
    set with CAP_SYS_RESOURCE; without it (as in these test machines' containers) runc fails
    with "can't get final child's PID from pipe: EOF" unless CRI clamps the value."""

    snapshotter: str
    plain_http_registries: tuple[str, ...] = ()
    sandbox_image: str = ""


@dataclass
class Containerd:
    base: Path
    daemon: Daemon
    address: str
    namespace: str = "snapmux-test"
    extra_cleanup: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def start(cls, base: Path, proxy_snapshotters: Mapping[str, str] = (), namespace: str = "snapmux-test",
              cri: CriConfig | None = None) -> Iterator[Containerd]:
        base.mkdir(parents=True, exist_ok=True)
        address = str(base / "containerd.sock")
        config = base / "config.toml"
        config.write_text(containerd_config(base, address, dict(proxy_snapshotters), cri))
        daemon = Daemon(["containerd", "--config", str(config), "--log-level", "info"], base / "containerd.log")
        instance = cls(base, daemon, address, namespace)
        try:
            daemon.start(instance.ready)
            yield instance
        finally:
            instance.teardown()

    def ready(self) -> bool:
        done = subprocess.run(["ctr", "--address", self.address, "version"], capture_output=True, timeout=10)
        return done.returncode == 0

    def ctr(self, *args: str, namespace: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", "--address", self.address, "--namespace", namespace or self.namespace, *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def teardown(self) -> None:
        """Kill containerd and this instance's shims (by pid), unmount what is left, delete the dir."""
        self.daemon.kill()
        for pid in _pids_with_argument(self.address):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for cleanup in self.extra_cleanup:
            cleanup()
        unmount_all_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


def containerd_config(base: Path, address: str, proxy_snapshotters: Mapping[str, str],
                      cri: CriConfig | None = None) -> str:
    lines = [
        "version = 2",
        f'root = "{base / "root"}"',
        f'state = "{base / "state"}"',
        "disabled_plugins = []" if cri else 'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        "[grpc]",
        f'  address = "{address}"',
        "[ttrpc]",
        f'  address = "{address}.ttrpc"',
        "[debug]",
        f'  address = "{base / "debug.sock"}"',
        "[metrics]",
        '  address = ""',
        '[plugins."io.containerd.internal.v1.opt"]',
        f'  path = "{base / "opt"}"',
    ]
    for name, socket_path in proxy_snapshotters.items():
        lines += [f"[proxy_plugins.{name}]", '  type = "snapshot"', f'  address = "{socket_path}"']
    if cri:
        lines += _cri_config(base, cri)
    return "\n".join(lines) + "\n"


def _cri_config(base: Path, cri: CriConfig) -> list[str]:
    plugin = '[plugins."io.containerd.grpc.v1.cri"'
    lines = [
        f"{plugin}]",
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        "  restrict_oom_score_adj = true",
        *([f'  sandbox_image = "{cri.sandbox_image}"'] if cri.sandbox_image else []),
        f"{plugin}.containerd]",
        f'  snapshotter = "{cri.snapshotter}"',
        "  disable_snapshot_annotations = false",
        f"{plugin}.cni]",
        f'  bin_dir = "{base / "cni-bin"}"',
        f'  conf_dir = "{base / "cni-conf"}"',
    ]
    for host in cri.plain_http_registries:
        lines += [f'{plugin}.registry.mirrors."{host}"]', f'  endpoint = ["http://{host}"]']
    return lines


BUSYBOX = "/bin/busybox"
IMAGE_BASE_NAME = "localhost/snapmux/busybox"


def build_busybox_image(work: Path, tag: str = "latest") -> Path:
    """An OCI image archive with busybox-static as its only layer, built offline with umoci."""
    layout, bundle, archive = work / "oci", work / "bundle", work / "busybox-oci.tar"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:{tag}"], check=True)
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], check=True, capture_output=True)
    rootfs = bundle / "rootfs"
    for folder in ("bin", "tmp", "proc", "sys", "dev", "etc"):
        (rootfs / folder).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in ("sh", "echo", "cat", "ls", "sleep", "true"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    subprocess.run(["umoci", "repack", "--image", f"{layout}:{tag}", str(bundle)], check=True, capture_output=True)
    subprocess.run(["umoci", "config", "--image", f"{layout}:{tag}", "--config.cmd", "/bin/sh",
                    "--config.env", "PATH=/bin"], check=True, capture_output=True)
    subprocess.run(["tar", "-C", str(layout), "-cf", str(archive), "."], check=True)
    return archive


def import_busybox_image(containerd: Containerd, work: Path, snapshotter: str | None = None,
                         namespace: str | None = None) -> str:
    """Builds and imports the busybox image; returns its reference. Unpacks into `snapshotter` if given."""
    work.mkdir(parents=True, exist_ok=True)
    archive = build_busybox_image(work)
    args = ["images", "import", "--base-name", IMAGE_BASE_NAME]
    if snapshotter:
        args += ["--snapshotter", snapshotter]
    containerd.ctr(*args, str(archive), namespace=namespace)
    return f"{IMAGE_BASE_NAME}:latest"
