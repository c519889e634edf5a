"""The one atomic write: whole new contents or the old file, private, nothing staged left behind."""

from __future__ import annotations

import os
import stat

import pytest

from snapmux.adapters.durable import write_atomically


def test_write_atomically_replaces_the_whole_file_with_a_private_one(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b"old contents, longer than the new ones")
    write_atomically(str(path), b"new", prefix=".state-")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_failed_rename_keeps_the_old_target_and_leaves_no_staged_file(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("kept")
    with pytest.raises(OSError):
        write_atomically(str(target), b"new", prefix=".state-")
    assert sorted(os.listdir(tmp_path)) == ["taken"]
    assert (target / "inside").read_text() == "kept"
