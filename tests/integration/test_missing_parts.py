"""In CI a missing system part fails the integration run; elsewhere it skips, naming the part.

pytest runs the conformance module in a subprocess with a PATH that has every command this
one has but `go`: with CI=true the run must fail and say go is missing; without CI it skips
with the same words.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NO_GO = "go on PATH (Debian package golang-go)"


@pytest.fixture(scope="module")
def path_without_go(tmp_path_factory) -> str:
    """One directory linking every command on PATH but `go` (and `gofmt`, its sibling)."""
    farm = tmp_path_factory.mktemp("path-without-go")
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            link = farm / entry.name
            if entry.name not in {"go", "gofmt"} and not link.exists() and os.access(entry.path, os.X_OK):
                link.symlink_to(entry.path)
    return str(farm)


def _conformance_session(ci: bool, **changes: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "CI"} | changes
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/integration/test_conformance.py", "-q", "-rs",
         "-p", "no:cacheprovider", "-k", "test_every_case_ran"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )


def test_in_ci_without_go_the_conformance_run_fails_naming_go(path_without_go):
    done = _conformance_session(ci=True, PATH=path_without_go)
    assert done.returncode == 1, done.stdout + done.stderr  # 1: tests failed (errored), not skipped
    assert f"missing in CI (CI=true): {NO_GO}" in done.stdout, done.stdout
    assert "1 error" in done.stdout, done.stdout


def test_outside_ci_without_go_the_conformance_run_skips_naming_go(path_without_go):
    done = _conformance_session(ci=False, PATH=path_without_go)
    assert done.returncode == 0, done.stdout + done.stderr
    assert NO_GO in done.stdout and "1 skipped" in done.stdout, done.stdout


def test_in_ci_without_containerds_go_sources_the_run_fails_naming_them(tmp_path):
    done = _conformance_session(ci=True, SNAPMUX_GOCODE=str(tmp_path / "nothing"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "missing in CI (CI=true): containerd's Go sources" in done.stdout, done.stdout
    assert "golang-github-containerd-containerd-dev" in done.stdout, done.stdout


def test_a_harness_that_does_not_build_fails_outside_ci_too(tmp_path):
    """Sources that are there but do not compile are a bug to see, not a part to skip."""
    suite = tmp_path / "gocode" / "src" / "github.com" / "containerd" / "containerd" / "snapshots"
    for package in ("testsuite", "proxy"):
        (suite / package).mkdir(parents=True)
        (suite / package / "broken.go").write_text(f"package {package}\n\nthis is not Go\n")
    done = _conformance_session(ci=False, SNAPMUX_GOCODE=str(tmp_path / "gocode"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the conformance harness does not build" in done.stdout, done.stdout
