"""Per-model and global settings."""

from __future__ import annotations

from typing import Any

import attrs

from ._errors import ConfigurationError


def check_ttl(name: str, value: Any, *, optional: bool) -> None:
    """Raise ConfigurationError unless value is a positive int (or None when optional)."""
    if value is None and optional:
        return
    if type(value) is not int or value <= 0:
        raise ConfigurationError(f"{name} must be a positive int of seconds, got {value!r}")


def _ttl(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_ttl(attribute.name, value, optional=True)


def _bool(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not bool:
        raise ConfigurationError(f"{attribute.name} must be True or False, got {value!r}")


def _optional_bool(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and type(value) is not bool:
        raise ConfigurationError(f"{attribute.name} must be True, False or None, got {value!r}")


def _positive_int(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or value <= 0:
        raise ConfigurationError(f"{attribute.name} must be a positive int, got {value!r}")


def _positive_seconds(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) not in (int, float) or not value > 0:
        raise ConfigurationError(
            f"{attribute.name} must be a positive number of seconds, got {value!r}"
        )


@attrs.frozen
class CacheConfig:
    """How one model is cached: its TTL (None = the global default), whether at all, and
    whether in the in-process tier (None = as configured globally)."""

    ttl: int | None = attrs.field(default=None, validator=_ttl)
    enabled: bool = attrs.field(default=True, validator=_bool)
    l1: bool | None = attrs.field(default=None, validator=_optional_bool)


@attrs.frozen
class L1Config:
    """The in-process tier: at most maxsize rows, each kept at most ttl seconds."""

    maxsize: int = attrs.field(default=10_000, validator=_positive_int)
    ttl: float = attrs.field(default=30.0, validator=_positive_seconds)


@attrs.frozen
class BreakerConfig:
    """The circuit breaker: open after ``failures`` consecutive cache failures (at once when
    the cache cannot be reached), then probe it in the background every ``cooldown`` seconds."""

    failures: int = attrs.field(default=3, validator=_positive_int)
    cooldown: float = attrs.field(default=1.0, validator=_positive_seconds)


@attrs.frozen
class Settings:
    """The global configuration, as returned by SQLModelCache.get_config()."""

    transport: Any
    default_ttl: int
    key_prefix: str
    enabled: bool
    l1: L1Config | None = None
    breaker: BreakerConfig = BreakerConfig()
    max_entry_bytes: int = 1 << 20
    snapshot_isolation: bool = False
