"""The shared command line, log format and start-error wording, without starting a daemon."""

from __future__ import annotations

import errno
import json
import re
import logging
import subprocess
import sys

import pytest

from snapmux.entrypoints import cli, lifecycle, logs
from snapmux.entrypoints.cvmfs_snapshotter.container import warn_if_unusable
from snapmux.entrypoints.cvmfs_snapshotter.settings import load_settings as cvmfs_settings
from snapmux.entrypoints.demux_snapshotter import main as demux_main
from snapmux.entrypoints.demux_snapshotter import settings as demux_settings
from snapmux.entrypoints.http_address_resolver.settings import load_settings as resolver_settings
from snapmux.entrypoints.settings_sources import ConfigError

HEAVY = ("grpc", "google.protobuf", "pydantic", "dependency_injector", "structlog")


@pytest.mark.parametrize("module", ["cvmfs_snapshotter", "demux_snapshotter", "http_address_resolver"])
@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_load_nothing_heavy(module, flag):
    code = (f"import sys\nfrom snapmux.entrypoints.{module}.main import main\n"
            f"try:\n    main([{flag!r}])\nexcept SystemExit:\n    pass\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize(("given", "level"), [("TRACE", "trace"), ("Debug", "debug"), ("warn", "warning"),
                                              ("WARNING", "warning"), ("error", "error"), ("Fatal", "fatal"),
                                              ("panic", "fatal"), ("critical", "fatal")])
def test_logrus_level_names_in_any_case(given, level):
    assert cli.log_level(given) == level


def test_every_daemon_takes_logrus_levels_in_file_env_and_flag(tmp_path, monkeypatch):
    (tmp_path / "c.toml").write_text('log-level = "WARN"\n')
    assert cvmfs_settings(str(tmp_path / "c.toml")).log_level == "warning"
    (tmp_path / "r.toml").write_text('log_level = "Trace"\n')
    assert resolver_settings(tmp_path / "r.toml").log_level == "trace"
    (tmp_path / "d.toml").write_text("")
    monkeypatch.setenv("DEMUX_SNAPSHOTTER_DEBUG__LOGLEVEL", "PANIC")
    assert demux_settings.load_settings(str(tmp_path / "d.toml")).debug.log_level == "fatal"
    assert demux_settings.load_settings(str(tmp_path / "d.toml"), log_level="Debug").debug.log_level == "debug"


def test_the_demux_default_config_has_one_home():
    assert demux_settings.DEFAULT_CONFIG is demux_main.DEFAULT_CONFIG == "/etc/demux-snapshotter/config.toml"


def test_the_go_resolver_address_without_scheme_means_http(tmp_path):
    (tmp_path / "d.toml").write_text('[snapshotter.proxy.address.resolver]\naddress = "127.0.0.1:10001"\n')
    assert demux_settings.load_settings(str(tmp_path / "d.toml")).resolver.address == "http://127.0.0.1:10001"


@pytest.mark.parametrize(("load", "text", "message"), [
    (cvmfs_settings, 'serve-foreign-layers = "yes"\n', "config error: serve-foreign-layers: must be true or false (got 'yes')"),
    (cvmfs_settings, "repository = 7\n", "config error: repository: must be a string (got 7)"),
    (resolver_settings, "access_log = 1\n", "config error: access_log: must be true or false (got 1)"),
    (resolver_settings, 'shutdown_grace_seconds = "5"\n', "config error: shutdown_grace_seconds: must be a number (got '5')"),
])
def test_a_toml_value_of_the_wrong_type_is_a_config_error_naming_the_key(tmp_path, load, text, message):
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError) as failure:
        load(str(tmp_path / "c.toml"))
    assert str(failure.value) == message


def test_the_environment_stays_lax_because_its_values_are_strings(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPMUX_RESOLVER_ACCESS_LOG", "false")
    monkeypatch.setenv("SNAPMUX_RESOLVER_SHUTDOWN_GRACE_SECONDS", "2")
    (tmp_path / "r.toml").write_text("shutdown_grace_seconds = 1\n")  # an integer where a float goes is fine
    settings = resolver_settings(tmp_path / "r.toml")
    assert (settings.access_log, settings.shutdown_grace_seconds) == (False, 2.0)


def emitted(capsys, level: str, log_format: str, logger: str, message: str, **extra) -> str:
    logs.configure_logging(level, log_format)
    try:
        logging.getLogger(logger).log(logging.DEBUG if "debug" in message else logging.INFO, message, extra=extra)
    finally:
        logging.getLogger().handlers.clear()
        for name in logs.LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
    return capsys.readouterr().err


def test_json_lines_carry_time_level_msg_and_fields(capsys):
    [line] = emitted(capsys, "info", "json", "snapmux.x", "ready on /s.sock", namespace="ns1").splitlines()
    record = json.loads(line)
    assert record["time"].endswith("Z") and "T" in record["time"]
    assert {k: record[k] for k in ("level", "msg", "namespace")} == {"level": "info", "msg": "ready on /s.sock", "namespace": "ns1"}


def test_text_lines_are_logrus_key_value_pairs(capsys):
    line = emitted(capsys, "info", "text", "snapmux.x", "ready on /s.sock", namespace="ns1", ok=False).strip()
    assert re.match(r'time="\d{4}-\d\d-\d\dT[\d:.]+Z" level=info msg="ready on /s.sock" namespace=ns1 ok=false$', line)


def test_grpc_debug_chatter_stays_out_unless_trace(capsys):
    assert emitted(capsys, "debug", "text", "grpc._cython.cygrpc", "debug: Using AsyncIOEngine.POLLER") == ""
    assert "AsyncIOEngine" in emitted(capsys, "trace", "text", "grpc._cython.cygrpc", "debug: Using AsyncIOEngine.POLLER")
    assert "mine" in emitted(capsys, "debug", "text", "snapmux.calls", "debug: mine")


@pytest.mark.parametrize(("error", "about", "said"), [
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/proc/snapmux"), "/proc/snapmux/x.sock",
     "No such file or directory"),
    (OSError(errno.EADDRINUSE, "error while attempting to bind on address ('127.0.0.1', 1): address already in use"),
     "127.0.0.1:1", "Address already in use"),
    (PermissionError(errno.EACCES, "Permission denied", "/etc/x"), "/run/s.sock", "Permission denied: /etc/x"),
    (OSError("another cvmfs-snapshotter uses root /r"), "", "another cvmfs-snapshotter uses root /r"),
])
def test_start_errors_say_what_the_system_said_without_python_wording(error, about, said):
    assert lifecycle.reason(error, about) == said


def test_exit_on_turns_errors_into_one_line_and_the_exit_codes(capsys):
    def unreadable() -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/var/lib/x")

    assert lifecycle.exit_on("d", unreadable) == cli.EXIT_UNUSABLE
    assert capsys.readouterr().err == "d: cannot start: Permission denied: /var/lib/x\n"

    def unlistenable() -> None:
        with lifecycle.listening_on("/run/x.sock"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/run")

    assert lifecycle.exit_on("d", unlistenable) == cli.EXIT_UNUSABLE
    assert capsys.readouterr().err == "d: cannot listen on /run/x.sock: No such file or directory\n"


def test_a_missing_or_empty_cvmfs_mountpoint_is_a_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    warn_if_unusable(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    warn_if_unusable(str(tmp_path / "empty"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / ".layers").mkdir()
    warn_if_unusable(str(tmp_path / "full"))
    assert [r.getMessage() for r in caplog.records] == [
        f"CVMFS mountpoint {tmp_path}/absent does not exist: every layer will be downloaded",
        f"CVMFS mountpoint {tmp_path}/empty is empty: every layer will be downloaded",
    ]
