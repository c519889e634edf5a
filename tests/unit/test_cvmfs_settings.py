"""cvmfs-snapshotter settings and command line: precedence, CVMFS keys, listeners, one-line config errors."""

from __future__ import annotations

import os

import pytest

from snapmux.entrypoints.cvmfs_snapshotter import main as cli
from snapmux.entrypoints.cvmfs_snapshotter.settings import (
    DEFAULT_ADDRESS,
    DEFAULT_ROOT,
    ConfigError,
    load_settings,
    vsock_port,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("SNAPMUX_CVMFS_"):
            monkeypatch.delenv(name)


def toml(tmp_path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def test_defaults():
    settings = load_settings()
    assert (settings.root, settings.address, settings.log_level) == (DEFAULT_ROOT, DEFAULT_ADDRESS, "info")
    assert (settings.repository, settings.absolute_mountpoint) == ("unpacked.cern.ch", "/cvmfs/unpacked.cern.ch")
    assert settings.listen_address() == DEFAULT_ADDRESS


def test_flags_over_env_over_toml(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPMUX_CVMFS_ROOT", "/from-env")
    monkeypatch.setenv("SNAPMUX_CVMFS_REPOSITORY", "env.cern.ch")
    monkeypatch.setenv("SNAPMUX_CVMFS_LOG_LEVEL", "debug")
    config = toml(tmp_path, 'root = "/from-toml"\nlog-level = "warning"\nabsolute-mountpoint = "/mnt/toml"\n')
    settings = load_settings(config, root="/from-flag", address=None)
    assert settings.root == "/from-flag"
    assert settings.log_level == "debug"
    assert settings.repository == "env.cern.ch" and settings.absolute_mountpoint == "/mnt/toml"
    assert load_settings(config).root == "/from-env"
    assert load_settings(config, log_level="error").log_level == "error"
    assert load_settings().root == "/from-env"


def test_env_overrides_a_dashed_key_and_a_table_of_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPMUX_CVMFS_ABSOLUTE_MOUNTPOINT", "/mnt/env")
    monkeypatch.setenv("SNAPMUX_CVMFS_LISTENER__PORT", "4321")
    config = toml(tmp_path, 'absolute-mountpoint = "/mnt/toml"\n[listener]\nnetwork = "vsock"\nport = 1234\n')
    settings = load_settings(config)
    assert settings.absolute_mountpoint == "/mnt/env"
    assert settings.listen_address() == "vsock://4321"
    assert load_settings(config, address="/flag.sock").listen_address() == "/flag.sock"


def test_cvmfs_keys_with_dashes_or_underscores(tmp_path):
    settings = load_settings(toml(tmp_path, 'repository = "sft.cern.ch"\nabsolute-mountpoint = "/mnt/sft"\n'))
    assert (settings.repository, settings.absolute_mountpoint) == ("sft.cern.ch", "/mnt/sft")
    assert load_settings(toml(tmp_path, 'absolute_mountpoint = "/x"\n')).absolute_mountpoint == "/x"


def test_vsock_listener_table_and_address(tmp_path):
    assert load_settings(toml(tmp_path, '[listener]\nnetwork = "vsock"\n')).listen_address() == "vsock://10000"
    assert load_settings(toml(tmp_path, '[listener]\nnetwork = "vsock"\nport = 1234\n')).listen_address() == "vsock://1234"
    explicit = load_settings(toml(tmp_path, '[listener]\nnetwork = "vsock"\n'), address="/s.sock")
    assert explicit.listen_address() == "/s.sock"
    assert load_settings(address="vsock://5000").listen_address() == "vsock://5000"
    assert vsock_port("vsock://5000") == 5000 and vsock_port("vsock://") == 10000 and vsock_port("/a.sock") is None
    with pytest.raises(ConfigError, match="address"):
        vsock_port("vsock://nope")


@pytest.mark.parametrize(
    "text, key",
    [("bogus = 1\n", "bogus"), ("root = 5\n", "root"), ('log-level = "loud"\n', "log-level"),
     ("[listener]\nport = \"x\"\n", "listener.port"), ("[listener]\nextra = 1\n", "listener.extra")],
)
def test_config_errors_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(toml(tmp_path, text))


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(toml(tmp_path, "root = [\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_settings(str(tmp_path / "absent.toml"))


def test_cli_config_error_is_one_line_and_non_zero(tmp_path, capsys):
    assert cli.main(["--config", toml(tmp_path, "unknown-key = 1\n")]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown_key" in err.replace("-", "_") and "Traceback" not in err


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0 and "cvmfs-snapshotter" in capsys.readouterr().out


def test_publish_subcommand_is_dispatched_to_the_publisher(tmp_path, capsys):
    missing = tmp_path / "no-such-layout"
    assert cli.main(["publish", "--target", str(tmp_path / "layers"), f"oci:{missing}:v1"]) != 0
    assert str(missing) in capsys.readouterr().err


def test_foreign_layers_are_scanned_by_default_and_the_mode_reaches_the_layer_store(tmp_path):
    from snapmux.entrypoints.cvmfs_snapshotter.container import Container

    assert load_settings(toml(tmp_path, "")).foreign_layers == "scan"
    assert load_settings(toml(tmp_path, 'foreign-layers = "download"\n')).foreign_layers == "download"
    assert load_settings(toml(tmp_path, "serve-foreign-layers = false\n")).foreign_layers == "scan"
    with pytest.raises(ConfigError):
        load_settings(toml(tmp_path, 'foreign-layers = "sometimes"\n'))
    with pytest.raises(ConfigError):
        load_settings(toml(tmp_path, 'serve-foreign-layers = true\nforeign-layers = "scan"\n'))

    async def wired_layer_store(settings):  # the composition root passes the mode (and a scanner) on
        container = Container(settings=settings)
        snapshots = await container.snapshots()
        try:
            return snapshots._store.foreign, snapshots._store.scanner is not None
        finally:
            await container.shutdown_resources()

    import asyncio

    scanning = load_settings(toml(tmp_path, f'root = "{tmp_path}/root"\n'))
    assert asyncio.run(wired_layer_store(scanning)) == ("scan", True)
    # the older key keeps its meaning: serve foreign layers at once, whiteouts not applied
    serving = load_settings(toml(tmp_path, f'root = "{tmp_path}/root"\nserve-foreign-layers = true\n'))
    assert asyncio.run(wired_layer_store(serving))[0] == "serve"


def test_the_foreign_scan_budget_reaches_the_layer_store_and_a_bad_one_names_the_key(tmp_path):
    from snapmux.entrypoints.cvmfs_snapshotter.container import Container

    assert load_settings(toml(tmp_path, "")).foreign_scan_budget == 5.0
    for bad in ("-1", '"soon"', "inf", "nan"):
        with pytest.raises(ConfigError, match="foreign-scan-budget|foreign_scan_budget"):
            load_settings(toml(tmp_path, f"foreign-scan-budget = {bad}\n"))

    async def wired_budget(settings):
        container = Container(settings=settings)
        snapshots = await container.snapshots()
        try:
            return snapshots._store.scan_budget, snapshots._metrics is not None
        finally:
            await container.shutdown_resources()

    import asyncio

    settings = load_settings(toml(tmp_path, f'root = "{tmp_path}/root"\nforeign-scan-budget = 0.25\n'))
    assert asyncio.run(wired_budget(settings)) == (0.25, True)
