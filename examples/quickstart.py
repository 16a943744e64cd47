"""A tour of sqlmodel-cache: explain, miss, hit, write, invalidation, stats.

Runs on SQLite with the embedded in-process cache by default. Point it at real
servers with DATABASE_URL (e.g. postgresql+psycopg://postgres@127.0.0.1/test)
and REDIS_URL (e.g. redis://127.0.0.1:6379/0).
"""

import os
from datetime import UTC, datetime

from sqlalchemy import event
from sqlmodel import Field, Session, SQLModel, create_engine

from sqlmodel_cache import CacheConfig, SQLModelCache
from sqlmodel_cache.transport import RedisSyncTransport


class Hero(SQLModel, table=True):
    __tablename__ = "quickstart_hero"
    __cache_config__ = CacheConfig(ttl=600)  # opt in: cached for 10 minutes

    id: int | None = Field(default=None, primary_key=True)
    name: str
    secret_name: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def main() -> None:
    engine = create_engine(os.environ.get("DATABASE_URL", "sqlite://"))
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    redis_url = os.environ.get("REDIS_URL")
    transport = RedisSyncTransport.from_url(redis_url) if redis_url else None
    SQLModelCache.configure(transport=transport, default_ttl=300, key_prefix="quickstart")
    print(f"database: {engine.url.render_as_string()}")
    print(f"cache:    {type(SQLModelCache.get_config().transport).__name__}")
    print(SQLModelCache.explain(Hero))  # before any traffic: is it cached, and how?

    table = SQLModel.metadata.tables["quickstart_hero"]
    SQLModel.metadata.drop_all(engine, tables=[table])
    SQLModel.metadata.create_all(engine, tables=[table])
    with Session(engine) as session:
        hero = Hero(name="Deadpond", secret_name="Dive Wilson")
        session.add(hero)
        session.commit()
        hero_id = hero.id

    def load(label: str) -> Hero | None:
        statements.clear()
        with Session(engine) as session:
            found = session.get(Hero, hero_id)
        sql = "no SQL" if not statements else f"{len(statements)} SQL statement(s)"
        print(f"{label:<28} -> {found.name if found else None!s:<16} ({sql})")
        return found

    load("first get (miss, fills)")
    load("second get (hit)")
    with Session(engine) as session:
        renamed = session.get(Hero, hero_id)
        assert renamed is not None
        renamed.name = "Deadpond Prime"
        session.commit()  # invalidates Hero:id=<id> after the commit
    print("renamed and committed")
    load("get after commit (miss)")
    load("get again (hit)")
    load_fresh = Session(engine)
    with load_fresh:
        statements.clear()
        load_fresh.get(Hero, hero_id, execution_options={"cache": False})
        print(f"{'get with cache=False':<28} -> straight to the database ({len(statements)} SQL)")

    stats = SQLModelCache.stats()
    print(f"stats: hits={stats.hits} misses={stats.misses} invalidations={stats.invalidations}")
    print(f"       bypasses={dict(stats.bypasses)} unfilled={dict(stats.unfilled)}")
    SQLModel.metadata.drop_all(engine, tables=[table])


if __name__ == "__main__":
    main()
