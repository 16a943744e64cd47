"""Multi-get: SQLModelCache.get_many / aget_many and CachedSession.get_many.

Identity map first, then one round trip to the cache, then one SELECT for the misses,
filled under leases. Real Redis (and the cluster), real databases; counted in SQL
statements and Redis calls.
"""

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlmodel import Session, col

from sqlmodel_cache import CachedSession, ConfigurationError, L1Config, SQLModelCache, _runtime
from sqlmodel_cache.transport import RedisSyncTransport

from .conftest import REDIS_URL, entries
from .heroes import seed
from .models import Employee, Engineer, Hero, Manager, OrderItem, Plain


class Counting(RedisSyncTransport):
    """Counts the calls that are round trips to Redis."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.calls: list[str] = []

    def lease(self, key: str) -> Any:
        self.calls.append("lease")
        return super().lease(key)

    def lease_many(self, keys: Any) -> Any:
        self.calls.append(f"lease_many:{len(keys)}")
        return super().lease_many(keys)

    def fill_many(self, fills: Any) -> list[bool]:
        self.calls.append(f"fill_many:{len(fills)}")
        return super().fill_many(fills)

    def begin_fill_many(self, fills: Any) -> Any:
        self.calls.append(f"fill_many:{len(fills)}")
        return super().begin_fill_many(fills)


@pytest.fixture
def counting(redis_client, prefix) -> Counting:
    transport = Counting(redis_client)
    SQLModelCache.configure(transport, key_prefix=prefix)
    return transport


def names(objects: list[Any]) -> list[str | None]:
    return [None if o is None else o.name for o in objects]


def test_one_round_trip_and_one_select_then_hits_without_sql(engine, sql, counting):
    seed(engine, (1, "a"), (2, "b"), (3, "c"))
    sql.clear()
    with Session(engine) as session:
        found = SQLModelCache.get_many(session, Hero, [3, 99, 1, 3])
        assert names(found) == ["c", None, "a", "c"] and found[0] is found[3]
        assert sql.selects == 1
    assert counting.calls == ["lease_many:3", "fill_many:2"]  # 99 has no row: released
    counting.calls.clear()
    sql.clear()
    with Session(engine) as session:
        assert names(SQLModelCache.get_many(session, Hero, [1, 2, 3, 99])) == ["a", "b", "c", None]
    assert sql.selects == 1  # for 2 and 99, which the cache does not hold
    assert counting.calls == ["lease_many:4", "fill_many:1"]
    counting.calls.clear()
    sql.clear()
    with Session(engine) as session:
        assert names(SQLModelCache.get_many(session, Hero, [2, 1, 3])) == ["b", "a", "c"]
    assert sql.statements == [] and counting.calls == ["lease_many:3"]
    stats = SQLModelCache.stats().by_model["Hero"]
    assert (stats.hits, stats.fills) == (5, 3)


def test_the_identity_map_first(engine, sql, counting):
    seed(engine, (1, "a"), (2, "b"))
    with Session(engine) as session:
        held = session.get(Hero, 1)
        held.name = "changed, not flushed"
        session.autoflush = False
        sql.clear()
        counting.calls.clear()
        found = SQLModelCache.get_many(session, Hero, [1, 2])
        assert found[0] is held and found[1].name == "b"
        assert counting.calls == ["lease_many:1"]  # 1 was never asked for


def test_a_commit_between_the_read_and_the_fill_wins(engine, redis_client, prefix, counting):
    seed(engine, (1, "old"), (2, "b"))
    with Session(engine) as reader:
        assert names(SQLModelCache.get_many(reader, Hero, [1, 2])) == ["old", "b"]
        with Session(engine) as writer:  # before the reader's fills go out
            writer.get(Hero, 1, execution_options={"cache": False}).name = "new"
            writer.commit()
    assert entries(redis_client, prefix) == [f"{prefix}:Hero:id=2"]
    with Session(engine) as session:
        assert names(SQLModelCache.get_many(session, Hero, [1, 2])) == ["new", "b"]
    assert SQLModelCache.stats().by_model["Hero"].unfilled.get("lease_lost") == 1


def test_a_row_the_transaction_wrote_comes_from_the_database(engine, sql, counting):
    seed(engine, (1, "a"), (2, "b"))
    with Session(engine) as session:
        SQLModelCache.get_many(session, Hero, [1, 2])  # fills both
    with Session(engine) as session:
        session.execute(update(Hero).where(col(Hero.id) == 1).values(name="mine"))
        sql.clear()
        assert names(SQLModelCache.get_many(session, Hero, [1, 2])) == ["mine", "b"]
        assert sql.selects == 1  # 1 only: 2 was a hit
        session.rollback()
    assert SQLModelCache.stats().by_model["Hero"].bypasses == {"own_write": 1}


def test_what_keeps_a_get_from_the_cache_keeps_get_many_from_it(engine, sql, counting):
    seed(engine, (1, "a"), (2, "b"))
    with Session(engine.execution_options(cache=False)) as session:
        assert names(SQLModelCache.get_many(session, Hero, [1, 2])) == ["a", "b"]
    assert counting.calls == [] and sql.selects == 1

    def tenant_hook(state: Any) -> None:
        return None

    event.listen(Session, "do_orm_execute", tenant_hook)
    try:
        with Session(engine) as session:
            assert names(SQLModelCache.get_many(session, Hero, [1, 2])) == ["a", "b"]
    finally:
        event.remove(Session, "do_orm_execute", tenant_hook)
    assert counting.calls == []
    assert SQLModelCache.stats().by_model["Hero"].bypasses == {"cache_option": 2, "hooks": 2}


def test_composite_keys_and_classes_of_a_hierarchy(engine, sql, counting):
    with Session(engine) as session:
        session.add_all([OrderItem(order_id=1, product_id=5, quantity=2)])
        session.add_all([Manager(id=1, name="m", budget=3), Engineer(id=2, name="e")])
        session.commit()
    for _ in range(2):
        sql.clear()
        with Session(engine) as session:
            items = SQLModelCache.get_many(
                session, OrderItem, [(1, 5), {"order_id": 1, "product_id": 6}]
            )
            assert [None if i is None else i.quantity for i in items] == [2, None]
            people = SQLModelCache.get_many(session, Employee, [1, 2])
            assert [type(p) for p in people] == [Manager, Engineer]
    assert sql.selects == 1  # the second round: only (1, 6), which does not exist


def test_in_process_tier_and_cached_session(engine, sql, redis_client, prefix):
    seed(engine, (1, "a"), (2, "b"))
    transport = Counting(redis_client)
    SQLModelCache.configure(transport, key_prefix=prefix, l1=L1Config())
    runtime = _runtime.current
    assert runtime is not None and runtime.feed is not None
    assert runtime.feed.subscribed.wait(5)  # L1 serves once invalidations reach it
    with CachedSession(engine) as session:
        assert names(session.get_many(Hero, [1, 2])) == ["a", "b"]
    transport.calls.clear()
    sql.clear()
    with CachedSession(engine) as session:
        assert names(session.get_many(Hero, [2, 1])) == ["b", "a"]
    assert transport.calls == [] and sql.statements == []  # L1 alone


@pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)
def test_on_redis_cluster_the_keys_of_many_slots(engine, sql, prefix):
    from redis.cluster import RedisCluster

    from .test_cluster import PORT

    seed(engine, *[(i, f"h{i}") for i in range(1, 21)])
    cluster = RedisCluster(host="127.0.0.1", port=PORT)
    try:
        SQLModelCache.configure(RedisSyncTransport(cluster), key_prefix=prefix)
        idents = list(range(1, 21))
        with Session(engine) as session:
            SQLModelCache.get_many(session, Hero, idents)
        sql.clear()
        with Session(engine) as session:
            assert names(SQLModelCache.get_many(session, Hero, idents)) == [f"h{i}" for i in idents]
        assert sql.selects == 0
        slots = {cluster.keyslot(f"{prefix}:Hero:id={i}") for i in idents}
        assert len({cluster.get_node_from_key(f"{prefix}:Hero:id={i}").name for i in idents}) > 1
        assert len(slots) > 1
    finally:
        for key in cluster.scan_iter(match=f"{prefix}:*"):
            cluster.delete(key)
        cluster.close()


@pytest.mark.greenlet
def test_aget_many_and_the_async_cached_session(engine, prefix):
    import redis.asyncio
    from sqlmodel.ext.asyncio.session import AsyncSession

    from sqlmodel_cache import AsyncCachedSession
    from sqlmodel_cache.transport import RedisAsyncTransport

    from .test_async import Selects, async_engine

    seed(engine, (1, "a"), (2, "b"))

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        SQLModelCache.configure(RedisAsyncTransport(client), key_prefix=prefix)
        aengine = async_engine(engine)
        selects = Selects(aengine)
        async with AsyncSession(aengine) as session:
            assert names(await SQLModelCache.aget_many(session, Hero, [2, 1])) == ["b", "a"]
        assert selects.count == 1
        async with AsyncCachedSession(aengine) as session:
            assert names(await session.get_many(Hero, [1, 2, 3])) == ["a", "b", None]
        assert selects.count == 2  # 3 only
        await aengine.dispose()

    asyncio.run(main())


def test_bad_input_is_refused(engine, counting):
    with Session(engine) as session:
        with pytest.raises(ConfigurationError, match="idents must be a list or tuple"):
            SQLModelCache.get_many(session, Hero, "12")
        with pytest.raises(ConfigurationError, match=r"Hero\.id holds int values"):
            SQLModelCache.get_many(session, Hero, [1, "one"])
        with pytest.raises(ConfigurationError, match="Plain is not cached"):
            SQLModelCache.get_many(session, Plain, [1])
    SQLModelCache.reset()
    with Session(engine) as session, pytest.raises(ConfigurationError, match="not configured"):
        SQLModelCache.get_many(session, Hero, [1])


def test_nothing_asked_nothing_sent(engine, sql, counting):
    with Session(engine) as session:
        assert SQLModelCache.get_many(session, Hero, []) == []
    assert sql.statements == [] and counting.calls == []
