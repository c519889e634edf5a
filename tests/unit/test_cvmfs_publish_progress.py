"""Publish progress: the plain and terminal reporters, the events SitePublisher sends them, and
the command line's modes (plain lines when stderr is not a terminal, a bar on a pty, --quiet,
--json)."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys

import pytest
from rich.console import Console

from snapmux.adapters.cvmfs.publish_progress import PlainProgress, TerminalProgress, for_stream
from snapmux.adapters.cvmfs.recipe import Wanted
from snapmux.adapters.cvmfs import site_publish
from snapmux.adapters.cvmfs.site_publish import SitePublisher
from snapmux.entrypoints.cvmfs_snapshotter.publish import main
from tests.support.site_images import family

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="overlay whiteouts are char devices 0/0: needs root")
A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def started(self, digest, size):
        self.events.append(("started", digest, size))

    def advanced(self, digest, done):
        self.events.append(("advanced", digest, done))

    def finished(self, digest, outcome):
        self.events.append(("finished", digest, outcome))

    def close(self):
        self.events.append(("close",))


def test_plain_progress_writes_one_line_at_the_start_and_one_at_the_end_of_a_layer():
    out = io.StringIO()
    progress = PlainProgress(out)
    progress.started(A, 300)
    for _ in range(3):
        progress.advanced(A, 100)
    progress.finished(A, "published")
    progress.finished(B, "skipped")
    lines = out.getvalue().splitlines()
    assert lines[0] == f"layer {A}: fetching 300 bytes"
    assert lines[1].startswith(f"layer {A}: published, 300 bytes in ") and lines[1].endswith(" s")
    assert lines[2] == f"layer {B}: skipped"
    assert len(lines) == 3


def test_terminal_progress_draws_a_bar_and_leaves_one_line_per_finished_layer():
    out = io.StringIO()
    progress = TerminalProgress(Console(file=out, force_terminal=True, width=100))
    progress.started(A, 2_000_000)
    progress.advanced(A, 1_000_000)
    progress._bars.refresh()
    drawn = out.getvalue()
    assert "\x1b[" in drawn and "aaaaaaaaaaaa" in drawn and "1.0/2.0 MB" in drawn
    progress.advanced(A, 1_000_000)
    progress.finished(A, "published")
    progress.finished(B, "skipped")  # never started: nothing to show
    progress.close()
    assert "published aaaaaaaaaaaa (2000000 bytes)" in out.getvalue()
    assert "bbbbbbbbbbbb" not in out.getvalue()


def test_the_reporter_is_a_bar_on_a_terminal_and_plain_lines_elsewhere():
    assert isinstance(for_stream(io.StringIO()), PlainProgress)
    leader, follower = pty.openpty()
    try:
        with open(follower, "w", closefd=False) as terminal:
            assert isinstance(for_stream(terminal), TerminalProgress)
    finally:
        os.close(leader)
        os.close(follower)


@needs_root
def test_the_publisher_reports_each_layer_it_publishes_and_each_it_finds_in_place(tmp_path):
    image = family(str(tmp_path / "images"), ["a:1"])["a:1"]
    target, sizes = str(tmp_path / "layout"), {layer.digest: layer.size for layer in image.layers}
    first = Recorder()
    assert not SitePublisher(target, progress=first).run([Wanted(image.oci_ref)]).failed
    for digest, size in sizes.items():
        mine = [event for event in first.events if event[1:2] == (digest,)]
        assert mine == [("started", digest, size), ("advanced", digest, size), ("finished", digest, "published")]
    assert first.events[-1] == ("close",)
    again = Recorder()
    assert not SitePublisher(target, progress=again).run([Wanted(image.oci_ref)]).failed
    assert sorted(again.events[:-1]) == sorted(("finished", digest, "skipped") for digest in sizes)


@needs_root
def test_the_cli_writes_plain_layer_lines_on_stderr_when_it_is_not_a_terminal(tmp_path, capsys):
    image = family(str(tmp_path / "images"), ["a:1"])["a:1"]
    assert main(["--target", str(tmp_path / "layout"), image.oci_ref]) == 0
    captured = capsys.readouterr()
    for layer in image.layers:
        assert f"layer {layer.digest}: fetching {layer.size} bytes" in captured.err
        assert f"layer {layer.digest}: published, {layer.size} bytes in " in captured.err
    assert "\x1b[" not in captured.err
    assert captured.out.startswith(f"ok {image.oci_ref}") and f"published {len(image.layers)} layer(s)" in captured.out


@needs_root
def test_quiet_prints_nothing_but_failures(tmp_path, capsys):
    image = family(str(tmp_path / "images"), ["a:1"])["a:1"]
    assert main(["--quiet", "--target", str(tmp_path / "layout"), image.oci_ref]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["--quiet", "--target", str(tmp_path / "layout"), "oci:/no/such/layout:1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("publish failed: oci:/no/such/layout:1")
    assert len(captured.err.splitlines()) == 1


@needs_root
def test_json_prints_one_summary_object_per_image_and_totals(tmp_path, capsys):
    image = family(str(tmp_path / "images"), ["a:1"])["a:1"]
    argv = ["--json", "--target", str(tmp_path / "layout"), image.oci_ref, "oci:/no/such/layout:1"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    by_ref = {entry["reference"]: entry for entry in summary["images"]}
    ok, bad = by_ref[image.oci_ref], by_ref["oci:/no/such/layout:1"]
    assert (ok["published"], ok["skipped"], ok["error"]) == (len(image.layers), 0, None)
    assert ok["bytes"] == sum(layer.size for layer in image.layers) and ok["platform"]
    assert "No such file or directory" in bad["error"]
    assert summary["totals"] == {**summary["totals"], "published": len(image.layers), "ok": 1, "failed": 1, "bytes": ok["bytes"]}
    assert "layer sha256:" not in captured.err and captured.err.startswith("publish failed: oci:/no/such")


def test_quiet_and_json_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--quiet", "--json", "--target", str(tmp_path), "oci:x"])
    assert "not allowed with" in capsys.readouterr().err


@needs_root
def test_on_a_terminal_the_cli_draws_bars_on_stderr_and_keeps_stdout_plain(tmp_path):
    image = family(str(tmp_path / "images"), ["a:1"], own_mb=2)["a:1"]
    leader, follower = pty.openpty()
    argv = [sys.executable, "-m", "snapmux.entrypoints.cvmfs_snapshotter.publish", "--target",
            str(tmp_path / "layout"), image.oci_ref]
    try:
        run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=follower, text=True)
        os.close(follower)
        drawn = _read_all(leader)
        out, _ = run.communicate(timeout=120)
    finally:
        os.close(leader)
    assert run.returncode == 0, drawn
    assert "\x1b[" in drawn  # rich drew (cursor moves, colours): a terminal, not plain lines
    for layer in image.layers:
        assert f"published {layer.digest.split(':')[1][:12]} ({layer.size} bytes)" in drawn
    assert "layer sha256:" not in drawn
    assert out.startswith(f"ok {image.oci_ref}")


def _read_all(leader: int) -> str:
    """Until the child closes the pty (EIO on Linux), with a deadline on each read."""
    chunks = []
    while select.select([leader], [], [], 120)[0]:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


class Broken(Recorder):
    def advanced(self, digest, done):
        raise RuntimeError("display gone")


@needs_root
def test_a_progress_display_that_breaks_does_not_fail_the_publish(tmp_path, caplog):
    image = family(str(tmp_path / "images"), ["a:1"])["a:1"]
    broken = Broken()
    summary = SitePublisher(str(tmp_path / "layout"), jobs=1, progress=broken).run([Wanted(image.oci_ref)])  # one layer at a time: the first to break is the last called
    assert not summary.failed and summary.images[0].published == len(image.layers)
    assert "progress display turned off: display gone" in caplog.text
    assert len(broken.events) == 1 and broken.events[0][0] == "started"  # not called after it broke


@needs_root
def test_a_layer_stopped_by_sigterm_is_reported_stopped_not_failed(tmp_path, monkeypatch):
    image = family(str(tmp_path / "images"), ["a:1"])["a:1"]
    recorder = Recorder()
    publisher = SitePublisher(str(tmp_path / "layout"), jobs=1, progress=recorder)

    def sigterm_mid_layer(digest, opener):
        publisher.stop.set()
        raise site_publish.Stopped(f"stopped in layer {digest}")

    monkeypatch.setattr(publisher.layout, "publish_layer", sigterm_mid_layer)
    summary = publisher.run([Wanted(image.oci_ref)])
    assert summary.stopped and not summary.failed
    outcomes = {event[2] for event in recorder.events if event[0] == "finished"}
    assert outcomes == {"stopped"}
