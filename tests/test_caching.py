"""Read-through caching and invalidation, on SQLite and PostgreSQL, against real Redis."""

import re
import uuid
from typing import Any

import pytest
from sqlalchemy import inspect
from sqlalchemy.orm import selectinload
from sqlmodel import Session, col, select

from sqlmodel_cache import ConfigurationError, SQLModelCache

from .conftest import entries
from .heroes import write_unseen
from .models import Author, Book, Disabled, Hero, OrderItem, Plain, Tag, Team
from .written import Account, now

# Every test runs with Session and again with CachedSession (see conftest.session_class).
pytestmark = pytest.mark.usefixtures("session_class")


def add(engine, *objects):
    with Session(engine) as session:
        session.add_all(objects)
        session.commit()


def get(engine, model, ident, **options):
    with Session(engine, expire_on_commit=False) as session:
        return session.get(model, ident, **options)


def test_miss_reads_the_database_and_fills_the_cache(engine, cache, sql, prefix):
    add(engine, Hero(id=1, name="Deadpond", age=30))
    sql.clear()
    hero = get(engine, Hero, 1)
    assert (hero.name, hero.age) == ("Deadpond", 30)
    assert sql.selects == 1
    assert cache.exists(f"{prefix}:Hero:id=1")
    assert SQLModelCache.stats().by_model["Hero"].misses == 1
    assert SQLModelCache.stats().by_model["Hero"].fills == 1


def test_hit_issues_no_sql_and_returns_a_clean_persistent_instance(engine, cache, sql):
    add(engine, Hero(id=1, name="Deadpond", age=30))
    get(engine, Hero, 1)
    sql.clear()
    with Session(engine) as session:
        hero = session.get(Hero, 1)
        assert sql.statements == []
        assert (hero.id, hero.name, hero.age, hero.team_id) == (1, "Deadpond", 30, None)
        state = inspect(hero)
        assert state.persistent and not state.modified and not session.dirty
        assert session.get(Hero, 1) is hero  # now in the identity map
        assert hero in session
    stats = SQLModelCache.stats()
    assert (stats.hits, stats.misses, stats.by_model["Hero"].hits) == (1, 1, 1)


def test_editing_a_hit_instance_persists_exactly_the_change(engine, cache, sql):
    add(engine, Hero(id=1, name="Deadpond", age=30))
    get(engine, Hero, 1)
    with Session(engine) as session:
        hero = session.get(Hero, 1)
        sql.clear()
        hero.age = 31
        session.commit()
    updates = [s for s in sql.statements if s.startswith("UPDATE")]
    assert len(updates) == 1
    assert "age=" in updates[0] and "name=" not in updates[0]
    with Session(engine) as session:
        row = session.exec(select(Hero.name, Hero.age).where(Hero.id == 1)).one()
    assert tuple(row) == ("Deadpond", 31)


def test_a_hit_instance_lazy_loads_its_relationships(engine, cache, sql):
    add(engine, Team(id=7, name="Preventers"))
    add(engine, Hero(id=1, name="Rusty", team_id=7), Hero(id=2, name="Tarantula", team_id=7))
    get(engine, Hero, 1)
    get(engine, Team, 7)
    with Session(engine) as session:
        sql.clear()
        hero = session.get(Hero, 1)
        assert sql.statements == []
        assert hero.team.name == "Preventers"  # many-to-one: from the cache too
        assert sql.statements == []
        team = session.get(Team, 7)  # the team is now in the identity map
        assert team is hero.team
        assert sorted(h.name for h in team.heroes) == ["Rusty", "Tarantula"]


def test_update_commit_invalidates(engine, cache, sql, prefix):
    add(engine, Hero(id=1, name="old"))
    get(engine, Hero, 1)
    with Session(engine) as session:
        session.get(Hero, 1).name = "new"
        session.commit()
    assert not cache.exists(f"{prefix}:Hero:id=1")
    assert get(engine, Hero, 1).name == "new"
    assert get(engine, Hero, 1).name == "new"
    assert SQLModelCache.stats().by_model["Hero"].invalidations >= 1


def test_delete_commit_invalidates(engine, cache, prefix):
    add(engine, Hero(id=1, name="doomed"))
    get(engine, Hero, 1)
    with Session(engine) as session:
        session.delete(session.get(Hero, 1))
        session.commit()
    assert not cache.exists(f"{prefix}:Hero:id=1")
    assert get(engine, Hero, 1) is None


def test_rollback_leaves_the_cache_as_it_was(engine, cache, prefix):
    add(engine, Hero(id=1, name="kept"))
    get(engine, Hero, 1)
    before = cache.get(f"{prefix}:Hero:id=1")
    with Session(engine) as session:
        session.get(Hero, 1).name = "discarded"
        session.flush()
        session.rollback()
    assert cache.get(f"{prefix}:Hero:id=1") == before
    assert get(engine, Hero, 1).name == "kept"


def test_a_transaction_reads_its_own_flushed_writes(engine, cache, sql):
    add(engine, Hero(id=1, name="before"))
    get(engine, Hero, 1)
    with Session(engine) as session:
        hero = session.get(Hero, 1)
        hero.name = "flushed"
        session.flush()
        session.expunge_all()
        sql.clear()
        assert session.get(Hero, 1).name == "flushed"
        assert sql.selects == 1
        session.rollback()
    assert get(engine, Hero, 1).name == "before"


def test_cache_false_neither_reads_nor_writes(engine, cache, sql, prefix):
    add(engine, Hero(id=1, name="x"))
    assert get(engine, Hero, 1, execution_options={"cache": False}).name == "x"
    assert not cache.exists(f"{prefix}:Hero:id=1")
    get(engine, Hero, 1)
    sql.clear()
    get(engine, Hero, 1, execution_options={"cache": False})
    assert sql.selects == 1
    stats = SQLModelCache.stats().by_model["Hero"]
    assert (stats.hits, stats.misses) == (0, 1)


def test_ttl_precedence(engine, cache, prefix):
    add(engine, Hero(id=1), Hero(id=2), Plain(id=1), OrderItem(order_id=1, product_id=2))
    get(engine, Hero, 1)
    get(engine, Hero, 2, execution_options={"cache_ttl": 60})
    get(engine, OrderItem, (1, 2))
    assert 590 < cache.ttl(f"{prefix}:Hero:id=1") <= 600  # model ttl
    assert 50 < cache.ttl(f"{prefix}:Hero:id=2") <= 60  # per call beats the model
    assert 290 < cache.ttl(f"{prefix}:OrderItem:order_id=1:product_id=2") <= 300  # default


def test_default_ttl_comes_from_configure(engine, redis_client, prefix):
    SQLModelCache.configure(
        transport=__import__("sqlmodel_cache.transport").transport.RedisSyncTransport(redis_client),
        default_ttl=77,
        key_prefix=prefix,
    )
    add(engine, OrderItem(order_id=1, product_id=2))
    get(engine, OrderItem, {"order_id": 1, "product_id": 2})
    assert 70 < redis_client.ttl(f"{prefix}:OrderItem:order_id=1:product_id=2") <= 77


@pytest.mark.parametrize("bad", [0, -1, "60", 1.5])
def test_bad_cache_ttl_option_raises(engine, cache, bad):
    add(engine, Hero(id=1))
    with pytest.raises(ConfigurationError, match="cache_ttl must be a positive int"):
        get(engine, Hero, 1, execution_options={"cache_ttl": bad})


def test_bad_cache_option_raises(engine, cache):
    add(engine, Hero(id=1))
    with pytest.raises(ConfigurationError, match="cache must be True or False"):
        get(engine, Hero, 1, execution_options={"cache": "no"})


def test_composite_and_string_keys(engine, cache, prefix):
    add(engine, OrderItem(order_id=1, product_id=5, quantity=3), Tag(name="a:b=c%d", note="n"))
    assert get(engine, OrderItem, (1, 5)).quantity == 3
    assert get(engine, Tag, "a:b=c%d").note == "n"
    assert cache.exists(f"{prefix}:OrderItem:order_id=1:product_id=5")
    assert cache.exists(f"{prefix}:Tag:name=a%3Ab%3Dc%25d")
    assert 110 < cache.ttl(f"{prefix}:Tag:name=a%3Ab%3Dc%25d") <= 120
    assert get(engine, OrderItem, {"product_id": 5, "order_id": 1}).quantity == 3


def test_an_ident_the_database_matches_loosely_is_not_stored(engine, cache, prefix):
    add(engine, Hero(id=1, name="one"))
    # 1.0 finds row 1, but "Hero:id=1.0" is not a key that invalidating row 1 reaches.
    assert get(engine, Hero, 1.0).name == "one"
    assert entries(cache, prefix) == []
    assert get(engine, Hero, "1").name == "one"  # "1" names the same key as the row
    assert entries(cache, prefix) == [f"{prefix}:Hero:id=1"]


def test_missing_rows_are_not_cached_and_leave_no_lease(engine, cache, prefix, sql):
    for _ in range(3):
        assert get(engine, Hero, 404) is None
    assert list(cache.scan_iter(match=f"{prefix}:*")) == []  # not even the readers' leases
    add(engine, Hero(id=404, name="late"))
    assert get(engine, Hero, 404).name == "late"  # fills: no lease of a miss blocks it
    sql.clear()
    assert get(engine, Hero, 404).name == "late"
    assert sql.statements == []


def test_key_prefix_is_used(engine, cache, prefix):
    add(engine, Hero(id=42))
    get(engine, Hero, 42)
    assert entries(cache, prefix) == [f"{prefix}:Hero:id=42"]


def test_enabled_false_reads_the_database_but_still_invalidates(engine, redis_client, prefix, sql):
    # A gradual rollout: processes with the cache off must not leave stale rows
    # for the processes that have it on.
    from sqlmodel_cache.transport import RedisSyncTransport

    SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix, enabled=False)
    add(engine, Hero(id=1, name="a"), Hero(id=2, name="b"))
    for ident in (1, 2):
        redis_client.set(f"{prefix}:Hero:id={ident}", b"an entry of a process with the cache on")
    sql.clear()
    assert get(engine, Hero, 1).name == "a"
    with Session(engine) as session:
        session.get(Hero, 1).name = "b"
        session.commit()
    assert sql.selects == 2
    assert not redis_client.exists(f"{prefix}:Hero:id=1")
    SQLModelCache.invalidate(Hero, 2)
    assert not redis_client.exists(f"{prefix}:Hero:id=2")


def test_models_that_are_not_cached_pass_through(engine, cache, sql, prefix):
    add(engine, Plain(id=1, name="p"), Disabled(id=1, name="d"))
    for _ in range(2):
        assert get(engine, Plain, 1).name == "p"
        assert get(engine, Disabled, 1).name == "d"
    assert sql.selects == 4
    assert entries(cache, prefix) == []


def test_other_loads_pass_through(engine, cache, sql, prefix):
    add(engine, Team(id=1, name="t"))
    add(engine, Hero(id=1, name="a", team_id=1), Hero(id=2, name="b", team_id=1))
    get(engine, Hero, 1)
    get(engine, Hero, 2)
    with Session(engine) as session:
        sql.clear()
        assert session.exec(select(Hero).where(Hero.id == 2)).one().name == "b"
        assert [h.id for h in session.exec(select(Hero).where(Hero.name == "a"))] == [1]
        assert sql.selects == 2
    with Session(engine) as session:
        hero = session.get(Hero, 1)  # a hit
        sql.clear()
        session.refresh(hero)
        session.expire(hero, ["name"])
        assert hero.name == "a"
        assert sql.selects == 2
    for options in (
        {"with_for_update": True},
        {"populate_existing": True},
        {"options": [selectinload(Hero.team)]},  # type: ignore[arg-type]
    ):
        with Session(engine) as session:
            sql.clear()
            assert session.get(Hero, 1, **options).name == "a"
            assert sql.selects >= 1, options
    assert SQLModelCache.stats().hits == 1


def test_a_non_key_filter_is_never_mistaken_for_a_get(engine, cache, prefix):
    add(engine, Hero(id=1, name="one"), Hero(id=5, name="five"))
    with Session(engine) as session:
        assert session.exec(select(Hero).where(Hero.name == "one")).one().id == 1
    assert entries(cache, prefix) == []
    assert get(engine, Hero, 5).name == "five"


def test_invalidate_by_scalar_tuple_and_dict(engine, cache, prefix):
    add(engine, Hero(id=1, name="a"), OrderItem(order_id=1, product_id=2))
    get(engine, Hero, 1)
    get(engine, OrderItem, (1, 2))
    write_unseen(engine, "UPDATE hero SET name = 'raw' WHERE id = 1")  # another program
    assert get(engine, Hero, 1).name == "a"  # stale until told
    SQLModelCache.invalidate(Hero, 1)
    assert get(engine, Hero, 1).name == "raw"
    SQLModelCache.invalidate(OrderItem, (1, 2))
    assert not cache.exists(f"{prefix}:OrderItem:order_id=1:product_id=2")
    get(engine, OrderItem, (1, 2))
    SQLModelCache.invalidate(OrderItem, {"product_id": 2, "order_id": 1})
    assert not cache.exists(f"{prefix}:OrderItem:order_id=1:product_id=2")


def test_invalidate_converts_the_ident_as_a_get_would(engine, cache, prefix):
    ident = uuid.UUID("abcdef01-2345-4789-abcd-ef0123456789")
    add(engine, Account(id=ident, email="a@example.org", opened_at=now()), Hero(id=1, name="a"))
    key = f"{prefix}:Account:id={ident}"
    spellings: list[Any] = [str(ident).upper(), ident.hex, "{" + str(ident) + "}", ident.bytes]
    for spelling in spellings:
        get(engine, Account, ident)
        assert cache.exists(key)
        SQLModelCache.invalidate(Account, spelling)
        assert not cache.exists(key), spelling
    for spelling in ["1", " 1", 1.0]:
        get(engine, Hero, 1)
        SQLModelCache.invalidate(Hero, spelling)
        assert not cache.exists(f"{prefix}:Hero:id=1"), spelling


@pytest.mark.parametrize(
    ("model", "ident", "message"),
    [
        (
            Account,
            "not-a-uuid",
            "Account.id holds UUID values: cannot find the row of 'not-a-uuid'",
        ),
        (Hero, "one", "Hero.id holds int values"),
        (Hero, 1.5, "Hero.id holds int values"),
        (Hero, True, "a bool is not a key value"),
        (Tag, 5, "Tag.name holds str values"),
    ],
)
def test_invalidate_refuses_an_ident_that_cannot_name_a_row(cache, model, ident, message):
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        SQLModelCache.invalidate(model, ident)


def test_insert_then_get_in_another_session(engine, cache):
    with Session(engine) as session:
        hero = Hero(name="auto")
        session.add(hero)
        session.commit()
        new_id = hero.id
    assert get(engine, Hero, new_id).name == "auto"
    assert get(engine, Hero, new_id).name == "auto"
    assert SQLModelCache.stats().hits == 1


def test_primary_key_change_invalidates_old_and_new_keys(engine, cache, prefix):
    add(engine, Tag(name="old", note="n"))
    get(engine, Tag, "old")
    cache.set(f"{prefix}:Tag:name=new", b"junk")
    with Session(engine) as session:
        session.get(Tag, "old").name = "new"
        session.commit()
    assert not cache.exists(f"{prefix}:Tag:name=old")
    assert not cache.exists(f"{prefix}:Tag:name=new")
    assert get(engine, Tag, "old") is None
    assert get(engine, Tag, "new").note == "n"


def test_declarative_models_and_eager_relationships(engine, cache, sql):
    with Session(engine) as session:
        session.add(
            Author(id=1, name="Ann", books=[Book(id=1, title="B1"), Book(id=2, title="B2")])
        )
        session.commit()
    get(engine, Author, 1)
    with Session(engine) as session:
        sql.clear()
        author = session.get(Author, 1)
        # The author row came from the cache; its selectin books were loaded at once,
        # as a database load would have done, and touching them now costs nothing.
        assert sql.selects == 1 and "book" in sql.statements[0]
        assert sorted(b.title for b in author.books) == ["B1", "B2"]
        assert sql.selects == 1
    assert SQLModelCache.stats().by_model["Author"].hits == 1


def test_the_first_get_of_a_fresh_process_is_cached(tmp_path):
    # Mappers are configured lazily, by the first query of a process; that
    # rebuilds the primary-key clause the first get was written with.
    script = """
import sqlalchemy as sa
from sqlmodel import Session, SQLModel
from sqlmodel_cache import SQLModelCache
from tests.models import Hero
engine = sa.create_engine("sqlite://")
SQLModel.metadata.create_all(engine)
with engine.begin() as conn:
    conn.execute(Hero.__table__.insert().values(id=1, name="a"))
SQLModelCache.configure()
with Session(engine) as session:
    session.get(Hero, 1)
stats = SQLModelCache.stats()
print(stats.misses, stats.fills)
"""
    import subprocess
    import sys
    from pathlib import Path

    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1", "1"]


def test_a_select_that_borrows_the_get_parameter_names_is_not_a_get(engine, cache, sql):
    from sqlalchemy import bindparam

    add(engine, Team(id=1, name="t"), Hero(id=1, name="teamless"))
    get(engine, Hero, 1)  # cached
    statement = (
        select(Hero)
        .join(Team, col(Hero.team_id) == col(Team.id))
        .where(col(Hero.id) == bindparam("pk_1"))
    )
    with Session(engine) as session:
        assert session.exec(statement, params={"pk_1": 1}).all() == []  # the join finds none
