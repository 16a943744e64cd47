"""Which models are cached, and everything precomputed to cache them."""

from __future__ import annotations

import threading
from typing import Any, ClassVar, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import ColumnProperty, Mapper, RelationshipProperty, configure_mappers
from sqlmodel import SQLModel

from . import _compat
from ._codec import RowCodec
from ._config import CacheConfig
from ._errors import ConfigurationError
from ._keys import KeyTemplate

T = TypeVar("T", bound=type)

_EAGER = {"joined", "selectin", "subquery", "immediate"}


class ModelInfo:
    """A cached model's mapper facts, key template and codec, built once."""

    __slots__ = (
        "attrs",
        "cls",
        "codec",
        "column_types",
        "config",
        "eager",
        "expire_on_hit",
        "get_clause",
        "identity_class",
        "mapper",
        "name",
        "param_key_set",
        "param_keys",
        "pk_names",
        "pk_positions",
        "result_metadata",
        "template",
    )

    def __init__(self, cls: type, config: CacheConfig) -> None:
        mapper: Mapper[Any] = sa.inspect(cls)
        if mapper.inherits is not None or mapper.polymorphic_on is not None:
            raise ConfigurationError(
                f"{cls.__name__} uses mapper inheritance, which sqlmodel-cache does not cache"
            )
        self.cls = cls
        self.mapper = mapper
        self.identity_class = _compat.identity_class(mapper)
        self.name = cls.__name__
        self.config = config
        pk_keys = [mapper.get_property_by_column(col).key for col in mapper.primary_key]
        cached: list[ColumnProperty[Any]] = []
        expired: list[ColumnProperty[Any]] = []
        for prop in mapper.column_attrs:
            column = prop.columns[0]
            plain = len(prop.columns) == 1 and isinstance(column, sa.Column)
            (cached if plain and not prop.deferred else expired).append(prop)
        self.attrs = tuple(prop.key for prop in cached)
        self.pk_positions = tuple(self.attrs.index(key) for key in pk_keys)
        self.pk_names = tuple(pk_keys)
        self.expire_on_hit = tuple(prop.key for prop in expired)
        shape = f"{cls.__module__}.{cls.__qualname__}@{mapper.local_table}"
        self.column_types = {prop.key: prop.columns[0].type for prop in cached}
        self.codec = RowCodec(shape, list(self.column_types.items()))
        self.template = KeyTemplate(self.name, pk_keys)
        self.get_clause: Any = None
        self.refresh_get_clause()
        self.eager = tuple(
            rel.key
            for rel in mapper.relationships
            if isinstance(rel, RelationshipProperty) and rel.lazy in _EAGER
        )
        self.result_metadata = _compat.result_metadata(self.name)

    def refresh_get_clause(self) -> bool:
        """Take the mapper's current primary-key clause; True if it had changed.

        SQLAlchemy builds it anew whenever mappers are (re)configured, for
        instance when a model is defined after the first queries ran.
        """
        clause, params = _compat.get_clause(self.mapper)
        if clause is self.get_clause:
            return False
        self.get_clause = clause
        self.param_keys = tuple(params[col].key for col in self.mapper.primary_key)
        self.param_key_set = frozenset(self.param_keys)
        return True

    def ttl(self, default: int) -> int:
        """The model's TTL, or the global default."""
        return self.config.ttl if self.config.ttl is not None else default


class Registry:
    """Every opted-in model, and the built ModelInfo of those used so far."""

    def __init__(self) -> None:
        self._configs: dict[type, CacheConfig] = {}
        # Maps every mapped class seen by a load to its info, or None when not cached.
        self._infos: dict[type, ModelInfo | None] = {}
        self._lock = threading.Lock()

    def register(self, cls: type, config: CacheConfig) -> None:
        """Opt a mapped class in (or refresh its config)."""
        with self._lock:
            self._configs[cls] = config
            self._infos.pop(cls, None)

    def models(self) -> tuple[type, ...]:
        """Registered classes, in registration order."""
        return tuple(self._configs)

    def config(self, cls: type) -> CacheConfig | None:
        """The config of a registered class, else None."""
        return self._configs.get(cls)

    def info(self, cls: type) -> ModelInfo | None:
        """The ModelInfo of a cached class (None when the class is not cached)."""
        try:
            return self._infos[cls]
        except KeyError:
            pass
        config = self._configs.get(cls)
        if config is None:
            info = None
        else:
            configure_mappers()  # relationships and deferred columns must be final
            info = ModelInfo(cls, config)
        with self._lock:
            self._infos[cls] = info
        return info


registry = Registry()


def _config_of(cls: type) -> CacheConfig | None:
    config = getattr(cls, "__cache_config__", None)
    if config is None:
        return None
    if not isinstance(config, CacheConfig):
        raise ConfigurationError(
            f"{cls.__name__}.__cache_config__ must be a CacheConfig, got {config!r}"
        )
    return config


@event.listens_for(Mapper, "instrument_class")
def _on_mapped(mapper: Mapper[Any], cls: type) -> None:
    # Every class mapped after import is checked for __cache_config__ (set
    # directly, by @cached, or inherited from CachedModel).
    config = _config_of(cls)
    if config is not None:
        registry.register(cls, config)


@overload
def cached(cls: T, /) -> T: ...
@overload
def cached(*, ttl: int | None = None, enabled: bool = True, l1: bool | None = None) -> Any: ...


def cached(
    cls: Any = None, /, *, ttl: int | None = None, enabled: bool = True, l1: bool | None = None
) -> Any:
    """Opt a table model in: ``@cached`` or ``@cached(ttl=600, enabled=True, l1=None)``."""
    config = CacheConfig(ttl=ttl, enabled=enabled, l1=l1)

    def decorate(target: T) -> T:
        if not isinstance(target, type) or sa.inspect(target, raiseerr=False) is None:
            raise ConfigurationError(
                f"@cached needs a mapped table model (SQLModel with table=True), got {target!r}"
            )
        target.__cache_config__ = config  # type: ignore[attr-defined]
        registry.register(target, config)
        return target

    return decorate if cls is None else decorate(cls)


class CachedModel(SQLModel):
    """Inherit it instead of SQLModel to cache a model: ``class Hero(CachedModel, table=True)``."""

    __cache_config__: ClassVar[CacheConfig] = CacheConfig()
