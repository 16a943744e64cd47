"""The shipped transports, MemoryTransport on its own and RedisSyncTransport on real Redis."""

import asyncio
import threading
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sqlmodel_cache import ConfigurationError, TransportError
from sqlmodel_cache.transport import MemoryTransport, RedisAsyncTransport, RedisSyncTransport


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_transport_enforces_each_ttl():
    clock = Clock()
    store = MemoryTransport(timer=clock)
    store.set("short", b"1", 5)
    store.set("long", b"2", 60)
    clock.now += 4.9
    assert (store.get("short"), store.get("long")) == (b"1", b"2")
    clock.now += 0.2
    assert (store.get("short"), store.get("long")) == (None, b"2")
    clock.now += 60
    assert store.get("long") is None
    assert len(store) == 0


def test_memory_transport_is_bounded_and_deletes():
    store = MemoryTransport(maxsize=3)
    for i in range(10):
        store.set(f"k{i}", b"v", 60)
    assert len(store) == 3
    store.delete("k9", "absent")
    assert store.get("k9") is None
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


def test_redis_transport_round_trip(redis_client, prefix):
    transport = RedisSyncTransport(redis_client)
    transport.set(f"{prefix}:a", b"\x00payload", 30)
    assert transport.get(f"{prefix}:a") == b"\x00payload"
    assert 25 < redis_client.ttl(f"{prefix}:a") <= 30
    transport.delete(f"{prefix}:a", f"{prefix}:absent")
    transport.delete()
    assert transport.get(f"{prefix}:a") is None


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


@pytest.mark.parametrize("native", [True, False], ids=["set-nx-get", "script"])
def test_redis_leases_with_set_nx_get_and_with_the_script(redis_client, prefix, native):
    transport = RedisSyncTransport(redis_client)
    transport._native_lease = native  # the script is what servers before 7.0 get
    _lease_protocol(transport, f"{prefix}:row")
    assert transport._native_lease is native


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


@pytest.mark.parametrize("native", [True, False], ids=["set-nx-get", "script"])
def test_async_redis_leases_with_set_nx_get_and_with_the_script(redis_client, prefix, native):
    settings = redis_client.connection_pool.connection_kwargs
    url = f"redis://{settings['host']}:{settings['port']}/{settings['db']}"

    class Awaited:
        """The async transport's lease protocol, each call run to completion."""

        def __init__(self, transport: RedisAsyncTransport) -> None:
            self.transport = transport

        def __getattr__(self, name: str):
            method = getattr(self.transport, name)
            return lambda *args: loop.run_until_complete(method(*args))

    transport = RedisAsyncTransport.from_url(url)
    transport._native_lease = native
    with asyncio.Runner() as runner:
        loop = runner.get_loop()
        _lease_protocol(Awaited(transport), f"{prefix}:row")
    assert transport._native_lease is native


def test_a_client_that_decodes_replies_is_refused(redis_client):
    settings = redis_client.connection_pool.connection_kwargs
    decoding = redis.Redis(host=settings["host"], port=settings["port"], decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses=False"):
        RedisSyncTransport(decoding)
    with pytest.raises(ConfigurationError, match="decode_responses=False"):
        RedisAsyncTransport.from_url("redis://127.0.0.1:6379/0", decode_responses=True)
