"""The public surface: names, configuration rules and their error messages."""

import importlib.util
import logging

import pytest
import redis
import redis.asyncio
from sqlmodel import Field, Session, SQLModel, col

import sqlmodel_cache
import sqlmodel_cache.transport
from sqlmodel_cache import (
    CacheConfig,
    CachedModel,
    CacheError,
    ConfigurationError,
    SQLModelCache,
    cached,
)
from sqlmodel_cache.transport import CacheTransport, MemoryTransport, RedisSyncTransport

from .models import Disabled, Hero, OrderItem, Plain, Sample, Tag, Team


def test_public_names_are_exactly_the_documented_ones():
    assert sorted(sqlmodel_cache.__all__) == [
        "AsyncCachedSession",
        "BreakerConfig",
        "CacheConfig",
        "CacheError",
        "CacheStats",
        "CachedModel",
        "CachedSession",
        "ConfigurationError",
        "L1Config",
        "ModelStats",
        "SQLModelCache",
        "Settings",
        "TransportError",
        "cached",
    ]
    assert sorted(sqlmodel_cache.transport.__all__) == [
        "AsyncCacheTransport",
        "CacheTransport",
        "LeasingTransport",
        "MemoryTransport",
        "RedisAsyncTransport",
        "RedisSyncTransport",
    ]
    for module in (sqlmodel_cache, sqlmodel_cache.transport):
        for name in module.__all__:
            if name == "AsyncCachedSession" and importlib.util.find_spec("greenlet") is None:
                with pytest.raises(ImportError, match="greenlet"):  # a sync-only install
                    getattr(module, name)
                continue
            assert getattr(module, name).__module__.startswith(module.__name__)


def test_configuration_error_is_a_cache_error():
    assert issubclass(ConfigurationError, CacheError)


def test_configure_twice_without_reset_raises():
    SQLModelCache.configure()
    with pytest.raises(ConfigurationError, match="SQLModelCache is already configured"):
        SQLModelCache.configure()
    SQLModelCache.reset()
    SQLModelCache.configure()


def test_get_of_a_cached_model_before_configure_raises(engine):
    with Session(engine) as session:
        session.add(Hero(id=1, name="a"))
        session.commit()
    with (
        Session(engine) as session,
        pytest.raises(ConfigurationError, match="SQLModelCache is not configured"),
    ):
        session.get(Hero, 1)


def test_uncached_models_work_without_configure(engine):
    with Session(engine) as session:
        session.add(Plain(id=1, name="p"))
        session.commit()
    with Session(engine) as session:
        assert session.get(Plain, 1).name == "p"


def test_get_config_reports_the_settings():
    with pytest.raises(ConfigurationError, match="not configured"):
        SQLModelCache.get_config()
    transport = MemoryTransport()
    SQLModelCache.configure(transport, default_ttl=42, key_prefix="app", enabled=False)
    config = SQLModelCache.get_config()
    assert (config.transport, config.default_ttl, config.key_prefix, config.enabled) == (
        transport,
        42,
        "app",
        False,
    )


def test_configure_defaults_to_an_in_process_transport():
    SQLModelCache.configure()
    config = SQLModelCache.get_config()
    assert isinstance(config.transport, MemoryTransport)
    assert (config.default_ttl, config.key_prefix, config.enabled) == (300, "sqlmodelcache", True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"default_ttl": 0}, "default_ttl must be a positive int"),
        ({"default_ttl": "300"}, "default_ttl must be a positive int"),
        ({"default_ttl": True}, "default_ttl must be a positive int"),
        ({"key_prefix": ""}, "key_prefix must be a non-empty"),
        ({"key_prefix": "a\nb"}, "key_prefix must be a non-empty"),
        ({"enabled": 1}, "enabled must be True or False"),
        ({"transport": object()}, "transport must be an object with get"),
        ({"transport": MemoryTransport}, "transport must be an object with get"),
        ({"transport": redis.Redis()}, "wrap it, e.g. transport=RedisSyncTransport"),
        ({"transport": redis.asyncio.Redis()}, "got a raw Redis client"),
    ],
)
def test_configure_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        SQLModelCache.configure(**kwargs)
    with pytest.raises(ConfigurationError, match="not configured"):
        SQLModelCache.get_config()


def test_configure_rejects_unknown_options():
    with pytest.raises(TypeError, match="ttl"):
        SQLModelCache.configure(ttl=5)  # type: ignore[call-arg]


def test_redis_transport_needs_a_redis_client():
    with pytest.raises(ConfigurationError, match=r"redis\.Redis or RedisCluster"):
        RedisSyncTransport("redis://localhost")  # type: ignore[arg-type]


def test_transports_satisfy_the_protocol():
    assert isinstance(MemoryTransport(), CacheTransport)
    assert isinstance(RedisSyncTransport(redis.Redis()), CacheTransport)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl": 0}, "ttl must be a positive int"),
        ({"ttl": 1.5}, "ttl must be a positive int"),
        ({"enabled": "yes"}, "enabled must be True or False"),
    ],
)
def test_cache_config_validates(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        CacheConfig(**kwargs)


def test_cache_config_is_frozen():
    config = CacheConfig(ttl=5)
    with pytest.raises(AttributeError):
        config.ttl = 6  # type: ignore[misc]


def test_every_way_of_opting_in_registers_the_model_at_definition():
    models = SQLModelCache.registered_models()
    for model in (Hero, Team, OrderItem, Tag, Sample, Disabled):
        assert model in models
    assert Plain not in models
    assert CachedModel not in models


def test_models_defined_later_are_registered_immediately():
    class Gadget(CachedModel, table=True):
        __tablename__ = "api_gadget"
        id: int | None = Field(default=None, primary_key=True)

    @cached(ttl=9)
    class Gizmo(SQLModel, table=True):
        __tablename__ = "api_gizmo"
        id: int | None = Field(default=None, primary_key=True)

    assert {Gadget, Gizmo} <= set(SQLModelCache.registered_models())
    assert Gizmo.__cache_config__ == CacheConfig(ttl=9)  # type: ignore[attr-defined]
    SQLModel.metadata.remove(Gadget.__table__)  # type: ignore[attr-defined]
    SQLModel.metadata.remove(Gizmo.__table__)  # type: ignore[attr-defined]


def test_cached_rejects_a_class_that_is_not_a_table():
    with pytest.raises(ConfigurationError, match="needs a mapped table model"):

        @cached
        class NotATable(SQLModel):
            id: int

    with pytest.raises(ConfigurationError, match="needs a mapped table model"):
        cached(600)  # type: ignore[call-overload]


def test_cache_config_attribute_must_be_a_cache_config():
    with pytest.raises(ConfigurationError, match="must be a CacheConfig"):

        class Wrong(SQLModel, table=True):
            __tablename__ = "api_wrong"
            __cache_config__ = {"ttl": 5}
            id: int | None = Field(default=None, primary_key=True)


def test_invalidate_rejects_unmapped_and_uncached_classes():
    SQLModelCache.configure()
    with pytest.raises(ConfigurationError, match="is not a mapped model class"):
        SQLModelCache.invalidate(int, 1)
    with pytest.raises(ConfigurationError, match="Plain is not cached"):
        SQLModelCache.invalidate(Plain, 1)
    with pytest.raises(ConfigurationError, match="needs 2 non-None value"):
        SQLModelCache.invalidate(OrderItem, 1)
    with pytest.raises(ConfigurationError, match="exactly the keys"):
        SQLModelCache.invalidate(OrderItem, {"order_id": 1})


def test_stats_start_at_zero():
    SQLModelCache.configure()
    stats = SQLModelCache.stats()
    assert (stats.hits, stats.misses, stats.l1_hits, stats.errors, stats.invalidations) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert dict(stats.by_model) == {}


@pytest.mark.parametrize("how", ["session", "engine.begin"])
def test_a_cached_model_written_before_configure_is_warned_of_once(engine, caplog, how):
    from sqlalchemy import func, insert, select, update

    from sqlmodel_cache import _writes

    _writes._unconfigured_warned.clear()
    with caplog.at_level(logging.WARNING, logger="sqlmodel_cache"):
        for ident in (1, 2):
            if how == "session":
                with Session(engine) as session:
                    session.add(Hero(id=ident, name="a"))
                    session.commit()
            else:
                with engine.begin() as conn:
                    conn.execute(insert(Hero).values(id=ident, name="a"))
                    conn.execute(update(Hero).where(col(Hero.id) == ident).values(name="b"))
        with Session(engine) as session:
            session.add(Plain(id=1, name="not cached"))  # not cached: nothing to say
            session.commit()
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and warned[0].startswith("Hero was written in a process")
    with engine.connect() as conn:  # and the writes themselves landed
        assert conn.execute(select(func.count()).select_from(Hero)).scalar_one() == 2
