"""Fixtures: real SQLite and PostgreSQL databases, a real Redis, per-test key prefixes."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy import event
from sqlmodel import Session, SQLModel

from sqlmodel_cache import SQLModelCache
from sqlmodel_cache.transport import RedisSyncTransport
from sqlmodel_cache.transport._base import LEASE_MARK

from . import models, written  # noqa: F401 - their tables are created below
from ._proxy import Proxy

METADATA = (SQLModel.metadata, models.Base.metadata)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/sqlmodel_cache_test"
)


def _ensure_pg_database(url: str) -> None:
    target = sa.make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.scalar(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}
        )
        if not exists:
            conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


class SQLCounter:
    """Counts the statements an engine sends (SELECTs separately)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.statements: list[str] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, *args: object) -> None:
        self.statements.append(str(args[2]))

    @property
    def selects(self) -> int:
        return sum(s.lstrip().upper().startswith("SELECT") for s in self.statements)

    def clear(self) -> None:
        self.statements.clear()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("db") / "test.sqlite"
        engine = sa.create_engine(f"sqlite:///{path}")
    else:
        _ensure_pg_database(PG_URL)
        engine = sa.create_engine(PG_URL)
    for metadata in METADATA:
        metadata.drop_all(engine)
        metadata.create_all(engine)
    yield engine
    for metadata in reversed(METADATA):
        metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def engine(db_engine: sa.Engine) -> Iterator[sa.Engine]:
    """A database with empty tables."""
    with db_engine.begin() as conn:
        for metadata in reversed(METADATA):
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())
    yield db_engine


@pytest.fixture
def sql(engine: sa.Engine) -> Iterator[SQLCounter]:
    counter = SQLCounter(engine)
    yield counter
    event.remove(engine, "before_cursor_execute", counter._record)


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    name = f"smc-test-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(redis_client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def cache(redis_client: redis.Redis, prefix: str) -> Iterator[redis.Redis]:
    """The cache configured on real Redis; yields the raw client to inspect keys."""
    SQLModelCache.configure(transport=RedisSyncTransport(redis_client), key_prefix=prefix)
    yield redis_client


@pytest.fixture
def snapshot_cache(redis_client: redis.Redis, prefix: str) -> Iterator[redis.Redis]:
    """`cache`, also serving REPEATABLE READ and SERIALIZABLE transactions."""
    SQLModelCache.configure(
        transport=RedisSyncTransport(redis_client), key_prefix=prefix, snapshot_isolation=True
    )
    yield redis_client


@pytest.fixture
def proxy(redis_client: redis.Redis) -> Iterator[Proxy]:
    """A TCP proxy in front of the test Redis, to stall or cut."""
    proxied = Proxy(redis_client.connection_pool.connection_kwargs["port"])
    yield proxied
    proxied.close()


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(*options: str) -> Iterator[int]:
    """A redis-server of this test's own (options as on its command line), on a free
    port, killed afterwards; yields the port."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    server = subprocess.Popen([*args, "no", *options], stdout=subprocess.DEVNULL)
    probe = redis.Redis(port=port)
    try:
        for _ in range(500):
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.01)
        else:
            raise AssertionError("redis-server did not start")
        yield port
    finally:
        probe.close()
        server.kill()
        server.wait()


def entries(client: redis.Redis, prefix: str) -> list[str]:
    """The keys under prefix that hold a value (not a reader's lease)."""
    found = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        value: Any = client.get(key)
        if value is not None and not value.startswith(LEASE_MARK):
            found.append(key.decode())
    return sorted(found)


@pytest.fixture(params=["Session", "CachedSession"])
def session_class(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> type:
    """Runs a module's tests with sqlmodel's Session, then with CachedSession, which must
    behave alike: the second time the module's name Session (and tests.heroes') is it."""
    if request.param == "Session":
        return Session
    from sqlmodel_cache import CachedSession

    from . import heroes

    monkeypatch.setattr(request.module, "Session", CachedSession)
    monkeypatch.setattr(heroes, "Session", CachedSession)
    return CachedSession


@pytest.fixture(autouse=True)
def reset_cache() -> Iterator[None]:
    yield
    SQLModelCache.reset()
