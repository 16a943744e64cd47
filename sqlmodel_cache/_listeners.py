"""The SQLAlchemy listeners: serve primary-key loads, collect writes, invalidate on commit.

They are attached once to ``sqlalchemy.orm.Session`` (so every subclass, and the
sync session inside an ``AsyncSession``, is covered) and to ``Engine`` and
``Pool`` for transactions that a session does not own. Statements that do not
concern a cached model cost a dict lookup.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, Result
from sqlalchemy.engine.result import IteratorResult
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction
from sqlalchemy.orm.base import instance_state
from sqlalchemy.pool import Pool
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter

from . import _runtime
from ._config import check_ttl
from ._errors import ConfigurationError
from ._registry import ModelInfo, registry
from ._writes import Writes

# session.info key of the open transaction's Writes.
_WRITES = "_sqlmodel_cache_writes"
# Connection.info keys: when its transaction began (for snapshot checks), the
# writes of sessions that joined its transaction, and writes to delete again
# once its commit is over.
_BEGAN = "_sqlmodel_cache_began"
_DEFERRED = "_sqlmodel_cache_deferred"
_AFTER_COMMIT = "_sqlmodel_cache_after_commit"
# Isolation levels whose every statement sees all rows committed before it.
_PER_STATEMENT = frozenset({"READ COMMITTED", "READ UNCOMMITTED", "AUTOCOMMIT"})
_sequence = itertools.count(1)
# Execution options that do not change which row a primary-key load returns.
# Any other option (a tenant or shard hint read by someone's hook, say) may, so
# such loads go to the database rather than share a key.
_NEUTRAL_OPTIONS = frozenset(
    {
        "cache",
        "cache_ttl",
        "_sa_orm_load_options",
        "_result_disable_adapt_to_context",
        "autoflush",
        "compiled_cache",
        "logging_token",
        "isolation_level",
        "no_parameters",
        "stream_results",
        "max_row_buffer",
        "yield_per",
        "preserve_rowcount",
        "driver_column_names",
        "insertmanyvalues_page_size",
    }
)


def _plain_select(statement: Any) -> bool:
    """No join, grouping or paging: nothing a primary-key get would not have."""
    return (
        len(statement._raw_columns) == 1
        and not statement._setup_joins
        and not statement._group_by_clauses
        and statement._limit_clause is None
        and statement._offset_clause is None
    )


if tuple(map(int, sqlalchemy.__version__.split(".")[:2])) >= (2, 1):

    def _is_get(statement: Any, criterion: Any, info: ModelInfo, params: Any) -> bool:
        # session.get puts the mapper's own primary-key clause in the WHERE, the
        # same object; a user-written select() has a different one.
        if criterion is info.get_clause:
            return True
        if info.refresh_get_clause() and criterion is info.get_clause:
            return True
        # The clause may predate the mapper's current one (configuring mappers, as
        # the first get of a process does, rebuilds it): the same bound parameters,
        # given exactly, in an otherwise plain select, make the same query.
        return (
            type(params) is dict
            and params.keys() == info.param_key_set
            and _bound_names(criterion) == info.param_key_set
            and _plain_select(statement)
        )

    def _bound_names(criterion: Any) -> set[str]:
        return {
            element.key
            for element in visitors.iterate(criterion)
            if isinstance(element, BindParameter)
        }

else:  # pragma: no cover - SQLAlchemy 2.0 puts in a fresh annotated copy each time

    def _is_get(statement: Any, criterion: Any, info: ModelInfo, params: Any) -> bool:
        return (
            criterion._annotations.get("_orm_adapt") is True
            and type(params) is dict
            and params.keys() == info.param_key_set
            and _plain_select(statement)
        )


def _cached_info(state: ORMExecuteState) -> ModelInfo | None:
    mapper = state.bind_mapper
    return None if mapper is None else registry.info(mapper.class_)


def _identity_load(state: ORMExecuteState, info: ModelInfo) -> bool:
    """True when state is a plain ``session.get`` whose result a cache entry can stand for."""
    statement: Any = state.statement
    criteria = statement._where_criteria
    if len(criteria) != 1 or not _is_get(statement, criteria[0], info, state.parameters):
        return False
    options = state.load_options
    return not (
        options._refresh_state is not None  # refresh(), expired or deferred attributes
        or options._lazy_loaded_from is not None  # relationship loads
        or options._populate_existing
        or options._identity_token is not None
        or statement._for_update_arg is not None
        or statement._with_options  # loader options
        or info.mapper.always_refresh
        or not _NEUTRAL_OPTIONS.issuperset(state.execution_options)
    )


def _writes(session: Session) -> Writes | None:
    return session.info.get(_WRITES)


def _ttl(options: Any, info: ModelInfo, runtime: _runtime.Runtime) -> int:
    ttl = options.get("cache_ttl")
    if ttl is None:
        return info.ttl(runtime.default_ttl)
    check_ttl("execution option cache_ttl", ttl, optional=False)
    return ttl  # type: ignore[no-any-return]


def _on_execute(state: ORMExecuteState) -> Result[Any] | None:
    if state.is_select:
        info = _cached_info(state)
        if info is None or not _identity_load(state, info):
            return None
        return _serve(state, info)
    if state.is_update or state.is_delete or state.is_insert:
        info = _cached_info(state)
        if info is not None and _runtime.current is not None:
            return _bulk_write(state, info)
    return None


def _serve(state: ORMExecuteState, info: ModelInfo) -> Result[Any] | None:
    runtime = _runtime.current
    if runtime is None:
        raise ConfigurationError(_runtime.NOT_CONFIGURED)
    if not (runtime.enabled and info.config.enabled):
        return None
    options = state.execution_options
    use = options.get("cache", True)
    if use is not True:
        if use is False:
            return None
        raise ConfigurationError(f"execution option cache must be True or False, got {use!r}")
    ttl = _ttl(options, info, runtime)
    session = state.session
    bind = session.get_bind(info.mapper)
    if isinstance(bind, Connection) or not _NEUTRAL_OPTIONS.issuperset(
        bind.get_execution_options()
    ):
        # A session on a caller's connection may share an outer transaction whose
        # writes it cannot see committed or rolled back; an engine with options
        # (schema_translate_map, tenant hints) may read other rows under one key.
        return None
    params: Any = state.parameters
    body = info.template.body([params[k] for k in info.param_keys])
    if state.load_options._autoflush:
        # Returning a result skips the ORM's autoflush; flush as the load would have.
        session._autoflush()
    writes = _writes(session)
    if writes and writes.touches(info, body):
        return None  # this transaction wrote the row: only the database has it

    key = runtime.prefix + body
    values, epoch = runtime.recall(info, key)
    if values is not None:
        return _hit(session, info, values)
    return _fly(state, runtime, info, body, key, epoch, ttl, writes)


def _fly(
    state: ORMExecuteState,
    runtime: _runtime.Runtime,
    info: ModelInfo,
    body: str,
    key: str,
    epoch: int,
    ttl: int,
    writes: Writes | None,
) -> Result[Any]:
    """Past L1: lead the key's load (Redis, then the database), or follow its leader."""
    session = state.session
    flight = runtime.flights.lead(key)
    if flight is None:  # another load of this key is under way in this process
        values = runtime.flights.follow(key)
        if values is not None:
            runtime.stats.for_model(info.name).hits += 1
            return _hit(session, info, info.thaw(values))
        runtime.stats.for_model(info.name).misses += 1
        return state.invoke_statement()  # the leader got nothing to share: no fill either
    shared = None
    try:
        values, token = runtime.fetch(info, key, epoch)
        if values is not None:
            if flight.future is not None:  # somebody follows: give them their own copy
                shared = info.thaw(values)
            return _hit(session, info, values)
        result, shared = _load(state, runtime, info, body, key, token, epoch, ttl, writes)
        return result
    finally:
        runtime.flights.finish(key, flight, shared)


def _load(
    state: ORMExecuteState,
    runtime: _runtime.Runtime,
    info: ModelInfo,
    body: str,
    key: str,
    token: bytes | None,
    epoch: int,
    ttl: int,
    writes: Writes | None,
) -> tuple[Result[Any], list[Any] | None]:
    """A miss: read the database, fill when allowed; returns the result and the filled row."""
    mark = next(_sequence)
    frozen = state.invoke_statement().freeze()
    filled = None
    if token is not None and frozen.data:
        values = None
        if not writes and _snapshot_after(state.session, info, mark):
            values = _row_values(info, frozen.data, body)
        if values is None:
            runtime.release(info, key, token)  # let the next reader fill
        elif runtime.fill(info, key, token, values, ttl, epoch):
            filled = info.thaw(values)
    return frozen(), filled


def _snapshot_after(session: Session, info: ModelInfo, mark: int) -> bool:
    """True when the load's snapshot is younger than the lease taken at mark.

    Under READ COMMITTED each statement sees what was committed before it
    started; under snapshot isolation the whole transaction sees what was
    committed before its first statement, which may predate the lease.
    """
    conn = session.connection(bind_arguments={"mapper": info.mapper})
    level = conn.get_execution_options().get("isolation_level") or conn.default_isolation_level
    return level in _PER_STATEMENT or conn.info.get(_BEGAN, 0) > mark


def _hit(session: Session, info: ModelInfo, values: list[Any]) -> Result[Any]:
    """Make a clean persistent instance from cached values, as the ORM's loader does."""
    identity_map = session.identity_map
    identity = (info.mapper._identity_class, tuple(values[i] for i in info.pk_positions), None)
    obj = identity_map.get(identity)
    if obj is None:
        obj = info.mapper.class_manager.new_instance()
        state = instance_state(obj)
        dict_ = state.dict
        for attr, value in zip(info.attrs, values):
            dict_[attr] = value
        state.key = identity
        state.identity_token = None
        state.session_id = session.hash_key
        identity_map._add_unpresent(state, identity)
        state._commit_all(dict_, identity_map)
        if info.expire_on_hit:
            state._expire_attributes(dict_, info.expire_on_hit)
        if session.dispatch.loaded_as_persistent:
            session.dispatch.loaded_as_persistent(session, state)
        for relationship in info.eager:
            # The mapper eager-loads these on a database load; a hit must not leave
            # them for an implicit lazy load (MissingGreenlet under AsyncSession).
            getattr(obj, relationship)
    return IteratorResult(info.result_metadata, iter((obj,)), _source_supports_scalars=True)


def _row_values(info: ModelInfo, rows: Sequence[Any], body: str) -> list[Any] | None:
    """The cacheable column values of a freshly loaded row, or None."""
    if len(rows) != 1:
        return None
    state = instance_state(rows[0])
    if state.modified or state.key is None:
        return None
    dict_ = state.dict
    try:
        values = [dict_[attr] for attr in info.attrs]
    except KeyError:
        return None  # a column was not loaded (deferred by an option): nothing exact to store
    # Store only under the key the row itself maps to: an ident that the database
    # matched loosely (1.0 for 1, another case under a collation) would otherwise
    # leave an entry that invalidating the row's own key cannot reach.
    if info.template.body([values[i] for i in info.pk_positions]) != body:
        return None
    return values


def _writes_in(store: dict[Any, Any], name: str) -> Writes:
    """The Writes kept under name in an info dict (a session's or a connection's)."""
    writes = store.get(name)
    if writes is None:
        writes = store[name] = Writes()
    return writes


def _rows_from_params(writes: Writes, info: ModelInfo, params: Any) -> bool:
    """Record the rows of an executemany whose parameters all name a primary key."""
    if type(params) is not list or not params:
        return False
    names = info.pk_names
    if not all(name in row for row in params for name in names):
        return False
    for row in params:
        writes.add(info, info.template.body([row[name] for name in names]))
    return True


def _bulk_write(state: ORMExecuteState, info: ModelInfo) -> Result[Any] | None:
    """Run an ORM bulk INSERT/UPDATE/DELETE so that the rows it touched are known."""
    writes = _writes_in(state.session.info, _WRITES)
    statement: Any = state.statement
    params = state.parameters
    if state.is_insert:
        # New rows have no entries; only an upsert changes rows that may be cached.
        if getattr(statement, "_post_values_clause", None) is not None and not (
            _rows_from_params(writes, info, params)
        ):
            writes.add_model(info)
        return None
    if state.is_update and _rows_from_params(writes, info, params):
        return None  # UPDATE by primary key
    dialect = state.session.get_bind(info.mapper).dialect
    can_return = dialect.update_returning if state.is_update else dialect.delete_returning
    if statement._returning or statement._return_defaults or not can_return:
        writes.add_model(info)  # the rows cannot be known: every entry of the model goes
        return None
    # return_defaults() fetches the keys by RETURNING without changing what the
    # caller's result holds (rowcount included), as the ORM's own "fetch" does.
    result: Any = state.invoke_statement(
        statement=statement.return_defaults(*info.mapper.primary_key)
    )
    for row in result.returned_defaults_rows or ():
        writes.add(info, info.template.body(row))
    return result  # type: ignore[no-any-return]


def _collect(objects: Any, writes: Writes) -> None:
    for obj in objects:
        info = registry.info(type(obj))
        if info is None:
            continue
        state = instance_state(obj)
        if state.key is not None:  # the identity before this flush (old primary key)
            writes.add(info, info.template.body(state.key[1]))
        dict_ = state.dict
        pk = [dict_.get(info.attrs[i]) for i in info.pk_positions]
        if None not in pk:
            writes.add(info, info.template.body(pk))


def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    # new/dirty/deleted still hold the pre-flush state here.
    if not registry.models():
        return
    writes = _writes_in(session.info, _WRITES)
    _collect(session.new, writes)
    _collect(session.dirty, writes)
    _collect(session.deleted, writes)


def _after_commit(session: Session) -> None:
    writes = session.info.pop(_WRITES, None)
    runtime = _runtime.current
    if writes is None or runtime is None or not runtime.enabled:
        return
    writes.invalidate(runtime)
    for info in writes.models():
        bind = session.get_bind(info.mapper)
        if isinstance(bind, Connection) and bind.in_transaction():
            # The session joined a transaction it does not own: the rows are not
            # committed yet. Delete them again when that transaction commits.
            _writes_in(bind.info, _DEFERRED).merge(writes, info)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended (after_commit, if any, has run): a rollback
    # or close() discards its writes. Savepoints end here too; their rollback
    # keeps the outer transaction's writes, so they are left alone.
    if transaction.parent is None:
        session.info.pop(_WRITES, None)


def _invalidate_again(info: dict[Any, Any]) -> None:
    writes = info.pop(_AFTER_COMMIT, None)
    runtime = _runtime.current
    if writes is not None and runtime is not None and runtime.enabled:
        writes.invalidate(runtime)


def _on_begin(conn: Connection) -> None:
    info = conn.info
    if _AFTER_COMMIT in info:
        _invalidate_again(info)
    info[_BEGAN] = next(_sequence)


def _on_commit(conn: Connection) -> None:
    # Fires just before the database commits a transaction that sessions joined.
    # A reader may fill an old row between this delete and the commit, so the
    # keys are deleted again once the connection is next used or returned.
    writes = conn.info.pop(_DEFERRED, None)
    runtime = _runtime.current
    if writes is not None and runtime is not None and runtime.enabled:
        writes.invalidate(runtime)
        conn.info[_AFTER_COMMIT] = writes


def _on_rollback(conn: Connection) -> None:
    conn.info.pop(_DEFERRED, None)


def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
    if record is not None and _AFTER_COMMIT in record.info:
        _invalidate_again(record.info)


# Attached once, at import, to the base classes: every Session (the one inside
# an AsyncSession too), Engine and Pool. A tuple so that tools (the benchmark's
# "no library" row) can detach exactly what we attach.
HOOKS = (
    (Session, "do_orm_execute", _on_execute),
    (Session, "after_flush", _after_flush),
    (Session, "after_commit", _after_commit),
    (Session, "after_transaction_end", _after_transaction_end),
    (Engine, "begin", _on_begin),
    (Engine, "commit", _on_commit),
    (Engine, "rollback", _on_rollback),
    (Pool, "checkin", _on_checkin),
)
for _target, _name, _hook in HOOKS:
    event.listen(_target, _name, _hook)
