"""The wheel as users get it: LICENSE in its dist-info (PEP 639 license-files), `py.typed`
(PEP 561) in the package, the console scripts declared. Built from a copy of the tree, so the
worktree gets no build/ or egg-info from the test."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("pyproject.toml", "setup.py", "README.md", "LICENSE")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    tree, out = tmp_path_factory.mktemp("tree"), tmp_path_factory.mktemp("wheel")
    for name in SHIPPED:
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(tree)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    [built] = out.glob("snapmux-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    [path] = [n for n in wheel.namelist() if n.split("/")[0].endswith(".dist-info") and n.endswith(name)]
    return wheel.read(path).decode()


def test_the_wheel_ships_the_apache_license_text(wheel):
    license_text = dist_info(wheel, "licenses/LICENSE")
    assert license_text == (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    metadata = dist_info(wheel, "METADATA")
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata


def test_the_wheel_marks_the_package_typed(wheel):
    assert "snapmux/py.typed" in wheel.namelist()
    assert any(n.endswith("snapshots_pb2.pyi") for n in wheel.namelist())  # the generated stubs too


def test_the_wheel_declares_the_three_console_scripts(wheel):
    scripts = dist_info(wheel, "entry_points.txt")
    for daemon in ("cvmfs-snapshotter", "demux-snapshotter", "http-address-resolver"):
        assert f"{daemon} = snapmux.entrypoints." in scripts
