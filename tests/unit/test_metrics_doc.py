"""docs/metrics.md lists exactly the metrics declared in the domain catalog, with their type,
labels and help text, so the reference cannot drift from the code. (Which daemon exports what
is checked by scraping the real daemons: tests/integration/test_metrics_doc_daemons.py.)"""

from __future__ import annotations

from snapmux.domain import metrics as m
from tests.support.metrics_doc import DOC, documented_metrics

DAEMONS = {"cvmfs-snapshotter", "demux-snapshotter", "http-address-resolver"}


def declared() -> dict[str, tuple[str, tuple[str, ...], str]]:
    """name -> (type, labels, help) of everything the code can export."""
    specs = {
        spec.name: ("counter" if isinstance(spec, m.CounterSpec) else "gauge", spec.labels, spec.help)
        for spec in m.ALL_SPECS
    }
    specs[m.REQUEST_DURATION_NAME] = ("histogram", ("service", "method"), m.REQUEST_DURATION_HELP)
    return specs


def test_every_declared_metric_is_documented_with_its_type_labels_and_meaning():
    documented = {name: (d.type, d.labels, d.meaning) for name, d in documented_metrics().items()}
    assert documented == declared()


def test_every_documented_metric_names_the_daemons_that_export_it():
    for metric in documented_metrics().values():
        assert metric.daemons and metric.daemons <= DAEMONS, metric


def test_the_duration_buckets_in_the_doc_are_the_code_s():
    text = DOC.read_text()
    listed = text.split("buckets (seconds): ")[1].split(".\n")[0].replace("\n", " ")
    assert tuple(float(b) for b in listed.split(",")) == m.REQUEST_DURATION_BUCKETS


def test_the_parser_sees_a_drifted_row():
    """A renamed label in the doc must be seen as a difference."""
    drifted = DOC.read_text().replace("| `kind` |", "| `type` |", 1)
    assert documented_metrics(drifted)["snapmux_snapshots"].labels == ("type",)
