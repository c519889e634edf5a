"""A supervisor may SIGTERM a daemon the instant its socket listens and must get a clean exit.

Each daemon's real `run()` is driven with its real composition root, only the server factory
swapped for a probe. At the moment the server would start listening, the probe checks that
SIGTERM is already handled (left at its default, the signal kills the daemon: the -15 exit seen
in CI), then sends it: `run()` must shut down in order and return.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

from snapmux.entrypoints.cvmfs_snapshotter import service as cvmfs_service
from snapmux.entrypoints.cvmfs_snapshotter.container import Container as CvmfsContainer
from snapmux.entrypoints.cvmfs_snapshotter.settings import load_settings as cvmfs_settings
from snapmux.entrypoints.demux_snapshotter import service as demux_service
from snapmux.entrypoints.demux_snapshotter.container import Container as DemuxContainer
from snapmux.entrypoints.demux_snapshotter.settings import DemuxSettings
from snapmux.entrypoints.http_address_resolver import service as resolver_service
from snapmux.entrypoints.http_address_resolver.container import Container as ResolverContainer
from snapmux.entrypoints.http_address_resolver.settings import load_settings as resolver_settings


class ListeningProbe:
    """Stands in for a daemon's server: records what it saw when it would have started listening."""

    def __init__(self) -> None:
        self.sigterm_handled_on_listen: bool | None = None
        self.stopped = False

    async def resource(self, *_args: object, **_kwargs: object) -> AsyncIterator[object]:
        self.sigterm_handled_on_listen = signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        if not self.sigterm_handled_on_listen:
            raise AssertionError("SIGTERM is at its default when the server listens: it would kill the daemon")
        os.kill(os.getpid(), signal.SIGTERM)
        try:
            yield SimpleNamespace(address="probe", listening=["probe"])
        finally:
            self.stopped = True


def demux(tmp_path, probe: ListeningProbe):
    settings = DemuxSettings.model_validate({"snapshotter": {"listener": {"address": str(tmp_path / "demux.sock")}}})
    container = DemuxContainer(settings=settings)
    container.server.set_provides(probe.resource)
    return demux_service.run(container)


def cvmfs(tmp_path, probe: ListeningProbe):
    settings = cvmfs_settings(root=str(tmp_path / "root"), address=str(tmp_path / "cvmfs.sock"), metrics_address="")
    container = CvmfsContainer(settings=settings)
    container.server.set_provides(probe.resource)
    return cvmfs_service.run(container)


def resolver(tmp_path, probe: ListeningProbe):
    static = tmp_path / "static.json"
    static.write_text("{}")
    settings = resolver_settings(address="127.0.0.1:0", backend="static", static={"path": str(static)})
    container = ResolverContainer(settings=settings)
    container.server.set_provides(probe.resource)
    return resolver_service.run(container)


@pytest.fixture
def restores_signal_handlers():
    """`run()` installs handlers on the test's loop; put the defaults back for the next test."""
    yield
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.mark.parametrize("daemon", [demux, cvmfs, resolver], ids=["demux", "cvmfs", "resolver"])
async def test_a_sigterm_the_moment_the_server_listens_is_a_clean_shutdown(tmp_path, daemon, restores_signal_handlers):
    probe = ListeningProbe()

    await daemon(tmp_path, probe)

    assert probe.sigterm_handled_on_listen is True
    assert probe.stopped, "run() returned without stopping the server"
