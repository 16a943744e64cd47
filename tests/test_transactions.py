"""Transactions, bulk writes, outer transactions and tenants: nothing uncommitted or foreign
is served, and every committed write is invalidated. On SQLite and PostgreSQL, real Redis."""

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import delete, event, insert, text, update
from sqlmodel import Session, col

from sqlmodel_cache import SQLModelCache
from sqlmodel_cache._codec import RowCodec
from sqlmodel_cache._registry import registry

from .conftest import entries
from .heroes import name, seed, write_unseen
from .models import Hero, Tag

# Every test runs with Session and again with CachedSession (see conftest.session_class).
pytestmark = pytest.mark.usefixtures("session_class")


def warm(engine, *idents: int) -> None:
    for ident in idents:
        name(engine, ident)


def key(prefix: str, ident: int) -> str:
    return f"{prefix}:Hero:id={ident}"


# -- transactions -----------------------------------------------------------


def test_an_inserted_row_that_is_rolled_back_is_never_filled(engine, cache, prefix, sql):
    with Session(engine) as session:
        session.add(Hero(id=5, name="ghost"))
        session.flush()
        session.expunge_all()
        sql.clear()
        assert session.get(Hero, 5).name == "ghost"  # its own write, from the database
        assert sql.selects == 1
        session.rollback()
    assert entries(cache, prefix) == []
    assert name(engine, 5) is None


def test_a_transaction_with_writes_fills_nothing(engine, cache, prefix):
    seed(engine, (1, "a"), (2, "b"))
    with Session(engine) as session:
        session.get(Hero, 1, execution_options={"cache": False}).name = "a2"
        session.flush()
        assert session.get(Hero, 2).name == "b"  # read, but not stored: uncommitted context
        assert entries(cache, prefix) == []
        session.rollback()
    assert name(engine, 1) == "a"


def test_savepoint_rollback_keeps_the_outer_invalidations(engine, cache, prefix):
    seed(engine, (1, "a"), (2, "b"))
    warm(engine, 1, 2)
    with Session(engine) as session:
        session.get(Hero, 1).name = "outer"
        session.flush()
        savepoint = session.begin_nested()
        session.get(Hero, 2).name = "inner"
        session.flush()
        savepoint.rollback()
        session.commit()
    assert not cache.exists(key(prefix, 1))
    assert (name(engine, 1), name(engine, 2)) == ("outer", "b")


def test_a_session_that_commits_twice_invalidates_twice(engine, cache, prefix):
    seed(engine, (1, "a"))
    with Session(engine) as session:
        hero = session.get(Hero, 1)
        hero.name = "first"
        session.commit()
        assert name(engine, 1) == "first"
        warm(engine, 1)
        hero.name = "second"
        session.commit()
    assert name(engine, 1) == "second"


# -- snapshots ----------------------------------------------------------------

sqlite_only = pytest.mark.parametrize("db_engine", ["sqlite"], indirect=True)


def test_every_get_of_a_session_fills_when_each_read_sees_the_latest_commit(engine, cache):
    # pysqlite reads outside any database transaction until the first write;
    # PostgreSQL's READ COMMITTED gives each statement a fresh snapshot.
    seed(engine, *[(i, str(i)) for i in range(1, 6)])
    with Session(engine) as session:
        for ident in range(1, 6):
            session.get(Hero, ident)
    stats = SQLModelCache.stats().by_model["Hero"]
    assert (stats.fills, stats.unfilled) == (5, {})


@sqlite_only
def test_sqlite_reads_after_a_write_fill_nothing(engine, cache, prefix):
    seed(engine, (1, "a"), (2, "b"), (3, "c"))
    with Session(engine) as session:
        session.get(Hero, 1)  # fills: no transaction open yet
        session.execute(text("UPDATE hero SET name = 'uncommitted' WHERE id = 2"))
        assert session.get(Hero, 2).name == "uncommitted"  # its own write: not stored
        session.rollback()
    with Session(engine) as session:
        raw = session.connection().connection.dbapi_connection
        assert raw is not None
        raw.execute("UPDATE hero SET name = 'unseen' WHERE id = 3")  # no event sees it
        assert session.get(Hero, 3).name == "unseen"  # the driver is in a transaction now
        session.rollback()
    assert entries(cache, prefix) == [key(prefix, 1)]
    assert (name(engine, 2), name(engine, 3)) == ("b", "c")
    stats = SQLModelCache.stats().by_model["Hero"]
    assert (stats.bypasses, stats.unfilled) == ({"own_write": 1}, {"snapshot": 1})


@sqlite_only
def test_sqlite_with_a_real_begin_fills_only_the_read_that_starts_it(engine, cache):
    # The documented recipe for SERIALIZABLE SQLite: the driver stays out of the
    # way and SQLAlchemy's begin emits BEGIN, so the first read takes the snapshot.
    serializable = sa.create_engine(engine.url)
    event.listen(serializable, "connect", lambda dbapi, _: setattr(dbapi, "isolation_level", None))
    event.listen(serializable, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    seed(engine, (1, "a"), (2, "b"))
    with Session(serializable) as session:
        session.get(Hero, 1)
        session.get(Hero, 2)
    serializable.dispose()
    stats = SQLModelCache.stats().by_model["Hero"]
    assert (stats.fills, stats.unfilled) == (1, {"snapshot": 1})


# -- bulk writes --------------------------------------------------------------


def test_bulk_update_invalidates_the_rows_it_touched(engine, cache, prefix):
    seed(engine, (1, "a"), (2, "b"), (3, "c"))
    warm(engine, 1, 2, 3)
    with Session(engine) as session:
        result: Any = session.execute(update(Hero).where(col(Hero.age) >= 20).values(name="bulk"))
        assert result.rowcount == 2
        session.commit()
    assert entries(cache, prefix) == [key(prefix, 1)]
    assert [name(engine, i) for i in (1, 2, 3)] == ["a", "bulk", "bulk"]


def test_bulk_delete_invalidates_the_rows_it_touched(engine, cache, prefix):
    seed(engine, (1, "a"), (2, "b"))
    warm(engine, 1, 2)
    with Session(engine) as session:
        session.execute(delete(Hero).where(col(Hero.id) == 2))
        session.commit()
    assert entries(cache, prefix) == [key(prefix, 1)]
    assert name(engine, 2) is None


def test_bulk_update_by_primary_key(engine, cache, prefix):
    seed(engine, (1, "a"), (2, "b"))
    warm(engine, 1, 2)
    with Session(engine) as session:
        session.execute(update(Hero), [{"id": 1, "name": "pk-bulk"}])
        session.commit()
    assert entries(cache, prefix) == [key(prefix, 2)]
    assert name(engine, 1) == "pk-bulk"


def _upsert(engine):
    module = {"postgresql": "postgresql", "sqlite": "sqlite"}[engine.dialect.name]
    return __import__(f"sqlalchemy.dialects.{module}", fromlist=["insert"]).insert


def test_bulk_insert_leaves_existing_entries_alone(engine, cache, prefix):
    seed(engine, (1, "a"))
    warm(engine, 1)
    with Session(engine) as session:
        session.execute(insert(Hero), [{"id": 7, "name": "new"}, {"id": 8, "name": "new"}])
        session.commit()
    assert entries(cache, prefix) == [key(prefix, 1)]
    assert name(engine, 7) == "new"


@pytest.mark.parametrize("many", [True, False])
def test_upserts_invalidate_the_rows_they_change(engine, cache, prefix, many):
    seed(engine, (1, "a"), (2, "b"))
    warm(engine, 1, 2)
    upsert = _upsert(engine)(Hero)
    statement = upsert.on_conflict_do_update(
        index_elements=[Hero.__table__.c.id],  # type: ignore[attr-defined]
        set_={"name": upsert.excluded.name},
    )
    with Session(engine) as session:
        if many:  # the parameters name the rows
            session.execute(statement, [{"id": 1, "name": "up"}, {"id": 9, "name": "new"}])
        else:
            session.execute(statement.values(id=1, name="up"))
        session.commit()
    assert entries(cache, prefix) == [key(prefix, 2)]  # the conflict target is the key
    assert (name(engine, 1), name(engine, 2)) == ("up", "b")


def test_a_transaction_reads_its_own_bulk_writes(engine, cache):
    seed(engine, (1, "a"))
    warm(engine, 1)
    with Session(engine) as session:
        session.execute(update(Hero).where(col(Hero.id) == 1).values(name="mine"))
        assert session.get(Hero, 1).name == "mine"
        session.rollback()
    assert name(engine, 1) == "a"


def test_bulk_rollback_leaves_the_cache_alone(engine, cache, prefix):
    seed(engine, (1, "a"))
    warm(engine, 1)
    with Session(engine) as session:
        session.execute(update(Hero).values(name="never"))
        session.rollback()
    assert entries(cache, prefix) == [key(prefix, 1)]


def test_a_bulk_statement_with_its_own_returning_keeps_its_result(engine, cache, prefix):
    seed(engine, (1, "a"), (2, "b"))
    warm(engine, 1, 2)
    with Session(engine) as session:
        session.get(Tag, "t")
        rows = session.execute(
            update(Hero).where(col(Hero.id) == 1).values(name="r").returning(col(Hero.name))
        ).all()
        assert [tuple(r) for r in rows] == [("r",)]
        session.commit()
    assert entries(cache, prefix) == [key(prefix, 2)]  # its WHERE names the row
    assert (name(engine, 1), name(engine, 2)) == ("r", "b")


def test_text_sql_drops_every_entry_of_the_tables_it_names(engine, cache, prefix):
    seed(engine, (1, "a"), (2, "b"))
    warm(engine, 1, 2)
    with Session(engine) as session:
        session.execute(text("UPDATE hero SET name = 'raw' WHERE id = 1"))
        session.commit()
    assert entries(cache, prefix) == []
    assert name(engine, 1) == "raw"


def test_writes_no_connection_sees_need_the_manual_path(engine, cache):
    seed(engine, (1, "a"))
    warm(engine, 1)
    write_unseen(engine, "UPDATE hero SET name = 'raw' WHERE id = 1")  # another program
    assert name(engine, 1) == "a"  # stale until told
    SQLModelCache.invalidate(Hero, 1)
    assert name(engine, 1) == "raw"


# -- outer transactions -------------------------------------------------------


# pysqlite commits on RELEASE SAVEPOINT unless its BEGIN handling is patched,
# so the outer-transaction pattern only means something on PostgreSQL.
@pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)
@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_a_session_joined_to_an_outer_transaction(engine, cache, prefix, outcome, sql):
    seed(engine, (1, "old"))
    with engine.connect() as conn:
        outer = conn.begin()
        conn.execute(text("UPDATE hero SET age = 99 WHERE id = 1"))  # not the ORM's write
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        sql.clear()
        hero = session.get(Hero, 1)
        assert hero.age == 99  # the outer transaction's uncommitted value...
        assert sql.selects == 1 and entries(cache, prefix) == []  # ...is neither read nor stored
        hero.name = "inside"
        session.commit()  # releases a savepoint; the outer transaction is still open
        assert name(engine, 1) == "old"  # others still see (and may cache) the committed row
        session.close()
        getattr(outer, outcome)()
    with Session(engine) as session:
        hero = session.get(Hero, 1)
        expected = ("inside", 99) if outcome == "commit" else ("old", 10)
        assert (hero.name, hero.age) == expected


# -- tenants ------------------------------------------------------------------


def test_loads_with_tenant_options_are_not_shared(engine, cache, prefix, sql):
    seed(engine, (1, "a"))
    warm(engine, 1)
    sql.clear()
    assert name(engine, 1, execution_options={"tenant": "b"}) == "a"
    assert name(engine, 1, identity_token="shard-b") == "a"
    with Session(engine.execution_options(schema_translate_map={None: None})) as session:
        session.get(Hero, 1)
    with Session(engine.execution_options(tenant="b")) as session:
        session.get(Hero, 1)
    assert sql.selects == 4  # all four went to the database
    assert entries(cache, prefix) == [key(prefix, 1)]


# -- hostile cache contents ---------------------------------------------------


def test_an_entry_from_an_older_model_version_is_replaced(engine, cache, prefix):
    seed(engine, (1, "a"))
    info = registry.info(Hero)
    assert info is not None
    table: Any = Hero.__table__  # type: ignore[attr-defined]
    older = RowCodec("hero", [("id", table.c.id.type), ("name", table.c.name.type)])
    cache.set(key(prefix, 1), older.encode([1, "from an old deploy"]))
    assert name(engine, 1) == "a"
    assert info.codec.decode(cache.get(key(prefix, 1))) is not None


def test_an_entry_far_larger_than_normal_is_a_miss(engine, cache, prefix):
    seed(engine, (1, "a"))
    info = registry.info(Hero)
    assert info is not None
    huge = info.codec.encode([1, "x" * 1000, None, None]).replace(b"x" * 1000, b"x" * (2 << 20))
    cache.set(key(prefix, 1), huge)
    assert name(engine, 1) == "a"
    assert len(cache.get(key(prefix, 1)) or b"") < 1000


def test_an_entry_holding_another_row_is_replaced(engine, cache, prefix, sql):
    seed(engine, (1, "a"), (2, "b"))
    info = registry.info(Hero)
    assert info is not None
    cache.set(key(prefix, 1), info.codec.encode([2, "b", 20, None]))  # row 2 under key 1
    sql.clear()
    assert name(engine, 1) == "a"
    assert sql.selects == 1
    assert (info.codec.decode(cache.get(key(prefix, 1))) or [])[:2] == [1, "a"]
