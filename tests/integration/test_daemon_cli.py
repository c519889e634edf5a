"""The three daemons run as an operator runs them (subprocesses of their console scripts):
--help and --version, each class of bad config (exit 2) and start failure (exit 1) as one exact
line without a traceback, log lines in both formats, a call logged at debug with its fields, and
the Go original's example config accepted by demux-snapshotter as it is."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import grpc
import pytest

from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from tests.integration.conftest import require_binaries, unix_socket_listening
from tests.support.prometheus import free_port

pytestmark = pytest.mark.integration
DAEMONS = ("cvmfs-snapshotter", "demux-snapshotter", "http-address-resolver")
GO_EXAMPLE = Path(__file__).parent.parent / "data" / "firecracker-containerd-config.toml.example"
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')
SN = "cvmfs"


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    require_binaries(argv[0])
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("SNAPMUX_", "DEMUX_"))}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=environ | (env or {}))


def fails_with(done: subprocess.CompletedProcess[str], code: int, line: str) -> None:
    """The last stderr line is the exact message; nothing a Python programmer would see instead."""
    assert done.returncode == code, done.stderr
    assert done.stderr.splitlines()[-1] == line
    for bad in ("Traceback", "[Errno", "Error:", "Exception"):
        assert bad not in done.stderr


def logfmt(line: str) -> dict[str, str]:
    fields = {key: value[1:-1].replace('\\"', '"') if value.startswith('"') else value
              for key, value in LOGFMT.findall(line)}
    assert list(fields)[:3] == ["time", "level", "msg"], line
    return fields


@pytest.mark.parametrize("daemon", DAEMONS)
def test_help_describes_the_daemon_and_lists_the_shared_flags(daemon):
    done = run([daemon, "--help"])
    assert done.returncode == 0
    for flag in ("--config", "--address", "--log-level", "--log-format", "--version"):
        assert flag in done.stdout
    assert "trace, debug, info, warn" in done.stdout and "config error: <key>: <reason>" in done.stdout
    assert "Imports only" not in done.stdout  # the module's docstring is for programmers


def test_cvmfs_help_lists_its_publish_subcommand_and_root():
    done = run(["cvmfs-snapshotter", "--help"])
    assert re.search(r"^  publish\s+write an image's layers", done.stdout, re.M) and "--root" in done.stdout


@pytest.mark.parametrize("daemon", DAEMONS)
def test_version_answers_with_the_package_version(daemon):
    from snapmux import __version__

    done = run([daemon, "--version"])
    assert (done.returncode, done.stdout) == (0, f"{daemon} {__version__}\n")


@pytest.mark.parametrize(
    ("daemon", "file", "env", "flags", "line"),
    [
        ("cvmfs-snapshotter", "bogus = 1\n", {}, [], "config error: bogus: unknown key"),
        ("cvmfs-snapshotter", 'foreign-layers = "all"\n', {}, [],
         "config error: foreign-layers: Input should be 'scan', 'serve' or 'download' (got 'all')"),
        ("cvmfs-snapshotter", "", {"SNAPMUX_CVMFS_LOG_LEVEL": "loud"}, [],
         "config error: log-level: unknown log level 'loud' (one of trace, debug, info, warn, warning, error, fatal, panic)"),
        ("cvmfs-snapshotter", "", {}, ["--address", "vsock://x"], "config error: address: 'vsock://x' is not vsock://<port>"),
        ("demux-snapshotter", '[snapshotter.metrics]\nenable = "yes"\n', {}, [],
         "config error: snapshotter.metrics.enable: must be true or false (got 'yes')"),
        ("demux-snapshotter", "[debug]\nlog_level = \"info\"\n", {}, [], "config error: debug.log_level: unknown key"),
        ("demux-snapshotter", "[snapshotter.dialer]\ntimeout = \"soon\"\n", {}, [],
         "config error: snapshotter.dialer.timeout: invalid duration 'soon' (use e.g. 5s, 100ms, 1m30s)"),
        ("demux-snapshotter", "", {}, ["--log-level", "LOUD"],
         "config error: debug.logLevel: unknown log level 'LOUD' (one of trace, debug, info, warn, warning, error, fatal, panic)"),
        ("http-address-resolver", 'snapshotter_port = "10000"\n', {}, [], "config error: snapshotter_port: must be an integer (got '10000')"),
        ("http-address-resolver", 'address = "0.0.0.0:10001"\n', {}, [],
         "config error: address: '0.0.0.0:10001' is not loopback; set allow_non_loopback = true to expose it"),
        ("http-address-resolver", "[broken\n", {}, [], None),
        ("http-address-resolver", "", {}, ["--log-format", "xml"], "config error: log_format: unknown log format 'xml' (text or json)"),
        ("demux-snapshotter", "", {}, ["--log-format", "xml"], "config error: debug.logFormat: unknown log format 'xml' (text or json)"),
    ],
)
def test_each_bad_config_is_one_line_naming_the_key_and_exit_2(tmp_path, daemon, file, env, flags, line):
    config = tmp_path / "config.toml"
    config.write_text(file)
    done = run([daemon, "--config", str(config), *flags], env)
    expected = line or f"config error: {config}: invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 8)"
    fails_with(done, 2, f"{daemon}: {expected}")


@pytest.mark.parametrize("daemon", DAEMONS)
def test_a_missing_config_file_is_a_config_error(tmp_path, daemon):
    fails_with(run([daemon, "--config", str(tmp_path / "nope.toml")]), 2, f"{daemon}: config error: {tmp_path}/nope.toml: not found")


def test_the_snapshotters_cannot_listen_in_a_folder_that_cannot_exist(tmp_path):
    cvmfs = run(["cvmfs-snapshotter", "--root", str(tmp_path / "root"), "--address", "/proc/snapmux/x.sock"])
    fails_with(cvmfs, 1, "cvmfs-snapshotter: cannot listen on /proc/snapmux/x.sock: No such file or directory")
    (tmp_path / "empty.toml").write_text("")
    demux = run(["demux-snapshotter", "--config", str(tmp_path / "empty.toml"), "--address", "/proc/snapmux/x.sock"])
    fails_with(demux, 1, "demux-snapshotter: cannot listen on /proc/snapmux/x.sock: No such file or directory")


def test_the_resolver_cannot_listen_on_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "static.json").write_text("{}")
        done = run(["http-address-resolver", "--address", f"127.0.0.1:{port}"],
                   {"SNAPMUX_RESOLVER_BACKEND": "static", "SNAPMUX_RESOLVER_STATIC__PATH": str(tmp_path / "static.json")})
    fails_with(done, 1, f"http-address-resolver: cannot listen on 127.0.0.1:{port}: Address already in use")


def test_a_metadata_store_that_is_not_sqlite_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "metadata.db").write_bytes(b"not a database, just bytes" * 100)
    done = run(["cvmfs-snapshotter", "--root", str(tmp_path / "root"), "--address", str(tmp_path / "s.sock")])
    fails_with(done, 1, f"cvmfs-snapshotter: metadata store {tmp_path}/root/metadata.db is not a SQLite database: "
                        "move it aside or restore it")


def test_a_second_snapshotter_on_the_same_root_is_refused(daemons, tmp_path):
    require_binaries("cvmfs-snapshotter")
    root, first = tmp_path / "root", str(tmp_path / "a.sock")
    daemons.start(["cvmfs-snapshotter", "--root", str(root), "--address", first], tmp_path / "a.log",
                  lambda: unix_socket_listening(first))
    done = run(["cvmfs-snapshotter", "--root", str(root), "--address", str(tmp_path / "b.sock")])
    fails_with(done, 1, f"cvmfs-snapshotter: another cvmfs-snapshotter uses root {root} (it holds {root}/lock): "
                        "stop it first, or give this one another root")


def start_cvmfs(daemons, tmp_path, *flags: str, env=None):
    require_binaries("cvmfs-snapshotter")
    sock = str(tmp_path / "s.sock")
    argv = ["cvmfs-snapshotter", "--root", str(tmp_path / "root"), "--address", sock, *flags]
    return sock, daemons.start(argv, tmp_path / "daemon.log", lambda: unix_socket_listening(sock), env=env)


def calls(sock: str) -> None:
    """A Prepare (OK), a Stat of nothing (an expected NOT_FOUND) and a Remove of nothing (a failure)."""
    with grpc.insecure_channel(f"unix://{sock}") as channel:
        stub = pb_grpc.SnapshotsStub(channel)
        ns = (("containerd-namespace", "ns1"),)
        stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="k1"), metadata=ns)
        for call, request in ((stub.Stat, pb.StatSnapshotRequest(snapshotter=SN, key="none")),
                              (stub.Remove, pb.RemoveSnapshotRequest(snapshotter=SN, key="gone"))):
            with pytest.raises(grpc.RpcError):
                call(request, metadata=ns)


def test_json_logs_one_object_per_line_with_each_call_at_debug(daemons, tmp_path):
    sock, daemon = start_cvmfs(daemons, tmp_path, "--log-level", "DEBUG", "--log-format", "json")
    calls(sock)
    assert daemon.stop() == 0
    lines = [json.loads(line) for line in daemon.log().splitlines()]
    assert all(RFC3339_UTC.match(line["time"]) and line["level"] and "msg" in line for line in lines)
    [prepare] = [line for line in lines if line.get("method") == "Prepare"]
    assert (prepare["level"], prepare["namespace"], prepare["key"], prepare["code"]) == ("debug", "ns1", "k1", "OK")
    assert prepare["duration_ms"] >= 0
    [stat] = [line for line in lines if line.get("method") == "Stat"]
    assert (stat["level"], stat["code"]) == ("debug", "NOT_FOUND")  # containerd's "does it exist?": no warning
    [remove_debug, remove_warning] = [line for line in lines if line.get("method") == "Remove"]
    assert remove_debug["code"] == remove_warning["code"] == "NOT_FOUND" and remove_warning["level"] == "warning"
    assert remove_warning["key"] == "gone" and "gone" in remove_warning["error"]
    assert not [line for line in lines if "cygrpc" in line["msg"] or "AsyncIOEngine" in line["msg"]]


def test_text_logs_are_logrus_lines_and_info_shows_only_the_unexpected_failure(daemons, tmp_path):
    empty = tmp_path / "cvmfs"
    empty.mkdir()
    sock, daemon = start_cvmfs(daemons, tmp_path, "--log-level", "Info", env=os.environ | {
        "SNAPMUX_CVMFS_ABSOLUTE_MOUNTPOINT": str(empty)})
    calls(sock)
    assert daemon.stop() == 0
    lines = [logfmt(line) for line in daemon.log().splitlines()]
    assert all(RFC3339_UTC.match(line["time"]) for line in lines)
    assert {"level": "warning", "mountpoint": str(empty)}.items() <= next(
        line for line in lines if "is empty" in line["msg"]).items()
    assert any(line["level"] == "info" and line["msg"] == f"ready on {sock}" for line in lines)
    failures = [line for line in lines if "method" in line]
    assert [(line["level"], line["method"], line["namespace"], line["code"]) for line in failures] == [
        ("warning", "Remove", "ns1", "NOT_FOUND")]


def test_the_go_originals_example_config_starts_the_demux_as_it_is(daemons, tmp_path):
    require_binaries("demux-snapshotter")
    sock = str(tmp_path / "demux.sock")
    # The file stays verbatim; only where it would listen on this shared machine comes from the environment.
    env = os.environ | {
        "DEMUX_SNAPSHOTTER_SNAPSHOTTER__LISTENER__ADDRESS": sock,
        "DEMUX_SNAPSHOTTER_SNAPSHOTTER__METRICS__SERVICE_DISCOVERY__PORT": str(free_port()),
    }
    copy = tmp_path / "config.toml"
    shutil.copyfile(GO_EXAMPLE, copy)
    daemon = daemons.start(["demux-snapshotter", "--config", str(copy), "--log-format", "json"], tmp_path / "demux.log",
                           lambda: unix_socket_listening(sock), env=env)
    assert daemon.stop() == 0
    messages = [json.loads(line)["msg"] for line in daemon.log().splitlines()]
    assert "ready" in messages and any(m.startswith("per-VM metrics proxies on") for m in messages)
    assert copy.read_bytes() == GO_EXAMPLE.read_bytes()

