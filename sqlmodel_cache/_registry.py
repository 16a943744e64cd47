"""Which models are cached, and everything precomputed to cache and invalidate them.

Concepts:

- a **keyspace** is where the rows of one identity are cached: a class and its
  mapped subclasses (single- or joined-table inheritance) share one, named
  after the hierarchy's base class, so a write through any class of it drops
  the key that every class reads (``Employee:id=5``);
- a **ModelInfo** holds one cached class's mapper facts: the columns it
  stores, its codec, and its **family** (itself and its cached subclasses,
  whose entries a get of this class may be answered with);
- a **route** says where the rows of any mapped class are cached: every
  keyspace reading one of its tables, by primary key when the keyspace's key
  columns are the class's, else as a whole. Two classes mapped to one table
  thus invalidate each other, even when only one of them is cached.

Everything is built lazily and rebuilt whenever a class is mapped, so models
defined late (after configure(), after the first queries) are seen.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import ColumnProperty, Mapper, RelationshipProperty, configure_mappers
from sqlmodel import SQLModel

from . import _compat
from ._codec import RowCodec
from ._config import CacheConfig
from ._errors import ConfigurationError
from ._forks import reset_after_fork
from ._keys import KeyTemplate, canonical, loaded_type
from ._natural import natural_keys_of
from ._statements import tables_pattern

T = TypeVar("T", bound=type)
log = logging.getLogger("sqlmodel_cache")

_EAGER = {"joined", "selectin", "subquery", "immediate"}


class Keyspace:
    """The keys of one identity: a base class and every class that inherits its rows."""

    __slots__ = (
        "fields",
        "mapper",
        "members",
        "name",
        "pk_columns",
        "single",
        "tables",
        "template",
    )

    def __init__(self, root: Mapper[Any]) -> None:
        self.mapper = root
        self.name: str = root.class_.__name__
        self.pk_columns = tuple(root.primary_key)
        self.fields = tuple(root.get_property_by_column(col).key for col in self.pk_columns)
        self.template = KeyTemplate(self.name, self.fields)
        mappers = [m for m in root.self_and_descendants if _identity_root(m) is root]
        self.tables = frozenset(
            table for m in mappers for table in m.tables if isinstance(table, sa.Table)
        )
        self.single = len(mappers) == 1  # no inheritance: entries never hold a subclass
        self.members: dict[str, ModelInfo] = {}  # fingerprint -> cached class of the hierarchy

    def __repr__(self) -> str:
        return f"Keyspace({self.name})"


def _identity_root(mapper: Mapper[Any]) -> Mapper[Any]:
    return sa.inspect(_compat.identity_class(mapper))


def _plain(prop: ColumnProperty[Any]) -> bool:
    """A property stored in table columns (one, or several equated by joined inheritance)."""
    return all(isinstance(column, sa.Column) for column in prop.columns)


def _problem(mapper: Mapper[Any], keyspace: Keyspace) -> str | None:
    """Why rows of this mapping cannot be cached, or None."""
    if any(m.concrete for m in mapper.base_mapper.self_and_descendants):
        return "concrete table inheritance: one identity may come from several tables"
    selectable = mapper.persist_selectable
    if not isinstance(selectable, sa.Table) and mapper.inherits is None:
        return f"mapped to {type(selectable).__name__}, not a table"
    if tuple(mapper.primary_key) != keyspace.pk_columns:
        return "its primary key is not its base class's"
    for column in mapper.primary_key:
        prop = mapper.get_property_by_column(column)
        if not isinstance(prop, ColumnProperty) or not _plain(prop) or prop.deferred:
            return f"primary-key attribute {prop.key} is not a plain, loaded column"
    return None


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
        "family",
        "get_clause",
        "identity_class",
        "keyspace",
        "mapper",
        "name",
        "natural",
        "param_key_set",
        "param_keys",
        "pk_names",
        "pk_positions",
        "pk_types",
        "problem",
        "result_metadata",
        "template",
    )

    def __init__(self, cls: type, config: CacheConfig, keyspace: Keyspace) -> None:
        mapper: Mapper[Any] = sa.inspect(cls)
        self.cls = cls
        self.mapper = mapper
        self.name = cls.__name__
        self.config = config
        self.keyspace = keyspace
        self.template = keyspace.template
        self.identity_class = _compat.identity_class(mapper)
        # (member, required positions or None) by fingerprint: the entries a get of
        # this class may be served from. Filled in by the registry.
        self.family: dict[str, tuple[ModelInfo, tuple[int, ...] | None]] = {}
        self.problem = _problem(mapper, keyspace)
        stored: list[ColumnProperty[Any]] = []
        expired: list[ColumnProperty[Any]] = []
        for prop in mapper.column_attrs:
            (stored if _plain(prop) and not prop.deferred else expired).append(prop)
        self.attrs = tuple(prop.key for prop in stored)
        self.expire_on_hit = tuple(prop.key for prop in expired)
        self.column_types = {prop.key: prop.columns[0].type for prop in stored}
        # The class by name only: the same model imported from another module (a
        # script's __main__, another service) must read the same entries.
        shape = f"{cls.__name__}@{mapper.local_table}"
        self.codec = RowCodec(shape, list(self.column_types.items()))
        self.eager = tuple(
            rel.key
            for rel in mapper.relationships
            if isinstance(rel, RelationshipProperty) and rel.lazy in _EAGER
        )
        self.result_metadata = _compat.result_metadata(self.name)
        # Attributes holding the primary key, in the mapper's (and the keyspace's) order.
        self.pk_names = tuple(mapper.get_property_by_column(col).key for col in mapper.primary_key)
        self.pk_types = tuple(loaded_type(col.type) for col in mapper.primary_key)
        self.pk_positions: tuple[int, ...] = ()
        if self.problem is None:
            self.pk_positions = tuple(self.attrs.index(name) for name in self.pk_names)
        else:
            _warn_uncached(self)
        self.get_clause: Any = None
        self.refresh_get_clause()
        self.natural = natural_keys_of(mapper, config.natural_keys, keyspace.name)

    def refresh_get_clause(self) -> bool:
        """Take the mapper's current primary-key clause; True if it had changed.

        SQLAlchemy builds it anew whenever mappers are (re)configured, for
        instance when a model is defined after the first queries ran.
        """
        clause, params = _compat.get_clause(self.mapper)
        if clause is self.get_clause:
            return False
        self.get_clause = clause
        # The keyspace's key columns, in the same order (a mapping with a problem
        # may have others, but its gets are recognised all the same, to be counted).
        self.param_keys = tuple(params[col].key for col in self.mapper.primary_key)
        self.param_key_set = frozenset(self.param_keys)
        return True

    def ttl(self, default: int) -> int:
        """The model's TTL, or the global default."""
        return self.config.ttl if self.config.ttl is not None else default

    def identity(self, ident: Any) -> list[Any]:
        """Primary-key values in mapper order, from ident as session.get() takes it, each
        converted to the type the row's own key holds (a UUID given as text, say)."""
        names = self.pk_names
        if isinstance(ident, Mapping):
            missing = [name for name in names if name not in ident]
            if missing or len(ident) != len(names):
                raise ConfigurationError(
                    f"{self.name} identity needs exactly the keys {names}, got {sorted(ident)}"
                )
            values = [ident[name] for name in names]
        else:
            values = list(ident) if isinstance(ident, (tuple, list)) else [ident]
        if len(values) != len(names) or None in values:
            raise ConfigurationError(
                f"{self.name} identity needs {len(names)} non-None value(s) for {names}, "
                f"got {ident!r}"
            )
        converted = []
        for name, kind, value in zip(names, self.pk_types, values):
            try:
                converted.append(canonical(value, kind))
            except ValueError as exc:
                raise ConfigurationError(
                    f"{self.name}.{name} holds {kind.__name__ if kind else 'its own'} values: "
                    f"cannot find the row of {value!r} ({exc})"
                ) from None
        return converted

    def __repr__(self) -> str:
        return f"ModelInfo({self.name})"


def cached_info(model: Any) -> ModelInfo:
    """The ModelInfo of a cached model class; ConfigurationError for anything else."""
    if not isinstance(model, type) or sa.inspect(model, raiseerr=False) is None:
        raise ConfigurationError(f"{model!r} is not a mapped model class")
    info = registry.info(model)
    if info is None:
        raise ConfigurationError(
            f"{model.__name__} is not cached: give it __cache_config__, @cached or CachedModel"
        )
    return info


_warned: set[str] = set()


def _warn_uncached(info: ModelInfo) -> None:
    """Say once per process that a class asked to be cached cannot be, and why."""
    qualified = f"{info.cls.__module__}.{info.cls.__qualname__}"
    if qualified not in _warned:
        _warned.add(qualified)
        log.warning(
            "%s is not cached: %s; its gets go to the database (SQLModelCache.explain(%s))",
            info.name,
            info.problem,
            info.name,
        )


def _required(getter: ModelInfo, member: ModelInfo) -> tuple[int, ...] | None:
    """Positions in member's values that a database get of getter would have loaded.

    A get of a base class loads the base columns; a subclass's own columns only
    when the base's polymorphic loading includes it. None: every position (no
    inheritance, so an entry always holds the whole row).
    """
    if getter.keyspace.single:
        return None
    if member is getter or _compat.loads_subclass_columns(getter.mapper, member.mapper):
        names: Sequence[str] = member.attrs
    else:
        names = getter.attrs
    return tuple(member.attrs.index(name) for name in names if name in member.attrs)


Target = tuple[Keyspace, tuple[int, ...] | None]


class Route:
    """Where the rows of one mapped class are cached: (keyspace, key positions or None)."""

    __slots__ = ("pk_names", "targets")

    def __init__(
        self,
        pk_names: tuple[str, ...] | None,
        targets: list[tuple[Keyspace, tuple[int, ...] | None]],
    ) -> None:
        self.pk_names = pk_names  # attributes holding the primary key, in mapper order
        self.targets = tuple(targets)


class Registry:
    """Every opted-in model, and what was derived from them (rebuilt when classes are mapped)."""

    def __init__(self) -> None:
        self._configs: dict[type, CacheConfig] = {}
        self._lock = threading.RLock()
        self._clear()

    def _after_fork(self) -> None:
        self._lock = threading.RLock()

    def _clear(self) -> None:
        # Maps every mapped class seen so far to its info, or None when not cached.
        self._infos: dict[type, ModelInfo | None] = {}
        self._keyspaces: dict[Mapper[Any], Keyspace] = {}
        self._routes: dict[type, Route | None] = {}
        self._table_routes: dict[sa.Table, Route | None] = {}
        self._names: tuple[re.Pattern[str] | None, dict[str, list[sa.Table]]] | None = None
        self._complete = False  # every registered class has its keyspace built

    def mapped(self) -> None:
        """A class was mapped: hierarchies and tables may have changed."""
        with self._lock:
            self._clear()

    def register(self, cls: type, config: CacheConfig) -> None:
        """Opt a mapped class in (or refresh its config)."""
        with self._lock:
            self._configs[cls] = config
            self._clear()

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
        with self._lock:
            if cls not in self._infos:
                if cls in self._configs:
                    self._build(_identity_root(sa.inspect(cls)))
                else:
                    self._infos[cls] = None
            return self._infos.get(cls)

    def _build(self, root: Mapper[Any]) -> Keyspace:
        """The keyspace of root, with the infos and families of its cached classes."""
        keyspace = self._keyspaces.get(root)
        if keyspace is not None:
            return keyspace
        configure_mappers()  # relationships and deferred columns must be final
        keyspace = self._keyspaces[root] = Keyspace(root)
        infos = []
        for mapper in root.self_and_descendants:
            config = self._configs.get(mapper.class_)
            if config is None or _identity_root(mapper) is not root:
                continue
            info = self._infos[mapper.class_] = ModelInfo(mapper.class_, config, keyspace)
            if info.problem is None and info.config.enabled:
                infos.append(info)
        keyspace.members = {info.codec.fingerprint: info for info in infos}
        for getter in infos:
            getter.family = {
                member.codec.fingerprint: (member, _required(getter, member))
                for member in infos
                if member.mapper.isa(getter.mapper)
            }
        self._check_names(keyspace)
        return keyspace

    def _check_names(self, keyspace: Keyspace) -> None:
        for other in self._keyspaces.values():
            if other is not keyspace and other.name == keyspace.name:
                log.warning(
                    "two cached hierarchies are named %s (tables %s and %s): their keys "
                    "collide, so each reads the other's entries as misses; rename one class",
                    keyspace.name,
                    sorted(t.name for t in other.tables),
                    sorted(t.name for t in keyspace.tables),
                )

    def keyspaces(self) -> tuple[Keyspace, ...]:
        """The keyspace of every registered class."""
        with self._lock:
            if not self._complete:
                for cls in list(self._configs):
                    self._build(_identity_root(sa.inspect(cls)))
                self._complete = True
            return tuple(self._keyspaces.values())

    def route(self, cls: type) -> Route | None:
        """Where rows of a mapped class are cached; None when nothing caches them."""
        try:
            return self._routes[cls]
        except KeyError:
            pass
        keyspaces = self.keyspaces()
        mapper: Mapper[Any] | None = sa.inspect(cls, raiseerr=False)
        route = None if mapper is None else _route(mapper, keyspaces)
        with self._lock:
            self._routes[cls] = route
        return route

    def table_route(self, table: sa.Table) -> Route | None:
        """Where rows of a table are cached (by the table's own primary key); None: nowhere."""
        try:
            return self._table_routes[table]
        except KeyError:
            pass
        targets: list[Target] = []
        for keyspace in self.keyspaces():
            if table in keyspace.tables:
                targets.append((keyspace, _table_positions(keyspace, table)))
        route = Route(None, targets) if targets else None
        with self._lock:
            self._table_routes[table] = route
        return route

    def tables_named(self) -> tuple[re.Pattern[str] | None, dict[str, list[sa.Table]]]:
        """A pattern finding the name of any table a cached class reads, and those tables
        by lower-cased name: what textual SQL is searched for."""
        names = self._names
        if names is None:
            tables: dict[str, list[sa.Table]] = {}
            for keyspace in self.keyspaces():
                for table in keyspace.tables:
                    tables.setdefault(table.name.lower(), []).append(table)
            names = self._names = (tables_pattern(tables), tables)
        return names


def _table_positions(keyspace: Keyspace, table: sa.Table) -> tuple[int, ...] | None:
    """Where each of the keyspace's key fields is among table's primary-key columns (a
    joined subclass's table names its key differently: found through its mapper)."""
    columns = list(table.primary_key.columns)
    found: dict[str, int] = {}
    for mapper in keyspace.mapper.self_and_descendants:
        for index, column in enumerate(columns):
            try:
                found.setdefault(mapper.get_property_by_column(column).key, index)
            except sa.orm.exc.UnmappedColumnError:
                continue
    if not all(field in found for field in keyspace.fields):
        return None
    return tuple(found[field] for field in keyspace.fields)


def _route(mapper: Mapper[Any], keyspaces: Sequence[Keyspace]) -> Route | None:
    tables = set(mapper.tables)
    key = tuple(mapper.primary_key)
    targets: list[Target] = []
    for keyspace in keyspaces:
        if keyspace.tables.isdisjoint(tables):
            continue
        same_key = set(keyspace.pk_columns) == set(key)
        positions = tuple(key.index(col) for col in keyspace.pk_columns) if same_key else None
        targets.append((keyspace, positions))
    if not targets:
        return None
    try:
        names: tuple[str, ...] | None = tuple(mapper.get_property_by_column(col).key for col in key)
    except sa.exc.NoReferenceError:  # pragma: no cover - a key column mapped to no attribute
        names = None
    return Route(names, targets)


registry = Registry()
reset_after_fork(registry)


def fingerprint_of(cls: type) -> str:
    """The fingerprint of a cached class's entries ("" when it is not cached)."""
    info = registry.info(cls)
    return "" if info is None else info.codec.fingerprint


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
    # directly, by @cached, or inherited from CachedModel or a cached base).
    config = _config_of(cls)
    if config is not None:
        registry.register(cls, config)
    else:
        registry.mapped()


@overload
def cached(cls: T, /) -> T: ...
@overload
def cached(
    *,
    ttl: int | timedelta | None = None,
    enabled: bool = True,
    l1: bool | None = None,
    natural_keys: Sequence[str | Sequence[str]] = (),
) -> Any: ...


def cached(
    cls: Any = None,
    /,
    *,
    ttl: int | timedelta | None = None,
    enabled: bool = True,
    l1: bool | None = None,
    natural_keys: Sequence[str | Sequence[str]] = (),
) -> Any:
    """Opt a table model in: ``@cached`` or ``@cached(ttl=600, enabled=True, l1=None,
    natural_keys=("email",))``."""
    config = CacheConfig(ttl=ttl, enabled=enabled, l1=l1, natural_keys=natural_keys)

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
