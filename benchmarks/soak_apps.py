"""The soak's two apps, on one cached table: a WSGI app for gunicorn's sync workers and
an async FastAPI app for uvicorn's workers.

``GET /rows/{id}`` answers ``{"version": n, "pid": p}``; ``PUT /rows/{id}?version=n``
sets it (a get, a change, a commit: the read-modify-write of a real endpoint). Each
app reads its settings from the environment: ``DATABASE_URL``, ``REDIS_URL``,
``CACHE_KEY_PREFIX`` and ``SOAK_CACHE`` (``on``, or ``off`` for the no-cache
baseline, which keeps the same code path with the cache disabled).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import Field, Session, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from sqlmodel_cache import CacheConfig, SQLModelCache
from sqlmodel_cache.transport import MemoryTransport, RedisAsyncTransport, RedisSyncTransport


class SoakRow(SQLModel, table=True):
    __tablename__ = "soak_row"
    __cache_config__ = CacheConfig(ttl=300)

    id: int | None = Field(default=None, primary_key=True)
    version: int = 0
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def _configure(transport: Any) -> None:
    if os.environ.get("SOAK_CACHE", "on") == "off":
        SQLModelCache.configure(MemoryTransport(), enabled=False)
    else:
        SQLModelCache.configure(transport, key_prefix=os.environ["CACHE_KEY_PREFIX"], l1=True)


def _answer(row: SoakRow | None) -> dict[str, int]:
    if row is None:
        raise LookupError
    return {"version": row.version, "pid": os.getpid()}


# -- gunicorn, sync workers, --preload: configured in the master, before the fork ------

if os.environ.get("SOAK_SERVER") == "wsgi":
    _engine = sa.create_engine(os.environ["DATABASE_URL"], pool_pre_ping=True)
    os.register_at_fork(after_in_child=lambda: _engine.dispose(close=False))
    _configure(RedisSyncTransport.from_url(os.environ["REDIS_URL"]))


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    ident = int(environ["PATH_INFO"].rsplit("/", 1)[1])
    try:
        with Session(_engine) as session:
            row = session.get(SoakRow, ident)
            if environ["REQUEST_METHOD"] == "PUT" and row is not None:
                row.version = int(parse_qs(environ["QUERY_STRING"])["version"][0])
                row.updated_at = datetime.now(UTC)
                session.commit()
            body = _answer(row)
    except LookupError:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such row"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


# -- uvicorn, async workers: configured in each worker's lifespan ------------------------


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_async_engine(os.environ["DATABASE_URL"], pool_pre_ping=True)
    app.state.engine = engine
    transport = RedisAsyncTransport.from_url(os.environ["REDIS_URL"])
    _configure(transport)
    yield
    SQLModelCache.reset()
    await engine.dispose()


asgi = FastAPI(lifespan=_lifespan)


@asgi.get("/rows/{ident}")
async def read(ident: int) -> dict[str, int]:
    async with AsyncSession(asgi.state.engine) as session:
        try:
            return _answer(await session.get(SoakRow, ident))
        except LookupError:
            raise HTTPException(404) from None


@asgi.put("/rows/{ident}")
async def write(ident: int, version: int) -> dict[str, int]:
    async with AsyncSession(asgi.state.engine, expire_on_commit=False) as session:
        row = await session.get(SoakRow, ident)
        if row is None:
            raise HTTPException(404)
        row.version = version
        row.updated_at = datetime.now(UTC)
        await session.commit()
        return _answer(row)
