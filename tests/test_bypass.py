"""Loud, not silent: every get the cache does not serve, and every miss it does not fill,
is counted per model by reason; the first uncacheable row of a model is logged."""

import logging
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import selectinload, with_loader_criteria
from sqlmodel import Session, col, select

from sqlmodel_cache import SQLModelCache, _runtime
from sqlmodel_cache.transport import RedisSyncTransport

from .conftest import entries
from .heroes import name, seed
from .models import Author, Disabled, Hero, Place, Point

# Every test runs with Session and again with CachedSession (see conftest.session_class).
pytestmark = pytest.mark.usefixtures("session_class")

pg_only = pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)


def bypasses(model: str = "Hero") -> dict[str, int]:
    return dict(SQLModelCache.stats().by_model[model].bypasses)


def unfilled(model: str = "Hero") -> dict[str, int]:
    return dict(SQLModelCache.stats().by_model[model].unfilled)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"execution_options": {"cache": False}}, "cache_option"),
        ({"execution_options": {"tenant": "b"}}, "execution_option:tenant"),
        ({"with_for_update": True}, "for_update"),
        ({"populate_existing": True}, "populate_existing"),
        ({"identity_token": "shard-b"}, "identity_token"),
        ({"options": [selectinload(Hero.team)]}, "loader_options"),  # type: ignore[arg-type]
    ],
)
def test_each_call_option_that_bypasses_is_counted(engine, cache, sql, options, reason):
    seed(engine, (1, "a"))
    name(engine, 1)  # cached
    sql.clear()
    assert name(engine, 1, **options) == "a"
    assert sql.selects == 1
    stats = SQLModelCache.stats()
    assert stats.by_model["Hero"].bypasses == {reason: 1}
    assert (stats.bypasses, stats.by_model["Hero"].bypassed) == ({reason: 1}, 1)


@pytest.mark.parametrize(
    ("engine_options", "reason"),
    [
        ({"cache": False}, "cache_option"),
        ({"schema_translate_map": {None: None}}, "execution_option:schema_translate_map"),
        ({"tenant": "b"}, "execution_option:tenant"),
    ],
)
def test_engine_options_that_bypass_are_counted(engine, cache, sql, prefix, engine_options, reason):
    seed(engine, (1, "a"))
    optioned = engine.execution_options(**engine_options)
    for _ in range(2):
        with Session(optioned) as session:
            assert session.get(Hero, 1).name == "a"
    assert sql.selects == 2
    assert entries(cache, prefix) == []  # neither read nor filled
    assert bypasses() == {reason: 2}


def test_an_engine_whose_options_change_after_it_served_gets_is_asked_again(engine, cache, sql):
    # Why an engine's get may not use the cache is worked out once per set of options.
    seed(engine, (1, "a"))
    assert name(engine, 1) == "a"
    sql.clear()
    assert name(engine, 1) == "a"
    assert sql.selects == 0
    engine.update_execution_options(cache=False)
    try:
        assert name(engine, 1) == "a"
        assert sql.selects == 1
        assert bypasses() == {"cache_option": 1}
    finally:
        engine.update_execution_options(cache=True)
    assert name(engine, 1) == "a"
    assert sql.selects == 1


def test_disabled_models_and_configurations_are_counted(engine, redis_client, prefix):
    seed(engine, (1, "a"))
    with Session(engine) as session:
        session.add(Disabled(id=1, name="d"))
        session.commit()
    SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix)
    with Session(engine) as session:
        session.get(Disabled, 1)
    assert bypasses("Disabled") == {"disabled": 1}
    SQLModelCache.reset()
    SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix, enabled=False)
    name(engine, 1)
    assert bypasses() == {"disabled": 1}


def test_a_session_on_an_outer_connection_is_counted(engine, cache, sql):
    seed(engine, (1, "a"))
    name(engine, 1)
    with engine.connect() as conn, Session(bind=conn) as session:
        sql.clear()
        assert session.get(Hero, 1).name == "a"
        assert sql.selects == 1
    assert bypasses() == {"outer_connection": 1}


def test_a_tenant_hook_that_runs_first_is_counted(engine, cache, sql):
    seed(engine, (1, "a"))
    name(engine, 1)

    def tenant(state: Any) -> None:
        if state.is_select:
            state.statement = state.statement.options(
                with_loader_criteria(Hero, lambda cls: cls.age > 0)
            )

    event.listen(OrmSession, "do_orm_execute", tenant, insert=True)
    try:
        sql.clear()
        assert name(engine, 1) == "a"
        assert sql.selects == 1
    finally:
        event.remove(OrmSession, "do_orm_execute", tenant)
    assert bypasses() == {"loader_criteria": 1}


def test_own_writes_and_transaction_writes_are_counted(engine, cache):
    seed(engine, (1, "a"), (2, "b"))
    with Session(engine) as session:
        session.get(Hero, 1, execution_options={"cache": False}).name = "a2"
        session.flush()
        session.expunge_all()
        assert session.get(Hero, 1).name == "a2"  # its own write
        assert session.get(Hero, 2).name == "b"  # read, but not stored
        session.rollback()
    assert bypasses() == {"cache_option": 1, "own_write": 1}
    assert unfilled() == {"transaction_writes": 1}


def test_loads_that_are_not_gets_are_not_counted(engine, cache):
    seed(engine, (1, "a"))
    with Session(engine) as session:
        hero = session.get(Hero, 1)  # a miss that fills
        session.refresh(hero)
        session.expire(hero, ["name"])
        assert hero.name == "a"
        assert hero.team is None
        session.exec(select(Hero).where(col(Hero.id) == 1)).all()
    assert bypasses() == {} and unfilled() == {}


def test_an_uncacheable_column_is_counted_and_logged_once_per_model(engine, cache, sql, caplog):
    with Session(engine) as session:
        session.add_all(
            [Place(id=1, name="home", location=Point(1, 2)), Place(id=2, name="nowhere")]
        )
        session.commit()
    caplog.set_level(logging.WARNING, logger="sqlmodel_cache")
    for _ in range(3):
        for ident in (1, 2):
            with Session(engine) as session:
                session.get(Place, ident)
    stats = SQLModelCache.stats().by_model["Place"]
    assert stats.unfilled == {"uncacheable:location": 3}  # row 1, every time
    assert (stats.fills, stats.hits) == (1, 2)  # row 2 is cached: its location is NULL
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "location" in warnings[0] and "PointType" in warnings[0] and "Point" in warnings[0]


def test_rows_too_large_are_counted(engine, redis_client, prefix):
    seed(engine, (1, "x" * 500))
    SQLModelCache.configure(
        RedisSyncTransport(redis_client), key_prefix=prefix, max_entry_bytes=100
    )
    name(engine, 1)
    stats = SQLModelCache.stats().by_model["Hero"]
    assert (stats.unfilled, stats.too_large) == ({"too_large": 1}, 1)


def test_a_lease_held_elsewhere_and_a_lease_lost_to_a_commit_are_counted(engine, cache, prefix):
    seed(engine, (1, "a"), (2, "b"))
    runtime = _runtime.current
    assert runtime is not None
    runtime.transport.lease(f"{prefix}:Hero:id=1")  # another reader is filling row 1
    name(engine, 1)

    def commit_meanwhile(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            SQLModelCache.invalidate(Hero, 2)  # as a commit elsewhere would

    event.listen(engine, "before_cursor_execute", commit_meanwhile)
    try:
        name(engine, 2)
    finally:
        event.remove(engine, "before_cursor_execute", commit_meanwhile)
    assert unfilled() == {"leased": 1, "lease_lost": 1}


@pg_only
def test_a_snapshot_older_than_the_lease_is_counted(engine, snapshot_cache):
    seed(engine, (1, "a"), (2, "b"))
    repeatable = engine.execution_options(isolation_level="REPEATABLE READ")
    with Session(repeatable) as session:
        session.execute(text("SELECT 1"))  # the snapshot starts here, before any lease
        session.get(Hero, 1)
    assert unfilled() == {"snapshot": 1}


def test_stats_totals_add_up_the_reasons_of_every_model(engine, cache):
    seed(engine, (1, "a"))
    with Session(engine) as session:
        session.add(Author(id=1, name="x"))
        session.commit()
    name(engine, 1, execution_options={"cache": False})
    with Session(engine) as session:
        session.get(Author, 1, execution_options={"cache": False})
        session.get(Author, 1, with_for_update=True)
    stats = SQLModelCache.stats()
    assert stats.bypasses == {"cache_option": 2, "for_update": 1}
    assert stats.bypassed == 3
