"""explain(): whether and how a model is cached, and if not, why, column by column.

It reads only the model's mapping, its CacheConfig and the configuration (or
the defaults, before configure()), so it answers before any traffic; once
gets have run, the columns whose values kept rows out of the cache are named
with how often.
"""

from __future__ import annotations

from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.orm import ColumnProperty, Mapper
from sqlalchemy.types import TypeDecorator, TypeEngine

from . import _runtime
from ._codec import MAX_DEPTH
from ._config import Settings
from ._errors import ConfigurationError
from ._keys import loaded_type
from ._registry import ModelInfo, registry

_DEFAULTS = Settings(transport=None, default_ttl=300, key_prefix="sqlmodelcache", enabled=True)


@attrs.frozen
class ColumnExplanation:
    """One mapped column: stored in entries (and as what), or loaded on access."""

    name: str
    sql_type: str
    stored: bool
    how: str
    uncacheable_rows: int = 0  # misses not stored because of this column's value, so far


@attrs.frozen
class Explanation:
    """What ``SQLModelCache.explain(Model)`` returns; ``str()`` of it is a readable report."""

    model: str
    cached: bool
    reasons: tuple[str, ...]  # why it is not cached (empty when it is)
    key: str | None  # the key pattern, e.g. "sqlmodelcache:Hero:id={id}"
    ttl: int | None
    ttl_source: str
    tiers: tuple[str, ...]
    columns: tuple[ColumnExplanation, ...]
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        head = f"{self.model}: " + ("cached" if self.cached else "not cached")
        lines = [head]
        lines += [f"  because {reason}" for reason in self.reasons]
        if self.key is not None:
            lines.append(f"  key:    {self.key}")
        if self.ttl is not None:
            lines.append(f"  ttl:    {self.ttl} s ({self.ttl_source})")
        if self.tiers:
            lines.append(f"  tiers:  {' + '.join(self.tiers)}")
        lines += [f"  note:   {note}" for note in self.notes]
        lines.append("  columns:")
        width = max((len(c.name) for c in self.columns), default=0)
        type_width = max((len(c.sql_type) for c in self.columns), default=0)
        for column in self.columns:
            line = f"    {column.name:<{width}}  {column.sql_type:<{type_width}}  {column.how}"
            if column.uncacheable_rows:
                line += f"  [{column.uncacheable_rows} row(s) not cached for this column]"
            lines.append(line)
        return "\n".join(lines)


# SQLModel's own TypeDecorators, whose loads the generic rules cannot read off.
_KNOWN = {"UTCDateTime": "datetime in UTC", "AutoString": "str"}


def describe(sa_type: TypeEngine[Any]) -> str:
    """What a column of this type loads, as far as its declaration says."""
    name = type(sa_type).__name__
    if name in _KNOWN and type(sa_type).__module__.startswith("sqlmodel"):
        return _KNOWN[name]
    enum_class = getattr(sa_type, "enum_class", None)
    if enum_class is not None:
        return f"{enum_class.__name__} member"
    if isinstance(sa_type, sa.JSON):
        return f"JSON data, up to {MAX_DEPTH} levels deep"
    item = getattr(sa_type, "item_type", None)
    if isinstance(item, TypeEngine):
        return f"list of {describe(item)}"
    if name in ("INET", "CIDR"):
        return "ipaddress network" if name == "CIDR" else "ipaddress address or interface"
    kind = loaded_type(sa_type)
    if kind is not None:
        return kind.__name__
    if isinstance(sa_type, TypeDecorator):
        return f"what {name} loads, checked row by row"
    return "checked row by row"


def _column(prop: ColumnProperty[Any], info: ModelInfo | None, unfilled: dict[str, int]) -> Any:
    column = prop.columns[0]
    sql_type = repr(column.type) if isinstance(column, sa.Column) else "SQL expression"
    if info is None or info.problem is not None:
        how, stored = "-", False
    elif prop.key in info.attrs:
        how, stored = "stored: " + describe(column.type), True
    elif prop.deferred:
        how, stored = "not stored: deferred, loaded when accessed", False
    else:
        how, stored = "not stored: an SQL expression, loaded when accessed", False
    count = unfilled.get(f"uncacheable:{prop.key}", 0)
    return ColumnExplanation(prop.key, sql_type, stored, how, count)


def _tiers(info: ModelInfo, settings: Settings, runtime: _runtime.Runtime | None) -> list[str]:
    tiers = []
    wanted = info.config.l1 if info.config.l1 is not None else settings.l1 is not None
    if wanted:
        l1 = settings.l1
        size = f"up to {l1.maxsize} rows for {l1.ttl:g} s" if l1 else "default L1Config()"
        tiers.append(f"L1 (in process, {size})")
    transport = settings.transport
    tiers.append(f"L2 ({type(transport).__name__ if transport else 'MemoryTransport'})")
    if runtime is not None and wanted and runtime.l1 is None and runtime.feed is None:
        tiers[0] += " [unavailable: the transport cannot spread invalidations]"
    return tiers


def _relatives(info: ModelInfo) -> list[str]:
    notes = []
    keyspace = info.keyspace
    family = sorted(m.name for m in keyspace.members.values() if m is not info)
    if not keyspace.single:
        kind = "single-table" if info.mapper.single or info.mapper.base_mapper.single else "joined"
        notes.append(
            f"{kind} inheritance: one key per row for the whole hierarchy of "
            f"{keyspace.name}" + (f" (cached: {', '.join(family)})" if family else "")
        )
    route = registry.route(info.cls)
    others = sorted(
        target.name for target, _ in (route.targets if route else ()) if target is not keyspace
    )
    if others:
        notes.append(f"its table is also cached under {', '.join(others)}: writes drop both")
    return notes


def _natural_keys(info: ModelInfo, settings: Settings) -> list[str]:
    notes = []
    for natural in info.natural:
        named = ", ".join(natural.fields)
        if natural.problem is not None:
            notes.append(f"natural key ({named}) refused: {natural.problem}")
            continue
        parts = ":".join(f"~{f}={{{f}}}" for f in sorted(natural.fields))
        notes.append(
            f"natural key ({named}): get_by finds the row's key under "
            f"{settings.key_prefix}:{info.keyspace.name}:{parts}"
        )
    return notes


def explain(model: Any) -> Explanation:
    """Whether and how a model is cached, and if not, why."""
    mapper: Mapper[Any] | None = (
        sa.inspect(model, raiseerr=False) if isinstance(model, type) else None
    )
    if mapper is None:
        raise ConfigurationError(f"{model!r} is not a mapped model class")
    runtime = _runtime.current
    settings = runtime.settings if runtime is not None else _DEFAULTS
    info = registry.info(model)
    reasons = []
    notes = []
    if runtime is None:
        notes.append("SQLModelCache is not configured yet: the defaults are shown")
    if info is None:
        reasons.append("it has no __cache_config__, @cached or CachedModel")
    else:
        if info.problem is not None:
            reasons.append(info.problem)
        if not info.config.enabled:
            reasons.append("its CacheConfig says enabled=False")
        if not settings.enabled:
            reasons.append("SQLModelCache is configured with enabled=False")
    stats = runtime.stats.snapshot().by_model.get(mapper.class_.__name__) if runtime else None
    unfilled = dict(stats.unfilled) if stats else {}
    columns = tuple(_column(prop, info, unfilled) for prop in mapper.column_attrs)
    name = mapper.class_.__name__
    if info is None or info.problem is not None:
        return Explanation(name, False, tuple(reasons), None, None, "", (), columns, tuple(notes))
    fields = ":".join(f"{field}={{{field}}}" for field in sorted(info.keyspace.fields))
    key = f"{settings.key_prefix}:{info.keyspace.name}:{fields}"
    if info.config.ttl is not None:
        ttl, source = info.config.ttl, f"CacheConfig(ttl={info.config.ttl})"
    else:
        ttl, source = settings.default_ttl, "configure(default_ttl=...)"
    notes += _relatives(info)
    notes += _natural_keys(info, settings)
    if any(not c.stored for c in columns):
        notes.append("columns not stored are loaded from the database when first accessed")
    return Explanation(
        name,
        not reasons,
        tuple(reasons),
        key,
        ttl,
        source,
        tuple(_tiers(info, settings, runtime)),
        columns,
        tuple(notes),
    )
