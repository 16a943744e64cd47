"""Writes: what a transaction changed, and its invalidation once it commits.

Every statement a connection sends passes ``_on_cursor_execute``: ORM flushes,
ORM and Core bulk statements, executemany, the bulk helpers, ``text()`` and
``exec_driver_sql``. A statement that is not a plain read marks its
transaction **dirty** (it fills nothing from then on: it may read its own
uncommitted rows), and the rows it may have changed in cached tables are
recorded (see ``_statements``): by primary key when its WHERE pins them, else
every entry of the model. ORM flushes also record their rows by identity
(old and new primary key), and ORM bulk UPDATE/DELETE fetch their keys with
RETURNING where the dialect takes it.

A session's transaction keeps its ``Writes`` in ``session.info``; each
connection it uses points to them while the transaction lasts, so statements
sent on that connection outside the session (``session.connection()``) count
too. The session's commit hands them to the runtime after the database
committed; its rollback drops them. A transaction no session owns
(``engine.begin()``) keeps its writes on the connection: they are deleted when
it commits, and again once the commit is surely over (when the connection
begins again or goes back to the pool), since a reader may fill the old row in
between. A session joined to a caller's transaction (``Session(bind=conn)``)
hands its writes to that connection, likewise.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection, Result
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction
from sqlalchemy.orm.base import instance_state

from . import _compat, _runtime, _statements
from ._natural import changed_bodies
from ._registry import Route, registry

if TYPE_CHECKING:
    from ._registry import Keyspace, ModelInfo

# session.info key of the open transaction's Writes.
_WRITES = "_sqlmodel_cache_writes"
# Connection.info keys (they live as long as the DBAPI connection): when its
# transaction began (for snapshot checks); the Writes of the session whose
# transaction it is in; the writes of a transaction no session owns; writes of
# joined sessions, for the caller's commit; writes to delete again once a
# commit is over; isolation levels set in SQL (this transaction, the session).
_BEGAN = "_sqlmodel_cache_began"
_LINK = "_sqlmodel_cache_session_writes"
_OWN = "_sqlmodel_cache_connection_writes"
_DEFERRED = "_sqlmodel_cache_deferred"
_AFTER_COMMIT = "_sqlmodel_cache_after_commit"
# Deferred fills go out early once this many wait or the first has waited this long
# (seconds): a long transaction must not hold its leases, which stop other readers
# filling, until they expire.
_FILLS_MAX = 100
_FILLS_AGE = 0.5
TRANSACTION_ISOLATION = "_sqlmodel_cache_transaction_isolation"
SESSION_ISOLATION = "_sqlmodel_cache_session_isolation"
# Execution option of a statement whose rows the ORM layer recorded itself.
TRACKED = "_sqlmodel_cache_tracked"
_sequence = itertools.count(1)
_unconfigured_warned: set[str] = set()  # keyspaces written before configure(), said once

log = logging.getLogger("sqlmodel_cache")


class Writes:
    """Key bodies per keyspace, keyspaces whose touched rows are unknown (all of them go),
    and whether the transaction sent anything but reads (then it fills nothing)."""

    __slots__ = ("connections", "deferred", "dirty", "finishing", "held", "rows", "whole")

    def __init__(self) -> None:
        self.rows: dict[Keyspace, set[str]] = {}
        self.whole: set[Keyspace] = set()
        self.dirty = False
        self.connections: list[Connection] = []  # those pointing here (see _LINK)
        # Fills kept for the transaction's end; fills sent, whose replies are still to read.
        self.deferred: _Deferred | None = None
        self.finishing: list[Callable[[], None]] = []
        self.held: _runtime.Held | None = None  # its keys held in L2 while it commits

    def __bool__(self) -> bool:
        return bool(self.rows or self.whole)

    def add_row(self, route: Route, values: Sequence[Any]) -> None:
        """One row, by its primary-key values in the mapper's order, wherever it is cached."""
        for keyspace, positions in route.targets:
            if positions is None:
                self.whole.add(keyspace)
            else:
                body = keyspace.template.body([values[i] for i in positions])
                self.rows.setdefault(keyspace, set()).add(body)

    def add_all(self, route: Route) -> None:
        """Rows that cannot be known: every entry they may be cached in goes."""
        self.whole.update(keyspace for keyspace, _ in route.targets)

    def touches(self, info: ModelInfo, body: str) -> bool:
        """Whether this transaction wrote (or may have written) that row."""
        keyspace = info.keyspace
        return keyspace in self.whole or body in self.rows.get(keyspace, ())

    def keyspaces(self) -> Iterable[Keyspace]:
        return self.rows.keys() | self.whole

    def merge(self, other: Writes, keyspace: Keyspace | None = None) -> None:
        """Take over other's writes (to one keyspace only, when given)."""
        for space in [keyspace] if keyspace is not None else list(other.keyspaces()):
            if space in other.whole:
                self.whole.add(space)
            if space in other.rows:
                self.rows.setdefault(space, set()).update(other.rows[space])


def mark() -> int:
    """A point in time, comparable with when connections began their transactions."""
    return next(_sequence)


def began_after(conn: Connection, point: int) -> bool:
    """Whether conn's transaction began after the mark point."""
    return conn.info.get(_BEGAN, 0) > point  # type: ignore[no-any-return]


def writes_of(session: Session) -> Writes | None:
    """The writes of the session's open transaction, if any."""
    return session.info.get(_WRITES)


def _writes_in(store: dict[Any, Any], name: str) -> Writes:
    """The Writes kept under name in an info dict (a session's or a connection's)."""
    writes = store.get(name)
    if writes is None:
        writes = store[name] = Writes()
    return writes


# -- what a transaction writes -------------------------------------------------------


def _on_cursor_execute(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    compiled = context.compiled if context is not None else None
    if compiled is not None:
        if compiled.statement.is_select:
            return
        if compiled.statement.is_dml and _compat.dml_table(compiled.statement) is not None:
            targets = _statements.dml_targets(compiled, context.compiled_parameters)
        elif _statements.is_read(statement):
            return
        else:
            targets = None
    elif _statements.is_read(statement):
        return
    else:
        targets = None
    _record(conn, statement, targets, context)


def _record(
    conn: Connection, sql: str, targets: list[_statements.Target] | None, context: Any
) -> None:
    """Note a statement that is not a plain read: dirty, rows or tables, isolation."""
    writes = conn.info.get(_LINK)
    if writes is None:
        writes = _writes_in(conn.info, _OWN)
    writes.dirty = True
    if targets is None:
        _note_isolation(conn, sql)
        if _statements.creates_only(sql):
            return  # create_all() at startup, say: no cached row changes
        pattern, tables = registry.tables_named()
        targets = [(t, None) for name in _statements.mentioned(sql, pattern) for t in tables[name]]
    elif context is not None and context.execution_options.get(TRACKED):
        return  # the ORM layer recorded its rows (with RETURNING)
    for table, rows in targets:
        route = registry.table_route(table)
        if route is None:
            continue
        if rows is None:
            writes.add_all(route)
        else:
            for row in rows:
                writes.add_row(route, row)


def _note_isolation(conn: Connection, sql: str) -> None:
    found = _statements.isolation_set(sql)
    if found is not None:
        scope, level = found
        conn.info[TRANSACTION_ISOLATION if scope == "transaction" else SESSION_ISOLATION] = level


def bulk_write(state: ORMExecuteState, route: Route) -> Result[Any] | None:
    """Run an ORM bulk UPDATE/DELETE with RETURNING so that the rows it touched are known.

    Only a single statement the dialect can add RETURNING to: an executemany
    (psycopg refuses RETURNING there), an INSERT, or a statement with a RETURNING
    of its own runs as given, and the connection reads what it can from its WHERE.
    """
    if not (state.is_update or state.is_delete) or type(state.parameters) is list:
        return None
    if state.is_delete and not _compat.DELETE_RETURN_DEFAULTS:
        return None
    statement: Any = state.statement
    mapper = state.bind_mapper
    assert mapper is not None
    dialect = state.session.get_bind(mapper).dialect
    can_return = dialect.update_returning if state.is_update else dialect.delete_returning
    if _compat.returns_rows(statement) or not can_return:
        return None
    # return_defaults() fetches the keys by RETURNING without changing what the
    # caller's result holds (rowcount included), as the ORM's own "fetch" does.
    result: Any = state.invoke_statement(
        statement=statement.return_defaults(*mapper.primary_key),
        execution_options={TRACKED: True},
    )
    writes = _writes_in(state.session.info, _WRITES)
    rows = result.returned_defaults_rows
    if rows is None:  # no RETURNING after all (a joined subclass's own table, say)
        writes.add_all(route)
    for row in rows or ():
        writes.add_row(route, row)
    return result  # type: ignore[no-any-return]


def _collect(objects: Any, writes: Writes, *, updated: bool = False) -> None:
    for obj in objects:
        route = registry.route(type(obj))
        if route is None:
            continue
        state = instance_state(obj)
        if state.key is not None:  # the identity before this flush (old primary key)
            writes.add_row(route, state.key[1])
        if route.pk_names is not None:
            dict_ = state.dict
            pk = [dict_.get(name) for name in route.pk_names]
            if None not in pk:
                writes.add_row(route, pk)
        info = registry.info(type(obj))
        if info is not None and info.natural:
            # The natural-key entries of the values before and after: get_by checks
            # every row it is led to anyway, but these go at commit with the row.
            rows = writes.rows.setdefault(info.keyspace, set())
            rows.update(changed_bodies(info, state, changed_only=updated))


def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    # new/dirty/deleted still hold the pre-flush state here.
    if not registry.models():
        return
    writes = _writes_in(session.info, _WRITES)
    writes.dirty = True
    _collect(session.new, writes)
    _collect(session.dirty, writes, updated=True)
    _collect(session.deleted, writes)


def _after_begin(session: Session, transaction: SessionTransaction, conn: Connection) -> None:
    # From now on, what this connection sends belongs to the session's transaction,
    # unless the connection is a caller's: its transaction stays the caller's.
    if _compat.bound_to_caller(transaction, conn):
        return
    writes = _writes_in(session.info, _WRITES)
    writes.connections.append(conn)
    conn.info[_LINK] = writes


def _unlink(writes: Writes) -> None:
    for conn in writes.connections:
        # A closed connection went back to the pool, which cleared the link.
        if not (conn.closed or conn.invalidated) and conn.info.get(_LINK) is writes:
            del conn.info[_LINK]
    writes.connections.clear()


# -- fills deferred to the end of the transaction ----------------------------------------


class _Deferred:
    """The fills a session's transaction keeps for its end, and the runtime they are for."""

    __slots__ = ("fills", "runtime", "since")

    def __init__(self, runtime: _runtime.Runtime) -> None:
        self.runtime = runtime
        self.fills: list[_runtime.Fill] = []
        self.since = time.monotonic()


def defer_fill(session: Session, runtime: _runtime.Runtime, fill: _runtime.Fill) -> None:
    """Keep a fill for the end of the session's transaction (commit, rollback or close)."""
    writes = _writes_in(session.info, _WRITES)
    deferred = writes.deferred
    if deferred is None or deferred.runtime is not runtime:
        deferred = writes.deferred = _Deferred(runtime)
    deferred.fills.append(fill)
    if len(deferred.fills) >= _FILLS_MAX or time.monotonic() - deferred.since > _FILLS_AGE:
        writes.deferred = None
        runtime.fill(deferred.fills)


def _take_fills(writes: Writes) -> list[_runtime.Fill]:
    """The fills writes' transaction deferred, if the runtime they are for is current."""
    deferred, writes.deferred = writes.deferred, None
    if deferred is None or deferred.runtime is not _runtime.current:
        return []  # reset() or configure() since: their leases just expire
    return deferred.fills


def _unwritten(fills: list[_runtime.Fill], writes: Writes) -> list[_runtime.Fill]:
    # A row the transaction wrote is only invalidated: what it read is old now.
    return [f for f in fills if not writes.touches(f.info, f.body)] if writes else fills


def _before_end(conn: Connection, *, committing: bool) -> None:
    """Just before the database commits or rolls back a session's transaction: send its
    fills and, for a commit, the holds on the rows it wrote (Runtime.hold), so that
    their round trip overlaps the database's; the replies are read when the transaction
    has ended. The rows filled were committed ones when read, so neither the outcome
    nor the timing of this transaction changes what may be stored."""
    writes = conn.info.get(_LINK)
    if writes is None or writes.held is not None:
        return  # not a session's, or a connection after the first of a multi-bind commit
    holding = committing and bool(writes)
    if writes.deferred is None and not holding:
        return
    runtime = _runtime.current
    fills = _take_fills(writes)
    if committing:
        fills = _unwritten(fills, writes)
    if runtime is None:
        return
    if holding:
        writes.held = runtime.hold(writes, fills)
        if writes.held is not None:
            return
    if fills:
        writes.finishing.append(runtime.start_fill(fills))


def _finish(writes: Writes) -> None:
    for finish in writes.finishing:
        finish()
    writes.finishing.clear()


# -- when it ends ----------------------------------------------------------------------


def _after_commit(session: Session) -> None:
    writes = session.info.pop(_WRITES, None)
    if writes is None:
        return
    _unlink(writes)
    _finish(writes)
    fills = _unwritten(_take_fills(writes), writes)  # those no connection event sent
    if not writes:
        _fill(fills)
        return
    if _settled(writes, committed=True):
        _fill(fills)
    elif not _invalidate(writes, fills):
        return
    for keyspace in writes.keyspaces():
        bind = session.get_bind(keyspace.mapper)
        if isinstance(bind, Connection) and bind.in_transaction():
            # The session joined a transaction it does not own: the rows are not
            # committed yet. Delete them again when that transaction commits.
            _writes_in(bind.info, _DEFERRED).merge(writes, keyspace)


def _invalidate(writes: Writes, fills: Sequence[_runtime.Fill] = ()) -> bool:
    """Invalidate what a commit wrote, then store fills; False when nothing was
    invalidated (no writes, or no configure())."""
    if not writes:
        return False
    runtime = _runtime.current
    if runtime is None:
        _unconfigured(writes)
        return False
    # Even with enabled=False: processes that have the cache on must not read stale rows.
    runtime.invalidate_writes(writes, fills)
    return True


def _settled(writes: Writes, *, committed: bool) -> bool:
    """Settle the holds writes took before the database's commit, if any (and if their
    runtime is still the current one: else they just expire); whether that invalidated
    the rows."""
    held, writes.held = writes.held, None
    if held is None or held.runtime is not _runtime.current:
        return False
    return held.runtime.settle(held, committed=committed)


def _fill(fills: Sequence[_runtime.Fill]) -> None:
    runtime = _runtime.current
    if fills and runtime is not None:
        runtime.fill(fills)


def _unconfigured(writes: Writes) -> None:
    # Reads of a cached model raise before configure(); a write cannot (the data
    # is the user's), but it invalidates nothing that other processes cached.
    for keyspace in writes.keyspaces():
        if keyspace.name not in _unconfigured_warned:
            _unconfigured_warned.add(keyspace.name)
            log.warning(
                "%s was written in a process that did not call SQLModelCache.configure(): "
                "no cache entry was invalidated, so processes that cache it may serve "
                "the old row until its TTL",
                keyspace.name,
            )


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended (after_commit, if any, has run): a rollback
    # or close() discards its writes. Savepoints end here too; their rollback
    # keeps the outer transaction's writes, so they are left alone.
    if transaction.parent is None:
        writes = session.info.pop(_WRITES, None)
        if writes is not None:
            _unlink(writes)
            _finish(writes)
            _settled(writes, committed=False)  # the commit failed after its holds went out
            # Rolled back or closed: the rows it read were committed ones all the same
            # (reads made after its first write keep no lease).
            _fill(_take_fills(writes))


def _invalidate_again(info: dict[Any, Any]) -> None:
    writes = info.pop(_AFTER_COMMIT, None)
    runtime = _runtime.current
    if writes is not None and runtime is not None:
        runtime.invalidate_writes(writes)


def _on_begin(conn: Connection) -> None:
    info = conn.info
    if _AFTER_COMMIT in info:
        _invalidate_again(info)
    info.pop(TRANSACTION_ISOLATION, None)
    info[_BEGAN] = next(_sequence)


def _on_commit(conn: Connection) -> None:
    # Fires just before the database commits a transaction no session owns (or
    # that sessions joined). A reader may fill an old row between this delete and
    # the commit, so the keys are deleted again once the commit is surely over.
    _before_end(conn, committing=True)
    info = conn.info
    writes = info.pop(_OWN, None) or Writes()
    deferred = info.pop(_DEFERRED, None)
    if deferred is not None:
        writes.merge(deferred)
    info.pop(TRANSACTION_ISOLATION, None)
    if _invalidate(writes):
        _writes_in(info, _AFTER_COMMIT).merge(writes)


def _on_rollback(conn: Connection) -> None:
    if conn.invalidated:
        return  # its DBAPI connection is gone, and what it kept with it (a cancelled query)
    _before_end(conn, committing=False)
    info = conn.info
    info.pop(_DEFERRED, None)
    info.pop(_OWN, None)
    info.pop(TRANSACTION_ISOLATION, None)


def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
    if record is None:
        return
    info = record.info
    if _AFTER_COMMIT in info:
        _invalidate_again(info)
    # Whatever a transaction left here did not commit: the pool rolls it back.
    for key in (_LINK, _OWN, _DEFERRED, TRANSACTION_ISOLATION):
        info.pop(key, None)
