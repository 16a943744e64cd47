"""AsyncSession, and one keyspace shared by async and plain sessions, on real Redis.

Each test drives its own event loops with asyncio.run, so the loop shapes an app
can have (none, one elsewhere, several) are explicit.
"""

import asyncio
import datetime as dt
import decimal
import threading
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio
import sqlalchemy as sa
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import Session, col
from sqlmodel.ext.asyncio.session import AsyncSession

from sqlmodel_cache import ConfigurationError, SQLModelCache, _runtime
from sqlmodel_cache.transport import RedisAsyncTransport

from .conftest import REDIS_URL
from .heroes import name, seed, write_unseen
from .models import Hero, Sample, Team

pytestmark = pytest.mark.greenlet

# A blocking twin that cannot connect: any use of it from an AsyncSession shows
# up as an error in stats() instead of a hit.
DEAD = redis.Redis(port=1, socket_connect_timeout=0.2)


def async_engine(engine: sa.Engine) -> AsyncEngine:
    url = engine.url
    if url.get_backend_name() == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    return create_async_engine(url)


class Selects:
    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.count += statement.lstrip().upper().startswith("SELECT")


async def aname(aengine: AsyncEngine, ident: int) -> str | None:
    async with AsyncSession(aengine) as session:
        hero = await session.get(Hero, ident)
        return None if hero is None else hero.name


def test_async_miss_hit_invalidation_rollback_and_bulk(engine, prefix, redis_client):
    seed(engine, (1, "a"), (2, "b"))

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        SQLModelCache.configure(RedisAsyncTransport(client, sync_client=DEAD), key_prefix=prefix)
        aengine = async_engine(engine)
        selects = Selects(aengine)
        assert await aname(aengine, 1) == "a"  # miss, fills
        assert selects.count == 1
        async with AsyncSession(aengine) as session:
            hero = await session.get(Hero, 1)  # hit
            assert selects.count == 1
            hero.name = "renamed"
            await session.commit()
        assert await aname(aengine, 1) == "renamed"
        async with AsyncSession(aengine) as session:
            (await session.get(Hero, 1)).name = "rolled back"
            await session.flush()
            await session.rollback()
        assert await aname(aengine, 1) == "renamed"
        await aname(aengine, 2)
        async with AsyncSession(aengine) as session:
            await session.execute(update(Hero).where(col(Hero.id) == 2).values(name="bulk"))
            await session.commit()
        assert await aname(aengine, 2) == "bulk"
        write_unseen(engine, "UPDATE hero SET name = 'raw' WHERE id = 2")  # another program
        await SQLModelCache.ainvalidate(Hero, 2)
        assert await aname(aengine, 2) == "raw"
        await aengine.dispose()
        await client.aclose()

    asyncio.run(main())
    stats = SQLModelCache.stats()
    assert stats.errors == 0
    assert stats.hits == 3 and stats.invalidations >= 3


def test_async_hit_loads_eager_relationships_without_missing_greenlet(engine, prefix):
    with Session(engine) as session:
        session.add(Team(id=1, name="t"))
        session.add(Hero(id=1, name="a", team_id=1))
        session.commit()

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        SQLModelCache.configure(RedisAsyncTransport(client, sync_client=DEAD), key_prefix=prefix)
        aengine = async_engine(engine)
        await aname(aengine, 1)
        async with AsyncSession(aengine) as session:
            hero = await session.get(Hero, 1)
            await session.refresh(hero, ["team"])  # an explicit async load works on a hit
            assert hero.team.name == "t"
        await aengine.dispose()
        await client.aclose()

    asyncio.run(main())
    assert SQLModelCache.stats().errors == 0


def test_plain_session_in_a_script_with_no_event_loop(engine, prefix, sql):
    seed(engine, (1, "a"))
    SQLModelCache.configure(
        RedisAsyncTransport(redis.asyncio.Redis.from_url(REDIS_URL)), key_prefix=prefix
    )
    assert name(engine, 1) == "a"
    sql.clear()
    with Session(engine) as session:
        hero = session.get(Hero, 1)
        assert sql.statements == []  # a real hit
        hero.name = "b"
        session.commit()  # a real invalidation
    assert name(engine, 1) == "b"
    stats = SQLModelCache.stats()
    assert (stats.errors, stats.hits, stats.fills) == (0, 1, 2)


def test_sync_handler_in_a_worker_thread_while_the_app_loop_runs(engine, prefix, redis_client):
    seed(engine, (1, "a"))
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    SQLModelCache.configure(RedisAsyncTransport(client), key_prefix=prefix)
    loop = asyncio.new_event_loop()
    app = threading.Thread(target=loop.run_forever, name="app-loop")
    app.start()
    try:
        aengine = asyncio.run_coroutine_threadsafe(_make_engine(engine), loop).result(10)

        def on_app_loop(coro: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coro, loop).result(10)

        assert on_app_loop(aname(aengine, 1)) == "a"  # the app loop fills
        # This thread is a worker running a def endpoint: no loop of its own.
        with Session(engine) as session:
            hero = session.get(Hero, 1)  # a hit on what the app loop stored
            hero.name = "from worker"
            session.commit()
        assert on_app_loop(aname(aengine, 1)) == "from worker"
        assert on_app_loop(aname(aengine, 1)) == "from worker"
        on_app_loop(aengine.dispose())
        on_app_loop(client.aclose())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        app.join(10)
        loop.close()
    stats = SQLModelCache.stats()
    assert stats.errors == 0
    assert stats.hits == 2  # one in the worker, one on the app loop


async def _make_engine(engine: sa.Engine) -> AsyncEngine:
    return async_engine(engine)


def test_async_sessions_on_a_second_event_loop(engine, prefix):
    seed(engine, (1, "a"))
    SQLModelCache.configure(
        RedisAsyncTransport(redis.asyncio.Redis.from_url(REDIS_URL), sync_client=DEAD),
        key_prefix=prefix,
    )

    async def twice() -> list[str | None]:
        aengine = async_engine(engine)
        names = [await aname(aengine, 1), await aname(aengine, 1)]
        await aengine.dispose()
        return names

    # The first loop binds the given client; the second, after the first closed,
    # must get a client of its own rather than reuse one bound to a dead loop.
    assert asyncio.run(twice()) == ["a", "a"]
    assert asyncio.run(twice()) == ["a", "a"]
    stats = SQLModelCache.stats()
    assert (stats.errors, stats.hits) == (0, 3)


def test_sync_commit_invalidates_what_async_sessions_see(engine, prefix):
    seed(engine, (1, "old"))
    SQLModelCache.configure(
        RedisAsyncTransport(redis.asyncio.Redis.from_url(REDIS_URL)), key_prefix=prefix
    )

    async def read() -> str | None:
        aengine = async_engine(engine)
        try:
            return await aname(aengine, 1)
        finally:
            await aengine.dispose()

    assert asyncio.run(read()) == "old"
    with Session(engine) as session:
        session.get(Hero, 1).name = "New Name"
        session.commit()
    assert asyncio.run(read()) == "New Name"
    assert name(engine, 1) == "New Name"  # filled by the async read, served to sync
    assert SQLModelCache.stats().errors == 0


def test_configure_rejects_an_async_transport_without_a_sync_twin():
    class AsyncOnly:
        async def get(self, key: str) -> bytes | None:
            return None

        async def set(self, key: str, value: bytes, ttl: int) -> None:
            return None

        async def delete(self, *keys: str) -> None:
            return None

    with pytest.raises(ConfigurationError, match=r"needs a \.sync transport"):
        SQLModelCache.configure(AsyncOnly())  # type: ignore[arg-type]


def test_async_transport_needs_an_asyncio_client():
    with pytest.raises(ConfigurationError, match=r"redis\.asyncio\.Redis or RedisCluster"):
        RedisAsyncTransport(redis.Redis())  # type: ignore[arg-type]


def test_concurrent_async_misses_of_one_key_make_one_database_read(engine, prefix):
    seed(engine, (1, "a"))
    SQLModelCache.configure(
        RedisAsyncTransport(redis.asyncio.Redis.from_url(REDIS_URL), sync_client=DEAD),
        key_prefix=prefix,
    )

    async def main() -> list[str | None]:
        aengine = async_engine(engine)
        selects = Selects(aengine)
        # The first task leads before its first await; the others then find its
        # flight and await it, so the loop keeps running the leader.
        names = await asyncio.gather(*(aname(aengine, 1) for _ in range(5)))
        assert selects.count == 1
        await aengine.dispose()
        return names

    assert asyncio.run(main()) == ["a"] * 5
    stats = SQLModelCache.stats()
    assert (stats.errors, stats.misses, stats.hits) == (0, 1, 4)


def test_every_get_of_an_async_session_fills(engine, prefix):
    # aiosqlite, like pysqlite, reads outside any database transaction until the
    # first write; asyncio PostgreSQL reads at READ COMMITTED.
    seed(engine, *[(i, str(i)) for i in range(1, 6)])

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        SQLModelCache.configure(RedisAsyncTransport(client, sync_client=DEAD), key_prefix=prefix)
        aengine = async_engine(engine)
        async with AsyncSession(aengine) as session:
            for ident in range(1, 6):
                await session.get(Hero, ident)
        await aengine.dispose()
        await client.aclose()

    asyncio.run(main())
    stats = SQLModelCache.stats()
    assert (stats.errors, stats.fills, stats.unfilled) == (0, 5, {})


pg_only = pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)


@pg_only
@pytest.mark.parametrize("gives_up", ["a follower", "the leader"])
def test_a_get_that_gives_up_affects_no_one_else(engine, prefix, gives_up):
    # Five gets of one row while the table is locked: one leader, four followers, and
    # one of them stops waiting. Without the library the other four simply wait.
    seed(engine, (1, "a"))
    results: list[Any] = []

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        SQLModelCache.configure(RedisAsyncTransport(client, sync_client=DEAD), key_prefix=prefix)
        runtime = _runtime.current
        assert runtime is not None
        aengine = async_engine(engine)
        selects = Selects(aengine)
        locker = engine.connect()
        locker.execute(sa.text("LOCK TABLE hero IN ACCESS EXCLUSIVE MODE"))
        try:
            leader = asyncio.create_task(aname(aengine, 1))
            await until(lambda: selects.count == 1)  # its SELECT waits for the lock
            followers = [asyncio.create_task(aname(aengine, 1)) for _ in range(4)]
            await until(lambda: runtime.flights.following == 4)
            quitter = followers.pop(0) if gives_up == "a follower" else leader
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(quitter, 0.05)  # its own task ends, and only it
            others = followers if gives_up == "the leader" else [leader, *followers]
        finally:
            locker.rollback()  # the lock goes
            locker.close()
        results.extend(await asyncio.gather(*others, return_exceptions=True))
        await aengine.dispose()
        await client.aclose()

    asyncio.run(main())
    assert results == ["a"] * len(results) and len(results) in (3, 4)


async def until(condition: Any, timeout: float = 10) -> None:
    """Wait (letting other tasks run) until condition() holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.001)


@pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)  # asyncpg's database
def test_asyncpg_rows_of_every_common_type_are_cached(engine, prefix):
    """asyncpg loads UUIDs as its own subclass of uuid.UUID: such rows are cached too."""
    row: dict[str, Any] = {
        "id": 1,
        "text": "t",
        "flag": True,
        "ratio": 0.5,
        "price": decimal.Decimal("1.2500"),
        "at": dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC),
        "day": dt.date(2024, 5, 1),
        "data": {"k": [1, "two"]},
    }
    with Session(engine) as session:
        session.add(Sample(**row))
        session.commit()

    async def main() -> None:
        SQLModelCache.configure(RedisAsyncTransport.from_url(REDIS_URL), key_prefix=prefix)
        aengine = create_async_engine(engine.url.set(drivername="postgresql+asyncpg"))
        selects = Selects(aengine)
        async with AsyncSession(aengine) as session:
            loaded = await session.get(Sample, 1)
            assert loaded is not None
            from_db = {name: getattr(loaded, name) for name in Sample.model_fields}
        async with AsyncSession(aengine) as session:
            hit = await session.get(Sample, 1)
            assert hit is not None
            assert selects.count == 1  # the second get sent no SELECT
            assert {name: getattr(hit, name) for name in Sample.model_fields} == from_db
            assert type(hit.uid) is uuid.UUID
        await aengine.dispose()

    asyncio.run(main())
