"""Natural keys: SQLModelCache.get_by / aget_by, on real Redis and databases.

A natural-key entry holds the row's primary key; the row comes as a get brings it, and
is returned only when its own values are those asked for.
"""

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import Session, col

from sqlmodel_cache import ConfigurationError, SQLModelCache
from sqlmodel_cache.transport import RedisSyncTransport

from .conftest import REDIS_URL, entries
from .heroes import write_unseen
from .models import Hero, Member

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def members(engine, redis_client, prefix):
    with Session(engine) as session:
        session.add(Member(id=1, email="a@example.org", tenant_id=7, slug="ann", name="Ann"))
        session.add(Member(id=2, email="b@example.org", tenant_id=7, slug="bob", name="Bob"))
        session.commit()
    SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix)
    return engine


def by(engine, **values):
    with Session(engine) as session:
        found = SQLModelCache.get_by(session, Member, **values)
        return None if found is None else found.name


def test_a_natural_key_finds_the_row_then_the_cache_answers(members, sql, redis_client, prefix):
    assert by(members, email="a@example.org") == "Ann"  # the database; the mapping fills
    assert sql.selects == 1
    assert entries(redis_client, prefix) == [f"{prefix}:Member:~email=a@example.org"]
    assert by(members, email="a@example.org") == "Ann"  # the mapping; the row fills
    assert sql.selects == 2
    sql.clear()
    assert by(members, email="a@example.org") == "Ann"
    assert sql.statements == []
    assert by(members, slug="bob", tenant_id=7) == "Bob"
    assert by(members, tenant_id=7, slug="bob") == "Bob"
    assert by(members, tenant_id=7, slug="bob") == "Bob"
    assert sql.selects == 2  # the composite key: the database, then the row
    assert by(members, email="nobody@example.org") is None


def _warm(engine) -> None:
    for _ in range(2):
        by(engine, email="a@example.org")


def test_an_orm_change_of_the_value_invalidates_old_and_new(members, sql, redis_client, prefix):
    _warm(members)
    with Session(members) as session:
        session.get(Member, 1).email = "z@example.org"
        session.commit()
    assert f"{prefix}:Member:~email=a@example.org" not in entries(redis_client, prefix)
    assert by(members, email="a@example.org") is None
    assert by(members, email="z@example.org") == "Ann"


def test_an_update_that_keeps_the_value_keeps_its_mapping(members, sql, redis_client, prefix):
    _warm(members)
    with Session(members) as session:
        session.get(Member, 1).name = "Ann B."
        session.commit()
    assert f"{prefix}:Member:~email=a@example.org" in entries(redis_client, prefix)
    assert by(members, email="a@example.org") == "Ann B."  # the row's entry was renewed


def test_a_stale_mapping_is_never_followed(members, sql, redis_client, prefix):
    _warm(members)
    # A write the ORM did not make: the mapping still points at row 1, whose email moved.
    with Session(members) as session:
        statement = update(Member).where(col(Member.id) == 1).values(email="z@example.org")
        session.execute(statement)
        session.commit()
    sql.clear()
    assert by(members, email="a@example.org") is None  # row 1 is not a@...: the database
    assert f"{prefix}:Member:~email=a@example.org" not in entries(redis_client, prefix)
    # Another row takes the value: found, not row 1.
    with Session(members) as session:
        session.add(Member(id=3, email="a@example.org", tenant_id=8, slug="ann", name="New"))
        session.commit()
    assert by(members, email="a@example.org") == "New"


def test_a_deleted_row_is_not_found_through_its_mapping(members, sql):
    _warm(members)
    write_unseen(members, "DELETE FROM member WHERE id = 1")  # another service
    SQLModelCache.invalidate(Member, 1)  # as it must announce it
    assert by(members, email="a@example.org") is None


def test_a_commit_between_the_read_and_the_fill_wins(members, redis_client, prefix):
    with Session(members) as reader:
        assert SQLModelCache.get_by(reader, Member, email="a@example.org").name == "Ann"
        with Session(members) as writer:  # before the reader's fill goes out at its end
            writer.get(Member, 1).email = "z@example.org"
            writer.commit()
    assert entries(redis_client, prefix) == []  # the lease was lost: nothing stored
    assert by(members, email="a@example.org") is None


def test_within_a_transaction_its_own_writes_decide(members, sql):
    _warm(members)
    with Session(members) as session:
        session.get(Member, 1).email = "z@example.org"
        session.flush()
        assert SQLModelCache.get_by(session, Member, email="a@example.org") is None
        assert SQLModelCache.get_by(session, Member, email="z@example.org").name == "Ann"
        session.rollback()
    assert by(members, email="a@example.org") == "Ann"


def test_bad_lookups_are_refused(members):
    with Session(members) as session:
        with pytest.raises(ConfigurationError, match=r"no natural key \(name\)"):
            SQLModelCache.get_by(session, Member, name="Ann")
        with pytest.raises(ConfigurationError, match=r"declared: \(email\); \(tenant_id, slug\)"):
            SQLModelCache.get_by(session, Member, slug="ann")
        with pytest.raises(ConfigurationError, match="email is None"):
            SQLModelCache.get_by(session, Member, email=None)
        with pytest.raises(ConfigurationError, match="tenant_id='seven'"):
            SQLModelCache.get_by(session, Member, tenant_id="seven", slug="ann")
        with pytest.raises(ConfigurationError, match="Hero has no natural key"):
            SQLModelCache.get_by(session, Hero, name="x")
    with pytest.raises(ConfigurationError, match="natural_keys must be a tuple"):
        from sqlmodel_cache import CacheConfig

        CacheConfig(natural_keys="email")


def test_configure_refuses_a_natural_key_no_unique_constraint_backs():
    script = (
        "from sqlmodel import Field, SQLModel\n"
        "from sqlmodel_cache import CacheConfig, ConfigurationError, SQLModelCache\n"
        "class Person(SQLModel, table=True):\n"
        "    __cache_config__ = CacheConfig(natural_keys=('nickname',))\n"
        "    id: int | None = Field(default=None, primary_key=True)\n"
        "    nickname: str\n"
        "try:\n"
        "    SQLModelCache.configure()\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == (
        "Person: natural key (nickname) refused: no unique constraint or unique index of "
        "table person covers exactly nickname: a natural key must name one row"
    )


@pytest.mark.greenlet
def test_aget_by(members, prefix):
    import redis.asyncio
    from sqlmodel.ext.asyncio.session import AsyncSession

    from sqlmodel_cache.transport import RedisAsyncTransport

    from .test_async import Selects, async_engine

    SQLModelCache.reset()

    async def main() -> None:
        SQLModelCache.configure(
            RedisAsyncTransport(redis.asyncio.Redis.from_url(REDIS_URL)), key_prefix=prefix
        )
        aengine = async_engine(members)
        selects = Selects(aengine)
        for _ in range(3):
            async with AsyncSession(aengine) as session:
                found = await SQLModelCache.aget_by(session, Member, email="b@example.org")
                assert found is not None and found.name == "Bob"
        assert selects.count == 2  # the database, the row; then the cache alone
        await aengine.dispose()

    asyncio.run(main())


def test_explain_names_the_natural_keys_and_their_entries():
    report = str(SQLModelCache.explain(Member))
    assert "natural key (email): get_by finds the row's key under" in report
    assert "sqlmodelcache:Member:~slug={slug}:~tenant_id={tenant_id}" in report
