"""What the integration tests need from the machine, and what happens when it is missing.

On a developer's machine a missing system part (root, a binary, Go, containerd's Go
sources) skips the test that needs it, with the part named. In CI (`CI=true`) the same
part missing is a failure with the same message: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing(what: str) -> NoReturn:
    """Skips (or, in CI, fails) the current test because `what` is not on this machine."""
    if in_ci():
        pytest.fail(f"missing in CI (CI=true): {what}", pytrace=False)
    pytest.skip(f"missing: {what}")


def lacking_root(why: str) -> list[str]:
    return [] if os.geteuid() == 0 else [f"root ({why})"]


def lacking_binaries(*names: str) -> list[str]:
    return [f"{name} on PATH" for name in names if shutil.which(name) is None]


def require(*lacking: str) -> None:
    """`require(*lacking_root(...), *lacking_binaries(...))`: one message naming every missing part."""
    if lacking:
        missing("; ".join(lacking))
