"""cvmfs-snapshotter settings: one model, from flags > environment > TOML file > defaults.

TOML (`--config FILE`; keys may be spelled with dashes, as containerd's own
snapshotters spell them, or underscores):

    root = "/var/lib/containerd-cvmfs-grpc"
    address = "/run/containerd-cvmfs-grpc/containerd-cvmfs-grpc.sock"   # or "vsock://10000"
    log-level = "info"          # trace, debug, info, warn/warning, error, fatal, panic (any case)
    log-format = "text"         # or "json"
    repository = "unpacked.cern.ch"
    absolute-mountpoint = "/cvmfs/unpacked.cern.ch"   # default: /cvmfs/<repository>
    foreign-layers = "scan"   # layers not written by `cvmfs-snapshotter publish` (unpacked.cern.ch):
                              # "scan": served from DUCC's `.chains` when present; else the first
                              #   Prepare scans the layer's `.wh.` files (within foreign-scan-budget)
                              #   and serves it in place, deletions applied; over budget, it is
                              #   downloaded this once and the scan finishes in the background
                              # "serve": served at once, `.wh.` whiteouts NOT applied (deleted files reappear)
                              # "download": never served remotely
    serve-foreign-layers = false   # older spelling: true means foreign-layers = "serve"
    foreign-scan-budget = 5.0      # seconds a Prepare waits for a foreign layer's scan (0: never waits)

    metrics-address = "127.0.0.1:9101"   # Prometheus /metrics: host:port, vsock://PORT or "" (off);
                                         # default off, or vsock://10001 when listening on vsock (in a VM)
    socket-group = "snapmux"  # unix sockets (snapshots API, unix:// metrics) 0660 for this group
                              # (name or gid), their new folders 0710; default: 0600/0700, root only

    [listener]              # alternative to `address`, used only when `address` is not set
    network = "vsock"       # "unix" (listen on `address`) or "vsock"
    port = 10000            # the in-VM AF_VSOCK port

Environment: `SNAPMUX_CVMFS_<FIELD>` (e.g. `SNAPMUX_CVMFS_ROOT`, `SNAPMUX_CVMFS_ABSOLUTE_MOUNTPOINT`,
`SNAPMUX_CVMFS_LISTENER__NETWORK`); they override the file, as for every snapmux daemon
(`snapmux.entrypoints.settings_sources`). Unknown keys and wrong types are errors naming the key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from snapmux.adapters.prometheus.http import parse_listen_address
from snapmux.adapters.unix_sockets import SocketAccess
from snapmux.entrypoints.settings_sources import (
    ConfigError,
    LayeredSettings,
    LogFormat,
    LogLevel,
    SocketGroup,
    load_layered,
    socket_access,
)

DEFAULT_ADDRESS = "/run/containerd-cvmfs-grpc/containerd-cvmfs-grpc.sock"
DEFAULT_ROOT = "/var/lib/containerd-cvmfs-grpc"
DEFAULT_VSOCK_PORT = 10000
DEFAULT_METRICS_VSOCK_PORT = 10001
"""The `metrics_port` the address resolver reports by default: the demux proxies scrapes to it."""
VSOCK_SCHEME = "vsock://"
DEFAULT_SCAN_BUDGET = 5.0
"""Seconds: a 100k-file layer scans in 0.1-1 s; a download and unpack of it costs several."""

__all__ = ["ConfigError", "CvmfsSnapshotterSettings", "load_settings", "vsock_port"]


class ListenerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    network: Literal["unix", "vsock"] = "unix"
    port: int = Field(DEFAULT_VSOCK_PORT, ge=1, le=0xFFFFFFFE)


class CvmfsSnapshotterSettings(LayeredSettings):
    model_config = SettingsConfigDict(env_prefix="SNAPMUX_CVMFS_", env_nested_delimiter="__", extra="forbid")
    dashed_toml_keys = True

    root: str = DEFAULT_ROOT
    address: str = DEFAULT_ADDRESS
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"
    repository: str = "unpacked.cern.ch"
    absolute_mountpoint: str = ""
    foreign_layers: Literal["scan", "serve", "download"] = "scan"
    serve_foreign_layers: bool = False
    foreign_scan_budget: float = Field(DEFAULT_SCAN_BUDGET, ge=0, le=3600, allow_inf_nan=False)
    listener: ListenerSettings = Field(default_factory=ListenerSettings)
    metrics_address: str | None = None
    socket_group: SocketGroup = None

    def socket_access(self) -> SocketAccess:
        """Who may connect to the daemon's unix sockets."""
        return socket_access(self.socket_group)

    @field_validator("metrics_address")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        if value:
            parse_listen_address(value)  # ValueError says what is wrong
        return value

    @model_validator(mode="after")
    def _foreign_layers(self) -> CvmfsSnapshotterSettings:
        """`serve-foreign-layers = true` keeps meaning "serve them now"; both keys must agree."""
        if self.serve_foreign_layers:
            if "foreign_layers" in self.model_fields_set and self.foreign_layers != "serve":
                raise ValueError(f'serve-foreign-layers = true contradicts foreign-layers = "{self.foreign_layers}"')
            self.foreign_layers = "serve"
        return self

    @model_validator(mode="after")
    def _derive_mountpoint(self) -> CvmfsSnapshotterSettings:
        if not self.absolute_mountpoint:
            self.absolute_mountpoint = f"/cvmfs/{self.repository}"
        return self

    def listen_address(self) -> str:
        """`address` when set anywhere, else the `[listener]` table; `vsock://PORT` means AF_VSOCK."""
        if "address" not in self.model_fields_set and self.listener.network == "vsock":
            return f"{VSOCK_SCHEME}{self.listener.port}"
        if self.address == VSOCK_SCHEME.rstrip("/") or self.address == VSOCK_SCHEME:
            return f"{VSOCK_SCHEME}{self.listener.port}"
        return self.address


    def metrics_listen_address(self) -> str | None:
        """Where /metrics is served: as configured ("" is off), else vsock://10001 inside a VM, else off."""
        if self.metrics_address is not None:
            return self.metrics_address or None
        if self.listen_address().startswith(VSOCK_SCHEME):
            return f"{VSOCK_SCHEME}{DEFAULT_METRICS_VSOCK_PORT}"
        return None


def vsock_port(address: str) -> int | None:
    """The port of a `vsock://PORT` address, None for a unix socket path."""
    if not address.startswith(VSOCK_SCHEME):
        return None
    text = address[len(VSOCK_SCHEME) :] or str(DEFAULT_VSOCK_PORT)
    if not text.isdigit():
        raise ConfigError(f"config error: address: {address!r} is not vsock://<port>")
    return int(text)


def load_settings(config_file: str | None = None, **overrides: Any) -> CvmfsSnapshotterSettings:
    """Flags (`overrides`, None meaning unset) > env > TOML file > defaults; errors name the key."""
    return load_layered(CvmfsSnapshotterSettings, config_file, overrides)
