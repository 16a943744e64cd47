"""What the cache tells: stats (and their reset), a DEBUG line per get, OpenTelemetry
metrics; and setting it up from a URL with TTLs as timedelta."""

import logging
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlmodel import Session

from sqlmodel_cache import CacheConfig, ConfigurationError, L1Config, SQLModelCache
from sqlmodel_cache.otel import instrument
from sqlmodel_cache.transport import RedisSyncTransport

from .conftest import REDIS_URL
from .heroes import name, seed
from .models import Hero, Note


def test_stats_reset_starts_every_count_from_zero(engine):
    seed(engine, (1, "a"))
    SQLModelCache.configure()
    name(engine, 1)
    name(engine, 1)
    name(engine, 1, execution_options={"cache": False})
    before = SQLModelCache.stats(reset=True)
    assert (before.hits, before.misses, before.fills, before.bypasses) == (
        1,
        1,
        1,
        {"cache_option": 1},
    )
    zero = SQLModelCache.stats()
    assert (zero.hits, zero.misses, zero.bypasses) == (0, 0, {})
    assert zero.by_model["Hero"].hits == 0
    name(engine, 1)
    after = SQLModelCache.stats()
    assert (after.hits, after.by_model["Hero"].hits, after.misses) == (1, 1, 0)
    with pytest.raises(ConfigurationError, match="reset must be True or False"):
        SQLModelCache.stats(reset="yes")  # type: ignore[arg-type]


def test_a_debug_line_says_what_each_get_did(engine, caplog):
    seed(engine, (1, "a"))
    SQLModelCache.configure(key_prefix="dbg", l1=True)
    with caplog.at_level(logging.DEBUG, logger="sqlmodel_cache"):
        name(engine, 1)
        name(engine, 1)
        name(engine, 1, execution_options={"cache": False})
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert lines == [
        "get dbg:Hero:id=1: miss",
        "get dbg:Hero:id=1: L1 hit",
        "get of Hero: bypassed (cache_option)",
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sqlmodel_cache"):
        name(engine, 1)
    assert caplog.records == []


def _points(reader: InMemoryMetricReader) -> dict[str, dict[tuple[Any, ...], Any]]:
    """Metric name -> {sorted attribute items: value} from one collection."""
    found: dict[str, dict[tuple[Any, ...], Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points = found.setdefault(metric.name, {})
                for point in metric.data.data_points:
                    points[tuple(sorted(point.attributes.items()))] = point.value
    return found


def test_opentelemetry_metrics_come_from_the_same_counters(engine):
    seed(engine, (1, "a"))
    reader = InMemoryMetricReader()
    instrument(MeterProvider(metric_readers=[reader]))
    SQLModelCache.configure(l1=True)
    name(engine, 1)  # miss, fill
    name(engine, 1)  # L1 hit
    name(engine, 1, execution_options={"cache": False})
    SQLModelCache.stats(reset=True)  # metrics stay monotonic
    points = _points(reader)
    hero = (("model", "Hero"),)
    assert points["sqlmodel_cache.hits"][(*hero, ("tier", "l1"))] == 1
    assert points["sqlmodel_cache.hits"][(*hero, ("tier", "l2"))] == 0
    assert points["sqlmodel_cache.misses"][hero] == 1
    assert points["sqlmodel_cache.fills"][hero] == 1
    assert points["sqlmodel_cache.bypasses"][(*hero, ("reason", "cache_option"))] == 1
    assert points["sqlmodel_cache.breaker_open"][()] == 0


def test_configure_takes_a_redis_url(engine, sql, redis_client, prefix):
    seed(engine, (1, "a"))
    SQLModelCache.configure(transport=REDIS_URL, key_prefix=prefix)
    assert isinstance(SQLModelCache.get_config().transport, RedisSyncTransport)
    name(engine, 1)
    assert redis_client.get(f"{prefix}:Hero:id=1") is not None
    sql.clear()
    assert name(engine, 1) == "a"
    assert sql.statements == []
    SQLModelCache.reset()
    with pytest.raises(ConfigurationError, match="http://localhost"):
        SQLModelCache.configure(transport="http://localhost:6379/0")


def test_ttls_take_timedelta(engine, redis_client, prefix):
    assert CacheConfig(ttl=timedelta(minutes=10)).ttl == 600
    assert L1Config(ttl=timedelta(seconds=2.5)).ttl == 2.5
    for bad in (timedelta(seconds=1.5), timedelta(0), timedelta(seconds=-5), 1.5, "60"):
        with pytest.raises(ConfigurationError, match="whole seconds"):
            CacheConfig(ttl=bad)
    seed(engine, (2, "b"))
    with Session(engine) as session:
        session.add(Note(id=1, text="n"))  # a model without a TTL of its own
        session.commit()
    SQLModelCache.configure(
        RedisSyncTransport(redis_client), key_prefix=prefix, default_ttl=timedelta(hours=1)
    )
    assert SQLModelCache.get_config().default_ttl == 3600
    with Session(engine) as session:
        session.get(Note, 1)
        session.get(Hero, 2, execution_options={"cache_ttl": timedelta(seconds=60)})
    assert 3590 < redis_client.ttl(f"{prefix}:Note:id=1") <= 3600
    assert 50 < redis_client.ttl(f"{prefix}:Hero:id=2") <= 60
