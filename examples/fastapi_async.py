"""A cached Hero API on FastAPI with AsyncSession and RedisAsyncTransport.

    pip install "sqlmodel-cache[async]" fastapi uvicorn
    uvicorn examples.fastapi_async:app     # SQLite (aiosqlite comes with the async extra)

    pip install "sqlmodel-cache[async,postgres]" fastapi uvicorn
    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/test \\
    REDIS_URL=redis://127.0.0.1:6379/0 uvicorn examples.fastapi_async:app

REDIS_URL defaults to redis://127.0.0.1:6379/0; CACHE_KEY_PREFIX names its keys
(default "heroes").

GET /heroes/{id} is a session.get(): after the first request it is served from
Redis with no SQL; PATCH and DELETE commit, and the commit invalidates it.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Response
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from sqlmodel_cache import CacheConfig, SQLModelCache
from sqlmodel_cache.transport import RedisAsyncTransport


class HeroData(SQLModel):
    name: str
    secret_name: str
    age: int | None = None


class Hero(HeroData, table=True):
    __tablename__ = "async_example_hero"
    __cache_config__ = CacheConfig(ttl=600)

    id: int | None = Field(default=None, primary_key=True)


class HeroPatch(SQLModel):
    name: str | None = None
    secret_name: str | None = None
    age: int | None = None


def create_app(database_url: str, redis_url: str, *, key_prefix: str | None = None) -> FastAPI:
    """The app, with its engine at ``app.state.engine``; keys under ``key_prefix``
    (default: $CACHE_KEY_PREFIX, else "heroes")."""
    if key_prefix is None:
        key_prefix = os.environ.get("CACHE_KEY_PREFIX", "heroes")
    engine = create_async_engine(database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        transport = RedisAsyncTransport.from_url(redis_url)
        SQLModelCache.configure(transport, default_ttl=300, key_prefix=key_prefix)
        async with engine.begin() as conn:
            await conn.run_sync(
                SQLModel.metadata.create_all,
                tables=[SQLModel.metadata.tables["async_example_hero"]],
            )
        yield
        SQLModelCache.reset()
        await transport.client.aclose()
        transport.sync.client.close()
        await engine.dispose()

    async def session() -> AsyncIterator[AsyncSession]:
        async with AsyncSession(engine, expire_on_commit=False) as db:
            yield db

    Db = Annotated[AsyncSession, Depends(session)]
    app = FastAPI(lifespan=lifespan)
    app.state.engine = engine

    async def found(db: AsyncSession, hero_id: int) -> Hero:
        hero = await db.get(Hero, hero_id)
        if hero is None:
            raise HTTPException(status_code=404, detail="Hero not found")
        return hero

    @app.post("/heroes", status_code=201)
    async def create_hero(data: HeroData, db: Db) -> Hero:
        hero = Hero.model_validate(data)
        db.add(hero)
        await db.commit()
        return hero

    @app.get("/heroes/{hero_id}")
    async def read_hero(hero_id: int, db: Db) -> Hero:
        return await found(db, hero_id)

    @app.patch("/heroes/{hero_id}")
    async def update_hero(hero_id: int, patch: HeroPatch, db: Db) -> Hero:
        hero = await found(db, hero_id)
        hero.sqlmodel_update(patch.model_dump(exclude_unset=True))
        await db.commit()
        return hero

    @app.delete("/heroes/{hero_id}", status_code=204)
    async def delete_hero(hero_id: int, db: Db) -> Response:
        await db.delete(await found(db, hero_id))
        await db.commit()
        return Response(status_code=204)

    return app


app = create_app(
    os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///heroes-async.sqlite"),
    os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
)
