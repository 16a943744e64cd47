"""The shipped transports, MemoryTransport on its own and RedisSyncTransport on real Redis."""

import threading

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sqlmodel_cache import ConfigurationError, TransportError
from sqlmodel_cache.transport import MemoryTransport, RedisSyncTransport


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
