"""The contrib/ systemd units and sample configs agree with the daemons' own defaults: the socket
and state directories systemd creates are the ones the daemons use, the `--config` each unit
passes is a shipped sample, and every sample loads as the daemon would load it."""

from __future__ import annotations

import os

import pytest

from snapmux.entrypoints.cvmfs_snapshotter import settings as cvmfs
from snapmux.entrypoints.demux_snapshotter import settings as demux
from snapmux.entrypoints.http_address_resolver import settings as resolver
from tests.support.units import INSTALLED_BIN, UNITS, config_flag, exec_start, sample_config, service_section

LOADERS = {
    "cvmfs-snapshotter": cvmfs.load_settings,
    "demux-snapshotter": demux.load_settings,
    "http-address-resolver": resolver.load_settings,
}


@pytest.mark.parametrize("daemon", sorted(UNITS))
def test_each_unit_runs_its_console_script_with_a_shipped_config_under_notify(daemon):
    service = service_section(UNITS[daemon])
    assert service["Type"] == "notify"
    assert exec_start(UNITS[daemon])[0] == f"{INSTALLED_BIN}/{daemon}"
    assert sample_config(config_flag(UNITS[daemon])).is_file()
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["PrivateTmp"] == "yes"


@pytest.mark.parametrize("daemon", sorted(UNITS))
def test_each_sample_config_loads_and_shows_the_defaults_it_claims(daemon, tmp_path):
    loaded = LOADERS[daemon](str(sample_config(config_flag(UNITS[daemon]))))
    (tmp_path / "empty.toml").write_text("")
    defaults = LOADERS[daemon](str(tmp_path / "empty.toml"))
    if daemon == "demux-snapshotter":  # the one deliberate difference: SD and /healthz on
        assert loaded.snapshotter.metrics.service_discovery.enable
        loaded.snapshotter.metrics.service_discovery.enable = False
    assert loaded.model_dump() == defaults.model_dump()


def test_cvmfs_snapshotter_unit_creates_the_default_root_and_socket_directory():
    service = service_section(UNITS["cvmfs-snapshotter"])
    assert f"/var/lib/{service['StateDirectory']}" == cvmfs.DEFAULT_ROOT
    assert f"/run/{service['RuntimeDirectory']}" == os.path.dirname(cvmfs.DEFAULT_ADDRESS)
    assert service["RuntimeDirectoryMode"] == service["StateDirectoryMode"] == "0700"  # as the daemon makes it
    assert "CAP_SYS_ADMIN" in service["CapabilityBoundingSet"].split() and "PrivateDevices" not in service


def test_demux_unit_creates_the_default_listener_directory_and_reads_the_default_config():
    service = service_section(UNITS["demux-snapshotter"])
    assert f"/var/lib/{service['StateDirectory']}" == os.path.dirname(demux.DEFAULT_LISTENER)
    assert config_flag(UNITS["demux-snapshotter"]) == demux.DEFAULT_CONFIG


def test_the_demux_default_resolver_is_where_the_resolver_listens_by_default():
    assert demux.ResolverSettings().address == f"http://{resolver.ResolverSettings.model_fields['address'].default}"
    assert "StateDirectory" not in service_section(UNITS["http-address-resolver"])  # it writes nothing
