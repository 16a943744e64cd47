"""SQLModelCache: the one global entry point."""

from __future__ import annotations

import atexit
import inspect
import logging
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from sqlalchemy.orm import Session
from sqlalchemy.util import greenlet_spawn

from . import _listeners, _runtime  # noqa: F401 - importing _listeners attaches them
from ._bridge import Bridge
from ._config import BreakerConfig, CacheConfig, L1Config, Settings, ttl_seconds
from ._errors import ConfigurationError
from ._explain import Explanation, explain
from ._feed import Feed
from ._l1 import L1
from ._many import get_many
from ._natural import check as check_natural_keys
from ._natural import get_by
from ._registry import cached_info, registry
from ._stats import CacheStats
from ._writes import Writes
from .transport import (
    AsyncCacheTransport,
    CacheTransport,
    MemoryTransport,
    RedisAsyncTransport,
    RedisSyncTransport,
)
from .transport._clients import feed_client

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

_M = TypeVar("_M")

_REDIS_CLIENTS = (redis.Redis, RedisCluster, redis.asyncio.Redis, AsyncRedisCluster)


def _check_transport(transport: Any) -> Any:
    """The synchronous transport the listeners will call, after checking what was given."""
    if isinstance(transport, _REDIS_CLIENTS):
        raise ConfigurationError(
            f"configure() needs a transport, got a raw {type(transport).__name__} client: "
            "wrap it, e.g. transport=RedisSyncTransport(client)"
        )
    if isinstance(transport, type) or not isinstance(transport, CacheTransport):
        raise ConfigurationError(
            "transport must be an object with get(key), set(key, value, ttl) and "
            f"delete(*keys) methods, got {transport!r}"
        )
    if not inspect.iscoroutinefunction(transport.get):
        return transport
    if not isinstance(getattr(transport, "sync", None), CacheTransport):
        raise ConfigurationError(
            f"async transport {type(transport).__name__} needs a .sync transport on the "
            "same store, for plain Sessions"
        )
    return Bridge(transport)


def _pubsub_client(transport: Any) -> Any:
    """The blocking Redis client that carries invalidations to other processes' L1."""
    if isinstance(transport, MemoryTransport):
        return None  # one process: dropping the local L1 is enough
    if isinstance(transport, RedisSyncTransport):
        return feed_client(transport.client)
    if isinstance(transport, RedisAsyncTransport):
        return feed_client(transport.sync.client)
    raise ConfigurationError(
        "l1 needs a transport that can tell other processes about invalidations "
        f"(RedisSyncTransport, RedisAsyncTransport or MemoryTransport), got {transport!r}"
    )


def _l1_config(l1: Any) -> L1Config | None:
    if l1 is False:
        return None
    if l1 is True:
        return L1Config()
    if isinstance(l1, L1Config):
        return l1
    raise ConfigurationError(f"l1 must be True, False or an L1Config, got {l1!r}")


def _tiers(
    config: L1Config | None, transport: Any, key_prefix: str, origin: str, *, wanted: bool
) -> tuple[L1 | None, Feed | None]:
    """The in-process tier and its invalidation feed, when anything uses them."""
    if config is None and not wanted:
        return None, None
    try:
        client = _pubsub_client(transport)
    except ConfigurationError:
        if config is not None:
            raise
        log.warning("models ask for l1 but %r cannot spread invalidations: no l1", transport)
        return None, None
    if client is None:
        return L1(config or L1Config(), usable=True), None
    tier = L1(config or L1Config(), usable=False)  # usable once the feed is subscribed
    return tier, Feed(client, _runtime.channel_of(key_prefix), tier, origin)


def _runtime_or_raise() -> _runtime.Runtime:
    runtime = _runtime.current
    if runtime is None:
        raise ConfigurationError(_runtime.NOT_CONFIGURED)
    return runtime


log = logging.getLogger("sqlmodel_cache")


@atexit.register
def _deliver_before_exit() -> None:
    # Invalidations still waiting when the process ends would leave old rows in
    # Redis until their TTL: one last attempt (bounded by the client's timeouts).
    runtime = _runtime.current
    if runtime is not None:
        runtime.deliver_pending_now()


class SQLModelCache:
    """Configure, inspect and invalidate the cache (class-level API, one per process)."""

    @classmethod
    def configure(
        cls,
        transport: CacheTransport | AsyncCacheTransport | str | None = None,
        *,
        default_ttl: int | timedelta = 300,
        key_prefix: str = "sqlmodelcache",
        enabled: bool = True,
        l1: bool | L1Config = False,
        breaker: BreakerConfig | None = BreakerConfig(),  # noqa: B008 - frozen, so shared safely
        max_entry_bytes: int = 1 << 20,
        snapshot_isolation: bool = False,
    ) -> None:
        """Set up the cache once at startup; ``transport=None`` keeps entries in process,
        a URL (``redis://``, ``rediss://``, ``unix://``) means
        ``RedisSyncTransport.from_url(url)``. TTLs are seconds or a ``timedelta``.

        ``snapshot_isolation=True`` also serves gets in REPEATABLE READ and SERIALIZABLE
        transactions of a server database (by default they go to the database): a hit
        may then be newer than the transaction's snapshot and takes no predicate lock.
        """
        if _runtime.current is not None:
            raise ConfigurationError(
                "SQLModelCache is already configured: call SQLModelCache.reset() before "
                "configuring it again"
            )
        default_ttl = ttl_seconds("default_ttl", default_ttl)
        if type(key_prefix) is not str or not key_prefix or not key_prefix.isprintable():
            raise ConfigurationError(
                f"key_prefix must be a non-empty printable str, got {key_prefix!r}"
            )
        if type(enabled) is not bool:
            raise ConfigurationError(f"enabled must be True or False, got {enabled!r}")
        if transport is None:
            transport = MemoryTransport()
        elif isinstance(transport, str):
            transport = RedisSyncTransport.from_url(transport)
        listened = _check_transport(transport)
        l1_config = _l1_config(l1)
        if breaker is None:
            breaker = BreakerConfig(failures=sys.maxsize)  # never opens
        elif not isinstance(breaker, BreakerConfig):
            raise ConfigurationError(f"breaker must be a BreakerConfig or None, got {breaker!r}")
        if type(max_entry_bytes) is not int or max_entry_bytes <= 0:
            raise ConfigurationError(
                f"max_entry_bytes must be a positive int, got {max_entry_bytes!r}"
            )
        if type(snapshot_isolation) is not bool:
            raise ConfigurationError(
                f"snapshot_isolation must be True or False, got {snapshot_isolation!r}"
            )
        for model in registry.models():
            check_natural_keys(model, (registry.config(model) or CacheConfig()).natural_keys)
        settings = Settings(
            transport,
            default_ttl,
            key_prefix,
            enabled,
            l1_config,
            breaker,
            max_entry_bytes,
            snapshot_isolation,
        )
        origin = uuid.uuid4().hex  # names this process's messages on the invalidation channel
        wanted = any((registry.config(cls) or CacheConfig()).l1 for cls in registry.models())
        tier, feed = None, None
        if enabled:
            tier, feed = _tiers(l1_config, transport, key_prefix, origin, wanted=wanted)

        def make_tiers() -> tuple[L1 | None, Feed | None]:
            return _tiers(l1_config, transport, key_prefix, origin, wanted=True)

        _runtime.current = _runtime.Runtime(
            settings, listened, tier, feed, origin, make_tiers if enabled else None
        )

    @classmethod
    def reset(cls) -> None:
        """Forget the configuration (models stay registered); configure() may be called again."""
        runtime, _runtime.current = _runtime.current, None
        if runtime is not None:
            runtime.close()

    @classmethod
    def get_config(cls) -> Settings:
        """The active settings (a ``Settings``): transport, default_ttl, key_prefix, enabled,
        l1, breaker, max_entry_bytes, snapshot_isolation."""
        return _runtime_or_raise().settings

    @classmethod
    def registered_models(cls) -> tuple[type, ...]:
        """Every model opted in to caching, in definition order."""
        return registry.models()

    @classmethod
    def stats(cls, *, reset: bool = False) -> CacheStats:
        """Counters since configure() (or the last reset): totals and ``by_model[name]``;
        ``reset=True`` starts them from zero again after reading them."""
        if type(reset) is not bool:
            raise ConfigurationError(f"reset must be True or False, got {reset!r}")
        runtime = _runtime_or_raise()
        return runtime.stats.snapshot(runtime.breaker.state, reset=reset)

    @classmethod
    def invalidate(cls, model: type, ident: Any) -> None:
        """Drop one row's entry, for writes the ORM did not see (raw SQL, other services)."""
        info = cached_info(model)
        runtime = _runtime_or_raise()
        values = info.identity(ident)
        route = registry.route(model)
        if route is not None:  # even with enabled=False: processes with the cache on read it
            writes = Writes()
            writes.add_row(route, values)  # every keyspace this row is cached in
            runtime.invalidate_writes(writes)

    @classmethod
    def invalidate_model(cls, model: type) -> None:
        """Drop every entry of a model (and of the classes that read its table) in Redis and
        in every process's in-process tier."""
        cached_info(model)
        runtime = _runtime_or_raise()
        route = registry.route(model)
        if route is not None:
            runtime.drop_models({keyspace for keyspace, _ in route.targets})

    @classmethod
    def clear(cls) -> None:
        """Drop every entry under the configured key prefix, in every tier and process."""
        _runtime_or_raise().clear()

    @classmethod
    def get_many(cls, session: Session, model: type[_M], idents: Sequence[Any]) -> list[_M | None]:
        """``session.get(model, ident)`` for each ident, in order (None where no row
        exists): one round trip to the cache for all, one SELECT for the misses."""
        return get_many(session, model, idents)

    @classmethod
    async def aget_many(
        cls, session: AsyncSession, model: type[_M], idents: Sequence[Any]
    ) -> list[_M | None]:
        """``get_many`` for an AsyncSession."""
        return await session.run_sync(get_many, model, idents)

    @classmethod
    def get_by(cls, session: Session, model: type[_M], **values: Any) -> _M | None:
        """The row of model whose natural key (``CacheConfig(natural_keys=...)``) has these
        values, or None: ``get_by(session, User, email="a@example.org")``."""
        return get_by(session, model, values)  # type: ignore[no-any-return]

    @classmethod
    async def aget_by(cls, session: AsyncSession, model: type[_M], **values: Any) -> _M | None:
        """``get_by`` for an AsyncSession."""
        return await session.run_sync(get_by, model, values)

    @classmethod
    def explain(cls, model: type) -> Explanation:
        """Whether and how a model is cached (key, TTL, tiers), and if not, why, column by
        column; works before configure() too. ``print()`` it for a report."""
        return explain(model)

    @classmethod
    async def ainvalidate(cls, model: type, ident: Any) -> None:
        """``invalidate`` for async code: awaits an async transport on the running loop."""
        await _on_the_loop(cls.invalidate, model, ident)

    @classmethod
    async def ainvalidate_model(cls, model: type) -> None:
        """``invalidate_model`` for async code."""
        await _on_the_loop(cls.invalidate_model, model)

    @classmethod
    async def aclear(cls) -> None:
        """``clear`` for async code."""
        await _on_the_loop(cls.clear)


async def _on_the_loop(operation: Callable[..., None], *args: Any) -> None:
    """Run an operation so that an async transport is awaited on the running loop (in
    SQLAlchemy's greenlet); a sync transport is simply called (no greenlet needed)."""
    runtime = _runtime.current
    if runtime is not None and isinstance(runtime.transport, Bridge):
        await greenlet_spawn(operation, *args)
    else:
        operation(*args)
