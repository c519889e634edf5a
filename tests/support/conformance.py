"""containerd's snapshotter conformance suite (snapshots/testsuite) as a reusable harness.

`conformance_binary()` builds `../shared/conformance/build.sh`'s Go test binary (shared/
sits beside the repository) once into `<repo>/.cache/`, keyed by the test source's hash; `run_conformance(cmd)` runs it
against any snapshotter command line (with `{root}` and `{socket}` placeholders)
and returns one `CaseResult` per subtest, parsed from `-test.v` output, so a
failure names its case. `ConformanceCases` holds the expectations every stack under
the suite meets; a test module subclasses it and provides the `conformance_run` fixture.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"
BUILD_SCRIPT = Path(os.environ.get("SNAPMUX_CONFORMANCE_BUILD", REPO.parent / "shared" / "conformance" / "build.sh"))


def _binary_path() -> Path:
    """A new conformance_test.go (shared/ is updated apart from this repo) must not reuse an old build."""
    source = BUILD_SCRIPT.parent / "conformance_test.go"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12] if source.exists() else "unknown"
    return CACHE / f"conformance-{digest}.test"


BINARY = _binary_path()

SKIPPED_BY_THE_SUITE = {"Rename"}
"""testsuite/issues.go skips Rename for every snapshotter ("still fails on some kernels with overlay")."""

EXPECTED_CASES = {
    "Basic", "StatActive", "StatComitted", "TransitivityTest", "PreareViewFailingtest", "Update", "Remove",
    "Walk", "LayerFileupdate", "RemoveDirectoryInLowerLayer", "Chown", "DirectoryPermissionOnCommit",
    "RemoveIntermediateSnapshot", "DeletedFilesInChildSnapshot", "MoveFileFromLowerLayer", "Rename",
    "ViewReadonly", "StatInWalk", "CloseTwice", "RootPermission", "128LayersMount",
}
"""Every case of the suite (with its own spellings): each must run, whatever the stack."""

_RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): TestConformance/(\S+) \(([\d.]+)s\)")
_BUILTIN_RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): TestOverlay/no_opt/(\S+) \(([\d.]+)s\)")
BUILTIN_BINARY = CACHE / "overlay-builtin.test"
BUILTIN_PACKAGE = "github.com/containerd/containerd/snapshots/overlay"


@dataclass(frozen=True)
class CaseResult:
    name: str
    outcome: str  # PASS, FAIL or SKIP
    seconds: float


@dataclass
class ConformanceRun:
    returncode: int
    cases: dict[str, CaseResult] = field(default_factory=dict)
    output: str = ""

    def failed(self) -> list[str]:
        return sorted(name for name, case in self.cases.items() if case.outcome == "FAIL")

    def log_of(self, case: str) -> str:
        """The lines the suite logged for one case (best effort: parallel cases interleave)."""
        marker = f"TestConformance/{case}"
        return "\n".join(line for line in self.output.splitlines() if marker in line or "Error" in line)[-4000:]


class ConformanceCases:
    """The same bar for cvmfs-snapshotter alone and for the whole demux stack: every case ran,
    every case the suite does not skip passed, and the suite exited 0."""

    def test_every_case_ran(self, conformance_run: ConformanceRun) -> None:
        assert set(conformance_run.cases) == EXPECTED_CASES, conformance_run.output[-3000:]

    @pytest.mark.parametrize("case", sorted(EXPECTED_CASES - SKIPPED_BY_THE_SUITE))
    def test_case_passes(self, conformance_run: ConformanceRun, case: str) -> None:
        result = conformance_run.cases.get(case)
        assert result is not None, f"{case} did not run"
        assert result.outcome == "PASS", f"{case}: {result.outcome}\n{conformance_run.log_of(case)}"

    def test_the_suite_exits_zero(self, conformance_run: ConformanceRun) -> None:
        assert conformance_run.returncode == 0, conformance_run.failed()


def go_available() -> bool:
    return shutil.which("go") is not None and BUILD_SCRIPT.exists()


def conformance_binary(timeout: float = 900) -> Path:
    """Builds the suite once (minutes the first time; GOCACHE under .cache keeps rebuilds quick)."""
    if BINARY.exists():
        return BINARY
    CACHE.mkdir(exist_ok=True)
    env = {**os.environ, "GOCACHE": os.environ.get("GOCACHE", str(CACHE / "gocache"))}
    partial = CACHE / f"conformance.test.{os.getpid()}"
    subprocess.run(["sh", str(BUILD_SCRIPT), str(partial)], env=env, check=True, timeout=timeout,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.replace(partial, BINARY)
    return BINARY


def parse_cases(output: str, pattern: re.Pattern[str] = _RESULT) -> dict[str, CaseResult]:
    cases = {}
    for line in output.splitlines():
        found = pattern.match(line)
        if found:
            cases[found.group(2)] = CaseResult(found.group(2), found.group(1), float(found.group(3)))
    return cases


def run_conformance(snapshotter_cmd: str, run: str | None = None, timeout: float = 900) -> ConformanceRun:
    """Runs every case (or those matching the Go `-test.run` regexp `run`) against `snapshotter_cmd`."""
    args = [str(conformance_binary()), "-test.root", "-test.v"]
    if run:
        args += ["-test.run", f"TestConformance/{run}"]
    env = {**os.environ, "SNAPSHOTTER_CMD": snapshotter_cmd}
    done = subprocess.run(args, env=env, timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return ConformanceRun(done.returncode, parse_cases(done.stdout), done.stdout)


def builtin_overlay_run(timeout: float = 900) -> ConformanceRun:
    """containerd's own overlayfs snapshotter through the same suite (its package tests, `no_opt`
    variant), on this machine: the baseline of which cases can pass here at all."""
    if not BUILTIN_BINARY.exists():
        CACHE.mkdir(exist_ok=True)
        env = {**os.environ, "GO111MODULE": "off", "GOPATH": "/usr/share/gocode",
               "GOCACHE": os.environ.get("GOCACHE", str(CACHE / "gocache"))}
        partial = CACHE / f"overlay-builtin.test.{os.getpid()}"
        subprocess.run(["go", "test", "-c", "-o", str(partial), BUILTIN_PACKAGE], env=env, check=True, timeout=timeout,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/")
        os.replace(partial, BUILTIN_BINARY)
    with tempfile.TemporaryDirectory(prefix="overlay-builtin-") as work:
        done = subprocess.run([str(BUILTIN_BINARY), "-test.root", "-test.v", "-test.run", "TestOverlay/no_opt/"],
                              timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work)
    return ConformanceRun(done.returncode, parse_cases(done.stdout, _BUILTIN_RESULT), done.stdout)
