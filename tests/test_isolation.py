"""Hits only where the load is exactly what a get would run: hooks that run after ours,
options on the session's connection, and snapshot isolation. Real PostgreSQL and Redis."""

import logging
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event, text
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import with_loader_criteria
from sqlmodel import Session

from sqlmodel_cache import ConfigurationError, SQLModelCache, _listeners

from .conftest import entries
from .heroes import name, seed
from .models import Hero

pg_only = pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)


def bypasses() -> dict[str, int]:
    stats = SQLModelCache.stats().by_model.get("Hero")
    return {} if stats is None else dict(stats.bypasses)


def test_a_tenant_hook_registered_after_ours_is_never_skipped(engine, cache, sql, caplog):
    # SQLAlchemy's global-criteria recipe, added the usual way: after our listener.
    seed(engine, (1, "tenant a's row"))
    name(engine, 1)  # cached, by a process without the hook
    seen: list[Any] = []

    def tenant_b(state: Any) -> None:
        seen.append(state.statement)
        if state.is_select:
            state.statement = state.statement.options(
                with_loader_criteria(Hero, lambda cls: cls.name == "tenant b's row")
            )

    caplog.set_level(logging.WARNING, logger="sqlmodel_cache")
    _listeners._warned_hooks.clear()  # warned once per process: make this test one
    event.listen(OrmSession, "do_orm_execute", tenant_b)
    try:
        sql.clear()
        assert name(engine, 1) is None  # tenant b cannot see tenant a's row
        assert name(engine, 1) is None
        assert sql.selects == 2 and len(seen) == 2
    finally:
        event.remove(OrmSession, "do_orm_execute", tenant_b)
    reason = f"hook_after:{tenant_b.__module__}.{tenant_b.__qualname__}"
    assert bypasses() == {reason: 2}
    warnings = [r.getMessage() for r in caplog.records if "runs after" in r.getMessage()]
    assert len(warnings) == 1 and "insert=True" in warnings[0] and "tenant_b" in warnings[0]


def test_a_hook_on_one_session_only_bypasses_that_session(engine, cache, sql):
    seed(engine, (1, "a"))
    name(engine, 1)
    with Session(engine) as session:
        event.listen(session, "do_orm_execute", lambda state: None)
        sql.clear()
        session.get(Hero, 1)
        assert sql.selects == 1
    sql.clear()
    assert name(engine, 1) == "a" and sql.selects == 0


def test_options_on_the_session_s_connection_are_honoured(engine, cache, sql):
    seed(engine, (1, "a"))
    name(engine, 1)
    with Session(engine) as session:
        session.connection(execution_options={"schema_translate_map": {None: None}})
        sql.clear()
        session.get(Hero, 1)
        assert sql.selects == 1
    with Session(engine) as session:
        session.connection(execution_options={"cache": False})
        sql.clear()
        session.get(Hero, 1)
        assert sql.selects == 1
    assert bypasses() == {"execution_option:schema_translate_map": 1, "cache_option": 1}
    with Session(engine) as session, pytest.raises(ConfigurationError, match="cache must be"):
        session.connection(execution_options={"cache": "no"})
        session.get(Hero, 1)


@pg_only
@pytest.mark.parametrize(
    "begin",
    [
        "engine option",
        "connection option",
        "SET TRANSACTION",
        "SET SESSION CHARACTERISTICS",
    ],
)
def test_snapshot_isolation_is_served_by_the_database(engine, cache, sql, begin):
    seed(engine, (1, "a"))
    name(engine, 1)
    # One pooled connection, so that the transaction after SET SESSION runs on it.
    engine.dispose()
    bind = (
        engine.execution_options(isolation_level="SERIALIZABLE")
        if begin == "engine option"
        else engine
    )
    with Session(bind) as session:
        if begin == "connection option":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        elif begin == "SET TRANSACTION":
            session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        elif begin == "SET SESSION CHARACTERISTICS":
            session.execute(
                text("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            )
            session.commit()  # the next transaction on this connection is SERIALIZABLE
            session.execute(text("SELECT 1"))
        sql.clear()
        session.get(Hero, 1)
        assert sql.selects == 1
        if begin == "SET SESSION CHARACTERISTICS":
            session.execute(
                text("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED")
            )
            session.commit()
    assert bypasses() == {"isolation": 1}


@pytest.fixture
def serializable(engine: sa.Engine) -> Any:
    bind = engine.execution_options(isolation_level="SERIALIZABLE")
    yield bind


@pg_only
def test_write_skew_is_refused_as_postgresql_alone_would(engine, cache, serializable):
    # Two on-call doctors (age 1 = on call); each goes off call if the other is on.
    seed(engine, (1, "alice"), (2, "bob"))
    with Session(engine) as session:
        for ident in (1, 2):
            session.get(Hero, ident).age = 1
        session.commit()
    name(engine, 1), name(engine, 2)  # both cached
    first, second = Session(serializable), Session(serializable)
    try:
        alice, bob = first.get(Hero, 1), first.get(Hero, 2)
        assert alice is not None and bob is not None and bob.age == 1
        alice.age = 0
        alice2, bob2 = second.get(Hero, 1), second.get(Hero, 2)
        assert alice2 is not None and bob2 is not None and alice2.age == 1
        bob2.age = 0
        first.commit()
        with pytest.raises(sa.exc.OperationalError, match="serialize"):
            second.commit()
    finally:
        first.close()
        second.close()
    assert bypasses() == {"isolation": 4}


@pg_only
def test_snapshot_isolation_can_be_opted_into(engine, snapshot_cache, serializable, sql, prefix):
    seed(engine, (1, "a"))
    name(engine, 1)
    sql.clear()
    with Session(serializable) as session:
        assert session.get(Hero, 1).name == "a"
    assert sql.selects == 0  # a hit, with what that means for its snapshot
    assert entries(snapshot_cache, prefix) == [f"{prefix}:Hero:id=1"]


@pytest.mark.parametrize("db_engine", ["sqlite"], indirect=True)
def test_sqlite_serializable_is_served(engine, cache, sql):
    assert engine.dialect.default_isolation_level == "SERIALIZABLE"
    seed(engine, (1, "a"))
    name(engine, 1)
    sql.clear()
    assert name(engine, 1) == "a" and sql.selects == 0
