"""Serving primary-key loads: recognise a get, answer it from L1 or L2, or load and fill.

A load is served only when it is exactly what ``session.get`` runs (the
mapper's primary-key clause, no loader options, no refresh, no lock, no
option that could change the row) and nothing in the session's transaction
makes the cached row the wrong answer. A miss reads the database under a
lease taken before the read, and fills only if that read cannot predate the
lease (see ``_fresh_snapshot``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection, Result
from sqlalchemy.engine.result import IteratorResult
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.orm.base import instance_state

from . import _compat, _registry, _runtime
from ._codec import ABSENT, freeze, mutable_positions, thaw
from ._config import ttl_seconds
from ._errors import ConfigurationError
from ._flights import Flight
from ._registry import ModelInfo, registry
from ._writes import (
    SESSION_ISOLATION,
    TRANSACTION_ISOLATION,
    Writes,
    began_after,
    defer_fill,
    mark,
    writes_of,
)

# Isolation levels whose every statement sees all rows committed before it.
_PER_STATEMENT = frozenset({"READ COMMITTED", "READ UNCOMMITTED", "AUTOCOMMIT"})
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


def _is_get(statement: Any, criterion: Any, info: ModelInfo, params: Any) -> bool:
    # session.get puts the mapper's own primary-key clause in the WHERE, the
    # same object; a user-written select() has a different one.
    if criterion is info.get_clause:
        return True
    if info.refresh_get_clause() and criterion is info.get_clause:
        return True
    return (
        type(params) is dict
        and params.keys() == info.param_key_set
        and _compat.get_shaped(statement, criterion, info.param_key_set)
    )


NOT_A_GET = "not a get"


def bypass_reason(state: ORMExecuteState, info: ModelInfo) -> str | None:
    """None when state is a plain ``session.get`` whose result a cache entry can stand for;
    else why not: NOT_A_GET for other loads, or why this get must go to the database."""
    statement: Any = state.statement
    criteria = _compat.where_criteria(statement)
    if len(criteria) != 1 or not _is_get(statement, criteria[0], info, state.parameters):
        return NOT_A_GET
    kind = _compat.load_kind(state)
    if kind == "refresh":
        return NOT_A_GET
    if kind is not None and kind != "relationship":
        return kind
    # A many-to-one's lazy load by the target's primary key (SQLAlchemy's "use_get") runs
    # exactly the get above: served like one.
    if _compat.locks_rows(statement):
        return "for_update"
    options = _compat.loader_options_kind(statement)
    if options is not None:
        return options
    if info.mapper.always_refresh:
        return "always_refresh"
    return _foreign_option(state.execution_options)


def _foreign_option(options: Mapping[str, Any]) -> str | None:
    """The first execution option that could change which row a load returns, as a reason."""
    if _NEUTRAL_OPTIONS.issuperset(options):
        return None
    return "execution_option:" + min(options.keys() - _NEUTRAL_OPTIONS)


def _cache_option(options: Any) -> bool:
    use = options.get("cache", True)
    if type(use) is not bool:
        raise ConfigurationError(f"execution option cache must be True or False, got {use!r}")
    return use


def _ttl(options: Any, info: ModelInfo, runtime: _runtime.Runtime) -> int:
    ttl = options.get("cache_ttl")
    if ttl is None:
        return info.ttl(runtime.default_ttl)
    return ttl_seconds("execution option cache_ttl", ttl)


def serve(state: ORMExecuteState, info: ModelInfo) -> Result[Any] | None:
    """Answer a get from the cache, or load it and fill; None lets the ORM load it."""
    runtime = _runtime.current
    if runtime is None:
        raise ConfigurationError(_runtime.NOT_CONFIGURED)
    reason = _session_reason(state.session, state.execution_options, info, runtime)
    if reason is not None:
        runtime.stats.bypass(info.name, reason)
        return None
    ttl = _ttl(state.execution_options, info, runtime)
    session = state.session
    params: Any = state.parameters
    body = info.template.body([params[k] for k in info.param_keys])
    if _compat.autoflushes(state):
        _compat.autoflush(session)  # returning a result skips the ORM's autoflush
    writes = writes_of(session)
    if writes and writes.touches(info, body):
        runtime.stats.bypass(info.name, "own_write")  # only the database has this row
        return None

    key = runtime.prefix + body
    found, epoch = runtime.recall(info, key)
    if found is not None:
        return _hit(state, info, *found)
    return _fly(state, runtime, info, body, key, epoch, ttl, writes)


NOT_HERE: Any = object()  # recall_get's answer when the ORM must run the get


def recall_get(session: Session, entity: Any, ident: Any, *, connect: bool = True) -> Any:
    """``session.get(entity, ident)`` answered from L1 before SQLAlchemy builds a statement,
    or NOT_HERE. Only where the ORM's own get would come to the same hit: no object of that
    identity in the session, nothing to autoflush, no hook of anyone else's on the
    statement, and the session's reasons checked as for any get. Sends nothing anywhere
    (connect=False: not even to learn an isolation level), so AsyncSession may call it."""
    runtime = _runtime.current
    if runtime is None or not isinstance(entity, type):
        return NOT_HERE  # the ORM's path says what is wrong, or handles mappers
    info = registry.info(entity)
    if info is None or info.problem is not None:
        return NOT_HERE
    if runtime.l1_for(info) is None or info.mapper.always_refresh:
        return NOT_HERE
    if not connect and any(member.eager for member, _ in info.family.values()):
        return NOT_HERE  # loading them would be I/O outside SQLAlchemy's greenlet
    values = list(ident) if type(ident) in (tuple, list) else [ident]
    if len(values) != len(info.param_keys) or None in values:
        return NOT_HERE
    if (info.identity_class, tuple(values), None) in session.identity_map:
        return NOT_HERE  # the ORM's identity rules (expired, deleted, another class...)
    if len(session.dispatch.do_orm_execute) != 1 or not _compat.clean_for_get(session):
        return NOT_HERE
    if _session_reason(session, {}, info, runtime, connect=connect) is not None:
        return NOT_HERE  # counted when the ORM's path meets it
    body = info.template.body(values)
    writes = writes_of(session)
    if writes and writes.touches(info, body):
        return NOT_HERE
    found, _epoch = runtime.recall(info, runtime.prefix + body)
    if found is None:
        return NOT_HERE
    return _instance(session, *found)


def _session_reason(
    session: Session,
    call_options: Mapping[str, Any],
    info: ModelInfo,
    runtime: _runtime.Runtime,
    *,
    connect: bool = True,
) -> str | None:
    """Why this get may not use the cache, given the configuration, the call, the session,
    its connection, the engine and the isolation level. Without connect, a level that
    only a connection could tell is a reason too (UNKNOWN)."""
    if not (runtime.enabled and info.config.enabled):
        return "disabled"
    if call_options and not _cache_option(call_options):
        return "cache_option"
    bind = session.get_bind(info.mapper)
    if isinstance(bind, Connection):
        # A session on a caller's connection may share an outer transaction whose
        # writes it cannot see committed or rolled back.
        return "outer_connection"
    conn = _compat.open_connection(session, bind)
    if conn is not None:
        return _bind_reason(session, info, runtime, bind, conn, connect=connect)
    # No transaction yet: the answer is the engine's alone, the same until its options
    # change (they are replaced, never changed in place) - worked out once.
    options = bind.get_execution_options()
    known = runtime.engine_reasons.get(bind)
    if known is not None and known[0] is options:
        return known[1]
    reason = _bind_reason(session, info, runtime, bind, None, connect=connect)
    if reason is not UNKNOWN and session.get_transaction() is None:
        runtime.engine_reasons[bind] = (options, reason)
    return reason


def _bind_reason(
    session: Session,
    info: ModelInfo,
    runtime: _runtime.Runtime,
    bind: Any,
    conn: Connection | None,
    *,
    connect: bool,
) -> str | None:
    options = (conn if conn is not None else bind).get_execution_options()
    if not _cache_option(options):
        return "cache_option"
    # An engine or connection with options (schema_translate_map, tenant hints) may
    # read other rows under one key.
    reason = _foreign_option(options)
    if reason is not None:
        return reason
    if not runtime.snapshot_isolation:
        snapshot = _snapshot_isolated(session, info, bind, conn, connect=connect)
        if snapshot is None:
            return UNKNOWN
        if snapshot:
            # A hit would skip the transaction's snapshot and its predicate locks.
            return "isolation"
    return None


UNKNOWN = "unknown"  # not known without I/O


_SNAPSHOT_LEVELS = frozenset({"REPEATABLE READ", "SERIALIZABLE", "SNAPSHOT"})


def isolation_level(conn: Connection) -> str | None:
    """The isolation level conn's transaction runs at, as far as SQLAlchemy has seen it:
    set in SQL for this transaction, as an execution option, in SQL for the session, or
    the database's default."""
    info = conn.info
    return (
        info.get(TRANSACTION_ISOLATION)
        or conn.get_execution_options().get("isolation_level")
        or info.get(SESSION_ISOLATION)
        or conn.default_isolation_level
    )


def _snapshot_isolated(
    session: Session, info: ModelInfo, bind: Any, conn: Connection | None, *, connect: bool
) -> bool | None:
    """Whether the get runs in a REPEATABLE READ / SERIALIZABLE transaction of a server
    database (SQLite's SERIALIZABLE serializes writers, and reads run outside a
    transaction until the first write: no skew a hit could cause)."""
    dialect = bind.dialect
    if dialect.name == "sqlite":
        return False
    if conn is not None:
        level = isolation_level(conn)
    else:
        level = bind.get_execution_options().get("isolation_level")
        level = level or getattr(dialect, "default_isolation_level", None)  # set on connect
        if level is None:  # the engine never connected: its default is not known yet
            if not connect:
                return None
            level = isolation_level(session.connection(bind_arguments={"mapper": info.mapper}))
    return level in _SNAPSHOT_LEVELS


Shared = tuple[ModelInfo, list[Any], tuple[int, ...]]  # a row for other readers


def _shareable(member: ModelInfo, values: list[Any]) -> Shared:
    """A copy of a row that other readers can each thaw a private copy of."""
    positions = mutable_positions(values)
    return member, freeze(values, positions), positions


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
    flight = runtime.flights.lead(key)
    if flight is None:  # another load of this key is under way in this process
        shared = runtime.flights.follow(key)
        if shared is not None:
            member, values, positions = shared
            relation = info.family.get(member.codec.fingerprint)
            if relation is not None and _runtime.complete(values, relation[1]):
                runtime.stats.hit(info.name, key)
                return _hit(state, info, relation[0], thaw(values, positions))
        runtime.stats.miss(info.name, key)
        runtime.stats.unfilled(info.name, "followed")  # the leader had nothing to share
        return state.invoke_statement()
    shared = None
    try:
        found, token, why_not = runtime.fetch(info, key, epoch)
        if found is not None:
            if flight.future is not None:  # somebody follows: give them their own copy
                shared = _shareable(*found)
            return _hit(state, info, *found)
        result, shared = _load(
            state, runtime, info, body, key, token, why_not, epoch, ttl, writes, flight
        )
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
    why_not: str | None,
    epoch: int,
    ttl: int,
    writes: Writes | None,
    flight: Flight,
) -> tuple[Result[Any], Shared | None]:
    """A miss: read the database, fill when allowed; returns the result and the row to
    share with followers (only a row stored under the lease: the lease proves that no
    invalidation came in between). Nobody following, the fill waits for the end of the
    transaction, to go out with its other fills and its invalidations in one round trip."""
    reason: str | None = None
    if token is None:
        reason = why_not or _runtime.UNAVAILABLE
    elif writes is not None and writes.dirty:
        reason = "transaction_writes"  # it may read its own uncommitted writes
    elif not _fresh_snapshot(state.session, info, mark()):
        reason = "snapshot"
    frozen = state.invoke_statement().freeze()
    if not frozen.data:
        if token is not None:
            runtime.release(info, key, token)  # no row: the next reader may fill at once
        return frozen(), None
    if token is not None and reason is None:
        row = _row_values(info, frozen.data, body)
        if isinstance(row, str):
            reason = row
        else:
            member, values = row
            fill = runtime.prepare(info, member, key, token, values, ttl, epoch)
            if fill is None:
                return frozen(), None
            if flight.future is None:
                defer_fill(state.session, runtime, fill)
                return frozen(), None
            filled = runtime.fill([fill])[0]
            return frozen(), _shareable(member, values) if filled else None
    if reason is not None:
        runtime.stats.unfilled(info.name, reason)
    if token is not None:
        runtime.release(info, key, token)  # let the next reader fill
    return frozen(), None


def _fresh_snapshot(session: Session, info: ModelInfo, point: int) -> bool:
    """True when a read run now cannot see the database as it was before point.

    The lease was taken before point. Under READ COMMITTED (or autocommit) each
    statement sees what was committed before it started. Under snapshot
    isolation the transaction sees what was committed before its first
    statement: fresh only when this read starts the transaction, either in
    SQLAlchemy's view (it began after point) or in the driver's (no database
    transaction is open yet: pysqlite and aiosqlite run reads outside one until
    the first write; psycopg and asyncpg start one with the first statement).
    """
    conn = session.connection(bind_arguments={"mapper": info.mapper})
    if isolation_level(conn) in _PER_STATEMENT or began_after(conn, point):
        return True
    probe = _IN_TRANSACTION.get(conn.dialect.driver)
    return probe is not None and not probe(conn.connection.driver_connection)


# Whether a driver connection is inside a database transaction, by SQLAlchemy
# driver name; a driver not listed counts as inside one.
_IN_TRANSACTION: dict[str, Callable[[Any], bool]] = {
    "pysqlite": lambda raw: bool(raw.in_transaction),
    "aiosqlite": lambda raw: bool(raw.in_transaction),
    "psycopg": lambda raw: raw.info.transaction_status != 0,  # 0: IDLE
    "psycopg_async": lambda raw: raw.info.transaction_status != 0,
    "psycopg2": lambda raw: raw.get_transaction_status() != 0,
    "asyncpg": lambda raw: bool(raw.is_in_transaction()),
}


def _hit(
    state: ORMExecuteState, info: ModelInfo, member: ModelInfo, values: list[Any]
) -> Result[Any]:
    """A clean persistent instance of member's class from cached values, as the result
    of a get of info's class (a lazy load's too: it loads no eager relationships)."""
    eager = not _compat.lazy_load(state)
    obj = _instance(state.session, member, values, eager=eager)
    return IteratorResult(info.result_metadata, iter((obj,)), _source_supports_scalars=True)


def _instance(session: Session, member: ModelInfo, values: list[Any], *, eager: bool = True) -> Any:
    """A clean persistent instance of member's class from cached values, as the ORM's
    loader makes one (or the one the identity map holds)."""
    identity = (member.identity_class, tuple(values[i] for i in member.pk_positions), None)
    obj = session.identity_map.get(identity)
    if obj is None:
        loaded = {}
        absent = []
        for name, value in zip(member.attrs, values):
            if value is ABSENT:
                absent.append(name)  # a subclass column its get did not load
            else:
                loaded[name] = value
        obj = _compat.new_persistent(session, member.mapper, identity, loaded)
        unloaded = member.expire_on_hit + tuple(absent) if absent else member.expire_on_hit
        if unloaded:
            _compat.expire(obj, unloaded)
        if session.dispatch.loaded_as_persistent:
            session.dispatch.loaded_as_persistent(session, instance_state(obj))
        for relationship in member.eager if eager else ():
            # The mapper eager-loads these on a database load; a hit must not leave
            # them for an implicit lazy load (MissingGreenlet under AsyncSession).
            getattr(obj, relationship)
    return obj


def _row_values(
    info: ModelInfo, rows: Sequence[Any], body: str
) -> tuple[ModelInfo, list[Any]] | str:
    """The class and cacheable column values of a freshly loaded row, or why there are none."""
    if len(rows) != 1:
        return "rows"
    obj = rows[0]
    state = instance_state(obj)
    if state.modified or state.key is None:
        return "modified"
    found = info.family.get(_registry.fingerprint_of(type(obj)))
    if found is None:
        return "subclass_not_cached"  # a row of a subclass that is not cached itself
    member, required = found
    dict_ = state.dict
    values = [dict_.get(name, ABSENT) for name in member.attrs]
    if not _runtime.complete(values, required if required is not None else range(len(values))):
        return "partial_row"  # a column this get loads was not loaded: nothing exact to store
    # Store only under the key the row itself maps to: an ident that the database
    # matched loosely (1.0 for 1, another case under a collation) would otherwise
    # leave an entry that invalidating the row's own key cannot reach.
    if member.template.body([values[i] for i in member.pk_positions]) != body:
        return "other_key"
    return member, values
