"""A cached Hero API on FastAPI with plain Sessions in ``def`` endpoints.

    pip install "sqlmodel-cache[redis,postgres]" fastapi uvicorn
    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/test \\
    REDIS_URL=redis://127.0.0.1:6379/0 uvicorn examples.fastapi_sync:app

CACHE_KEY_PREFIX names its keys (default "heroes"); CACHE_L1=1 adds the in-process
tier, kept coherent across worker processes by Redis pub/sub.

FastAPI runs ``def`` endpoints in worker threads. The cache is configured with
RedisSyncTransport, as in the migration guide (docs/migration.md); ``create_app(...,
async_redis=True)`` uses RedisAsyncTransport instead, whose blocking twin then serves
these threads.
"""

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Response
from sqlmodel import Field, Session, SQLModel, create_engine

from sqlmodel_cache import CacheConfig, SQLModelCache
from sqlmodel_cache.transport import RedisAsyncTransport, RedisSyncTransport


class HeroData(SQLModel):
    name: str
    secret_name: str
    age: int | None = None


class Hero(HeroData, table=True):
    __tablename__ = "sync_example_hero"
    __cache_config__ = CacheConfig(ttl=600)

    id: int | None = Field(default=None, primary_key=True)


class HeroPatch(SQLModel):
    name: str | None = None
    secret_name: str | None = None
    age: int | None = None


def create_app(
    database_url: str,
    redis_url: str,
    *,
    key_prefix: str | None = None,
    async_redis: bool = False,
    l1: bool = False,
) -> FastAPI:
    """The app, with its engine at ``app.state.engine``; keys under ``key_prefix``
    (default: $CACHE_KEY_PREFIX, else "heroes")."""
    if key_prefix is None:
        key_prefix = os.environ.get("CACHE_KEY_PREFIX", "heroes")
    engine = create_engine(database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        transport: RedisSyncTransport | RedisAsyncTransport
        if async_redis:
            transport = RedisAsyncTransport.from_url(redis_url)
        else:
            transport = RedisSyncTransport.from_url(redis_url)
        SQLModelCache.configure(transport, default_ttl=300, key_prefix=key_prefix, l1=l1)
        SQLModel.metadata.create_all(engine, tables=[SQLModel.metadata.tables["sync_example_hero"]])
        yield
        SQLModelCache.reset()
        if isinstance(transport, RedisAsyncTransport):
            await transport.client.aclose()
            transport.sync.client.close()
        else:
            transport.client.close()
        engine.dispose()

    def session() -> Iterator[Session]:
        with Session(engine, expire_on_commit=False) as db:
            yield db

    Db = Annotated[Session, Depends(session)]
    app = FastAPI(lifespan=lifespan)
    app.state.engine = engine

    def found(db: Session, hero_id: int) -> Hero:
        hero = db.get(Hero, hero_id)
        if hero is None:
            raise HTTPException(status_code=404, detail="Hero not found")
        return hero

    @app.post("/heroes", status_code=201)
    def create_hero(data: HeroData, db: Db) -> Hero:
        hero = Hero.model_validate(data)
        db.add(hero)
        db.commit()
        return hero

    @app.get("/heroes/{hero_id}")
    def read_hero(hero_id: int, db: Db) -> Hero:
        return found(db, hero_id)

    @app.patch("/heroes/{hero_id}")
    def update_hero(hero_id: int, patch: HeroPatch, db: Db) -> Hero:
        hero = found(db, hero_id)
        hero.sqlmodel_update(patch.model_dump(exclude_unset=True))
        db.commit()
        return hero

    @app.delete("/heroes/{hero_id}", status_code=204)
    def delete_hero(hero_id: int, db: Db) -> Response:
        db.delete(found(db, hero_id))
        db.commit()
        return Response(status_code=204)

    return app


app = create_app(
    os.environ.get("DATABASE_URL", "sqlite:///heroes-sync.sqlite"),
    os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    l1=os.environ.get("CACHE_L1", "") == "1",
)
