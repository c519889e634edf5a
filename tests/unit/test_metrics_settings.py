"""Metrics settings of cvmfs-snapshotter (metrics_address) and of the demux ([snapshotter.metrics])."""

from __future__ import annotations

import pytest

from snapmux.entrypoints.cvmfs_snapshotter.settings import ConfigError, load_settings
from snapmux.entrypoints.demux_snapshotter.settings import ConfigError as DemuxConfigError
from snapmux.entrypoints.demux_snapshotter.settings import load_settings as load_demux_settings


def cvmfs(tmp_path, text: str, **overrides):
    config = tmp_path / "c.toml"
    config.write_text(text)
    return load_settings(str(config), **overrides)


def test_metrics_are_off_on_the_host_by_default(tmp_path):
    assert cvmfs(tmp_path, "").metrics_listen_address() is None


def test_metrics_default_to_vsock_10001_inside_a_vm(tmp_path):
    assert cvmfs(tmp_path, "", address="vsock://10000").metrics_listen_address() == "vsock://10001"
    assert cvmfs(tmp_path, '[listener]\nnetwork = "vsock"\n').metrics_listen_address() == "vsock://10001"


@pytest.mark.parametrize("value", ["127.0.0.1:9101", "vsock://12000", "unix:///run/m.sock"])
def test_metrics_address_as_configured(tmp_path, value):
    assert cvmfs(tmp_path, f'metrics-address = "{value}"\n').metrics_listen_address() == value


def test_an_empty_metrics_address_turns_them_off_even_in_a_vm(tmp_path):
    settings = cvmfs(tmp_path, 'metrics_address = ""\n', address="vsock://10000")
    assert settings.metrics_listen_address() is None


def test_a_bad_metrics_address_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="metrics-address"):
        cvmfs(tmp_path, 'metrics-address = "9101"\n')


def demux(tmp_path, text: str):
    config = tmp_path / "d.toml"
    config.write_text(text)
    return load_demux_settings(str(config))


def test_demux_metrics_bind_loopback_by_default(tmp_path):
    metrics = demux(tmp_path, "[snapshotter.metrics]\nenable = true\n").snapshotter.metrics
    assert (metrics.enable, metrics.host, metrics.ports) == (True, "127.0.0.1", (9000, 9999))


@pytest.mark.parametrize("ports", ["0-10", "10-5", "1-65536", "9000", "a-b"])
def test_demux_port_range_must_be_a_valid_range(tmp_path, ports):
    with pytest.raises(DemuxConfigError, match="port_range"):
        demux(tmp_path, f'[snapshotter.metrics]\nport_range = "{ports}"\n')


def test_demux_sd_port_must_lie_outside_the_range(tmp_path):
    text = '[snapshotter.metrics]\nport_range = "8000-8100"\n[snapshotter.metrics.service_discovery]\nport = 8080\n'
    with pytest.raises(DemuxConfigError, match="inside port_range"):
        demux(tmp_path, text)
