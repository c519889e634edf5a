"""containerd's label names have one home, `snapmux.domain.labels`: no other source module spells one."""

from __future__ import annotations

import ast
from pathlib import Path

import snapmux
from snapmux.domain import labels

NAMES = {value for key, value in vars(labels).items() if key.endswith("_LABEL")}
SOURCE = Path(snapmux.__file__).parent


def test_the_module_holds_containerds_names():
    assert {labels.REF_LABEL, labels.REMOTE_LABEL, labels.CRI_DIGEST_LABEL, labels.STARGZ_DIGEST_LABEL} <= NAMES
    assert all(name.startswith("containerd.io/") for name in NAMES)


def test_no_other_source_module_spells_a_label_name():
    spelled = [
        f"{path.relative_to(SOURCE)}:{node.lineno}: {node.value}"
        for path in SOURCE.rglob("*.py")
        if path != Path(labels.__file__)
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Constant) and node.value in NAMES
    ]
    assert spelled == []
