"""CachedSession / AsyncCachedSession: an L1 hit answered before SQLAlchemy builds a
statement, with exactly the semantics of Session.get; anything else takes the ORM's path."""

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
import sqlmodel
from sqlalchemy import event
from sqlalchemy.orm import selectinload
from sqlmodel import Session

from sqlmodel_cache import CachedSession, L1Config, SQLModelCache
from sqlmodel_cache.transport import RedisAsyncTransport, RedisSyncTransport

from .conftest import REDIS_URL
from .heroes import seed
from .models import Hero


@pytest.fixture
def l1_cache(redis_client, prefix) -> None:
    SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix, l1=L1Config())
    _wait_for_l1()


def _wait_for_l1() -> None:
    from sqlmodel_cache import _runtime

    runtime = _runtime.current
    assert runtime is not None and runtime.feed is not None
    assert runtime.feed.subscribed.wait(5)


@pytest.fixture
def no_statements(monkeypatch) -> list[Any]:
    """Records every statement a session executes (a get that builds one executes it)."""
    executed: list[Any] = []
    execute = sqlmodel.Session.execute

    def recorded(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Any:
        executed.append(statement)
        return execute(self, statement, *args, **kwargs)

    monkeypatch.setattr(sqlmodel.Session, "execute", recorded)
    return executed


def _in_l1(engine, *idents: int) -> None:
    for ident in idents:
        with Session(engine) as session:
            session.get(Hero, ident)


def l1_hits() -> int:
    return SQLModelCache.stats().by_model["Hero"].l1_hits


def test_an_l1_hit_builds_no_statement_and_is_a_clean_persistent_row(
    engine, sql, l1_cache, no_statements
):
    seed(engine, (1, "a"))
    _in_l1(engine, 1)
    no_statements.clear()
    sql.clear()
    before = l1_hits()
    with CachedSession(engine) as session:
        hero = session.get(Hero, 1)
        assert hero is not None and hero.name == "a"
        assert session.get(Hero, 1) is hero  # the identity map has it now
        state = sa.inspect(hero)
        assert state.persistent and not session.dirty and state.key == (Hero, (1,), None)
        assert (no_statements, sql.statements, l1_hits()) == ([], [], before + 1)
        hero.name = "b"  # a later edit flushes only what changed
        session.commit()
    with Session(engine) as session:
        assert session.get(Hero, 1, execution_options={"cache": False}).name == "b"


def test_what_is_not_a_plain_l1_hit_takes_the_orm_path(engine, sql, l1_cache, no_statements):
    seed(engine, (1, "a"), (2, "b"))
    _in_l1(engine, 1, 2)
    calls: list[dict[str, Any]] = [
        {"with_for_update": True},
        {"populate_existing": True},
        {"options": [selectinload(Hero.team)]},  # type: ignore[arg-type]
        {"execution_options": {"cache": False}},
    ]
    for kwargs in calls:
        with CachedSession(engine) as session:
            no_statements.clear()
            sql.clear()
            assert session.get(Hero, 1, **kwargs).name == "a"
            assert len(no_statements) == 1 and sql.selects >= 1, kwargs
    with CachedSession(engine) as session:
        no_statements.clear()
        assert session.get(Hero, 3) is None  # not in L1: the ORM's path, and the database
        assert len(no_statements) == 1


def test_pending_changes_are_flushed_first_as_session_get_does(engine, sql, l1_cache):
    seed(engine, (1, "a"), (2, "b"))
    _in_l1(engine, 1)
    with CachedSession(engine) as session:
        other = session.get(Hero, 2, execution_options={"cache": False})
        other.name = "changed"
        sql.clear()
        assert session.get(Hero, 1).name == "a"
        assert [s.split()[0] for s in sql.statements] == ["UPDATE"]  # the autoflush only
        session.rollback()


def test_a_row_the_transaction_wrote_comes_from_the_database(engine, sql, l1_cache):
    seed(engine, (1, "a"))
    _in_l1(engine, 1)
    with CachedSession(engine) as session:
        session.execute(sa.update(Hero).where(Hero.id == 1).values(name="mine"))  # type: ignore[arg-type]
        assert session.get(Hero, 1).name == "mine"
        session.rollback()


def test_events_fire_and_hooks_of_others_keep_the_orm_path(engine, sql, l1_cache, no_statements):
    seed(engine, (1, "a"))
    _in_l1(engine, 1)
    no_statements.clear()
    seen: list[Any] = []
    with CachedSession(engine) as session:
        event.listen(session, "loaded_as_persistent", lambda s, obj: seen.append(obj))
        hero = session.get(Hero, 1)
        assert len(seen) == 1 and seen[0] is hero and no_statements == []

    def tenant_hook(state: Any) -> None:
        pass

    event.listen(Session, "do_orm_execute", tenant_hook, insert=True)
    try:
        with CachedSession(engine) as session:
            assert session.get(Hero, 1).name == "a"
            assert len(no_statements) == 1  # the user's hook saw the statement
    finally:
        event.remove(Session, "do_orm_execute", tenant_hook)


def test_composite_and_dict_idents(engine, sql, l1_cache, no_statements):
    from .models import OrderItem

    with Session(engine) as session:
        session.add(OrderItem(order_id=1, product_id=5, quantity=3))
        session.commit()
    with Session(engine) as session:
        session.get(OrderItem, (1, 5))
    no_statements.clear()
    sql.clear()
    with CachedSession(engine) as session:
        assert session.get(OrderItem, (1, 5)).quantity == 3
        assert no_statements == []
    with CachedSession(engine) as session:
        assert session.get(OrderItem, {"order_id": 1, "product_id": 5}).quantity == 3
    assert sql.statements == []  # the dict form takes the ORM's path, to the same hit


@pytest.mark.greenlet
def test_async_cached_session_answers_l1_hits_without_a_greenlet(engine, prefix, monkeypatch):
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.util.concurrency import greenlet_spawn

    from sqlmodel_cache import AsyncCachedSession

    seed(engine, (1, "a"))
    url = engine.url
    url = url.set(drivername="sqlite+aiosqlite") if url.get_backend_name() == "sqlite" else url

    async def main() -> None:
        SQLModelCache.configure(
            RedisAsyncTransport.from_url(REDIS_URL), key_prefix=prefix, l1=L1Config()
        )
        await asyncio.to_thread(_wait_for_l1)
        aengine = create_async_engine(url)
        async with AsyncCachedSession(aengine) as session:
            assert (await session.get(Hero, 1)).name == "a"  # a miss: the ORM's path
        spawned: list[Any] = []
        spawn = greenlet_spawn

        async def counted(*args: Any, **kwargs: Any) -> Any:
            spawned.append(args[0])
            return await spawn(*args, **kwargs)

        monkeypatch.setattr("sqlalchemy.ext.asyncio.session.greenlet_spawn", counted)
        async with AsyncCachedSession(aengine) as session:
            hero = await session.get(Hero, 1)
            assert hero is not None and hero.name == "a"
            assert spawned == []  # no greenlet, no statement
            assert SQLModelCache.stats().by_model["Hero"].l1_hits == 1
        assert spawned == []  # nothing began: closing needed no greenlet either
        async with AsyncCachedSession(aengine) as session:
            assert (await session.get(Hero, 1)).name == "a"
            assert (await session.get(Hero, 2)) is None  # not in L1: the ORM's path
            assert len(spawned) == 1
        assert len(spawned) == 2  # its transaction is closed as AsyncSession closes one
        assert not session.sync_session.in_transaction()
        await aengine.dispose()

    asyncio.run(main())
