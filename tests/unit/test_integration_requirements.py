"""A missing system part skips an integration test on a developer's machine and fails it in CI
(end to end, for go and the conformance suite: tests/integration/test_missing_parts.py)."""

from __future__ import annotations

import pytest

from tests.support.requirements import missing, require


def test_a_missing_part_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="missing: runc on PATH"):
        missing("runc on PATH")


def test_a_missing_part_fails_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"missing in CI \(CI=true\): runc on PATH; root"):
        require("runc on PATH", "root")


def test_nothing_missing_is_no_outcome(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require() is None

