"""The pytest plugin: its fixtures in our suite, and in a user's project run in a subprocess,
where only the pytest11 entry point can bring them."""

from collections.abc import Callable, Iterator

import pytest
import redis

from sqlmodel_cache import ConfigurationError, SQLModelCache
from sqlmodel_cache.testing import CacheFixture
from sqlmodel_cache.transport import MemoryTransport, RedisSyncTransport

from .conftest import REDIS_URL, entries
from .heroes import name, seed

pytest_plugins = ["pytester"]


@pytest.fixture
def sqlmodel_cache_redis_url() -> str:
    """Our suite always has a Redis: the plugin's fixture never skips here."""
    return REDIS_URL


@pytest.fixture
def afterwards() -> Iterator[list[Callable[[], None]]]:
    """Checks to run once the fixtures a test requests after this one have torn down."""
    checks: list[Callable[[], None]] = []
    yield checks
    for check in checks:
        check()


def unconfigured() -> None:
    with pytest.raises(ConfigurationError, match="not configured"):
        SQLModelCache.get_config()


def test_sqlmodel_cache_caches_gets_in_memory_and_resets_after(
    afterwards, sqlmodel_cache: CacheFixture, engine, sql
):
    afterwards.append(unconfigured)
    settings = SQLModelCache.get_config()
    assert isinstance(sqlmodel_cache.transport, MemoryTransport)
    assert settings.transport is sqlmodel_cache.transport
    assert settings.key_prefix == sqlmodel_cache.key_prefix != "sqlmodelcache"
    seed(engine, (1, "a"))
    sql.clear()
    assert name(engine, 1) == "a"  # a miss: read, then stored
    assert sql.selects == 1
    sql.clear()
    assert name(engine, 1) == "a"
    assert sql.statements == []  # a hit
    assert sqlmodel_cache.transport.get(f"{sqlmodel_cache.key_prefix}:Hero:id=1") is not None
    stats = sqlmodel_cache.stats()
    assert (stats.misses, stats.hits) == (1, 1)


def test_sqlmodel_cache_redis_caches_gets_and_deletes_only_its_keys(
    afterwards, redis_client: redis.Redis, sqlmodel_cache_redis: CacheFixture, engine, sql
):
    prefix = sqlmodel_cache_redis.key_prefix
    sibling = f"{prefix}-sibling"  # shares the prefix's text, not its namespace
    redis_client.set(sibling, b"stays", ex=60)

    def only_its_keys_are_gone() -> None:
        try:
            unconfigured()
            assert list(redis_client.scan_iter(match=f"{prefix}:*")) == []
            assert redis_client.get(sibling) == b"stays"
        finally:
            redis_client.delete(sibling)

    afterwards.append(only_its_keys_are_gone)
    assert isinstance(sqlmodel_cache_redis.transport, RedisSyncTransport)
    assert SQLModelCache.get_config().key_prefix == prefix
    seed(engine, (1, "a"))
    assert name(engine, 1) == "a"
    assert entries(redis_client, prefix) == [f"{prefix}:Hero:id=1"]
    sql.clear()
    assert name(engine, 1) == "a"
    assert sql.statements == []
    assert sqlmodel_cache_redis.stats().hits == 1


# -- a user's project: only the entry point gives it the fixtures -----------------------

USER_TESTS = """
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel

from sqlmodel_cache import CacheConfig, ConfigurationError, SQLModelCache


class Item(SQLModel, table=True):
    __cache_config__ = CacheConfig()
    id: int | None = Field(default=None, primary_key=True)
    name: str = ""


def read_twice(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/app.sqlite")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Item(id=1, name="a"))
        session.commit()
    selects = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: selects.append(args[2]))
    for _ in range(2):
        with Session(engine) as session:
            assert session.get(Item, 1).name == "a"
    assert len(selects) == 1  # the second get was a hit


def test_nothing_is_configured_without_a_fixture():
    with pytest.raises(ConfigurationError, match="not configured"):
        SQLModelCache.get_config()


def test_memory(sqlmodel_cache, tmp_path):
    read_twice(tmp_path)
    assert sqlmodel_cache.stats().hits == 1


def test_failing(sqlmodel_cache, tmp_path):
    read_twice(tmp_path)
    raise AssertionError("this test fails")


def test_the_failed_test_left_the_cache_reset():
    with pytest.raises(ConfigurationError, match="not configured"):
        SQLModelCache.get_config()


@pytest.fixture
def app_configured():
    SQLModelCache.configure(key_prefix="the-app")
    yield
    SQLModelCache.reset()


def test_already_configured(app_configured, sqlmodel_cache):
    raise AssertionError("never runs: the fixture refuses to reconfigure")


def test_redis(sqlmodel_cache_redis, tmp_path):
    read_twice(tmp_path)
    assert sqlmodel_cache_redis.stats().hits == 1
    prefix = sqlmodel_cache_redis.key_prefix
    assert sqlmodel_cache_redis.transport.get(f"{prefix}:Item:id=1") is not None
    Path("prefix.txt").write_text(prefix)
"""


@pytest.fixture
def user_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("SQLMODEL_CACHE_REDIS_URL", raising=False)
    pytester.makepyfile(test_user=USER_TESTS)
    return pytester


def test_a_user_project_gets_the_fixtures_and_skips_redis_without_a_url(user_project):
    result = user_project.runpytest_subprocess("-rs")
    result.assert_outcomes(passed=3, failed=1, errors=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*test_already_configured*",
            "*SQLModelCache is already configured: call SQLModelCache.reset() before "
            "configuring it again (the fixture configures the cache for each test that asks*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["SKIPPED*sqlmodel_cache_redis needs a Redis URL: pass --sqlmodel-cache-redis-url=*"]
    )


def test_a_user_project_gets_redis_from_the_option(user_project, redis_client: redis.Redis):
    result = user_project.runpytest_subprocess(
        f"--sqlmodel-cache-redis-url={REDIS_URL}", "-k", "redis"
    )
    result.assert_outcomes(passed=1)
    prefix = (user_project.path / "prefix.txt").read_text()
    assert prefix.startswith("sqlmodelcache-test-")
    left = list(redis_client.scan_iter(match=f"{prefix}:*"))
    if left:
        redis_client.delete(*left)
    assert left == []


URL_TEST = """
def test_url(sqlmodel_cache_redis_url):
    print("URL:", sqlmodel_cache_redis_url)
"""


@pytest.mark.parametrize(
    ("option", "env", "ini", "chosen"),
    [
        (None, None, None, "None"),
        (None, None, "redis://ini/1", "redis://ini/1"),
        (None, "redis://env/2", "redis://ini/1", "redis://env/2"),
        ("redis://option/3", "redis://env/2", "redis://ini/1", "redis://option/3"),
    ],
)
def test_the_option_wins_over_the_environment_over_the_ini_file(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    option: str | None,
    env: str | None,
    ini: str | None,
    chosen: str,
):
    monkeypatch.delenv("SQLMODEL_CACHE_REDIS_URL", raising=False)
    if env is not None:
        monkeypatch.setenv("SQLMODEL_CACHE_REDIS_URL", env)
    if ini is not None:
        pytester.makeini(f"[pytest]\nsqlmodel_cache_redis_url = {ini}\n")
    pytester.makepyfile(test_url=URL_TEST)
    args = ["-s", "-p", "no:hypothesispytest"]  # a second per run, and not needed here
    if option is not None:
        args.append(f"--sqlmodel-cache-redis-url={option}")
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*URL: {chosen}"])


def test_the_plugin_documents_its_option(pytester: pytest.Pytester):
    result = pytester.runpytest("--help", "-p", "no:hypothesispytest")
    result.stdout.fnmatch_lines(["*--sqlmodel-cache-redis-url=URL*", "*sqlmodel_cache_redis_url*"])
