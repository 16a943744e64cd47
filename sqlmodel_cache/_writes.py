"""Writes: which rows a transaction changed, and their invalidation once it commits.

A session's open transaction keeps a ``Writes`` in ``session.info``: ORM flushes
and ORM bulk statements add the rows they touch (or a whole model when the rows
cannot be known). The commit hands it to the runtime; a rollback drops it. A
session joined to a transaction it does not own (``Session(bind=connection)``)
cannot see that transaction commit, so its writes move to the connection and are
invalidated again when the connection's own transaction commits.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection, Result
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction
from sqlalchemy.orm.base import instance_state

from . import _compat, _runtime
from ._registry import Route, registry

if TYPE_CHECKING:
    from ._registry import Keyspace, ModelInfo

# session.info key of the open transaction's Writes.
_WRITES = "_sqlmodel_cache_writes"
# Connection.info keys: when its transaction began (for snapshot checks), the
# writes of sessions that joined its transaction, and writes to delete again
# once its commit is over.
_BEGAN = "_sqlmodel_cache_began"
_DEFERRED = "_sqlmodel_cache_deferred"
_AFTER_COMMIT = "_sqlmodel_cache_after_commit"
_sequence = itertools.count(1)


class Writes:
    """Key bodies per keyspace, and keyspaces whose touched rows are unknown (all of them go)."""

    __slots__ = ("rows", "whole")

    def __init__(self) -> None:
        self.rows: dict[Keyspace, set[str]] = {}
        self.whole: set[Keyspace] = set()

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

    def merge(self, other: Writes, keyspace: Keyspace) -> None:
        """Take over other's writes to one keyspace."""
        if keyspace in other.whole:
            self.whole.add(keyspace)
        self.rows.setdefault(keyspace, set()).update(other.rows.get(keyspace, ()))


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


# -- what a transaction writes -------------------------------------------------


def _rows_from_params(writes: Writes, route: Route, params: Any) -> bool:
    """Record the rows of an executemany whose parameters all name a primary key."""
    names = route.pk_names
    if type(params) is not list or not params or names is None:
        return False
    if not all(name in row for row in params for name in names):
        return False
    for row in params:
        writes.add_row(route, [row[name] for name in names])
    return True


def bulk_write(state: ORMExecuteState, route: Route) -> Result[Any] | None:
    """Run an ORM bulk INSERT/UPDATE/DELETE so that the rows it touched are known."""
    writes = _writes_in(state.session.info, _WRITES)
    statement: Any = state.statement
    params = state.parameters
    if state.is_insert:
        # New rows have no entries; only an upsert changes rows that may be cached.
        if _compat.is_upsert(statement) and not _rows_from_params(writes, route, params):
            writes.add_all(route)
        return None
    if state.is_update and _rows_from_params(writes, route, params):
        return None  # UPDATE by primary key
    mapper = state.bind_mapper
    assert mapper is not None
    dialect = state.session.get_bind(mapper).dialect
    can_return = dialect.update_returning if state.is_update else dialect.delete_returning
    if _compat.returns_rows(statement) or not can_return:
        writes.add_all(route)  # the rows cannot be known: every entry of the model goes
        return None
    # return_defaults() fetches the keys by RETURNING without changing what the
    # caller's result holds (rowcount included), as the ORM's own "fetch" does.
    result: Any = state.invoke_statement(statement=statement.return_defaults(*mapper.primary_key))
    rows = result.returned_defaults_rows
    if rows is None:  # no RETURNING after all (a joined subclass's own table, say)
        writes.add_all(route)
    for row in rows or ():
        writes.add_row(route, row)
    return result  # type: ignore[no-any-return]


def _collect(objects: Any, writes: Writes) -> None:
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


def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    # new/dirty/deleted still hold the pre-flush state here.
    if not registry.models():
        return
    writes = _writes_in(session.info, _WRITES)
    _collect(session.new, writes)
    _collect(session.dirty, writes)
    _collect(session.deleted, writes)


# -- when it ends ------------------------------------------------------------------


def _after_commit(session: Session) -> None:
    writes = session.info.pop(_WRITES, None)
    runtime = _runtime.current
    if writes is None or runtime is None or not runtime.enabled:
        return
    runtime.invalidate_writes(writes)
    for keyspace in writes.keyspaces():
        bind = session.get_bind(keyspace.mapper)
        if isinstance(bind, Connection) and bind.in_transaction():
            # The session joined a transaction it does not own: the rows are not
            # committed yet. Delete them again when that transaction commits.
            _writes_in(bind.info, _DEFERRED).merge(writes, keyspace)


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
        runtime.invalidate_writes(writes)


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
        runtime.invalidate_writes(writes)
        conn.info[_AFTER_COMMIT] = writes


def _on_rollback(conn: Connection) -> None:
    conn.info.pop(_DEFERRED, None)


def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
    if record is not None and _AFTER_COMMIT in record.info:
        _invalidate_again(record.info)
