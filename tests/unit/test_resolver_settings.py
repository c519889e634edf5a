"""http-address-resolver settings: flags > environment > TOML file > defaults; one-line errors, exit 2."""

from __future__ import annotations

import os

import pytest

from snapmux.entrypoints.http_address_resolver import main as cli
from snapmux.entrypoints.http_address_resolver.settings import load_settings
from snapmux.entrypoints.settings_sources import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("SNAPMUX_RESOLVER_"):
            monkeypatch.delenv(name)


def toml(tmp_path, text: str):
    path = tmp_path / "resolver.toml"
    path.write_text(text)
    return path


def test_env_overrides_the_file(tmp_path, monkeypatch):
    config = toml(tmp_path, 'snapshotter_port = 11000\nlog_level = "debug"\n[shim_base]\ndir = "/from-toml"\n')
    monkeypatch.setenv("SNAPMUX_RESOLVER_SNAPSHOTTER_PORT", "12345")
    monkeypatch.setenv("SNAPMUX_RESOLVER_SHIM_BASE__CACHE_TTL_SECONDS", "3")
    settings = load_settings(config)
    assert settings.snapshotter_port == 12345
    assert (settings.shim_base.dir, settings.shim_base.cache_ttl_seconds) == ("/from-toml", 3.0)
    assert settings.log_level == "debug"


def test_flags_override_the_environment(tmp_path, monkeypatch):
    config = toml(tmp_path, 'address = "127.0.0.1:1"\nlog_level = "debug"\n')
    monkeypatch.setenv("SNAPMUX_RESOLVER_ADDRESS", "127.0.0.1:2")
    monkeypatch.setenv("SNAPMUX_RESOLVER_LOG_LEVEL", "warning")
    assert load_settings(config).address == "127.0.0.1:2"
    settings = load_settings(config, address="127.0.0.1:3", log_level="error")
    assert (settings.address, settings.log_level) == ("127.0.0.1:3", "error")
    assert load_settings(config, address=None).address == "127.0.0.1:2"


@pytest.mark.parametrize(
    ("text", "message"),
    [("typo_key = 1\n", "config error: typo_key: unknown key"),
     ("[shim_base]\ncache_ttl_seconds = -1\n", "config error: shim_base.cache_ttl_seconds:"),
     ('backend = "static"\n', "config error: backend 'static' needs static.path"),
     ("= broken\n", "invalid TOML")],
)
def test_errors_are_one_line_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as failure:
        load_settings(toml(tmp_path, text))
    assert message in str(failure.value) and "\n" not in str(failure.value)


def test_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="absent.toml: not found"):
        load_settings(tmp_path / "absent.toml")


def test_the_cli_prints_one_line_and_exits_2_like_the_other_daemons(tmp_path, capsys):
    assert cli.main(["--config", str(toml(tmp_path, "typo_key = 1\n"))]) == 2
    assert capsys.readouterr().err.splitlines() == ["http-address-resolver: config error: typo_key: unknown key"]
