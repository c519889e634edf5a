"""The integration run ends by counting the conformance suite's cases per stack: pytest counts
tests, and a suite that silently ran nothing must show as `0 cases run`."""

from __future__ import annotations

from tests.integration import conftest
from tests.support import conformance
from tests.support.conformance import ConformanceRun, parse_cases

GO_TEST_OUTPUT = """\
=== RUN   TestConformance/Basic
    --- PASS: TestConformance/Basic (0.51s)
    --- SKIP: TestConformance/Rename (0.44s)
    --- FAIL: TestConformance/Chown (1.20s)
--- FAIL: TestConformance (0.00s)
"""


class Reporter:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def section(self, title: str) -> None:
        self.lines.append(f"== {title}")

    def line(self, text: str) -> None:
        self.lines.append(text)


def test_each_case_is_parsed_with_its_outcome():
    cases = parse_cases(GO_TEST_OUTPUT)
    assert {name: case.outcome for name, case in cases.items()} == {"Basic": "PASS", "Rename": "SKIP", "Chown": "FAIL"}


def test_the_summary_counts_cases_by_outcome():
    run = ConformanceRun("cvmfs-snapshotter", 1, parse_cases(GO_TEST_OUTPUT), GO_TEST_OUTPUT)
    assert run.summary() == (
        "conformance through cvmfs-snapshotter: 3 cases run, 1 passed, 1 skipped by the suite (Rename), "
        "1 failed (Chown), exit status 1")


def test_the_terminal_summary_has_one_line_per_run(monkeypatch):
    runs = [ConformanceRun("a", 0, parse_cases(GO_TEST_OUTPUT)), ConformanceRun("b", 2)]
    monkeypatch.setattr(conformance, "RUNS", runs)
    reporter = Reporter()
    conftest.pytest_terminal_summary(reporter)
    assert reporter.lines == ["== containerd snapshotter conformance", runs[0].summary(), runs[1].summary()]
    assert "0 cases run" in runs[1].summary()


def test_no_run_no_summary(monkeypatch):
    monkeypatch.setattr(conformance, "RUNS", [])
    reporter = Reporter()
    conftest.pytest_terminal_summary(reporter)
    assert reporter.lines == []
