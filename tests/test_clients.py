"""The Redis clients users build: from_url's defaults, and any client's retries bounded.

Whatever timeouts and retries a given client has, a dead Redis costs one client
call per process before the breaker stops calling it, and the L1 feed notices a
silent Redis on its own short-timeout connection.
"""

import asyncio
import logging
import time
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import ConstantBackoff, ExponentialBackoff
from redis.retry import Retry

from sqlmodel_cache import ConfigurationError, SQLModelCache, TransportError, _runtime
from sqlmodel_cache.transport import RedisAsyncTransport, RedisSyncTransport, _clients

from .conftest import REDIS_URL
from .heroes import name, rename, seed
from .models import Hero

CLUSTER_URL = "redis://127.0.0.1:7101"


def _kwargs(transport: RedisSyncTransport | RedisAsyncTransport) -> dict[str, Any]:
    return dict(transport.client.connection_pool.connection_kwargs)


def test_from_url_gives_short_timeouts_one_retry_and_health_checks(engine, prefix, sql):
    transport = RedisSyncTransport.from_url(REDIS_URL)
    settings = _kwargs(transport)
    assert settings["socket_timeout"] == 0.5 and settings["socket_connect_timeout"] == 0.5
    assert settings["health_check_interval"] == 30
    retry = settings["retry"]
    assert (retry._retries, retry._supported_errors) == (1, (redis.ConnectionError,))
    seed(engine, (1, "a"))
    SQLModelCache.configure(transport, key_prefix=prefix)
    name(engine, 1)
    sql.clear()
    assert name(engine, 1) == "a"
    assert sql.statements == []  # it works: a hit


def test_from_url_options_win_and_reach_the_client():
    transport = RedisSyncTransport.from_url(
        REDIS_URL, socket_timeout=2, client_name="smc-options", lease_ttl=1
    )
    settings = _kwargs(transport)
    assert (settings["socket_timeout"], settings["client_name"]) == (2, "smc-options")
    assert transport.client.client_getname() == "smc-options"


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("http://127.0.0.1:6379", {}, "cannot build a Redis client for 'http://"),
        (6379, {}, "the Redis URL must be a str, got 6379"),
        (REDIS_URL, {"sockettimeout": 1}, "sockettimeout"),
        ("redis://127.0.0.1:6379/zero", {}, "cannot build a Redis client"),
    ],
)
@pytest.mark.parametrize("kind", [RedisSyncTransport, RedisAsyncTransport])
def test_from_url_names_bad_input(kind, url, options, message):
    with pytest.raises(ConfigurationError, match=message):
        kind.from_url(url, **options)


def test_from_url_builds_cluster_clients(engine, prefix, sql):
    from redis.cluster import RedisCluster

    transport = RedisSyncTransport.from_url(CLUSTER_URL, cluster=True)
    assert isinstance(transport.client, RedisCluster)
    seed(engine, (1, "a"))
    SQLModelCache.configure(transport, key_prefix=prefix)
    name(engine, 1)
    sql.clear()
    assert name(engine, 1) == "a"
    assert sql.statements == []


def test_from_url_of_an_unreachable_cluster_says_so():
    from .conftest import free_port

    with pytest.raises(TransportError, match=r"cannot reach Redis at 'redis://127\.0\.0\.1:"):
        RedisSyncTransport.from_url(f"redis://127.0.0.1:{free_port()}", cluster=True)


@pytest.mark.greenlet
def test_async_from_url_serves_async_sessions(engine, prefix):
    from sqlmodel.ext.asyncio.session import AsyncSession

    from .test_async import Selects, async_engine

    seed(engine, (1, "a"))

    async def main() -> None:
        transport = RedisAsyncTransport.from_url(REDIS_URL)
        settings = _kwargs(transport)
        assert settings["socket_timeout"] == 0.5
        assert isinstance(settings["retry"], redis.asyncio.retry.Retry)
        SQLModelCache.configure(transport, key_prefix=prefix)
        aengine = async_engine(engine)
        selects = Selects(aengine)
        for _ in range(2):
            async with AsyncSession(aengine) as session:
                assert (await session.get(Hero, 1)).name == "a"
        assert selects.count == 1
        await aengine.dispose()

    asyncio.run(main())


def test_a_client_without_read_timeout_is_warned_of(caplog, monkeypatch):
    monkeypatch.setattr(_clients, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="sqlmodel_cache"):
        RedisSyncTransport(redis.Redis(port=6379, socket_timeout=None))
        RedisSyncTransport(redis.Redis(port=6379, socket_timeout=None))  # once is enough
    warned = [r for r in caplog.records if "socket_timeout" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    caplog.clear()
    monkeypatch.setattr(_clients, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="sqlmodel_cache"):
        RedisSyncTransport.from_url(REDIS_URL)
    assert caplog.records == []


# A patient client: three retries of everything, as redis-py 8 does by default
# (with a short backoff here, to keep the test fast).
def _patient_sync(port: int) -> redis.Redis:
    return redis.Redis(port=port, retry=Retry(ExponentialBackoff(cap=0.02, base=0.005), 3))


def _patient_async(port: int) -> redis.asyncio.Redis:
    retry = redis.asyncio.retry.Retry(ExponentialBackoff(cap=0.02, base=0.005), 3)
    return redis.asyncio.Redis(port=port, retry=retry)


def test_a_dead_redis_costs_one_client_call_whatever_its_retries(engine, proxy, prefix):
    seed(engine, (1, "a"))
    SQLModelCache.configure(RedisSyncTransport(_patient_sync(proxy.port)), key_prefix=prefix)
    proxy.cut()  # every connection is accepted, counted, and closed at once
    assert name(engine, 1) == "a"
    first_call = proxy.accepted
    assert first_call >= 1  # redis-py >= 6 retries inside that one call, 5.x may not
    for new in ("b", "c", "d"):
        rename(engine, 1, new)
        assert name(engine, 1) == new
    assert proxy.accepted == first_call  # nothing after it: the breaker opened at once
    stats = SQLModelCache.stats()
    assert (stats.errors, stats.breaker) == (1, "open")


@pytest.mark.greenlet
def test_a_dead_redis_costs_async_sessions_one_client_call(engine, proxy, prefix):
    from sqlmodel.ext.asyncio.session import AsyncSession

    from .test_async import async_engine

    seed(engine, (1, "a"))

    async def main() -> None:
        transport = RedisAsyncTransport(_patient_async(proxy.port))
        SQLModelCache.configure(transport, key_prefix=prefix)
        aengine = async_engine(engine)
        proxy.cut()
        async with AsyncSession(aengine) as session:
            assert (await session.get(Hero, 1)).name == "a"
        first_call = proxy.accepted
        assert first_call >= 1
        for new in ("b", "c"):
            async with AsyncSession(aengine) as session:
                (await session.get(Hero, 1)).name = new
                await session.commit()
            async with AsyncSession(aengine) as session:
                assert (await session.get(Hero, 1)).name == new
        assert name(engine, 1) == "c"  # a plain Session, on the blocking twin
        assert proxy.accepted == first_call
        stats = SQLModelCache.stats()
        assert (stats.errors, stats.breaker) == (1, "open")
        await aengine.dispose()

    asyncio.run(main())


@pytest.mark.parametrize("outage", ["stall", "cut"])
def test_l1_is_off_from_an_outage_until_the_feed_is_back(engine, proxy, prefix, outage):
    # The given client would take 3 s per read and retry three times, 2 s apart:
    # a feed on it would keep L1 serving for many seconds after Redis went away.
    slow = redis.Redis(port=proxy.port, socket_timeout=3, retry=Retry(ConstantBackoff(2), 3))
    seed(engine, (1, "a"))
    SQLModelCache.configure(RedisSyncTransport(slow), key_prefix=prefix, l1=True, breaker=None)
    runtime = _runtime.current
    assert runtime is not None and runtime.l1 is not None and runtime.feed is not None
    assert runtime.feed.subscribed.wait(5)
    name(engine, 1)
    name(engine, 1)
    assert SQLModelCache.stats().l1_hits == 1
    epoch = runtime.l1.epoch
    getattr(proxy, outage)()  # a stall: no error, no reply, only the heartbeat can tell
    # A cut is seen at once; a stall after 2 s of silence (reads wait at most 1 s).
    assert runtime.l1.wait_past(epoch, 4)
    assert not runtime.l1.usable and len(runtime.l1) == 0
    proxy.heal()
    assert runtime.feed.subscribed.wait(15)
    name(engine, 1)
    name(engine, 1)
    assert SQLModelCache.stats().l1_hits == 2


def _connections_named(name: str) -> int:
    listing = redis.Redis.from_url(REDIS_URL).client_list()
    return sum(1 for client in listing if client["name"] == name)


@pytest.mark.greenlet
def test_each_event_loop_client_is_closed_with_its_loop(engine, prefix):
    from sqlmodel.ext.asyncio.session import AsyncSession

    from .test_async import async_engine

    seed(engine, (1, "a"))
    label = f"smc-loops-{prefix[-12:]}"
    transport = RedisAsyncTransport.from_url(REDIS_URL, client_name=label)
    SQLModelCache.configure(transport, key_prefix=prefix)

    async def job() -> None:
        aengine = async_engine(engine)
        async with AsyncSession(aengine) as session:
            assert (await session.get(Hero, 1)).name == "a"
        assert _connections_named(label) >= 1  # this loop's client is connected
        await aengine.dispose()

    for _ in range(100):  # a script, a worker or a test suite running asyncio.run per job
        asyncio.run(job())
    assert len(transport._loops) <= 1  # closed loops are forgotten
    deadline = time.monotonic() + 5  # Redis notices a closed socket on its next tick
    while _connections_named(label) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _connections_named(label) == 0
