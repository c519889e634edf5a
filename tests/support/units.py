"""The systemd units and sample configs in contrib/, read as the tests need them."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
UNITS = {
    "cvmfs-snapshotter": CONTRIB / "systemd" / "cvmfs-snapshotter.service",
    "demux-snapshotter": CONTRIB / "systemd" / "demux-snapshotter.service",
    "http-address-resolver": CONTRIB / "systemd" / "http-address-resolver.service",
}
INSTALLED_BIN = "/usr/local/bin"
"""Where the units expect the console scripts (`pip install` as root)."""


def service_section(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(path)
    return parser["Service"]


def exec_start(path: Path) -> list[str]:
    return shlex.split(service_section(path)["ExecStart"])


def config_flag(path: Path) -> str:
    argv = exec_start(path)
    return argv[argv.index("--config") + 1]


def sample_config(unit_config_path: str) -> Path:
    """/etc/<daemon dir>/config.toml is shipped as contrib/config/<daemon dir>/config.toml."""
    etc = Path(unit_config_path)
    assert etc.parts[:2] == ("/", "etc"), unit_config_path
    return CONTRIB / "config" / Path(*etc.parts[2:])
