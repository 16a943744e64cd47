"""Models as users write them are cached exactly: the second get sends no SQL and returns
equal values of identical types, from Redis (L2) and from the in-process tier (L1)."""

import datetime as dt
import decimal
import ipaddress
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy import inspect
from sqlmodel import Session

from sqlmodel_cache import SQLModelCache, _runtime
from sqlmodel_cache._codec import MAX_DEPTH
from sqlmodel_cache.transport import RedisSyncTransport

from .conftest import entries
from .written import Account, Device, Mood, PgBase, Profile, now

pg_only = pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)


@pytest.fixture(params=["l2", "l1"])
def tier(request: pytest.FixtureRequest, redis_client: redis.Redis, prefix: str) -> Iterator[str]:
    """The cache on real Redis, without or with the in-process tier."""
    l1 = request.param == "l1"
    SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix, l1=l1)
    if l1:
        feed = _runtime.current.feed if _runtime.current else None
        assert feed is not None and feed.subscribed.wait(5)
    yield request.param


def snapshot(obj: Any) -> dict[str, tuple[type, Any]]:
    """Every loaded column attribute as (type, value)."""
    assert obj is not None
    state = inspect(obj)
    return {
        attr.key: (type(attr.value), attr.value)
        for attr in state.attrs
        if attr.key in state.dict and attr.key in state.mapper.column_attrs
    }


def assert_cached_exactly(engine: sa.Engine, sql: Any, model: type, ident: Any) -> None:
    """A database load, a miss that fills, then a hit with no SQL and identical values."""

    def counts() -> tuple[int, int, int]:
        stats = SQLModelCache.stats().by_model.get(model.__name__)
        return (0, 0, 0) if stats is None else (stats.misses, stats.fills, stats.hits)

    with Session(engine) as session:
        loaded = snapshot(session.get(model, ident, execution_options={"cache": False}))
    before = counts()
    with Session(engine) as session:
        assert snapshot(session.get(model, ident)) == loaded  # the miss
    sql.clear()
    with Session(engine) as session:
        hit = session.get(model, ident)
        assert sql.statements == []
        assert snapshot(hit) == loaded
        assert not session.is_modified(hit) and inspect(hit).persistent
    after = counts()
    assert tuple(b - a for a, b in zip(before, after)) == (1, 1, 1), SQLModelCache.stats()


def test_a_sqlmodel_model_with_plain_annotations(engine, sql, tier):
    with Session(engine) as session:
        session.add(
            Profile(
                id=1,
                name="Deadpond",
                bio="ünïcode: 100% = ok",
                created_at=now(),
                last_seen=dt.datetime(2023, 12, 31, 23, 59, 59, 999999),
                birthday=dt.date(1990, 2, 28),
                wakes_at=dt.time(6, 45, 30, 5),
                streak=dt.timedelta(days=3, seconds=7, microseconds=11),
                balance=decimal.Decimal("1234.50"),
                ref=uuid.UUID("7b1e5a3c-9f24-4c4e-8d5e-1f2a3b4c5d6e"),
                mood=Mood.GRUMPY,
                avatar=b"\x89PNG\x00\xff",
                score=0.1 + 0.2,
                active=False,
                settings={"theme": "dark", "sizes": [1, 2.5], "nested": {"on": True}},
            )
        )
        session.add(Profile(id=2, name="Minimal", created_at=now()))  # defaults and NULLs
        session.commit()
    assert_cached_exactly(engine, sql, Profile, 1)
    assert_cached_exactly(engine, sql, Profile, 2)


def test_a_uuid_primary_key(engine, sql, tier, prefix, redis_client):
    ident = uuid.UUID("00c0ffee-0000-4000-8000-0000000000ab")
    with Session(engine) as session:
        session.add(Account(id=ident, email="a@example.org", opened_at=now()))
        session.commit()
    assert_cached_exactly(engine, sql, Account, ident)
    assert entries(redis_client, prefix) == [f"{prefix}:Account:id={ident}"]


@pytest.fixture
def pg_tables(engine: sa.Engine) -> Iterator[sa.Engine]:
    PgBase.metadata.drop_all(engine)
    PgBase.metadata.create_all(engine)
    yield engine
    PgBase.metadata.drop_all(engine)


@pg_only
def test_a_declarative_model_with_postgresql_types_and_user_type_decorators(pg_tables, sql, tier):
    ident = uuid.UUID(int=7)
    with Session(pg_tables) as session:
        session.add(
            Device(
                id=ident,
                tags=["edge", "eu-west", ""],
                readings=[[decimal.Decimal("1.500"), decimal.Decimal("-2.250")], [None, None]],
                attributes={"rack": 4, "labels": ["a", "b"], "meta": {"k": None}},
                address=ipaddress.ip_interface("192.0.2.10/24"),
                subnet=ipaddress.ip_network("2001:db8::/48"),
                uptime=dt.timedelta(days=40, hours=3),
                price=decimal.Decimal("99.9900"),
                seen_at=dt.datetime(2024, 3, 10, 2, 30, tzinfo=dt.UTC),
                peers=[uuid.UUID(int=8), uuid.UUID(int=9)],
                fee=decimal.Decimal("12.34"),
                words=["one", "two"],
                mood=Mood.HAPPY,
            )
        )
        session.commit()
    assert_cached_exactly(pg_tables, sql, Device, ident)
    with Session(pg_tables) as session:
        device = session.get(Device, ident)
        assert type(device.address) is ipaddress.IPv4Interface  # what psycopg loads for INET
        assert type(device.seen_at.tzinfo).__name__ == "ZoneInfo"  # psycopg's session zone


def test_mutable_values_of_a_hit_are_private_copies(engine, tier):
    with Session(engine) as session:
        session.add(Profile(id=1, name="a", created_at=now(), settings={"list": [1]}))
        session.commit()
    for _ in range(2):  # fill, then hit
        with Session(engine) as session:
            profile = session.get(Profile, 1)
            profile.settings["list"].append(2)  # an in-place change, never flushed
            session.rollback()
    with Session(engine) as session:
        assert session.get(Profile, 1).settings == {"list": [1]}


@pytest.fixture
def deep_recursion() -> Iterator[None]:
    """Let the drivers load JSON a thousand levels deep (they recurse to parse it)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    yield
    sys.setrecursionlimit(limit)


@pytest.mark.parametrize("depth", [50, 1000])
def test_deeply_nested_json_is_cached_or_served_from_the_database(
    engine, sql, tier, deep_recursion, depth
):
    settings: Any = {"leaf": True}
    for level in range(depth - 2):
        settings = [settings] if level % 2 else {"k": settings}
    with Session(engine) as session:
        session.add(Profile(id=1, name="deep", created_at=now(), settings={"d": settings}))
        session.commit()
    for _ in range(3):
        with Session(engine) as session:
            sql.clear()
            assert session.get(Profile, 1).settings == {"d": settings}
    cached = depth < MAX_DEPTH
    assert sql.selects == (0 if cached else 1)
    stats = SQLModelCache.stats().by_model["Profile"]
    assert (stats.fills, stats.hits) == ((1, 2) if cached else (0, 0))
