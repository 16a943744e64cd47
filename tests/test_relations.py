"""Many-to-one loads from the cache: ``hero.team`` is a get of the team by its key.

Real Redis and databases; a hit is shown by the SQL it did not send.
"""

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy import update
from sqlalchemy.orm import defaultload
from sqlmodel import Session, col, select

from sqlmodel_cache import SQLModelCache, _listeners
from sqlmodel_cache.transport import RedisSyncTransport

from .models import Author, Book, Hero, Team

# Every test runs with Session and again with CachedSession (see conftest.session_class).
pytestmark = pytest.mark.usefixtures("session_class")


def _add(engine: sa.Engine, *objects: object) -> None:
    with Session(engine) as session:
        session.add_all(objects)
        session.commit()


@pytest.fixture
def league(engine, redis_client, prefix):
    """Team 7 with two heroes; the cache on real Redis, Team 7 in it."""
    _add(engine, Team(id=7, name="Preventers"))
    _add(engine, Hero(id=1, name="Rusty", team_id=7), Hero(id=2, name="Tarantula", team_id=7))
    SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix)
    with Session(engine) as session:
        session.get(Team, 7)  # fills
    return engine


def test_a_many_to_one_load_is_served_from_the_cache(league, sql):
    with Session(league) as session:
        hero = session.get(Hero, 1)
        sql.clear()
        team = hero.team
        assert sql.statements == []
        assert team.name == "Preventers" and team is session.get(Team, 7)
        assert session.get(Hero, 2).team is team  # the identity map, as always
        sql.clear()
        assert sorted(h.name for h in team.heroes) == ["Rusty", "Tarantula"]  # a collection
        assert len(sql.statements) == 1  # ...goes to the database
    assert SQLModelCache.stats().by_model["Team"].hits == 1


def test_a_many_to_one_load_after_a_commit_sees_the_new_row(league, sql):
    with Session(league) as session:
        session.get(Team, 7).name = "Renamed"
        session.commit()
    with Session(league) as session:
        assert session.get(Hero, 1).team.name == "Renamed"  # a miss: fills
    with Session(league) as session:
        hero = session.get(Hero, 1)
        sql.clear()
        assert hero.team.name == "Renamed"
        assert sql.statements == []


def test_a_transaction_that_wrote_the_row_loads_it_from_the_database(league, sql):
    with Session(league) as session:
        hero = session.get(Hero, 1)
        session.execute(update(Team).where(col(Team.id) == 7).values(name="Uncommitted"))
        sql.clear()
        assert hero.team.name == "Uncommitted"  # its own write, not the cached row
        assert len(sql.statements) == 1
        session.rollback()
    assert SQLModelCache.stats().by_model["Team"].bypasses == {"own_write": 1}


def test_a_load_option_on_the_parent_query_keeps_the_database(league, sql):
    with Session(league) as session:
        query = select(Hero).where(col(Hero.id) == 1).options(defaultload(Hero.team))  # type: ignore[arg-type]
        hero = session.exec(query).one()
        sql.clear()
        assert hero.team.name == "Preventers"
        assert len(sql.statements) == 1  # the options ride along: not exactly a get


def _author_then_books(engine: sa.Engine, sql) -> list[int]:
    """SQL counts of book.author, then of author.books (Author eager-loads its books)."""
    with Session(engine) as session:
        book = session.get(Book, 1)
        sql.clear()
        author = book.author
        first = len(sql.statements)
        sql.clear()
        assert [b.title for b in author.books] == ["Dune"]
        return [first, len(sql.statements)]


def test_a_hit_of_a_lazy_load_runs_the_eager_loaders_a_database_load_would_run(
    engine, redis_client, prefix, sql
):
    _add(engine, Author(id=1, name="Herbert"))
    _add(engine, Book(id=1, title="Dune", author_id=1))
    with _listeners.detached():
        without = _author_then_books(engine, sql)
    SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix)
    with Session(engine) as session:
        session.get(Author, 1)  # fills
    cached = _author_then_books(engine, sql)
    assert cached == [0, without[1]]  # the author from the cache, the rest as without it


@pytest.mark.greenlet
def test_an_async_session_loads_a_many_to_one_from_the_cache(league, prefix):
    from sqlmodel.ext.asyncio.session import AsyncSession

    from .test_async import Selects, async_engine

    async def main() -> None:
        aengine = async_engine(league)
        selects = Selects(aengine)
        async with AsyncSession(aengine) as session:
            hero = await session.get(Hero, 1)
            before = selects.count
            name = await session.run_sync(lambda _: hero.team.name)
            assert name == "Preventers" and selects.count == before
        await aengine.dispose()

    asyncio.run(main())
