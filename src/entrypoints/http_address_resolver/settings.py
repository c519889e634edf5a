"""http-address-resolver settings: one model, from flags > environment > TOML file > defaults.

TOML at `--config`; environment `SNAPMUX_RESOLVER_<FIELD>` (nested with `__`, e.g.
`SNAPMUX_RESOLVER_SHIM_BASE__DIR`) overrides the file; `--address`/`--log-level`/`--log-format`
override both. `log_level` takes logrus's names in any case (trace, debug, info, warn, warning,
error, fatal, panic); `log_format` is "text" (logrus's key=value lines) or "json".
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from snapmux.entrypoints.settings_sources import LayeredSettings, LogFormat, LogLevel, load_layered


class FirecrackerControlSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    containerd_socket: str = "/run/firecracker-containerd/containerd.sock"
    service: str = "Firecracker"
    timeout_seconds: float = Field(2.0, gt=0)


class ShimBaseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: str = "/var/lib/firecracker-containerd/shim-base"
    containerd_namespace: str = "default"
    cache_ttl_seconds: float = Field(1.0, ge=0)


class StaticSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = None


class ResolverSettings(LayeredSettings):
    model_config = SettingsConfigDict(env_prefix="SNAPMUX_RESOLVER_", env_nested_delimiter="__", extra="forbid")

    allow_non_loopback: bool = False
    address: str = "127.0.0.1:10001"
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"
    access_log: bool = True
    shutdown_grace_seconds: float = Field(5.0, ge=0)
    backend: Literal["firecracker-control", "shim-base", "static"] = "firecracker-control"
    snapshotter_port: int = Field(10000, ge=1, le=65535)
    metrics_port: int = Field(10001, ge=1, le=65535)
    firecracker_control: FirecrackerControlSettings = FirecrackerControlSettings()
    shim_base: ShimBaseSettings = ShimBaseSettings()
    static: StaticSettings = StaticSettings()

    @field_validator("address")
    @classmethod
    def _address_form(cls, value: str, info: ValidationInfo) -> str:
        host, _ = split_address(value)
        if not info.data.get("allow_non_loopback") and not is_loopback(host):
            raise ValueError(f"{value!r} is not loopback; set allow_non_loopback = true to expose it")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ResolverSettings:
        if self.backend == "static" and not self.static.path:
            raise ValueError("backend 'static' needs static.path")
        return self


def load_settings(config: Path | str | None = None, **overrides: object) -> ResolverSettings:
    """`overrides` are the flags (None: not given); a bad file or value is a ConfigError naming the key."""
    return load_layered(ResolverSettings, config, overrides)


def split_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port`; port 0 asks the kernel for a free one."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535 or not host:
        raise ValueError(f"address {address!r} must be host:port")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
