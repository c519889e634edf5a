"""demux-snapshotter settings: one model, from flags > environment > TOML file > defaults.

TOML (`--config`, default /etc/demux-snapshotter/config.toml; the original Go
implementation's spellings, shown in comments, are accepted too):

    [snapshotter]
    mount_type_prefix = "vm:"        # "" returns the VM's mounts unchanged
    [snapshotter.listener]
    type = "unix"                    # Go: network = "unix"
    address = "/var/lib/demux-snapshotter/snapshotter.sock"
    socket_group = "snapmux"         # socket 0660 for this group (name or gid), new folders 0710;
                                     # default 0600/0700: root only
    [snapshotter.proxy.address.resolver]
    type = "http"
    address = "http://127.0.0.1:10001"   # Go: "127.0.0.1:10001" (no scheme: http://)
    timeout = "2s"
    [snapshotter.dialer]
    timeout = "5s"                   # bounds a whole dial to a VM, retries included
    retry_interval = "100ms"
    [snapshotter.cache]
    evict_on_connection_failure = true
    poll_connection_frequency = "60s"
    known_namespaces_file = "..."    # default: known-namespaces.json beside the listener socket; "" off
    [snapshotter.metrics]
    enable = false
    host = "127.0.0.1"               # where proxies and SD listen; the Go original used 0.0.0.0
    port_range = "9000-9999"
    service_discovery_port = 8080    # Go spelling of [snapshotter.metrics.service_discovery] port (enables it)
    [snapshotter.metrics.service_discovery]
    enable = false
    port = 8080
    [debug]
    logLevel = "info"                # logrus names, any case: trace, debug, info, warn, warning,
                                     # error, fatal, panic; --log-level wins
    logFormat = "text"               # or "json" (snapmux only); --log-format wins

Environment: `DEMUX_SNAPSHOTTER_<SECTION>__<KEY>`, e.g. `DEMUX_SNAPSHOTTER_SNAPSHOTTER__DIALER__TIMEOUT=2s`.
Unlike the Go original (which ignored unknown keys and started anyway), any unknown
key or bad value stops the daemon with one line naming the key.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from snapmux.adapters.metrics_proxy.port_range import PortRange
from snapmux.adapters.unix_sockets import SocketAccess
from snapmux.entrypoints.demux_snapshotter.main import DEFAULT_CONFIG
from snapmux.entrypoints.settings_sources import (
    ConfigError,
    LayeredSettings,
    LogFormat,
    LogLevel,
    SocketGroup,
    load_layered,
    socket_access,
)

DEFAULT_LISTENER = "/var/lib/demux-snapshotter/snapshotter.sock"

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

__all__ = ["DEFAULT_CONFIG", "ConfigError", "DemuxSettings", "load_settings", "parse_duration"]


def parse_duration(value: Any) -> float:
    """Go's time.ParseDuration spelling ("5s", "100ms", "1m30s") in seconds; bare numbers are seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value and _DURATION_PART.sub("", value) == "":
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(value))
    else:
        raise ValueError(f"invalid duration {value!r} (use e.g. 5s, 100ms, 1m30s)")
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListenerSettings(_Section):
    type: Literal["unix"] = Field("unix", validation_alias=AliasChoices("type", "network"))
    address: str = DEFAULT_LISTENER
    socket_group: SocketGroup = None

    @property
    def access(self) -> SocketAccess:
        """Who may connect to the snapshots socket (whoever can is containerd's equal)."""
        return socket_access(self.socket_group)


class ResolverSettings(_Section):
    type: Literal["http"] = "http"
    address: str = "http://127.0.0.1:10001"
    timeout: Duration = 2.0

    @field_validator("address")
    @classmethod
    def _url(cls, address: str) -> str:
        """The Go original dials `host:port` (its example file has no scheme) as http://."""
        if "://" not in address:
            address = f"http://{address}"
        url = urlparse(address)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(f"{address!r} is not an http:// or https:// URL")
        return address


class ResolverAddressSettings(_Section):
    resolver: ResolverSettings = Field(default_factory=ResolverSettings)


class ProxySettings(_Section):
    address: ResolverAddressSettings = Field(default_factory=ResolverAddressSettings)


class DialerSettings(_Section):
    timeout: Duration = 5.0
    retry_interval: Duration = 0.1


class CacheSettings(_Section):
    evict_on_connection_failure: bool = True
    poll_connection_frequency: Duration = 60.0
    known_namespaces_file: str | None = None
    """Namespaces reached before a restart, dialled again at startup (for GC); "" turns it off."""


class ServiceDiscoverySettings(_Section):
    enable: bool = False
    port: Port = 8080


class MetricsSettings(_Section):
    enable: bool = False
    host: str = "127.0.0.1"
    port_range: str = "9000-9999"
    service_discovery: ServiceDiscoverySettings = Field(default_factory=ServiceDiscoverySettings)

    @model_validator(mode="before")
    @classmethod
    def _go_spelling(cls, data: Any) -> Any:
        """Go's `service_discovery_port = N` means service discovery on port N."""
        if isinstance(data, dict) and "service_discovery_port" in data:
            data = dict(data)
            port = data.pop("service_discovery_port")
            table = dict(data.get("service_discovery") or {})
            if "port" in table and table["port"] != port:
                raise ValueError("service_discovery_port and service_discovery.port disagree")
            data["service_discovery"] = {"enable": True, **table, "port": port}
        return data

    @field_validator("port_range")
    @classmethod
    def _range(cls, text: str) -> str:
        return str(PortRange.parse(text))

    @model_validator(mode="after")
    def _discovery_outside_range(self) -> MetricsSettings:
        low, high = self.ports
        if low <= self.service_discovery.port <= high:
            raise ValueError(f"service_discovery port {self.service_discovery.port} is inside port_range {self.port_range}")
        return self

    @property
    def ports(self) -> tuple[int, int]:
        parsed = PortRange.parse(self.port_range)
        return parsed.first, parsed.last


class SnapshotterSection(_Section):
    listener: ListenerSettings = Field(default_factory=ListenerSettings)
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    dialer: DialerSettings = Field(default_factory=DialerSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    mount_type_prefix: str = "vm:"


class DebugSettings(_Section):
    log_level: LogLevel = Field("info", alias="logLevel")
    log_format: LogFormat = Field("text", alias="logFormat")


class DemuxSettings(LayeredSettings):
    model_config = SettingsConfigDict(env_prefix="DEMUX_SNAPSHOTTER_", env_nested_delimiter="__", extra="forbid")

    snapshotter: SnapshotterSection = Field(default_factory=SnapshotterSection)
    debug: DebugSettings = Field(default_factory=DebugSettings)

    @property
    def resolver(self) -> ResolverSettings:
        return self.snapshotter.proxy.address.resolver

    @property
    def known_namespaces_path(self) -> str | None:
        """Where the namespaces reached are remembered: as configured, else beside the socket."""
        configured = self.snapshotter.cache.known_namespaces_file
        if configured is None:
            return os.path.join(os.path.dirname(self.snapshotter.listener.address), "known-namespaces.json")
        return configured or None


def load_settings(
    config_file: str | None = None, log_level: str | None = None, log_format: str | None = None,
    address: str | None = None,
) -> DemuxSettings:
    """`config_file` None means the default path, which may be absent; an explicit one must exist.
    The flags override only their own keys: the rest of each table still comes from env or file."""
    overrides: dict[str, Any] = {}
    debug = {key: value for key, value in {"logLevel": log_level, "logFormat": log_format}.items() if value}
    if debug:
        overrides["debug"] = debug
    if address:
        overrides["snapshotter"] = {"listener": {"address": address}}
    return load_layered(DemuxSettings, config_file, overrides, default_file=DEFAULT_CONFIG)
