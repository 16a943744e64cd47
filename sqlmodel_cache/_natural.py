"""Natural keys: rows found by unique attributes other than the primary key.

``CacheConfig(natural_keys=("email", ("tenant_id", "slug")))`` declares them; each must
be backed by a unique constraint or a unique index of the table (``configure()`` and
``get_by`` refuse one that is not). ``get_by(session, User, email=...)`` reads a
natural-key entry, ``{prefix}:{Model}:~email=...``, holding the row's primary key, then
gets the row by that key exactly as ``session.get`` does (identity map, L1, Redis, the
database). The row is returned only when its own natural-key values are the ones asked
for: a mapping that some write made stale (a key value changed or taken over, a row
deleted, by anyone: another service, a bulk statement) is never followed; it is dropped
and the database answers. ORM flushes also delete the mappings of the values they
change, at commit, with the rows. On a miss the mapping is filled under a lease, as
rows are, once the database has found the row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.base import instance_state

from . import _compat
from ._codec import RowCodec
from ._errors import ConfigurationError
from ._keys import KeyTemplate, canonical, loaded_type

if TYPE_CHECKING:
    from ._registry import ModelInfo


def backing_problem(mapper: Mapper[Any], fields: Sequence[str]) -> str | None:
    """Why fields cannot be a natural key of mapper's class (None: a unique constraint or
    a unique index of its table covers exactly their columns)."""
    columns = []
    for field in fields:
        column = mapper.columns.get(field)
        if not isinstance(column, sa.Column):
            return f"{field} is not a column attribute of {mapper.class_.__name__}"
        columns.append(column)
    wanted = set(columns)
    if wanted == set(mapper.primary_key):
        return "it is the primary key (use session.get)"
    table = columns[0].table
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint) and set(constraint.columns) == wanted:
            return None
    for index in table.indexes:
        if index.unique and set(index.columns) == wanted:
            return None
    return (
        f"no unique constraint or unique index of table {table.name} covers exactly "
        f"{', '.join(fields)}: a natural key must name one row"
    )


class NaturalKey:
    """One natural key of a model: its attributes, its entries' keys and payloads."""

    __slots__ = ("codec", "fields", "problem", "template", "types")

    def __init__(self, mapper: Mapper[Any], fields: tuple[str, ...], space: str) -> None:
        self.fields = fields
        self.problem = backing_problem(mapper, fields)
        self.types = tuple(
            loaded_type(mapper.columns[f].type) if self.problem is None else None for f in fields
        )
        self.template = KeyTemplate(space, ["~" + field for field in fields])
        # The payload: the row's primary key, exactly typed.
        pk = [(str(column.key), column.type) for column in mapper.primary_key]
        self.codec = RowCodec(f"natural key {space}", pk)

    def canonical(self, values: Mapping[str, Any]) -> list[Any]:
        """The values asked for, in the key's order, as the columns hold them."""
        found = []
        for field, kind in zip(self.fields, self.types):
            value = values[field]
            if value is None:
                raise ConfigurationError(f"get_by: {field} is None, which names no row")
            try:
                found.append(canonical(value, kind))
            except ValueError as exc:
                raise ConfigurationError(f"get_by: {field}={value!r}: {exc}") from None
        return found

    def holds(self, obj: Any, values: Sequence[Any]) -> bool:
        """Whether obj's own values of this key are values."""
        return all(getattr(obj, f) == v for f, v in zip(self.fields, values))


def natural_keys_of(
    mapper: Mapper[Any], keys: Iterable[tuple[str, ...]], space: str
) -> tuple[NaturalKey, ...]:
    return tuple(NaturalKey(mapper, fields, space) for fields in keys)


def check(model: type, keys: Iterable[tuple[str, ...]]) -> None:
    """Raise ConfigurationError for a natural key of model that is not unique."""
    mapper: Mapper[Any] = sa.inspect(model)
    for fields in keys:
        problem = backing_problem(mapper, fields)
        if problem is not None:
            raise ConfigurationError(
                f"{model.__name__}: natural key ({', '.join(fields)}) refused: {problem}"
            )


def find(info: ModelInfo, asked: Mapping[str, Any]) -> NaturalKey:
    """The natural key of info whose attributes are exactly those asked."""
    for key in info.natural:
        if set(key.fields) == set(asked):
            if key.problem is not None:
                raise ConfigurationError(
                    f"{info.name}: natural key ({', '.join(key.fields)}) refused: {key.problem}"
                )
            return key
    declared = [", ".join(k.fields) for k in info.natural] or ["none"]
    raise ConfigurationError(
        f"{info.name} has no natural key ({', '.join(sorted(asked))}); declared: "
        + "; ".join(f"({d})" for d in declared)
    )


def get_by(session: Session, model: type, asked: Mapping[str, Any]) -> Any:
    """The row of model whose natural key has the values asked, or None (module docstring)."""
    # The registry imports this module: these import it back, so they load on use.
    from . import _runtime
    from ._many import why_no_fill, with_cache
    from ._registry import cached_info
    from ._writes import defer_fill, writes_of

    runtime = _runtime.current
    if runtime is None:
        raise ConfigurationError(_runtime.NOT_CONFIGURED)
    info = cached_info(model)
    key = find(info, asked)
    values = key.canonical(asked)
    if not with_cache(session, runtime, info, 1):
        return _select(session, model, key, values)
    entry = runtime.prefix + key.template.body(values)
    data, token = runtime.lease_entry(info, entry)
    if data is not None:
        pk = key.codec.decode(data)
        if pk is not None:
            obj = session.get(model, tuple(pk))
            if obj is not None and key.holds(obj, values):
                return obj
        runtime.drop_entry(info, entry)  # its row changed, went, or it is not readable
        return _select(session, model, key, values)
    no_fill = why_no_fill(session, info, writes_of(session))
    obj = _select(session, model, key, values)
    if token is None:
        return obj
    if obj is None or no_fill is not None or not key.holds(obj, values):
        runtime.release(info, entry, token)
        return obj
    state = instance_state(obj)
    identity = state.key[1] if state.key is not None else ()
    try:
        payload = key.codec.encode(identity)
    except Exception:  # noqa: BLE001 - a key with no exact form: the database answers
        runtime.release(info, entry, token)
        return obj
    ttl = info.ttl(runtime.default_ttl)
    body = entry[len(runtime.prefix) :]
    defer_fill(session, runtime, _runtime.Fill(info, body, entry, token, payload, ttl, 0, None))
    return obj


def _select(session: Session, model: type, key: NaturalKey, values: Sequence[Any]) -> Any:
    """The row whose natural key has values, from the database (one SELECT)."""
    mapper: Mapper[Any] = sa.inspect(model)
    criteria = [mapper.columns[f] == v for f, v in zip(key.fields, values)]
    return session.execute(sa.select(model).where(*criteria)).scalars().one_or_none()


def changed_bodies(info: ModelInfo, state: Any, *, changed_only: bool) -> list[str]:
    """The natural-key entry bodies a flush of this object makes stale: for each natural
    key, its values before and after (a new or deleted row's, which stand for both; an
    updated row's only where they changed)."""
    bodies = []
    for key in info.natural:
        if key.problem is not None:
            continue
        now, before = [], []
        for field in key.fields:
            history = _compat.history(state, field)
            now.append(history[0])
            before.append(history[1])
        if changed_only and now == before:
            continue
        for values in (now, before):
            if None not in values:
                bodies.append(key.template.body(values))
    return bodies
