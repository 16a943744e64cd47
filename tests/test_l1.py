"""The in-process tier: hits without Redis, coherence across processes, a dropped feed,
per-model opt-out, and single flight. Real Redis, real PostgreSQL, real subprocesses."""

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import String, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlmodel import Session

from sqlmodel_cache import CacheConfig, ConfigurationError, L1Config, SQLModelCache, _feed, _runtime
from sqlmodel_cache.transport import MemoryTransport, RedisSyncTransport

from .conftest import PG_URL, REDIS_URL
from .heroes import name, seed
from .models import Hero, Sample, Tag
from .test_transport_contract import InMemoryTransport

# Every test runs with Session and again with CachedSession (see conftest.session_class).
pytestmark = pytest.mark.usefixtures("session_class")

ROOT = Path(__file__).resolve().parent.parent
pg_only = pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)


def runtime() -> _runtime.Runtime:
    assert _runtime.current is not None
    return _runtime.current


def configure_l1(prefix: str, client: redis.Redis | None = None, **kwargs) -> None:
    client = client or redis.Redis.from_url(REDIS_URL)
    SQLModelCache.configure(RedisSyncTransport(client), key_prefix=prefix, **kwargs)
    feed = runtime().feed
    assert feed is not None and feed.subscribed.wait(5)


def test_an_l1_hit_touches_neither_redis_nor_the_database(engine, prefix, sql, redis_client):
    seed(engine, (1, "a"))
    configure_l1(prefix, l1=True)
    assert name(engine, 1) == "a"  # miss: database, then Redis and L1
    redis_client.delete(f"{prefix}:Hero:id=1")  # behind the cache's back
    sql.clear()
    assert name(engine, 1) == "a"
    assert sql.statements == []
    stats = SQLModelCache.stats().by_model["Hero"]
    assert (stats.l1_hits, stats.hits, stats.misses) == (1, 1, 1)


def test_a_local_commit_drops_the_l1_row(engine, prefix):
    seed(engine, (1, "a"))
    configure_l1(prefix, l1=L1Config(maxsize=100, ttl=60))
    name(engine, 1)
    with Session(engine) as session:
        session.get(Hero, 1).name = "b"
        session.commit()
    assert name(engine, 1) == "b"
    assert name(engine, 1) == "b"
    assert SQLModelCache.stats().l1_hits == 2  # the get before the rename, and the last


@pytest.fixture
def tag_config():
    """Lets a test give Tag another CacheConfig; restores it afterwards."""
    from sqlmodel_cache._registry import registry

    def use(config: CacheConfig) -> None:
        Tag.__cache_config__ = config
        registry.register(Tag, config)

    original = Tag.__cache_config__  # type: ignore[attr-defined]
    yield use
    use(original)


def test_a_model_that_opts_out_always_reads_l2(engine, prefix, redis_client, sql, tag_config):
    with Session(engine) as session:
        session.add(Tag(name="t", note="n"))
        session.commit()
    tag_config(CacheConfig(ttl=120, l1=False))  # Hero follows the global setting
    configure_l1(prefix, l1=True)
    with Session(engine) as session:
        session.get(Tag, "t")
    sql.clear()
    for _ in range(3):
        with Session(engine) as session:
            assert session.get(Tag, "t").note == "n"
    assert sql.statements == []
    stats = SQLModelCache.stats().by_model["Tag"]
    assert (stats.l1_hits, stats.hits) == (0, 3)
    redis_client.delete(f"{prefix}:Tag:name=t")
    with Session(engine) as session:
        session.get(Tag, "t")
    assert sql.selects == 1  # L2 was asked, so the deletion shows


def test_a_model_can_opt_in_when_the_global_tier_is_off(engine, prefix, tag_config):
    with Session(engine) as session:
        session.add(Tag(name="t", note="n"))
        session.commit()
    tag_config(CacheConfig(ttl=120, l1=True))
    configure_l1(prefix)  # l1=False globally
    for _ in range(3):
        with Session(engine) as session:
            assert session.get(Tag, "t").note == "n"
        name(engine, 404)
    stats = SQLModelCache.stats()
    assert stats.by_model["Tag"].l1_hits == 2 and stats.by_model["Hero"].l1_hits == 0


def test_a_model_asking_for_l1_on_a_custom_transport_runs_without_it(engine, tag_config):
    tag_config(CacheConfig(ttl=120, l1=True))
    SQLModelCache.configure(InMemoryTransport())
    assert runtime().l1 is None


def test_json_values_from_l1_are_private_copies(engine, prefix):
    with Session(engine) as session:
        session.add(Sample(id=1, data={"tags": ["a"]}))
        session.commit()
    configure_l1(prefix, l1=True)
    with Session(engine) as session:
        session.get(Sample, 1).data["tags"].append("mutated in place")
    with Session(engine) as session:
        assert session.get(Sample, 1).data == {"tags": ["a"]}
    assert SQLModelCache.stats().l1_hits == 1


@pytest.fixture(params=["hiredis", "redis-py parser"])
def feed_parser(request, monkeypatch) -> None:
    """The feed reads its socket with hiredis when it is installed, else via redis-py."""
    if request.param != "hiredis":
        monkeypatch.setattr(_feed, "_Reader", None)


@pg_only
def test_another_process_commit_drops_our_l1_row(engine, prefix, feed_parser):
    seed(engine, (1, "old"))
    configure_l1(prefix, l1=True)
    l1 = runtime().l1
    assert l1 is not None
    assert name(engine, 1) == "old"
    assert name(engine, 1) == "old"  # served from L1
    epoch = l1.epoch
    dropped_at: list[float] = []

    def watch() -> None:
        if l1.wait_past(epoch, 10):
            dropped_at.append(time.time())

    watcher = threading.Thread(target=watch)
    watcher.start()
    writer = subprocess.run(
        [sys.executable, "-m", "tests._writer", PG_URL, REDIS_URL, prefix, "1", "new"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert writer.returncode == 0, writer.stderr
    watcher.join(10)
    assert dropped_at, "the invalidation never reached this process"
    assert dropped_at[0] - float(writer.stdout) < 1.0
    assert name(engine, 1) == "new"
    assert SQLModelCache.stats().by_model["Hero"].l1_hits == 1


def test_a_dropped_feed_clears_l1_until_it_is_back(engine, prefix, redis_client, feed_parser):
    seed(engine, (1, "a"))
    tag = f"smc-feed-{uuid.uuid4().hex[:8]}"
    configure_l1(prefix, client=redis.Redis.from_url(REDIS_URL, client_name=tag), l1=True)
    l1, feed = runtime().l1, runtime().feed
    assert l1 is not None and feed is not None
    name(engine, 1)
    name(engine, 1)
    assert len(l1) == 1 and SQLModelCache.stats().l1_hits == 1

    epoch = l1.epoch
    ours = [c["id"] for c in redis_client.client_list() if c["name"] == tag and c["sub"] != "0"]
    assert len(ours) == 1
    redis_client.client_kill_filter(_id=ours[0])
    assert l1.wait_past(epoch, 5)  # the feed noticed: L1 was emptied
    assert feed.subscribed.wait(5)  # and it subscribed again, starting empty
    assert len(l1) == 0
    name(engine, 1)  # refilled from L2
    name(engine, 1)
    assert SQLModelCache.stats().l1_hits == 2


def test_l1_needs_a_transport_that_can_spread_invalidations():
    class Custom:
        def get(self, key: str) -> bytes | None:
            return None

        def set(self, key: str, value: bytes, ttl: int) -> None:
            return None

        def delete(self, *keys: str) -> None:
            return None

    with pytest.raises(ConfigurationError, match="l1 needs a transport"):
        SQLModelCache.configure(Custom(), l1=True)
    with pytest.raises(ConfigurationError, match="l1 must be True, False or an L1Config"):
        SQLModelCache.configure(l1="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="maxsize must be a positive int"):
        L1Config(maxsize=0)
    with pytest.raises(ConfigurationError, match="ttl must be a positive number"):
        L1Config(ttl=0)


def test_memory_transport_with_l1_needs_no_feed(engine):
    seed(engine, (1, "a"))
    SQLModelCache.configure(MemoryTransport(), l1=True)
    assert runtime().feed is None
    name(engine, 1)
    name(engine, 1)
    assert SQLModelCache.stats().l1_hits == 1


@pg_only
def test_concurrent_misses_of_one_key_make_one_database_read(engine, cache, sql):
    seed(engine, (1, "a"))
    flights = runtime().flights
    release = threading.Event()
    followers = 5

    def hold_the_leader(conn, cursor, statement, *args):
        if "FROM hero" in statement and threading.current_thread().name == "reader-0":
            with flights._lock:  # the followers are all waiting on the leader now?
                pass
            assert release.wait(10)

    event.listen(engine, "after_cursor_execute", hold_the_leader)
    names: list[str | None] = []
    threads = [
        threading.Thread(target=lambda: names.append(name(engine, 1)), name=f"reader-{n}")
        for n in range(followers + 1)
    ]
    try:
        sql.clear()
        threads[0].start()
        while sql.selects == 0:  # the leader has sent its SELECT
            time.sleep(0.001)
        for thread in threads[1:]:
            thread.start()
        deadline = time.monotonic() + 10
        while flights.following < followers and time.monotonic() < deadline:
            time.sleep(0.001)
        assert flights.following == followers
        release.set()
        for thread in threads:
            thread.join(10)
    finally:
        event.remove(engine, "after_cursor_execute", hold_the_leader)
    assert names == ["a"] * (followers + 1)
    assert sql.selects == 1
    stats = SQLModelCache.stats().by_model["Hero"]
    assert stats.misses == 1  # (hit counts are not exact across threads: plain += )


def _declare_late_model(name: str) -> Any:
    """A model defined now, after configure(), in a registry of its own."""

    class LateBase(DeclarativeBase):
        pass

    late = type(
        name,
        (LateBase,),
        {
            "__tablename__": name.lower(),
            "__cache_config__": CacheConfig(l1=True),
            "__annotations__": {"id": Mapped[int], "name": Mapped[str]},
            "id": mapped_column(primary_key=True),
            "name": mapped_column(String(20)),
        },
    )
    return late


@pg_only
@pytest.mark.parametrize("global_l1", [False, True])  # False first: no l1 model exists yet
def test_a_model_declared_after_configure_gets_its_l1(engine, prefix, sql, global_l1):
    configure_l1(prefix, l1=global_l1) if global_l1 else SQLModelCache.configure(
        RedisSyncTransport(redis.Redis.from_url(REDIS_URL)), key_prefix=prefix
    )
    late = _declare_late_model("LateGlobal" if global_l1 else "LateOptIn")
    late.metadata.create_all(engine)
    try:
        with Session(engine) as session:
            session.add(late(id=1, name="x"))
            session.commit()
        with Session(engine) as session:
            session.get(late, 1)  # fills L2 (and L1, once the feed listens)
        feed = runtime().feed
        assert feed is not None and feed.subscribed.wait(5)
        for _ in range(3):
            with Session(engine) as session:
                assert session.get(late, 1).name == "x"
        stats = SQLModelCache.stats().by_model[late.__name__]
        assert stats.l1_hits >= 2, stats
    finally:
        late.metadata.drop_all(engine)
