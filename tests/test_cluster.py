"""Redis Cluster: three real primaries on loopback (scripts/services.sh starts them).

Keys of one commit land in many slots; scripts stay single-key; pub/sub spans
the cluster. Both transports pass the contract suite on it.
"""

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio
from redis.cluster import RedisCluster
from sqlmodel import Session, col, select

from sqlmodel_cache import SQLModelCache, _runtime
from sqlmodel_cache.testing import AsyncTransportContract, LeasingTransportContract
from sqlmodel_cache.transport import RedisAsyncTransport, RedisSyncTransport
from sqlmodel_cache.transport._base import LEASE_MARK

from .models import Hero

PORT = int(os.environ.get("TEST_REDIS_CLUSTER_PORT", "7101"))


@pytest.fixture(scope="session")
def cluster() -> Iterator[RedisCluster]:
    client = RedisCluster(host="127.0.0.1", port=PORT)
    assert len(client.get_primaries()) >= 3
    yield client
    client.close()


@pytest.fixture
def cluster_prefix(cluster: RedisCluster, prefix: str) -> Iterator[str]:
    yield prefix
    for key in list(cluster.scan_iter(match=f"{prefix}:*")):
        cluster.delete(key)


class TestRedisClusterTransport(LeasingTransportContract):
    lease_ttl = 1.0  # short, so that the expiry test sees an abandoned lease go

    @pytest.fixture
    def transport(self, cluster: RedisCluster) -> RedisSyncTransport:
        return RedisSyncTransport(cluster, lease_ttl=self.lease_ttl)

    @pytest.fixture
    def namespace(self, cluster_prefix: str) -> str:
        return cluster_prefix


class TestAsyncRedisClusterTransport(AsyncTransportContract):
    lease_ttl = 1.0

    @pytest.fixture
    def async_transport(self) -> Iterator[RedisAsyncTransport]:
        # The asyncio client closes with the event loop that used it; the twin here.
        client = redis.asyncio.RedisCluster(host="127.0.0.1", port=PORT)
        transport = RedisAsyncTransport(client, lease_ttl=self.lease_ttl)
        yield transport
        transport.sync.client.close()

    @pytest.fixture
    def namespace(self, cluster_prefix: str) -> str:
        return cluster_prefix


def cluster_entries(cluster: RedisCluster, prefix: str) -> list[str]:
    found = []
    for key in cluster.scan_iter(match=f"{prefix}:*"):
        value: Any = cluster.get(key)
        if value is not None and not value.startswith(LEASE_MARK):
            found.append(key.decode())
    return sorted(found)


def seed(engine, count: int) -> None:
    with Session(engine) as session:
        session.add_all(Hero(id=i, name=f"h{i}") for i in range(1, count + 1))
        session.commit()


def names(engine, idents) -> list[str | None]:
    out = []
    for ident in idents:
        with Session(engine) as session:
            hero = session.get(Hero, ident)
            out.append(None if hero is None else hero.name)
    return out


def test_hits_misses_and_one_commit_across_many_slots(engine, cluster, cluster_prefix, sql):
    seed(engine, 40)
    SQLModelCache.configure(RedisSyncTransport(cluster), key_prefix=cluster_prefix)
    idents = range(1, 41)
    assert names(engine, idents) == [f"h{i}" for i in idents]  # misses, fills
    keys = sorted(f"{cluster_prefix}:Hero:id={i}" for i in idents)
    assert cluster_entries(cluster, cluster_prefix) == keys, SQLModelCache.stats()
    # Two of forty keys may share a slot by chance; most must not.
    assert len({cluster.keyslot(key) for key in keys}) >= 30
    assert len({cluster.get_node_from_key(key).name for key in keys}) >= 3
    sql.clear()
    assert names(engine, idents) == [f"h{i}" for i in idents]  # hits
    assert sql.statements == []
    with Session(engine) as session:  # one commit touching every slot
        for hero in session.exec(select(Hero)):
            hero.name = hero.name.upper()
        session.commit()
    assert cluster_entries(cluster, cluster_prefix) == []
    assert names(engine, idents) == [f"H{i}" for i in idents]
    stats = SQLModelCache.stats()
    assert stats.errors == 0 and stats.hits == 40 and stats.breaker == "closed"


def test_bulk_writes_drop_the_whole_model_across_nodes(engine, cluster, cluster_prefix):
    from sqlalchemy import update

    seed(engine, 12)
    SQLModelCache.configure(RedisSyncTransport(cluster), key_prefix=cluster_prefix)
    names(engine, range(1, 13))
    with Session(engine) as session:
        # Its own RETURNING leaves the rows unknown: every Hero entry must go.
        session.execute(update(Hero).values(name="bulk").returning(col(Hero.id)))
        session.commit()
    assert cluster_entries(cluster, cluster_prefix) == []
    assert set(names(engine, range(1, 13))) == {"bulk"}


def test_l1_invalidations_travel_over_cluster_pubsub(engine, cluster, cluster_prefix):
    seed(engine, 1)
    SQLModelCache.configure(RedisSyncTransport(cluster), key_prefix=cluster_prefix, l1=True)
    runtime = _runtime.current
    assert runtime is not None and runtime.feed is not None and runtime.l1 is not None
    assert runtime.feed.subscribed.wait(5)
    names(engine, [1, 1])
    assert SQLModelCache.stats().l1_hits == 1
    # Another process's message, as it would arrive: only the feed can drop the row.
    epoch = runtime.l1.epoch
    cluster.publish(f"{cluster_prefix}:invalidations", f"elsewhere\n{cluster_prefix}:Hero:id=1")
    assert runtime.l1.wait_past(epoch, 5)
    assert len(runtime.l1) == 0


@pytest.mark.greenlet
def test_async_cluster_transport(engine, cluster, cluster_prefix):
    seed(engine, 3)

    async def main() -> None:
        client = redis.asyncio.RedisCluster(host="127.0.0.1", port=PORT)
        SQLModelCache.configure(RedisAsyncTransport(client), key_prefix=cluster_prefix)
        from sqlmodel.ext.asyncio.session import AsyncSession

        from .test_async import async_engine

        aengine = async_engine(engine)
        for _ in range(2):
            for ident in (1, 2, 3):
                async with AsyncSession(aengine) as session:
                    assert (await session.get(Hero, ident)) is not None
        async with AsyncSession(aengine) as session:
            for ident in (1, 2, 3):
                (await session.get(Hero, ident)).name = "renamed"
            await session.commit()
        await aengine.dispose()
        await client.aclose()

    asyncio.run(main())
    assert cluster_entries(cluster, cluster_prefix) == []
    assert names(engine, [1, 2, 3]) == ["renamed"] * 3  # plain sessions use the sync twin
    stats = SQLModelCache.stats()
    assert stats.errors == 0 and stats.hits == 6
