"""snapmux: containerd remote snapshotters for Firecracker microVMs and CernVM-FS."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("snapmux")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
