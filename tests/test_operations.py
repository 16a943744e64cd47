"""Operations: dropping a whole model, or everything, in every tier of every process.

Real Redis and PostgreSQL; the other process is tests/_worker.py with its own L1.
"""

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
import sqlalchemy as sa
from sqlmodel import Session

from sqlmodel_cache import ConfigurationError, SQLModelCache, _runtime
from sqlmodel_cache.transport import RedisAsyncTransport, RedisSyncTransport

from .conftest import REDIS_URL, entries
from .heroes import name, seed
from .models import Hero, Note, NoteCard, Plain, Tag

ROOT = Path(__file__).resolve().parent.parent
pg_only = pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)


class Other:
    """Another process with an L1 of its own on the same cache."""

    def __init__(self, engine: sa.Engine, prefix: str) -> None:
        url = engine.url.render_as_string(hide_password=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests._worker", url, REDIS_URL, prefix, "l1"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.readline() == "ready"

    def readline(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def ask(self, line: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.readline()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


@pytest.fixture
def other(engine: sa.Engine, prefix: str) -> Iterator[Other]:
    worker = Other(engine, prefix)
    yield worker
    worker.close()


def _warm(engine: sa.Engine, other: Other, *idents: int) -> None:
    """Rows in Redis, in this process's L1 and in the other's."""
    for ident in idents:
        name(engine, ident)
        assert name(engine, ident) is not None  # an L1 hit here
        assert other.ask(f"tier {ident}") in ("l1", "l2")
        assert other.ask(f"tier {ident}") == "l1"


@pg_only
def test_invalidate_model_drops_its_entries_in_every_tier_of_every_process(
    engine, sql, redis_client, prefix, other
):
    seed(engine, (1, "a"), (2, "b"))
    with Session(engine) as session:
        session.add(Tag(name="t"))
        session.commit()
    SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix, l1=True)
    _warm(engine, other, 1, 2)
    with Session(engine) as session:
        session.get(Tag, "t")
    assert entries(redis_client, prefix) == [
        f"{prefix}:Hero:id=1",
        f"{prefix}:Hero:id=2",
        f"{prefix}:Tag:name=t",
    ]

    SQLModelCache.invalidate_model(Hero)

    assert entries(redis_client, prefix) == [f"{prefix}:Tag:name=t"]  # other models stay
    assert other.ask("news") == "yes"
    assert other.ask("tier 1") == "db"
    sql.clear()
    assert name(engine, 2) == "b"  # not from this process's L1 either
    assert sql.selects == 1
    assert SQLModelCache.stats().by_model["Hero"].invalidations == 1


@pg_only
def test_clear_drops_everything_under_the_prefix_and_nothing_else(
    engine, sql, redis_client, prefix, other
):
    seed(engine, (1, "a"))
    SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix, l1=True)
    _warm(engine, other, 1)
    neighbour = f"{prefix}x:Hero:id=1"  # another app's prefix that starts like ours
    redis_client.set(neighbour, b"theirs")
    try:
        SQLModelCache.clear()
        assert entries(redis_client, prefix) == []
        assert redis_client.get(neighbour) == b"theirs"
    finally:
        redis_client.delete(neighbour)
    sql.clear()
    assert name(engine, 1) == "a"  # neither from this process's L1 nor from Redis
    assert sql.selects == 1
    assert other.ask("news") == "yes"
    assert other.ask("tier 1") == "l2"  # not its L1: the row this process just stored


@pytest.mark.greenlet  # an async transport is awaited inside SQLAlchemy's greenlet
def test_the_async_twins_on_an_async_transport(engine, redis_client, prefix):
    seed(engine, (1, "a"))
    with Session(engine) as session:
        session.add(Tag(name="t"))
        session.commit()

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        SQLModelCache.configure(RedisAsyncTransport(client), key_prefix=prefix)
        name(engine, 1)  # a plain Session fills through the blocking twin
        with Session(engine) as session:
            session.get(Tag, "t")
        await SQLModelCache.ainvalidate_model(Hero)
        assert entries(redis_client, prefix) == [f"{prefix}:Tag:name=t"]
        await SQLModelCache.aclear()
        assert entries(redis_client, prefix) == []
        await client.aclose()

    asyncio.run(main())


def test_invalidate_model_reaches_the_classes_that_read_its_table(engine, redis_client, prefix):
    with Session(engine) as session:
        session.add(Note(id=1, text="n"))
        session.commit()
    SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix)
    with Session(engine) as session:
        session.get(Note, 1)
        session.get(NoteCard, 1)
    assert len(entries(redis_client, prefix)) == 2
    SQLModelCache.invalidate_model(Note)
    assert entries(redis_client, prefix) == []


def test_a_clear_during_an_outage_is_delivered_when_redis_is_back(engine, sql, proxy, prefix):
    from .test_resilience import client_for

    seed(engine, (1, "a"))
    SQLModelCache.configure(RedisSyncTransport(client_for(proxy.port)), key_prefix=prefix)
    assert name(engine, 1) == "a"  # filled
    proxy.cut()
    SQLModelCache.clear()  # nothing raises: the cache may fail, the app may not
    proxy.heal()
    runtime = _runtime.current
    assert runtime is not None
    runtime.deliver_pending_now()  # as the next use of the cache would
    sql.clear()
    assert name(engine, 1) == "a"
    assert sql.selects == 1  # the entry went with the delivery


def test_operations_refuse_what_they_cannot_do(engine):
    with pytest.raises(ConfigurationError, match="not configured"):
        SQLModelCache.clear()
    with pytest.raises(ConfigurationError, match="not configured"):
        SQLModelCache.invalidate_model(Hero)

    class GetSetDelete:
        def get(self, key: str) -> bytes | None:
            return None

        def set(self, key: str, value: bytes, ttl: int) -> None:
            return None

        def delete(self, *keys: str) -> None:
            return None

    SQLModelCache.configure(GetSetDelete())
    with pytest.raises(ConfigurationError, match=r"clear\(\) needs a transport with delete_model"):
        SQLModelCache.clear()
    with pytest.raises(ConfigurationError, match="is not a mapped model class"):
        SQLModelCache.invalidate_model(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Plain is not cached"):
        SQLModelCache.invalidate_model(Plain)
