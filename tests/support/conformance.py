"""containerd's snapshotter conformance suite (snapshots/testsuite) as a reusable harness.

The Go side is the project's own: `tests/conformance/conformance_test.go`, built by
`tests/conformance/build.sh` from Debian's containerd Go sources (cached under `.cache/`).
`conformance_binary()` builds it, or skips (fails, in CI) naming what is missing;
`run_conformance(stack, cmd)` runs it against any snapshotter command line (with `{root}` and
`{socket}` placeholders) and returns one `CaseResult` per case, parsed from `-test.v`
output, so a failure names its case. `ConformanceCases` holds the expectations every stack
under the suite meets; a test module subclasses it and provides the `conformance_run`
fixture. Every run is kept in `RUNS` for the summary scripts/test prints (tests/integration/conftest.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.requirements import lacking_binaries, lacking_root, require

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tests" / "conformance" / "build.sh"
_MISSING = 3
"""build.sh's exit status when go or containerd's Go sources are missing (named on stderr)."""

SKIPPED_BY_THE_SUITE = {"Rename"}
"""What the suite skips for overlayfs. In containerd 1.6 (Debian 12), issues.go's checkRename
skips for every snapshotter ("rename test still fails on some kernels with overlay"), and the
suite's name only matters for "Aufs" (128LayersMount); `test_skips_as_for_builtin_overlayfs`
checks that containerd's own overlayfs tests skip the same cases here."""

EXPECTED_CASES = {
    "Basic", "StatActive", "StatComitted", "TransitivityTest", "PreareViewFailingtest", "Update", "Remove",
    "Walk", "LayerFileupdate", "RemoveDirectoryInLowerLayer", "Chown", "DirectoryPermissionOnCommit",
    "RemoveIntermediateSnapshot", "DeletedFilesInChildSnapshot", "MoveFileFromLowerLayer", "Rename",
    "ViewReadonly", "StatInWalk", "CloseTwice", "RootPermission", "128LayersMount",
}
"""Every case of the suite (with its own spellings): each must run, whatever the stack."""

_RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): TestConformance/(\S+) \(([\d.]+)s\)")
_BUILTIN_RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): TestOverlay/no_opt/(\S+) \(([\d.]+)s\)")


@dataclass(frozen=True)
class CaseResult:
    name: str
    outcome: str  # PASS, FAIL or SKIP
    seconds: float


@dataclass
class ConformanceRun:
    stack: str
    returncode: int
    cases: dict[str, CaseResult] = field(default_factory=dict)
    output: str = ""

    def named(self, outcome: str) -> list[str]:
        return sorted(name for name, case in self.cases.items() if case.outcome == outcome)

    def failed(self) -> list[str]:
        return self.named("FAIL")

    def log_of(self, case: str) -> str:
        """The lines the suite logged for one case (best effort: parallel cases interleave)."""
        marker = f"TestConformance/{case}"
        return "\n".join(line for line in self.output.splitlines() if marker in line or "Error" in line)[-4000:]

    def summary(self) -> str:
        passed, skipped, failed = self.named("PASS"), self.named("SKIP"), self.failed()
        return (f"conformance through {self.stack}: {len(self.cases)} cases run, {len(passed)} passed, "
                f"{len(skipped)} skipped by the suite ({', '.join(skipped) or '-'}), "
                f"{len(failed)} failed ({', '.join(failed) or '-'}), exit status {self.returncode}")


RUNS: list[ConformanceRun] = []
"""Every run of this session, in order, for the terminal summary."""


class ConformanceCases:
    """The same bar for cvmfs-snapshotter alone and for the whole demux stack: every case ran,
    every case the suite does not skip passed, and the suite exited 0."""

    def test_every_case_ran(self, conformance_run: ConformanceRun) -> None:
        assert set(conformance_run.cases) == EXPECTED_CASES, conformance_run.output[-3000:]

    def test_the_suite_skips_only_its_own_skips(self, conformance_run: ConformanceRun) -> None:
        assert set(conformance_run.named("SKIP")) == SKIPPED_BY_THE_SUITE, conformance_run.output[-3000:]

    @pytest.mark.parametrize("case", sorted(EXPECTED_CASES - SKIPPED_BY_THE_SUITE))
    def test_case_passes(self, conformance_run: ConformanceRun, case: str) -> None:
        result = conformance_run.cases.get(case)
        assert result is not None, f"{case} did not run"
        assert result.outcome == "PASS", f"{case}: {result.outcome}\n{conformance_run.log_of(case)}"

    def test_the_suite_exits_zero(self, conformance_run: ConformanceRun) -> None:
        assert conformance_run.returncode == 0, conformance_run.failed()


def _build(what: str, lacking: list[str], timeout: float) -> Path:
    """build.sh's binary; a missing part joins `lacking` (one message for all), a build error fails."""
    done = subprocess.run(["/bin/sh", str(BUILD_SCRIPT), what], capture_output=True, text=True, timeout=timeout)
    if done.returncode == _MISSING:
        lacking.append(done.stderr.strip().removeprefix("conformance harness: missing "))
    require(*lacking)
    if done.returncode != 0:
        pytest.fail(f"the conformance harness does not build ({BUILD_SCRIPT} {what}, exit {done.returncode}):\n"
                    f"{done.stderr[-3000:]}", pytrace=False)
    return Path(done.stdout.strip().splitlines()[-1])


def conformance_binary(*binaries: str, timeout: float = 900) -> Path:
    """The harness, built once (tens of seconds the first time), after checking every part a run
    needs: root, the `binaries` of the stack under test, go and containerd's Go sources."""
    lacking = lacking_root("the suite mounts overlayfs") + lacking_binaries(*binaries)
    return _build("harness", lacking, timeout)


def parse_cases(output: str, pattern: re.Pattern[str] = _RESULT) -> dict[str, CaseResult]:
    cases = {}
    for line in output.splitlines():
        found = pattern.match(line)
        if found:
            cases[found.group(2)] = CaseResult(found.group(2), found.group(1), float(found.group(3)))
    return cases


def run_conformance(stack: str, snapshotter_cmd: str, binaries: tuple[str, ...], run: str | None = None,
                    timeout: float = 900) -> ConformanceRun:
    """Runs every case (or those matching the Go `-test.run` regexp `run`) against `snapshotter_cmd`,
    which needs `binaries` on PATH; `stack` names it in the summary."""
    args = [str(conformance_binary(*binaries)), "-test.v"]
    if run:
        args += ["-test.run", f"TestConformance/{run}"]
    done = subprocess.run(args, env={**os.environ, "SNAPSHOTTER_CMD": snapshotter_cmd}, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result = ConformanceRun(stack, done.returncode, parse_cases(done.stdout), done.stdout)
    RUNS.append(result)
    return result


def builtin_overlay_run(timeout: float = 900) -> ConformanceRun:
    """containerd's own overlayfs snapshotter through the same suite (its package tests, `no_opt`
    variant), on this machine: the baseline of which cases can pass, and are skipped, here."""
    binary = _build("builtin", lacking_root("the suite mounts overlayfs"), timeout)
    with tempfile.TemporaryDirectory(prefix="overlay-builtin-") as work:
        done = subprocess.run([str(binary), "-test.root", "-test.v", "-test.run", "TestOverlay/no_opt/"],
                              timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work)
    suite_cases = {name: case for name, case in parse_cases(done.stdout, _BUILTIN_RESULT).items()
                   if name in EXPECTED_CASES}  # the package's own TestOverlay* tests are not the suite's
    result = ConformanceRun("containerd's builtin overlayfs", done.returncode, suite_cases, done.stdout)
    RUNS.append(result)
    return result

