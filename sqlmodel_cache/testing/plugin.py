"""The pytest plugin (entry point ``pytest11``): loaded wherever sqlmodel-cache is installed,
it configures nothing until a test asks for one of its fixtures.

- ``sqlmodel_cache``: the cache configured on a fresh ``MemoryTransport`` with a key
  prefix of its own; yields a ``CacheFixture`` (``.transport``, ``.key_prefix``,
  ``.stats()``). ``SQLModelCache.reset()`` follows the test, passed or failed.
- ``sqlmodel_cache_redis``: the same on ``RedisSyncTransport.from_url(url)``; afterwards
  the keys under its prefix are deleted. Skips the test when no URL was given.
- ``sqlmodel_cache_redis_url``: that URL, from ``--sqlmodel-cache-redis-url``, else the
  environment variable ``SQLMODEL_CACHE_REDIS_URL``, else the ini option
  ``sqlmodel_cache_redis_url``; None without one. Override it to choose one in code.

A test whose cache is already configured (by the app under test, say) fails at setup
with the library's "already configured" message: the fixtures never reconfigure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from redis.cluster import RedisCluster

from .. import CacheStats, ConfigurationError, SQLModelCache
from ..transport import MemoryTransport, RedisSyncTransport

URL_OPTION = "--sqlmodel-cache-redis-url"
URL_ENV = "SQLMODEL_CACHE_REDIS_URL"
URL_INI = "sqlmodel_cache_redis_url"
FIXTURE_NOTE = "configures the cache for each test that asks for it"


@dataclass(frozen=True)
class CacheFixture:
    """What the fixtures yield: the transport the cache was configured on, and its prefix."""

    transport: MemoryTransport | RedisSyncTransport
    key_prefix: str

    def stats(self) -> CacheStats:
        """SQLModelCache.stats(): the counters since the fixture configured the cache."""
        return SQLModelCache.stats()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sqlmodel-cache")
    group.addoption(
        URL_OPTION,
        dest=URL_INI,
        default=None,
        metavar="URL",
        help=f"Redis for the sqlmodel_cache_redis fixture (default: ${URL_ENV}).",
    )
    parser.addini(
        URL_INI, f"Redis for the sqlmodel_cache_redis fixture ({URL_OPTION} and ${URL_ENV} win)."
    )


def _new_prefix() -> str:
    return f"sqlmodelcache-test-{uuid.uuid4().hex[:12]}"


def _configured(
    transport: MemoryTransport | RedisSyncTransport, key_prefix: str
) -> Iterator[CacheFixture]:
    refused = None
    try:
        SQLModelCache.configure(transport, key_prefix=key_prefix)
    except ConfigurationError as exc:  # not ours to reset: whoever configured it does
        refused = f"{exc} (the fixture {FIXTURE_NOTE})"
    if refused is not None:  # outside the except block: one message, not a chain of two
        pytest.fail(refused, pytrace=False)
    try:
        yield CacheFixture(transport, key_prefix)
    finally:
        SQLModelCache.reset()


def _delete_under(client: redis.Redis | RedisCluster, key_prefix: str) -> None:
    """Delete every key under key_prefix, with the raw client: the transport's delete
    leaves a commit's hold to expire on its own, and nothing of a test may stay behind."""
    keys = list(client.scan_iter(match=f"{key_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def sqlmodel_cache() -> Iterator[CacheFixture]:
    """The cache configured on a fresh MemoryTransport for this test, reset afterwards."""
    yield from _configured(MemoryTransport(), _new_prefix())


@pytest.fixture(scope="session")
def sqlmodel_cache_redis_url(pytestconfig: pytest.Config) -> str | None:
    """The Redis URL for sqlmodel_cache_redis (see the module docstring), or None."""
    given: str | None = pytestconfig.getoption(URL_INI)
    ini: str = pytestconfig.getini(URL_INI)
    return given or os.environ.get(URL_ENV) or ini or None


@pytest.fixture
def sqlmodel_cache_redis(sqlmodel_cache_redis_url: str | None) -> Iterator[CacheFixture]:
    """The cache configured on Redis for this test; its keys deleted and the cache reset
    afterwards. Skips the test when no Redis URL was given."""
    if not sqlmodel_cache_redis_url:
        pytest.skip(
            f"sqlmodel_cache_redis needs a Redis URL: pass {URL_OPTION}=redis://... "
            f"or set {URL_ENV}"
        )
    transport = RedisSyncTransport.from_url(sqlmodel_cache_redis_url)
    key_prefix = _new_prefix()
    try:
        yield from _configured(transport, key_prefix)
    finally:
        try:
            _delete_under(transport.client, key_prefix)
        finally:
            transport.client.close()
