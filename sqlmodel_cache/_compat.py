"""Every private SQLAlchemy attribute the cache relies on, and the version branches.

Nothing else in the package touches an underscored SQLAlchemy name: when a
release moves one, this is the one module to change, and the test suite runs
on the oldest and the newest SQLAlchemy we allow.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from typing import Any

import sqlalchemy
from sqlalchemy import Table
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.orm import Mapper, ORMExecuteState, Session
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.orm.util import LoaderCriteriaOption
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter

_VERSION = tuple(int(part) for part in sqlalchemy.__version__.split(".")[:3] if part.isdigit())
SQLALCHEMY_2_1 = _VERSION >= (2, 1)
# Before 2.0.56 a DELETE's cache key ignored return_defaults(): the compiled form
# with RETURNING that we add could be reused for the caller's own, plain DELETE.
DELETE_RETURN_DEFAULTS = _VERSION >= (2, 0, 56)


# -- greenlet ----------------------------------------------------------------------

# An install without sqlalchemy[asyncio] has no greenlet, so nothing runs in one, and
# SQLAlchemy 2.1's in_greenlet() would raise ImportError: chosen once, here.
if importlib.util.find_spec("greenlet") is None:  # pragma: no cover - its own CI run
    in_greenlet: Callable[[], bool] = lambda: False  # noqa: E731
else:
    from sqlalchemy.util.concurrency import in_greenlet as _in_greenlet

    in_greenlet = _in_greenlet


# -- statements ------------------------------------------------------------------


def where_criteria(statement: Any) -> tuple[Any, ...]:
    """The WHERE clauses of a select, as given (not yet combined)."""
    return statement._where_criteria  # type: ignore[no-any-return]


def plain_select(statement: Any) -> bool:
    """No join, grouping or paging: nothing a primary-key get would not have."""
    return (
        len(statement._raw_columns) == 1
        and not statement._setup_joins
        and not statement._group_by_clauses
        and statement._limit_clause is None
        and statement._offset_clause is None
    )


def loader_options_kind(statement: Any) -> str | None:
    """ "loader_criteria" (a with_loader_criteria(), as tenant hooks add), "loader_options"
    (any other option), or None when the statement has none."""
    options = statement._with_options
    if not options:
        return None
    if any(isinstance(option, LoaderCriteriaOption) for option in options):
        return "loader_criteria"
    return "loader_options"


def locks_rows(statement: Any) -> bool:
    """Whether the statement has FOR UPDATE / FOR SHARE."""
    return statement._for_update_arg is not None


def get_clause(mapper: Mapper[Any]) -> tuple[Any, dict[Any, Any]]:
    """The mapper's own primary-key clause and its bound parameters, as session.get uses."""
    return mapper._get_clause  # type: ignore[no-any-return]


def bound_names(criterion: Any) -> set[str]:
    return {
        element.key for element in visitors.iterate(criterion) if isinstance(element, BindParameter)
    }


if SQLALCHEMY_2_1:

    def get_shaped(statement: Any, criterion: Any, keys: frozenset[str]) -> bool:
        """Whether criterion is a copy of a mapper's primary-key clause with these parameters.

        session.get puts the mapper's own clause object in the WHERE, but one
        built before the mappers were last configured is another object: the
        same bound parameters in an otherwise plain select make the same query.
        """
        return bound_names(criterion) == keys and plain_select(statement)

else:  # pragma: no cover - SQLAlchemy 2.0 puts in a fresh annotated copy each time

    def get_shaped(statement: Any, criterion: Any, keys: frozenset[str]) -> bool:
        return criterion._annotations.get("_orm_adapt") is True and plain_select(statement)


# -- loads -------------------------------------------------------------------------


def load_kind(state: ORMExecuteState) -> str | None:
    """Why a get-shaped load is not a plain session.get (None when it is one)."""
    options = state.load_options
    if options._refresh_state is not None:
        return "refresh"  # refresh(), expired or deferred attributes
    if options._lazy_loaded_from is not None:
        return "relationship"
    if options._populate_existing:
        return "populate_existing"
    if options._identity_token is not None:
        return "identity_token"
    return None


def history(state: Any, key: str) -> tuple[Any, Any]:
    """An attribute's (value now, value before this flush) in after_flush; the same twice
    when it did not change (a new or a deleted row's values stand for both)."""
    now = state.dict.get(key)
    deleted = state.attrs[key].history.deleted
    return now, deleted[0] if deleted else now


def lazy_load(state: ORMExecuteState) -> bool:
    """Whether state is a relationship's lazy load (which runs no eager loaders)."""
    return state.load_options._lazy_loaded_from is not None


def autoflushes(state: ORMExecuteState) -> bool:
    return bool(state.load_options._autoflush)


def clean_for_get(session: Session) -> bool:
    """Whether a get in session would run bare: nothing for its autoflush to flush, and
    no session-wide execution options (SQLAlchemy 2.1) to merge into it."""
    if getattr(session, "execution_options", None):
        return False
    return not session.autoflush or session._is_clean()


def autoflush(session: Session) -> None:
    """Flush as a query would before running (returning a result skips it)."""
    session._autoflush()


# -- mapped classes ------------------------------------------------------------------


def open_connection(session: Session, bind: Any) -> Any:
    """The Connection the session's transaction already holds for bind, else None
    (asking session.connection() would begin a transaction and check one out)."""
    transaction = session.get_transaction()
    if transaction is None:
        return None
    entry = transaction._connections.get(bind)
    return None if entry is None else entry[0]


def bound_to_caller(transaction: Any, conn: Any) -> bool:
    """Whether a session's transaction runs on a Connection the caller gave it."""
    entry = transaction._connections.get(conn)
    return entry is not None and not entry[3]  # (conn, transaction, should_commit, autoclose)


def identity_class(mapper: Mapper[Any]) -> type:
    """The class whose name identity keys carry: the hierarchy's base, for inheritance."""
    return mapper._identity_class


def loads_subclass_columns(base: Mapper[Any], sub: Mapper[Any]) -> bool:
    """Whether a load of base also loads sub's own columns (with_polymorphic, or a
    subclass declared with polymorphic_load="inline" or "selectin")."""
    return sub in base._with_polymorphic_mappers or sub.polymorphic_load in ("inline", "selectin")


def new_persistent(
    session: Session, mapper: Mapper[Any], identity: tuple[Any, ...], values: dict[str, Any]
) -> Any:
    """A clean persistent instance holding values, added to the session's identity map."""
    obj = mapper.class_manager.new_instance()
    state: InstanceState[Any] = obj._sa_instance_state
    dict_ = state.dict
    dict_.update(values)
    state.key = identity
    state.identity_token = None
    state.session_id = session.hash_key
    identity_map = session.identity_map
    identity_map._add_unpresent(state, identity)
    state._commit_all(dict_, identity_map)
    return obj


def expire(obj: Any, keys: tuple[str, ...]) -> None:
    """Mark attributes unloaded, as a load that did not fetch them leaves them."""
    state: InstanceState[Any] = obj._sa_instance_state
    state._expire_attributes(state.dict, keys)


# -- bulk statements -----------------------------------------------------------------


def is_upsert(statement: Any) -> bool:
    """An INSERT with ON CONFLICT / ON DUPLICATE KEY: it may change existing rows."""
    return getattr(statement, "_post_values_clause", None) is not None


def returns_rows(statement: Any) -> bool:
    """Whether the caller asked for RETURNING (we must not change what it gets)."""
    return bool(statement._returning or statement._return_defaults)


# -- results ---------------------------------------------------------------------------

# SQLAlchemy 2.1 renamed the private hook that makes unique() compare ORM
# entities by identity (models that define __eq__ are unhashable).
if "_create_unique_filters" in inspect.signature(SimpleResultMetaData).parameters:

    def result_metadata(name: str) -> SimpleResultMetaData:
        return SimpleResultMetaData([name], _create_unique_filters=lambda _: [id])

else:  # pragma: no cover - SQLAlchemy 2.0

    def result_metadata(name: str) -> SimpleResultMetaData:
        return SimpleResultMetaData([name], _unique_filters=[id])  # type: ignore[call-arg]


# -- what a DML statement touches ----------------------------------------------------

UNKNOWN: Any = object()


def dml_table(statement: Any) -> Any:
    """The Table an INSERT/UPDATE/DELETE writes (not an ORM-annotated copy), else None."""
    table = getattr(statement, "table", None)
    deannotate = getattr(table, "_deannotate", None)
    if deannotate is not None:
        table = deannotate()
    return table if isinstance(table, Table) else None


def upsert_target(statement: Any) -> set[str] | None:
    """None for a plain INSERT; for an upsert, the column names of its conflict target
    (an empty set when unknown: ON DUPLICATE KEY, a named constraint)."""
    clause = getattr(statement, "_post_values_clause", None)
    if clause is None:
        return None
    elements = getattr(clause, "inferred_target_elements", None) or ()
    names = {getattr(element, "name", element) for element in elements}
    return {name for name in names if isinstance(name, str)} if names else set()


def ignores_conflicts(statement: Any) -> bool:
    """ON CONFLICT DO NOTHING: a conflicting row is left as it was."""
    clause = getattr(statement, "_post_values_clause", None)
    return type(clause).__name__ == "OnConflictDoNothing"


def has_prefixes(statement: Any) -> bool:
    """INSERT OR REPLACE and the like (SQLite, MySQL)."""
    return bool(getattr(statement, "_prefixes", ()))


def bound_value(compiled: Any, bind: Any, params: Any, *, expanding: bool) -> Any:
    """The value a bound parameter had in one parameter set, or UNKNOWN.

    An expanding (IN) parameter is split by SQLAlchemy into name_1, name_2...
    before the cursor sees it; a parameter the ORM cloned is found by its key.
    """
    name = compiled.bind_names.get(bind)
    if name is None:
        name = next((n for n, b in compiled.binds.items() if b.key == bind.key), None)
        if name is None:
            return UNKNOWN
    if name in params:
        return params[name]
    if expanding:
        values: list[Any] = []
        while f"{name}_{len(values) + 1}" in params:
            values.append(params[f"{name}_{len(values) + 1}"])
        if values:
            return values
        if isinstance(bind.value, (list, tuple)) and not bind.value:
            return []  # an empty IN: no row
    return UNKNOWN
