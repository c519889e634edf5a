"""How every daemon reads its settings: flags > environment > TOML file > defaults.

One order for all three daemons, so an operator who learns it once (and a container image that
sets env over a baked-in file) gets the same answer everywhere; and one way to turn a bad file
or value into a single line naming the key, so a misconfigured daemon never prints a traceback.
"""

from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError, create_model
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError
from pydantic_settings import TomlConfigSettingsSource

from snapmux.adapters.unix_sockets import SocketAccess, group_id
from snapmux.entrypoints.cli import LOG_FORMATS, ConfigError, log_level

S = TypeVar("S", bound="LayeredSettings")

__all__ = ["ConfigError", "LayeredSettings", "LogFormat", "LogLevel", "load_layered"]

_SHOW_INPUT = ("literal_error", "bool_parsing", "int_parsing", "string_type", "bool_type", "int_type", "float_type")
"""Errors whose pydantic message does not repeat the offending value, so we append it."""

_WRONG_TYPE = {"bool_type": "must be true or false", "int_type": "must be an integer",
               "float_type": "must be a number", "string_type": "must be a string"}
"""What strict validation of the file alone adds to the lax one: a value of the wrong TOML type."""

LogLevel = Annotated[str, BeforeValidator(log_level)]
"""logrus's level names in any case, in every daemon's file, environment and flag."""


def _log_format(value: object) -> str:
    if value not in LOG_FORMATS:
        raise ValueError(f"unknown log format {value!r} (text or json)")
    return str(value)


LogFormat = Annotated[str, BeforeValidator(_log_format)]


def _known_group(value: str | int | None) -> str | int | None:
    if value is not None:
        group_id(value)  # ValueError: no such group
    return value


SocketGroup = Annotated[str | int | None, AfterValidator(_known_group)]
"""A unix group (name or gid) that must exist now: a typo is a config error at start, not a 0600 socket."""


def socket_access(group: str | int | None) -> SocketAccess:
    """Who may connect to a daemon's unix sockets: root, plus `group` when one is configured."""
    return SocketAccess(None if group is None else group_id(group))


def _underscored(data: Any) -> Any:
    if isinstance(data, dict):
        return {str(key).replace("-", "_"): _underscored(value) for key, value in data.items()}
    return data


@functools.cache
def _plain(settings_cls: type[BaseSettings]) -> type[BaseModel]:
    """The settings' fields on a plain model: validating a BaseSettings would read the sources again."""
    fields: dict[str, Any] = {name: (field.annotation, field) for name, field in settings_cls.model_fields.items()}
    return create_model(f"{settings_cls.__name__}File", __config__=ConfigDict(extra="ignore"), **fields)


class StrictTomlSource(TomlConfigSettingsSource):
    """A TOML file has types, so a value of the wrong one is an error naming the key
    (`enable = "yes"` is not true, `port = "8080"` not a port), as it is for the Go originals.
    Environment values are strings by nature and stay lax (`=true`, `=8080`)."""

    dashed: ClassVar[bool] = False

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        data = _underscored(data) if self.dashed else data
        try:
            _plain(self.settings_cls).model_validate(data, strict=True)
        except ValidationError as error:
            wrong = [problem for problem in error.errors() if problem["type"] in _WRONG_TYPE]
            if wrong:
                raise ConfigError(_one(wrong[0], self.dashed)) from None
        return data


class DashedTomlSource(StrictTomlSource):
    """TOML keys as containerd configs spell them (`absolute-mountpoint`) map to fields."""

    dashed = True


class LayeredSettings(BaseSettings):
    """Base of each daemon's model: pydantic-settings ignores `toml_file` unless a TOML source is
    listed, so the order is spelled out here once instead of once per daemon."""

    dashed_toml_keys: ClassVar[bool] = False
    """True: the file may spell keys with dashes, as containerd's own snapshotters do."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        if not toml_file:
            return (init_settings, env_settings)
        toml_source = DashedTomlSource if cls.dashed_toml_keys else StrictTomlSource
        return (init_settings, env_settings, toml_source(settings_cls, toml_file))


def load_layered(
    settings_cls: type[S], config_file: str | Path | None, overrides: dict[str, Any], default_file: str | None = None
) -> S:
    """`overrides` are the flags (None: not given). An explicit `config_file` must exist; the
    `default_file` is used only when present, so a daemon starts without one."""
    if config_file is not None and not os.path.isfile(config_file):
        raise ConfigError(f"config error: {config_file}: not found")
    path = config_file if config_file is not None else default_file
    if path is not None and not os.path.isfile(path):
        path = None

    class FromFile(settings_cls):  # type: ignore[valid-type,misc]
        model_config = SettingsConfigDict(toml_file=path)

    try:
        return FromFile(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as error:
        raise ConfigError(one_line(error, dashed=settings_cls.dashed_toml_keys)) from None
    except SettingsError as error:  # an environment value that is not valid JSON for a table
        raise ConfigError(f"config error: {error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config error: {path}: invalid TOML: {error}") from None


def one_line(error: ValidationError, dashed: bool = False) -> str:
    """The first problem only: the operator fixes one key at a time, and a log line stays a line."""
    return _one(error.errors()[0], dashed)


def _one(first: Any, dashed: bool) -> str:
    parts = [str(part).replace("_", "-") if dashed else str(part) for part in first["loc"]]
    key = ".".join(parts)
    if first["type"] == "extra_forbidden":
        return f"config error: {key}: unknown key"
    message = _WRONG_TYPE.get(first["type"]) or first["msg"].removeprefix("Value error, ")
    if "input" in first and first["type"] in _SHOW_INPUT:
        message += f" (got {first['input']!r})"
    return f"config error: {key}: {message}" if key else f"config error: {message}"
