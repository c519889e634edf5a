"""The dependency rule is only as real as its contracts: each must be able to fail.

For every forbidden import that pyproject.toml's import-linter contracts name, a copy of the
package gets one module that makes exactly that import, and `lint-imports` run on the copy
must report that contract broken (and the offending module in its report). The real tree
must keep every contract. The cases are read from pyproject.toml itself, so a module added
to a contract is proved the same way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "pyproject.toml"
CONTRACTS = tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]["contracts"]
OFFENDER = "zz_offender"

_IMPORT_OF = {"google": "from google.protobuf import message"}
"""A real import for each forbidden name that is not itself importable as written."""

CASES = [
    pytest.param(contract, forbidden, id=f"{contract['id']}-imports-{forbidden}")
    for contract in CONTRACTS
    for forbidden in contract["forbidden_modules"]
]


def _lint(cwd: Path, package_parent: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    if package_parent is not None:
        env["PYTHONPATH"] = str(package_parent)  # ahead of the editable install's finder
    lint_imports = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint_imports), "--config", str(cwd / "pyproject.toml"), "--no-cache"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


def _flat(output: str) -> str:
    """Contract names wrap at the terminal's width; compare on single spaces."""
    return " ".join(output.split())


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory) -> Path:
    """`<tmp>/pkg/snapmux` (a copy of src/) beside a copy of the project's import-linter config."""
    work = tmp_path_factory.mktemp("contracts")
    shutil.copytree(REPO / "src", work / "pkg" / "snapmux", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CONFIG, work / "pyproject.toml")
    return work


def test_the_real_tree_keeps_every_contract():
    done = _lint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in done.stdout


@pytest.mark.parametrize(("contract", "forbidden"), CASES)
def test_a_forbidden_import_breaks_its_contract(package_copy, contract, forbidden):
    layer = Path(package_copy, "pkg", *contract["source_modules"][0].split("."))
    offender = layer / f"{OFFENDER}.py"
    offender.write_text(f'"""Breaks {contract["id"]} on purpose."""\n{_IMPORT_OF.get(forbidden, f"import {forbidden}")}\n')
    try:
        done = _lint(package_copy, package_copy / "pkg")
    finally:
        offender.unlink()
    report = _flat(done.stdout)
    assert done.returncode != 0, done.stdout + done.stderr
    assert f"{contract['name']} BROKEN" in report, done.stdout
    assert f"{contract['source_modules'][0]}.{OFFENDER} -> {forbidden}" in report, done.stdout
    for other in CONTRACTS:
        if other is not contract:
            assert f"{other['name']} KEPT" in report, f"{other['id']} broke too: {done.stdout}"
