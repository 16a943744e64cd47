"""redis-py clients as a cache needs them: safe defaults, twins, and the feed's own client.

A cache must never be slower than the database it saves: a dead or stalled Redis
should cost a request at most one short timeout, then the breaker takes over.
redis-py's defaults (no read timeout before 6.x, three retries with backoff since)
can stall a request for seconds, so clients we build get short timeouts and one
retry, and the invalidation feed always gets a client of its own with no retries,
whatever the user's client does.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from .._errors import ConfigurationError, TransportError

log = logging.getLogger("sqlmodel_cache")

AnyClient = redis.Redis | RedisCluster | redis.asyncio.Redis | AsyncRedisCluster

CONNECT_TIMEOUT = 0.5  # seconds; loopback or same-zone Redis answers in well under 1 ms
READ_TIMEOUT = 0.5
HEALTH_CHECK = 30  # seconds idle after which a pooled connection is PINGed before use
FEED_TIMEOUT = 1.0  # the feed's heartbeat notices silence after 2 s; a read never waits longer

# Connection settings that mean the same to redis-py's sync and asyncio clients.
_SHARED_SETTINGS = (
    "host", "port", "db", "username", "password", "socket_timeout", "socket_connect_timeout",
    "socket_keepalive", "client_name", "health_check_interval", "protocol", "encoding",
    "encoding_errors", "decode_responses", "credential_provider", "ssl_keyfile",
    "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_data", "ssl_check_hostname",
    "ssl_password",
)  # fmt: skip


def _retry_once(flavour: type[Any]) -> Any:
    # Only a broken connection is retried (a pooled one may predate a restart);
    # a timeout is not: the next attempt would most likely wait as long.
    return flavour(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))


def safe_settings(*, asyncio: bool) -> dict[str, Any]:
    """The settings from_url gives a new client unless told otherwise."""
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": READ_TIMEOUT,
        "health_check_interval": HEALTH_CHECK,
        "retry": _retry_once(redis.asyncio.retry.Retry if asyncio else Retry),
    }


def from_url(kind: type[Any], url: object, options: dict[str, Any], *, asyncio: bool) -> Any:
    """A client of class kind for url with safe settings; bad input is a ConfigurationError."""
    if not isinstance(url, str):
        raise ConfigurationError(f"the Redis URL must be a str, got {url!r}")
    db = urlsplit(url).path.strip("/") if url.startswith(("redis://", "rediss://")) else ""
    if db and not db.isdigit():
        # redis-py would ignore the path and use database 0: somebody else's data.
        raise ConfigurationError(
            f"cannot build a Redis client for {url!r}: the path must be a database number"
        )
    settings = {**safe_settings(asyncio=asyncio), **options}
    cluster = issubclass(kind, (RedisCluster, AsyncRedisCluster))
    if cluster:
        # Cluster clients take no health checks, and the retry is their own business.
        settings.pop("health_check_interval", None)
        if "retry" not in options:
            settings.pop("retry")
    try:
        client = kind.from_url(url, **settings)
        if not cluster:
            # redis-py only builds a connection at the first command: build one now
            # (no socket is opened) so that an unknown option fails here, by name.
            pool = client.connection_pool
            pool.connection_class(**pool.connection_kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"cannot build a Redis client for {url!r}: {exc}") from exc
    except (redis.RedisError, RedisClusterException) as exc:  # a cluster client connects now
        raise TransportError(f"cannot reach Redis at {url!r}: {exc}", unreachable=True) from exc
    return client


def settings_of(client: AnyClient) -> dict[str, Any]:
    """The connection settings of a client, as keyword arguments of a new plain or cluster one."""
    if isinstance(client, AsyncRedisCluster):
        node = next(iter(client.nodes_manager.startup_nodes.values()))
        found: dict[str, Any] = dict(client.connection_kwargs, host=node.host, port=node.port)
    else:
        plain: Any = client
        if isinstance(client, RedisCluster):
            plain = client.get_default_node().redis_connection  # type: ignore[no-untyped-call]
        pool = plain.connection_pool
        found = dict(pool.connection_kwargs, connection_class=pool.connection_class)
    settings = {name: found[name] for name in _SHARED_SETTINGS if name in found}
    kind = getattr(found.get("connection_class"), "__name__", "")
    if kind == "SSLConnection":
        settings["ssl"] = True
    elif kind == "UnixDomainSocketConnection":
        settings = {k: v for k, v in settings.items() if k not in ("host", "port")}
        settings["unix_socket_path"] = found["path"]
    return settings


def _retry_of(client: AnyClient, flavour: type[Any]) -> dict[str, Any]:
    """The client's retry policy, rebuilt for a client of the given flavour (sync or asyncio)."""
    if isinstance(client, (RedisCluster, AsyncRedisCluster)):
        return {}  # a cluster client retries on its own, above its connections
    retry: Any = client.connection_pool.connection_kwargs.get("retry")
    try:
        return {"retry": flavour(retry._backoff, retry._retries, retry._supported_errors)}
    except AttributeError:  # none given, or a Retry of another shape: redis-py's default
        return {}


def sync_twin(client: redis.asyncio.Redis | AsyncRedisCluster) -> redis.Redis | RedisCluster:
    """A blocking client on the same Redis, with the same settings."""
    if isinstance(client, AsyncRedisCluster):
        return RedisCluster(**settings_of(client))
    return redis.Redis(**settings_of(client), **_retry_of(client, Retry))


def async_twin(
    client: redis.asyncio.Redis | AsyncRedisCluster,
) -> redis.asyncio.Redis | AsyncRedisCluster:
    """Another asyncio client (for another event loop) with the same settings."""
    if isinstance(client, AsyncRedisCluster):
        return AsyncRedisCluster(**settings_of(client))
    retry = _retry_of(client, redis.asyncio.retry.Retry)
    return redis.asyncio.Redis(**settings_of(client), **retry)


def feed_client(client: redis.Redis | RedisCluster) -> redis.Redis:
    """A client of the feed's own: short timeouts, no retries, no health checks.

    The feed must notice a lost Redis within its heartbeat; the user's client may
    retry with backoff for seconds inside one call. Publishes reach every node of
    a cluster, so a plain client on one node hears them all.
    """
    settings = settings_of(client)
    settings.update(
        socket_timeout=FEED_TIMEOUT,
        socket_connect_timeout=FEED_TIMEOUT,
        health_check_interval=0,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,  # the feed reads bytes
    )
    return redis.Redis(**settings)


_warned: set[str] = set()  # what was warned of, once per process


def check_bytes(client: AnyClient, transport: str) -> None:
    """Entries are bytes: a client that decodes replies to str cannot read them."""
    if settings_of(client).get("decode_responses"):
        raise ConfigurationError(
            f"{transport} needs a client with decode_responses=False (cache entries are "
            "bytes); give it a client of its own"
        )


def warn_if_unbounded(client: AnyClient) -> None:
    """A client with no read timeout lets a stalled Redis hang a request for good (once)."""
    if "timeout" in _warned:
        return
    if isinstance(client, (RedisCluster, AsyncRedisCluster)):
        timeout = settings_of(client).get("socket_timeout")
    else:
        # What a connection of this client would get: redis-py's own default applies
        # when the setting was not given (none before 6.x, 5 s since).
        pool = client.connection_pool
        timeout = pool.connection_class(**pool.connection_kwargs).socket_timeout
    if timeout is None:
        log.warning(
            "the Redis client has no socket_timeout: a stalled Redis would block requests "
            "indefinitely; build it with RedisSyncTransport.from_url(url) or give it "
            "socket_timeout=0.5"
        )
        _warned.add("timeout")
