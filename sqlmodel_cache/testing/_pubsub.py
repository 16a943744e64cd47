"""Listening where invalidate() publishes: a real Redis subscription."""

from __future__ import annotations

import time
from typing import Any, Protocol

import redis
from redis.cluster import RedisCluster

from ..transport import RedisAsyncTransport, RedisSyncTransport


class Subscription(Protocol):
    """Messages published on one channel, from the moment it was made."""

    def next_message(self, timeout: float) -> bytes | None:
        """The next message, or None if none came within timeout seconds."""
        ...

    def close(self) -> None:
        """Stop listening."""
        ...


class RedisSubscription:
    """A subscription on a redis-py client (plain or cluster), confirmed before use."""

    def __init__(self, client: redis.Redis | RedisCluster, channel: str) -> None:
        self._pubsub: Any = client.pubsub()
        self._pubsub.subscribe(channel)
        # A message published before the server confirmed the subscription is lost:
        # wait for the confirmation, so a message the test then causes must arrive.
        confirmation = self._pubsub.get_message(timeout=5.0)
        assert confirmation is not None and confirmation["type"] == "subscribe", confirmation

    def next_message(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self._pubsub.get_message(timeout=left)
            if message is not None and message["type"] == "message":
                data: bytes = message["data"]
                return data
        return None

    def close(self) -> None:
        self._pubsub.close()


def redis_subscription(transport: Any, channel: str) -> RedisSubscription | None:
    """A subscription on the Redis behind one of our transports; None for any other."""
    transport = getattr(transport, "awaited", transport)  # the async suite's blocking face
    if isinstance(transport, RedisAsyncTransport):
        transport = transport.sync
    if isinstance(transport, RedisSyncTransport):
        return RedisSubscription(transport.client, channel)
    return None
