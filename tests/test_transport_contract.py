"""Any get/set/delete object is a transport; a failing one never reaches the caller."""

import logging

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlmodel import Session

from sqlmodel_cache import BreakerConfig, SQLModelCache
from sqlmodel_cache.transport import CacheTransport, RedisSyncTransport

from .models import Hero


class InMemoryTransport:
    """The reference pages' custom transport, as written there."""

    def __init__(self) -> None:
        self._store: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self._store.get(key)

    def set(self, key: str, value: bytes, ttl: int) -> None:
        self._store[key] = value  # TTL not enforced in this example

    def delete(self, *keys: str) -> None:
        for key in keys:
            self._store.pop(key, None)


class Broken:
    """Fails every call: by default as a dead backend would (it cannot be reached)."""

    def __init__(self, error: type[Exception] = ConnectionError) -> None:
        self.calls = 0
        self.error = error

    def get(self, key: str) -> bytes | None:
        self.calls += 1
        raise self.error("backend down")

    def set(self, key: str, value: bytes, ttl: int) -> None:
        self.calls += 1
        raise self.error("backend down")

    def delete(self, *keys: str) -> None:
        self.calls += 1
        raise self.error("backend down")


def _seed(engine) -> None:
    with Session(engine) as session:
        session.add(Hero(id=1, name="a"))
        session.commit()


def test_the_documented_custom_transport_works(engine, sql):
    transport = InMemoryTransport()
    assert isinstance(transport, CacheTransport)
    SQLModelCache.configure(transport=transport, default_ttl=300)
    _seed(engine)
    with Session(engine) as session:
        session.get(Hero, 1)
    assert list(transport._store) == ["sqlmodelcache:Hero:id=1"]
    sql.clear()
    with Session(engine) as session:
        hero = session.get(Hero, 1)
        assert sql.statements == []
        hero.name = "b"
        session.commit()
    assert transport._store == {}


def _rename_twice_and_read(engine) -> None:
    for name in ("b", "c"):
        with Session(engine) as session:
            hero = session.get(Hero, 1)
            hero.name = name
            session.commit()
    with Session(engine) as session:
        assert session.get(Hero, 1).name == "c"


def test_a_failing_transport_falls_back_to_the_database(engine, sql, caplog):
    _seed(engine)
    transport = Broken()
    SQLModelCache.configure(transport=transport, breaker=None)
    with caplog.at_level(logging.WARNING, logger="sqlmodel_cache"):
        _rename_twice_and_read(engine)
    # Each of the 3 reads and the first invalidation was tried and none raised; a
    # failed read does not try to fill. The second invalidation waits for the
    # first: undelivered invalidations go first, and they still cannot be sent.
    assert transport.calls == 5
    stats = SQLModelCache.stats()
    assert (stats.errors, stats.hits, stats.misses, stats.invalidations) == (5, 0, 3, 0)
    assert len(caplog.records) <= 3  # one warning per kind of failure, not one per call


@pytest.mark.parametrize(
    ("error", "calls"),
    [
        (RuntimeError, 3),  # a bad reply: read, invalidate, read, then open
        (ConnectionError, 1),  # unreachable: open at the first failure
        (TimeoutError, 1),
    ],
)
def test_the_breaker_stops_calling_a_failing_transport(engine, caplog, error, calls):
    _seed(engine)
    transport = Broken(error)
    SQLModelCache.configure(transport=transport, breaker=BreakerConfig(failures=3, cooldown=60))
    with caplog.at_level(logging.INFO, logger="sqlmodel_cache"):
        _rename_twice_and_read(engine)
    assert transport.calls == calls
    stats = SQLModelCache.stats()
    assert (stats.errors, stats.misses, stats.breaker) == (calls, 3, "open")
    opened = [r for r in caplog.records if "breaker open" in r.getMessage()]
    assert len(opened) == 1


def test_an_unreachable_redis_falls_back_to_the_database(engine):
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    _seed(engine)
    SQLModelCache.configure(transport=RedisSyncTransport(dead))
    with Session(engine) as session:
        hero = session.get(Hero, 1)
        hero.name = "b"
        session.commit()
    with Session(engine) as session:
        assert session.get(Hero, 1).name == "b"
    assert SQLModelCache.stats().errors == 1  # refused: the breaker opened at once


@pytest.mark.parametrize("garbage", [b"", b"\xff\xfe", b"[]", b'{"name": "x"}', b"[1, 2, 3]"])
def test_garbage_in_redis_is_a_miss_and_gets_replaced(engine, cache, prefix, garbage, sql):
    _seed(engine)
    cache.set(f"{prefix}:Hero:id=1", garbage)
    with Session(engine) as session:
        assert session.get(Hero, 1).name == "a"
    assert cache.get(f"{prefix}:Hero:id=1") != garbage
    sql.clear()
    with Session(engine) as session:
        assert session.get(Hero, 1).name == "a"
    assert sql.statements == []
