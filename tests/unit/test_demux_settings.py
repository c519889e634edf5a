"""demux-snapshotter config: the seed's keys, the Go original's spellings, one-line errors naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from snapmux.entrypoints.demux_snapshotter.settings import ConfigError, load_settings, parse_duration

GO_ORIGINAL = """
[snapshotter.listener]
  network = "unix"
  address = "/run/demux/snapshotter.sock"
[snapshotter.proxy.address.resolver]
  type = "http"
  address = "http://127.0.0.1:10001"
[snapshotter.metrics]
  enable = true
  host = "127.0.0.1"
  port_range = "9000-9999"
  service_discovery_port = 8080
[snapshotter.dialer]
  timeout = "5s"
  retry_interval = "100ms"
[snapshotter.cache]
  evict_on_connection_failure = true
  poll_connection_frequency = "60s"
[debug]
  logLevel = "debug"
"""


def config(tmp_path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def test_defaults_without_a_file(monkeypatch):
    monkeypatch.setattr("snapmux.entrypoints.demux_snapshotter.settings.DEFAULT_CONFIG", "/nonexistent/config.toml")
    settings = load_settings()
    assert settings.snapshotter.listener.address == "/var/lib/demux-snapshotter/snapshotter.sock"
    assert settings.resolver.address == "http://127.0.0.1:10001"
    assert settings.snapshotter.mount_type_prefix == "vm:"
    assert (settings.snapshotter.dialer.timeout, settings.snapshotter.dialer.retry_interval) == (5.0, 0.1)
    assert settings.snapshotter.metrics.ports == (9000, 9999) and not settings.snapshotter.metrics.enable
    assert settings.known_namespaces_path == "/var/lib/demux-snapshotter/known-namespaces.json"


@pytest.mark.parametrize(("line", "path"), [
    ('known_namespaces_file = "/srv/demux/known.json"', "/srv/demux/known.json"),
    ('known_namespaces_file = ""', None),  # off: a restart reaches only the VMs containerd calls again
])
def test_where_the_reached_namespaces_are_remembered(tmp_path, line, path):
    assert load_settings(config(tmp_path, f"[snapshotter.cache]\n{line}\n")).known_namespaces_path == path


def test_the_go_originals_file_keeps_working(tmp_path):
    settings = load_settings(config(tmp_path, GO_ORIGINAL))
    assert settings.snapshotter.listener.type == "unix"
    assert settings.snapshotter.listener.address == "/run/demux/snapshotter.sock"
    assert settings.snapshotter.metrics.host == "127.0.0.1"
    assert settings.snapshotter.metrics.service_discovery.enable
    assert settings.snapshotter.metrics.service_discovery.port == 8080
    assert settings.snapshotter.cache.poll_connection_frequency == 60.0
    assert settings.debug.log_level == "debug"


def test_the_seed_spelling(tmp_path):
    text = """
[snapshotter]
mount_type_prefix = ""
[snapshotter.listener]
type = "unix"
address = "/tmp/x.sock"
[snapshotter.metrics]
enable = true
port_range = "100-200"
[snapshotter.metrics.service_discovery]
enable = true
port = 99
"""
    settings = load_settings(config(tmp_path, text))
    assert settings.snapshotter.mount_type_prefix == ""
    assert settings.snapshotter.metrics.ports == (100, 200)
    assert settings.snapshotter.metrics.service_discovery.port == 99


def test_env_overrides_the_file_and_the_flag_overrides_the_log_level(tmp_path, monkeypatch):
    monkeypatch.setenv("DEMUX_SNAPSHOTTER_SNAPSHOTTER__DIALER__TIMEOUT", "250ms")
    settings = load_settings(config(tmp_path, GO_ORIGINAL), log_level="warn")
    assert settings.snapshotter.dialer.timeout == 0.25
    assert settings.snapshotter.dialer.retry_interval == 0.1
    assert settings.debug.log_level == "warning"


def test_env_overrides_the_files_log_level_and_the_flag_overrides_the_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DEMUX_SNAPSHOTTER_DEBUG__LOGLEVEL", "error")
    assert load_settings(config(tmp_path, GO_ORIGINAL)).debug.log_level == "error"
    assert load_settings(config(tmp_path, GO_ORIGINAL), log_level="warn").debug.log_level == "warning"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[snapshotter]\nbogus = 1\n", "snapshotter.bogus: unknown key"),
        ("[snapshotter.listener]\ntype = \"tcp\"\n", "snapshotter.listener.type"),
        ("[snapshotter.listener]\nnetwork = \"vsock\"\n", "snapshotter.listener.network"),
        ("[snapshotter.proxy.address.resolver]\ntype = \"grpc\"\n", "snapshotter.proxy.address.resolver.type"),
        ("[snapshotter.proxy.address.resolver]\naddress = \"ftp://127.0.0.1:10001\"\n", "resolver.address: 'ftp://127.0.0.1:10001' is not an http"),
        ("[snapshotter.dialer]\ntimeout = \"5 seconds\"\n", "snapshotter.dialer.timeout: invalid duration"),
        ("[snapshotter.cache]\npoll_connection_frequency = \"0s\"\n", "poll_connection_frequency: duration '0s' must be positive"),
        ("[snapshotter.metrics]\nport_range = \"9999-9000\"\n", "snapshotter.metrics.port_range"),
        ("[snapshotter.metrics]\nport_range = \"0-10\"\n", "snapshotter.metrics.port_range"),
        ("[snapshotter.metrics]\nservice_discovery_port = 9500\n", "service_discovery port 9500 is inside port_range"),
        ("[debug]\nlogLevel = \"loud\"\n", "debug.logLevel: unknown log level"),
        ("[snapshotter\n", "invalid TOML"),
    ],
)
def test_bad_configs_fail_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=None) as failure:
        load_settings(config(tmp_path, text))
    assert message in str(failure.value) and "\n" not in str(failure.value)


def test_an_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(str(tmp_path / "missing.toml"))


@pytest.mark.parametrize(("text", "seconds"), [("5s", 5), ("100ms", 0.1), ("1m30s", 90), ("1h", 3600), (2, 2)])
def test_go_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


def test_the_daemon_exits_non_zero_with_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "snapmux.entrypoints.demux_snapshotter.main", "--config",
         config(tmp_path, "[snapshotter.dialer]\nretry_interval = \"soon\"\n")],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "demux-snapshotter: config error: snapshotter.dialer.retry_interval: "
        "invalid duration 'soon' (use e.g. 5s, 100ms, 1m30s)"
    ]
