"""Cache transports: the contract and the shipped implementations."""

from ._base import AsyncCacheTransport, CacheTransport, LeasingTransport
from ._memory import MemoryTransport
from ._redis import RedisAsyncTransport, RedisSyncTransport

__all__ = [
    "AsyncCacheTransport",
    "CacheTransport",
    "LeasingTransport",
    "MemoryTransport",
    "RedisAsyncTransport",
    "RedisSyncTransport",
]
