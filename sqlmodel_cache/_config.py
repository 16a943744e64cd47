"""Per-model and global settings."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs

from ._errors import ConfigurationError


def ttl_seconds(name: str, value: Any) -> int:
    """A TTL given as a positive int of seconds or a timedelta of whole seconds, in
    seconds (Redis keeps whole seconds); else ConfigurationError naming it."""
    if type(value) is int and value > 0:
        return value
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        if seconds > 0 and seconds == int(seconds):
            return int(seconds)
    raise ConfigurationError(
        f"{name} must be a positive int of seconds or a timedelta of whole seconds, got {value!r}"
    )


def _optional_ttl(value: Any) -> int | None:
    return None if value is None else ttl_seconds("ttl", value)


def seconds(name: str, value: Any) -> float:
    """A positive number of seconds, or a timedelta, as float seconds."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if type(value) not in (int, float) or not value > 0:
        raise ConfigurationError(
            f"{name} must be a positive number of seconds or a timedelta, got {value!r}"
        )
    return float(value)


def _ttl_float(value: Any) -> float:
    return seconds("ttl", value)


def _cooldown(value: Any) -> float:
    return seconds("cooldown", value)


def _natural_keys(value: Any) -> tuple[tuple[str, ...], ...]:
    """Natural keys as given (names, or tuples of names) as tuples of attribute names."""
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise ConfigurationError(
            "natural_keys must be a tuple of attribute names or of tuples of names, "
            f"e.g. ('email', ('tenant_id', 'slug')); got {value!r}"
        )
    keys: list[tuple[str, ...]] = []
    for item in value:
        fields = (item,) if isinstance(item, str) else item
        if (
            not isinstance(fields, (tuple, list))
            or not fields
            or not all(isinstance(f, str) and f.isidentifier() for f in fields)
            or len(set(fields)) != len(fields)
        ):
            raise ConfigurationError(
                f"each natural key must be an attribute name or a tuple of distinct names, "
                f"got {item!r}"
            )
        keys.append(tuple(fields))
    return tuple(keys)


def _bool(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not bool:
        raise ConfigurationError(f"{attribute.name} must be True or False, got {value!r}")


def _optional_bool(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and type(value) is not bool:
        raise ConfigurationError(f"{attribute.name} must be True, False or None, got {value!r}")


def _positive_int(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or value <= 0:
        raise ConfigurationError(f"{attribute.name} must be a positive int, got {value!r}")


@attrs.frozen
class CacheConfig:
    """How one model is cached.

    Attributes:
        ttl: seconds (an int, or a timedelta of whole seconds) its entries live; None
            takes ``configure(default_ttl=...)``.
        enabled: False sends every get of the model to the database (commits still
            invalidate).
        l1: whether its rows also live in the in-process tier; None follows
            ``configure(l1=...)``.
        natural_keys: unique attributes (a name, or a tuple of names for a composite
            one) that ``SQLModelCache.get_by`` finds rows by; each must be backed by a
            unique constraint or unique index of the table.
    """

    ttl: int | None = attrs.field(default=None, converter=_optional_ttl)
    enabled: bool = attrs.field(default=True, validator=_bool)
    l1: bool | None = attrs.field(default=None, validator=_optional_bool)
    natural_keys: tuple[tuple[str, ...], ...] = attrs.field(default=(), converter=_natural_keys)


@attrs.frozen
class L1Config:
    """The in-process tier.

    Attributes:
        maxsize: rows kept at most; the oldest goes first when full.
        ttl: seconds (or a timedelta) a row is kept at most.
    """

    maxsize: int = attrs.field(default=10_000, validator=_positive_int)
    ttl: float = attrs.field(default=30.0, converter=_ttl_float)


@attrs.frozen
class BreakerConfig:
    """The circuit breaker: it stops calling a failing cache and probes it for recovery.

    Attributes:
        failures: consecutive failed cache calls that open it (one, when the cache
            cannot be reached at all).
        cooldown: seconds (or a timedelta) between background probes while open.
    """

    failures: int = attrs.field(default=3, validator=_positive_int)
    cooldown: float = attrs.field(default=1.0, converter=_cooldown)


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
