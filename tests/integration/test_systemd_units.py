"""`systemd-analyze verify` accepts each unit in contrib/systemd as it would be installed: the
console scripts it names exist (the test points ExecStart at the ones installed here) and it
prints no warning (systemd only warns, exit 0, about an unknown or misspelt key)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support.units import INSTALLED_BIN, UNITS

pytestmark = pytest.mark.integration


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        message = "systemd-analyze is missing (Debian package systemd, see scripts/install-deps)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.mark.parametrize("daemon", sorted(UNITS))
def test_systemd_analyze_verify_passes_without_a_warning(daemon, tmp_path):
    analyze = systemd_analyze()
    script = shutil.which(daemon)
    assert script, f"{daemon} is not installed (pip install -e .)"
    text = UNITS[daemon].read_text()
    assert f"ExecStart={INSTALLED_BIN}/{daemon} " in text
    unit = tmp_path / UNITS[daemon].name  # verify wants the unit's own name
    unit.write_text(text.replace(f"ExecStart={INSTALLED_BIN}/{daemon} ", f"ExecStart={script} "))
    done = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_verify_would_catch_a_misspelt_key(tmp_path):
    """The check above is only worth something if a bad unit fails it."""
    analyze = systemd_analyze()
    unit = tmp_path / "bad.service"
    unit.write_text("[Service]\nType=notify\nExecStart=/bin/true\nProtectSystm=strict\n")
    done = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=120)
    assert "Unknown key 'ProtectSystm'" in done.stderr
