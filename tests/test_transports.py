"""The shipped transports: each passes the contract suite (sqlmodel_cache.testing) on a real
store, plus what is particular to it."""

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from sqlmodel_cache import ConfigurationError, TransportError
from sqlmodel_cache.testing import AsyncTransportContract, LeasingTransportContract
from sqlmodel_cache.testing._async_contract import Blocking
from sqlmodel_cache.transport import MemoryTransport, RedisAsyncTransport, RedisSyncTransport
from sqlmodel_cache.transport._async_wire import async_wire_for
from sqlmodel_cache.transport._wire import Wire

from .conftest import REDIS_URL

# redis-py's own path: the transport's wire takes only clients with plain settings.
CLIENT_OPTIONS: dict[str, dict[str, Any]] = {"wire": {}, "redis-py": {"protocol": 3}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestMemoryTransport(LeasingTransportContract):
    lease_ttl = 5.0

    def make_transport(self) -> MemoryTransport:
        self.clock = Clock()
        return MemoryTransport(timer=self.clock, lease_ttl=self.lease_ttl)

    def advance_clock(self, seconds: float) -> bool:
        self.clock.now += seconds
        return True


class TestRedisSyncTransport(LeasingTransportContract):
    lease_ttl = 1.0  # short, so that the expiry test sees an abandoned lease go

    @pytest.fixture(params=list(CLIENT_OPTIONS))
    def transport(self, request: pytest.FixtureRequest) -> Iterator[RedisSyncTransport]:
        client = redis.Redis.from_url(REDIS_URL, **CLIENT_OPTIONS[request.param])
        transport = RedisSyncTransport(client, lease_ttl=self.lease_ttl)
        assert isinstance(transport._line, Wire) is (request.param == "wire")
        yield transport
        client.close()

    @pytest.fixture
    def namespace(self, prefix: str) -> str:
        return prefix


class TestRedisAsyncTransport(AsyncTransportContract):
    lease_ttl = 1.0

    @pytest.fixture(params=list(CLIENT_OPTIONS))
    def async_transport(self, request: pytest.FixtureRequest) -> Iterator[RedisAsyncTransport]:
        # The asyncio client closes with the event loop that used it; the twin here.
        client = redis.asyncio.Redis.from_url(REDIS_URL, **CLIENT_OPTIONS[request.param])
        assert (async_wire_for(client) is not None) is (request.param == "wire")
        transport = RedisAsyncTransport(client, lease_ttl=self.lease_ttl)
        yield transport
        transport.sync.client.close()

    @pytest.fixture
    def namespace(self, prefix: str) -> str:
        return prefix


def test_memory_transport_is_bounded():
    store = MemoryTransport(maxsize=3)
    for i in range(10):
        store.set(f"k{i}", b"v", 60)
    assert len(store) == 3
    assert [store.get(f"k{i}") for i in range(10)] == [None] * 7 + [b"v"] * 3
    with pytest.raises(ConfigurationError, match="maxsize must be a positive int"):
        MemoryTransport(maxsize=0)


def test_memory_transport_is_thread_safe():
    store = MemoryTransport(maxsize=50)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(2000):
                store.set(f"{n}-{i % 80}", b"v", 60)
                store.get(f"{n}-{(i * 7) % 80}")
                store.delete(f"{n}-{(i * 3) % 80}")
        except Exception as exc:  # noqa: BLE001 - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store) <= 50


def test_redis_errors_become_transport_errors():
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    transport = RedisSyncTransport(dead)
    for call in (
        lambda: transport.get("k"),
        lambda: transport.set("k", b"v", 1),
        lambda: transport.delete("k"),
    ):
        with pytest.raises(TransportError, match=r"Redis .* failed"):
            call()


def _lease_protocol(transport, key: str) -> None:
    """lease -> fill, a second reader, a hit, delete defeating a fill, release."""
    value, token = transport.lease(key)
    assert value is None and token is not None
    assert transport.lease(key) == (None, None)  # another reader: no lease for it
    assert transport.fill(key, token, b"[row]", 30)
    assert transport.lease(key) == (b"[row]", None)
    transport.delete(key)
    _, token = transport.lease(key)
    transport.delete(key)  # a commit after the read: the fill must not land
    assert not transport.fill(key, token, b"[stale]", 30)
    assert transport.get(key) is None
    _, token = transport.lease(key)
    transport.release(key, token)
    assert transport.get(key) is None
    assert transport.lease(key)[1] is not None  # the next reader may fill at once


def test_redis_leases_with_the_script_too(redis_client, prefix):
    transport = RedisSyncTransport(redis_client)
    transport._native_lease = False  # what servers before 7.0 get (the suite: SET NX GET)
    _lease_protocol(transport, f"{prefix}:row")
    assert transport._native_lease is False


class _BeforeSeven:
    """A line to a server that answers SET ... NX GET as Redis 6 does (the only reply
    faked here; every other command reaches the real server)."""

    def __init__(self, line: Any) -> None:
        self._line = line

    def call(self, commands: Any) -> list[Any]:
        if any(c[:1] == ("SET",) and "NX" in c and "GET" in c for c in commands):
            raise redis.ResponseError("ERR syntax error")
        return self._line.call(commands)


def test_a_server_without_set_nx_get_gets_the_lease_script(redis_client, prefix):
    transport = RedisSyncTransport(redis_client)
    transport._line = _BeforeSeven(transport._line)  # type: ignore[assignment]
    _lease_protocol(transport, f"{prefix}:row")
    assert transport._native_lease is False


def test_async_redis_leases_with_the_script_too(prefix):
    transport = RedisAsyncTransport.from_url(REDIS_URL)
    transport._native_lease = False
    with asyncio.Runner() as runner:
        _lease_protocol(Blocking(transport, runner), f"{prefix}:row")
    assert transport._native_lease is False
    transport.sync.client.close()


def test_a_client_that_decodes_replies_is_refused(redis_client):
    settings = redis_client.connection_pool.connection_kwargs
    decoding = redis.Redis(host=settings["host"], port=settings["port"], decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses=False"):
        RedisSyncTransport(decoding)
    with pytest.raises(ConfigurationError, match="decode_responses=False"):
        RedisAsyncTransport.from_url("redis://127.0.0.1:6379/0", decode_responses=True)
