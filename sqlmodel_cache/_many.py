"""Multi-get: many rows of one model by primary key, in one round trip to the cache and
one SELECT for the rest.

``get_many(session, Model, idents)`` answers in the order of idents, None where no row
exists. Objects the session holds come first, as ``session.get`` gives them; then the
in-process tier; then one batch of leases to Redis (a hit, or the lease that lets this
reader fill); then one ``SELECT ... WHERE pk IN (...)`` for the misses, whose rows are
filled under their leases like single gets. The session, its connection, the engine and
the session's own writes decide whether the cache may answer, as for a get; when it
may not, the SELECT answers alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.base import instance_state

from . import _compat, _runtime
from ._errors import ConfigurationError
from ._reads import _fresh_snapshot, _instance, _row_values, _session_reason
from ._registry import ModelInfo, cached_info
from ._writes import defer_fill, mark, writes_of

Identity = tuple[Any, ...]


def get_many(session: Session, model: type, idents: Sequence[Any]) -> list[Any]:
    """Each ident's object (None where no row exists), in order; see the module docstring."""
    runtime = _runtime.current
    if runtime is None:
        raise ConfigurationError(_runtime.NOT_CONFIGURED)
    info = cached_info(model)
    if isinstance(idents, (str, bytes)) or not isinstance(idents, Sequence):
        raise ConfigurationError(f"idents must be a list or tuple of identities, got {idents!r}")
    wanted = [tuple(info.identity(ident)) for ident in idents]
    found: dict[Identity, Any] = {}
    missing: list[Identity] = []
    for pk in dict.fromkeys(wanted):
        if (info.identity_class, pk, None) in session.identity_map:
            found[pk] = session.get(model, pk)  # the identity map's rules: expired, deleted...
        else:
            missing.append(pk)
    if missing:
        found.update(_load(session, runtime, info, model, missing))
    return [found[pk] for pk in wanted]


def _load(
    session: Session, runtime: _runtime.Runtime, info: ModelInfo, model: type, pks: list[Identity]
) -> dict[Identity, Any]:
    """Rows not in the session: from the cache where it may answer, else one SELECT."""
    if not with_cache(session, runtime, info, len(pks)):
        return _select(session, model, info, pks)
    writes = writes_of(session)
    keys: dict[Identity, str] = {}
    for pk in pks:
        body = info.template.body(pk)
        if writes and writes.touches(info, body):
            runtime.stats.bypass(info.name, "own_write")  # only the database has this row
        else:
            keys[pk] = runtime.prefix + body
    found, tokens, epoch = _from_cache(session, runtime, info, keys)
    rest = [pk for pk in pks if pk not in found]
    if rest:
        no_fill = why_no_fill(session, info, writes)
        loaded = _select(session, model, info, rest)
        found.update(loaded)
        for pk, token in tokens.items():
            _fill(session, runtime, info, keys[pk], token, loaded[pk], no_fill, epoch)
    return found


def _from_cache(
    session: Session, runtime: _runtime.Runtime, info: ModelInfo, keys: dict[Identity, str]
) -> tuple[dict[Identity, Any], dict[Identity, bytes], int]:
    """The rows L1 or Redis hold, the leases taken for the others, and the L1 epoch the
    fills keep to."""
    found: dict[Identity, Any] = {}
    epoch = 0
    for pk, key in keys.items():
        hit, epoch = runtime.recall(info, key)
        if hit is not None:
            found[pk] = _instance(session, *hit)
    asked = [pk for pk in keys if pk not in found]
    tokens: dict[Identity, bytes] = {}
    if asked:
        answers = runtime.fetch_many(info, [keys[pk] for pk in asked], epoch)
        for pk, (hit, token, why_not) in zip(asked, answers):
            if hit is not None:
                found[pk] = _instance(session, *hit)
            elif token is not None:
                tokens[pk] = token
            elif why_not is not None:
                runtime.stats.unfilled(info.name, why_not)
    return found, tokens, epoch


def _fill(
    session: Session,
    runtime: _runtime.Runtime,
    info: ModelInfo,
    key: str,
    token: bytes,
    obj: Any,
    no_fill: str | None,
    epoch: int,
) -> None:
    """Store a row read under key's lease, at the end of the transaction, as a get does."""
    if obj is None:
        runtime.release(info, key, token)  # no row: the next reader may fill at once
        return
    row = no_fill or _row_values(info, [obj], key[len(runtime.prefix) :])
    if isinstance(row, str):
        runtime.stats.unfilled(info.name, row)
        runtime.release(info, key, token)
        return
    ttl = info.ttl(runtime.default_ttl)
    fill = runtime.prepare(info, row[0], key, token, row[1], ttl, epoch)
    if fill is not None:
        defer_fill(session, runtime, fill)


def with_cache(session: Session, runtime: _runtime.Runtime, info: ModelInfo, gets: int) -> bool:
    """Whether the cache may answer gets of info in session now, as for a single get (the
    gets bypassed are counted); autoflushes first, as the SELECT instead would."""
    reason = _session_reason(session, {}, info, runtime)
    if reason is None and len(session.dispatch.do_orm_execute) != 1:
        # A hook of someone else's (a tenant's criteria) would never see the hits.
        reason = "hooks"
    if reason is not None:
        for _ in range(gets):
            runtime.stats.bypass(info.name, reason)
        return False
    if session.autoflush:
        _compat.autoflush(session)
    return True


def why_no_fill(session: Session, info: ModelInfo, writes: Any) -> str | None:
    """Why rows about to be read may not be stored (None: they may), as for a single get."""
    if writes is not None and writes.dirty:
        return "transaction_writes"  # it may read its own uncommitted writes
    if not _fresh_snapshot(session, info, mark()):
        return "snapshot"
    return None


def _select(
    session: Session, model: type, info: ModelInfo, pks: list[Identity]
) -> dict[Identity, Any]:
    """One SELECT of the rows with these keys (None for those with none)."""
    columns = info.mapper.primary_key
    criterion = (
        columns[0].in_([pk[0] for pk in pks])
        if len(columns) == 1
        else sa.tuple_(*columns).in_([sa.tuple_(*pk) for pk in pks])
    )
    found: dict[Identity, Any] = dict.fromkeys(pks)
    obj: Any
    for obj in session.execute(sa.select(model).where(criterion)).scalars():
        identity = instance_state(obj).key
        if identity is not None:
            found[tuple(identity[1])] = obj
    return found
