"""Every write path invalidates, and no uncommitted row is ever filled, whatever sends it:
the ORM, Core on the mapper or the Table, a connection, the bulk helpers, executemany,
upserts, text(). On SQLite and PostgreSQL, real Redis."""

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import delete, event, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from sqlmodel_cache import SQLModelCache

from .conftest import entries
from .heroes import name, seed
from .models import Hero
from .written import Account, now

pg_only = pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)
sqlite_only = pytest.mark.parametrize("db_engine", ["sqlite"], indirect=True)
HERO: Any = Hero.__table__  # type: ignore[attr-defined]


def key(prefix: str, ident: int) -> str:
    return f"{prefix}:Hero:id={ident}"


def warm(engine: sa.Engine, *idents: int) -> None:
    for ident in idents:
        name(engine, ident)


# Each writes name "new" to hero 1 (and nothing else) through one path.
WRITES: dict[str, Callable[[Session], Any]] = {
    "orm flush": lambda s: setattr(_uncached(s, 1), "name", "new"),
    "orm update": lambda s: s.execute(update(Hero).where(col(Hero.id) == 1).values(name="new")),
    "core update on the table": lambda s: s.execute(
        update(HERO).where(HERO.c.id == 1).values(name="new")
    ),
    "core update, IN list": lambda s: s.execute(
        update(HERO).where(HERO.c.id.in_([1, 99])).values(name="new")
    ),
    "on the session's connection": lambda s: s.connection().execute(
        update(Hero).where(col(Hero.id) == 1).values(name="new")
    ),
    "executemany, core_only": lambda s: s.execute(
        update(Hero).execution_options(dml_strategy="core_only")
        .where(col(Hero.id) == sa.bindparam("ident")).values(name=sa.bindparam("new_name")),
        [{"ident": 1, "new_name": "new"}, {"ident": 99, "new_name": "new"}],
    ),
    "orm executemany by key": lambda s: s.execute(update(Hero), [{"id": 1, "name": "new"}]),
    "bulk_update_mappings": lambda s: s.bulk_update_mappings(Hero, [{"id": 1, "name": "new"}]),
    "bulk_save_objects": lambda s: s.bulk_save_objects(
        [_detached(s, 1, "new")], update_changed_only=True
    ),
    "text()": lambda s: s.execute(text("UPDATE hero SET name = 'new' WHERE id = 1")),
    "exec_driver_sql": lambda s: s.connection().exec_driver_sql(
        "UPDATE hero SET name = 'new' WHERE id = 1"
    ),
}  # fmt: skip
# The paths whose rows can be known: the other entries stay.
PRECISE = {
    "orm flush", "orm update", "core update on the table", "core update, IN list",
    "on the session's connection", "executemany, core_only", "orm executemany by key",
    "bulk_update_mappings", "bulk_save_objects",
}  # fmt: skip


def _uncached(session: Session, ident: int) -> Hero:
    hero = session.get(Hero, ident, execution_options={"cache": False})
    assert hero is not None
    return hero


def _detached(session: Session, ident: int, new_name: str) -> Hero:
    hero = _uncached(session, ident)
    session.expunge(hero)
    hero.name = new_name
    return hero


@pytest.mark.parametrize("path", list(WRITES))
def test_every_write_path_invalidates_what_it_wrote(engine, cache, prefix, path):
    seed(engine, (1, "old"), (2, "two"))
    warm(engine, 1, 2)
    with Session(engine) as session:
        WRITES[path](session)
        session.commit()
    expected = [key(prefix, 2)] if path in PRECISE else []
    assert entries(cache, prefix) == expected
    assert (name(engine, 1), name(engine, 2)) == ("new", "two")


@pytest.mark.parametrize("path", list(WRITES))
def test_no_write_path_lets_an_uncommitted_row_be_filled(engine, cache, prefix, path):
    seed(engine, (1, "old"), (2, "two"))
    warm(engine, 2)
    with Session(engine) as session:
        WRITES[path](session)
        SQLModelCache.invalidate(Hero, 1)  # as the docs advise for writes they cannot see
        assert session.get(Hero, 1).name == "new"  # its own write, from the database
        assert session.get(Hero, 2).name == "two"  # may be a hit: committed, not written
        session.rollback()
    assert entries(cache, prefix) == [key(prefix, 2)]
    assert name(engine, 1) == "old"


def test_core_writes_on_a_connection_of_their_own(engine, cache, prefix):
    seed(engine, (1, "a"), (2, "b"), (3, "c"))
    warm(engine, 1, 2, 3)
    with engine.begin() as conn:
        conn.execute(update(HERO).where(HERO.c.id == 1).values(name="new"))
        conn.execute(delete(HERO).where(HERO.c.id == 2))
    assert entries(cache, prefix) == [key(prefix, 3)]
    with engine.connect() as conn:
        conn.execute(update(HERO).where(HERO.c.id == 3).values(name="never"))
        conn.rollback()  # what was never committed is not invalidated
    assert entries(cache, prefix) == [key(prefix, 3)]
    assert [name(engine, i) for i in (1, 2, 3)] == ["new", None, "c"]


def test_a_fill_between_the_delete_and_the_database_commit_is_undone(engine, cache, prefix):
    # Outside a session, the keys are deleted as the connection commits: a reader
    # can fill the old row between that delete and the database's commit. They
    # are deleted again once the commit is over.
    seed(engine, (1, "old"))

    def read_meanwhile(conn: Any) -> None:
        if conn.info.get("writer"):
            assert name(engine, 1) == "old"  # the commit has not happened yet: refills

    # Listeners of one class run in the order they were added: this one after ours.
    event.listen(sa.Engine, "commit", read_meanwhile)
    try:
        with engine.connect() as conn:
            conn.execute(update(HERO).where(HERO.c.id == 1).values(name="new"))
            conn.info["writer"] = True
            conn.commit()
            del conn.info["writer"]
            assert entries(cache, prefix) == [key(prefix, 1)]  # the old row, refilled
    finally:
        event.remove(sa.Engine, "commit", read_meanwhile)
    assert entries(cache, prefix) == []  # deleted again when the connection went back
    assert name(engine, 1) == "new"


def _upsert(engine: sa.Engine) -> Any:
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


def test_an_upsert_on_a_unique_column_drops_the_model(engine, cache, prefix):
    old, other = now(), now()
    with Session(engine) as session:
        session.add(Account(email="a@example.org", opened_at=old))
        session.add(Account(email="b@example.org", opened_at=other))
        session.commit()
        idents = [a.id for a in session.scalars(sa.select(Account))]
    for ident in idents:
        with Session(engine) as session:
            session.get(Account, ident)
    upsert = _upsert(engine)(Account)
    statement = upsert.on_conflict_do_update(
        index_elements=[Account.__table__.c.email],  # type: ignore[attr-defined]
        set_={"opened_at": upsert.excluded.opened_at},
    )
    later = old.replace(year=old.year + 1)
    with Session(engine) as session:  # the id in the parameters is not the row's
        session.execute(statement.values(id=uuid.uuid4(), email="a@example.org", opened_at=later))
        session.commit()
    assert entries(cache, prefix) == []
    with Session(engine) as session:
        opened = {a.email: a.opened_at for a in (session.get(Account, i) for i in idents) if a}
    assert opened["a@example.org"] == later


@sqlite_only
def test_sqlite_insert_or_replace_drops_the_model(engine, cache, prefix):
    seed(engine, (1, "old"), (2, "two"))
    warm(engine, 1, 2)
    with Session(engine) as session:
        session.execute(sa.insert(HERO).prefix_with("OR REPLACE").values(id=1, name="new"))
        session.commit()
    assert entries(cache, prefix) == []
    assert name(engine, 1) == "new"


@pg_only
def test_any_statement_but_a_read_stops_the_transaction_filling(engine, cache, prefix):
    seed(engine, (1, "a"), (2, "b"))
    with Session(engine) as session:
        session.get(Hero, 1)  # fills
        session.execute(text("SET LOCAL statement_timeout = 5000"))
        session.get(Hero, 2)  # read after a SET: not stored
    assert entries(cache, prefix) == [key(prefix, 1)]
    assert SQLModelCache.stats().by_model["Hero"].unfilled == {"transaction_writes": 1}


def test_a_savepoint_rollback_keeps_what_the_transaction_sent(engine, cache, prefix):
    seed(engine, (1, "a"), (2, "b"))
    warm(engine, 1, 2)
    with Session(engine) as session:
        session.execute(update(HERO).where(HERO.c.id == 1).values(name="outer"))
        with session.begin_nested() as savepoint:
            session.execute(update(HERO).where(HERO.c.id == 2).values(name="inner"))
            savepoint.rollback()
        session.commit()
    assert entries(cache, prefix) == []  # the inner key goes too: dropping more is safe
    assert (name(engine, 1), name(engine, 2)) == ("outer", "b")


def test_a_create_statement_changes_no_cached_row(engine, cache, prefix, sql):
    seed(engine, (1, "a"))
    name(engine, 1)
    with engine.begin() as conn:  # what create_all() and migrations send
        conn.execute(text("CREATE INDEX IF NOT EXISTS ix_hero_age ON hero (age)"))
    sql.clear()
    assert name(engine, 1) == "a"
    assert sql.statements == []  # still cached
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_hero_age"))


@pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)  # one execute, two statements
def test_a_create_followed_by_another_statement_is_a_write(engine, cache, prefix):
    seed(engine, (1, "a"))
    name(engine, 1)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TEMP TABLE scratch (x int); UPDATE hero SET name = 'b' WHERE id = 1"
        )
    assert name(engine, 1) == "b"
