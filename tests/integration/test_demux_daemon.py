"""The demux-snapshotter daemon's own lifecycle: listener folder and stale socket, clean exit."""

from __future__ import annotations

import socket

import pytest

from tests.integration.conftest import require_binaries, unix_socket_listening
from tests.support.containerd import Daemon
from tests.support.demux_stack import demux_config

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _demux_installed():
    require_binaries("demux-snapshotter")


def test_creates_the_listener_folder_replaces_a_stale_socket_and_exits_cleanly(tmp_path):
    listen = tmp_path / "not" / "yet" / "demux.sock"
    listen.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(listen))  # a socket file nobody listens on: what a killed demux leaves behind
    stale.close()
    config = demux_config(tmp_path, str(listen), "http://127.0.0.1:9")
    demux = Daemon(["demux-snapshotter", "--config", str(config)], tmp_path / "demux.log")
    demux.start(lambda: unix_socket_listening(str(listen)))
    try:
        assert unix_socket_listening(str(listen))
        assert demux.stop() == 0
        assert not listen.exists()
    finally:
        demux.kill()


def test_a_missing_listener_folder_is_created(tmp_path):
    listen = tmp_path / "run" / "demux" / "demux.sock"
    config = demux_config(tmp_path, str(listen), "http://127.0.0.1:9")
    demux = Daemon(["demux-snapshotter", "--config", str(config)], tmp_path / "demux.log")
    demux.start(lambda: unix_socket_listening(str(listen)))
    try:
        assert (listen.parent.stat().st_mode & 0o777) == 0o700
    finally:
        assert demux.stop() == 0


def test_another_live_demux_on_the_socket_is_not_clobbered(tmp_path):
    listen = tmp_path / "demux.sock"
    config = demux_config(tmp_path, str(listen), "http://127.0.0.1:9")
    first = Daemon(["demux-snapshotter", "--config", str(config)], tmp_path / "first.log")
    first.start(lambda: unix_socket_listening(str(listen)))
    try:
        second = Daemon(["demux-snapshotter", "--config", str(config)], tmp_path / "second.log")
        with pytest.raises(RuntimeError, match="exited"):
            second.start(lambda: False, timeout=30)
        assert "another process is listening" in second.log()
        assert unix_socket_listening(str(listen))
    finally:
        first.stop()
