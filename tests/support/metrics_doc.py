"""docs/metrics.md's table, parsed: the one description of what each daemon exports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
HEADER = "| Metric | Type | Labels | Daemons | Meaning |"


@dataclass(frozen=True)
class DocumentedMetric:
    name: str
    type: str
    labels: tuple[str, ...]
    daemons: frozenset[str]
    meaning: str


def documented_metrics(text: str | None = None) -> dict[str, DocumentedMetric]:
    lines = (DOC.read_text() if text is None else text).splitlines()
    start = lines.index(HEADER) + 2  # header, then the --- row
    rows: dict[str, DocumentedMetric] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        name, kind, labels, daemons, meaning = (cell.strip() for cell in line.strip("|").split("|"))
        metric = DocumentedMetric(
            name.strip("`"),
            kind,
            tuple(label.strip().strip("`") for label in labels.split(",") if label.strip()),
            frozenset(d.strip() for d in daemons.split(",")),
            meaning,
        )
        assert metric.name not in rows, f"{metric.name} is documented twice"
        rows[metric.name] = metric
    return rows
