"""What the benches share: the Go load client (build, run, tabulate rounds) and an old revision to run beside.

One run of the client is one (target, operation, clients) cell for a fixed duration;
a bench runs every target of a cell in turn, several rounds with the order rotated, so
the machine's noise (2 shared cores) lands on all of them alike. A cell's figure is
the median over its rounds of each round's p50, p99 and throughput.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = {"stat": ("stat",), "mounts": ("mounts",), "prepare": ("prepare", "commit", "remove"), "list": ("list",)}


def build() -> Path:
    """bench/go/build.sh: Debian's Go packages, GOPATH mode, cached under .cache/bench-go/."""
    done = subprocess.run(["sh", str(REPO / "bench" / "go" / "build.sh")], check=True, text=True,
                          stdout=subprocess.PIPE, timeout=900)
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Target:
    """A snapshots service on a unix socket; `snapshotter` names it inside containerd's API."""

    name: str
    address: str
    snapshotter: str = ""
    fixed: bool = False  # answers fixed messages: nothing to set up
    pids: tuple[int, ...] = ()  # whose CPU time per call is measured (every thread)


@dataclass
class Cells:
    """Round results: (target, op, clients, step) -> one dict per round."""

    rounds: dict[tuple[str, str, int, str], list[dict[str, float]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, target: str, op: str, clients: int, result: dict) -> None:  # type: ignore[type-arg]
        for step, stats in result["steps"].items():
            cpu = result.get("server_cpu_us_per_call")
            self.rounds[(target, op, clients, step)].append({**stats, "cpu_us": cpu if cpu else float("nan")})

    def figure(self, target: str, op: str, clients: int, step: str, what: str) -> float:
        samples = [r[what] for r in self.rounds.get((target, op, clients, step), []) if r[what] == r[what]]
        return statistics.median(samples) if samples else float("nan")

    def as_json(self) -> dict[str, list[dict[str, float]]]:
        return {"/".join(map(str, key)): value for key, value in self.rounds.items()}


def run_load(binary: Path, target: Target, op: str, clients: int, seconds: float, namespace: str = "bench",
             populate: int = 0, gap_ms: float = 0.0) -> dict:  # type: ignore[type-arg]
    """`gap_ms`: quiet time before each call or cycle (unmeasured), for calls that reach an idle daemon."""
    argv = [str(binary / "loadclient"), "-address", target.address, "-op", op, "-clients", str(clients),
            "-duration", f"{seconds}s", "-namespace", namespace, "-gap", f"{gap_ms}ms"]
    if target.snapshotter:
        argv += ["-snapshotter", target.snapshotter]
    if target.pids:
        argv += ["-pids", ",".join(map(str, target.pids))]
    if target.fixed:
        argv.append("-no-setup")
    elif op == "list" and populate:
        argv += ["-populate", str(populate)]
    done = subprocess.run(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=seconds + 300)
    if done.returncode != 0:
        raise RuntimeError(f"loadclient {target.name} {op} x{clients}: {done.stdout.strip()} {done.stderr.strip()}")
    return json.loads(done.stdout)


def measure(binary: Path, targets: Sequence[Target], ops: Iterable[str], clients: Iterable[int], rounds: int,
            seconds: float, cells: Cells, populate: int = 0, gap_ms: float = 0.0) -> Cells:
    """Every target of a cell back to back, order rotated each round."""
    for count in clients:
        for op in ops:
            for n in range(rounds):
                order = [*targets[n % len(targets):], *targets[:n % len(targets)]]
                for target in order:
                    cells.add(target.name, op, count,
                              run_load(binary, target, op, count, seconds, populate=populate, gap_ms=gap_ms))
    return cells


def ratio(a: float, b: float) -> str:
    """"-" where a side was not measured (NaN)."""
    return f"{a / b:.2f}x" if b and b == b and a == a else "-"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table: printed by the benches, pasted into the README as is."""
    rows = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows[1:])])


def machine() -> str:
    return f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start"


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """A PYTHONPATH entry under which `snapmux` is `rev`'s src/ (it wins over the editable install,
    whose finder comes after the path), for a before/after measured in one run."""
    with tempfile.TemporaryDirectory(prefix="snapmux-before-") as tmp:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], check=True, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        (Path(tmp) / "path").mkdir()
        (Path(tmp) / "path" / "snapmux").symlink_to(Path(tmp) / "src")
        yield Path(tmp) / "path"


def python_main(module: str) -> list[str]:
    """argv prefix running `module`'s main() (for a revision's daemon, which has no console script)."""
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())"]


CVMFS_MAIN = "snapmux.entrypoints.cvmfs_snapshotter.main"
DEMUX_MAIN = "snapmux.entrypoints.demux_snapshotter.main"


def at_revision(
    stack: contextlib.ExitStack, rev: str, module: str, args: Sequence[str]
) -> tuple[list[str], dict[str, str]]:
    """argv and environment running `module`'s main() with `args` as of `rev` (its src/ checked out
    for the stack's life): the `before` beside this checkout's daemon in one run."""
    old = stack.enter_context(checkout(rev))
    return [*python_main(module), *args], {**os.environ, "PYTHONPATH": str(old)}


def cvmfs_argv(root: Path, sock: Path) -> list[str]:
    """The cvmfs-snapshotter every bench measures: its own root and socket, warnings only."""
    return ["cvmfs-snapshotter", "--root", str(root), "--address", str(sock), "--log-level", "warning"]
