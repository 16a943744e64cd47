"""An in-process transport: the embedded default, and the fast one for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from cachetools import TLRUCache

from .._errors import ConfigurationError
from .._forks import reset_after_fork
from ._base import LEASE_MARK, new_lease_token


def _expires(_key: str, item: tuple[bytes, float], now: float) -> float:
    return now + item[1]


class MemoryTransport:
    """A bounded, thread-safe store that enforces each entry's TTL (cachetools TLRUCache).

    It supports lease-guarded fills, so it keeps the same guarantees as Redis
    within one process.
    """

    def __init__(
        self,
        maxsize: int = 10_000,
        *,
        lease_ttl: float = 5.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if type(maxsize) is not int or maxsize <= 0:
            raise ConfigurationError(f"maxsize must be a positive int, got {maxsize!r}")
        self._entries: TLRUCache[str, tuple[bytes, float]] = TLRUCache(maxsize, _expires, timer)
        self._lease_ttl = lease_ttl
        self._lock = threading.Lock()
        reset_after_fork(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._entries.get(key)
        return None if item is None else item[0]

    def set(self, key: str, value: bytes, ttl: int) -> None:
        with self._lock:
            self._entries[key] = (value, ttl)

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)

    def lease(self, key: str) -> tuple[bytes | None, bytes | None]:
        with self._lock:
            item = self._entries.get(key)
            if item is not None:
                return (None, None) if item[0].startswith(LEASE_MARK) else (item[0], None)
            token = new_lease_token()
            self._entries[key] = (token, self._lease_ttl)
        return None, token

    def lease_many(self, keys: Sequence[str]) -> list[tuple[bytes | None, bytes | None]]:
        """lease() for each key."""
        return [self.lease(key) for key in keys]

    def fill(self, key: str, token: bytes, value: bytes, ttl: int) -> bool:
        with self._lock:
            item = self._entries.get(key)
            if item is None or item[0] != token:
                return False
            self._entries[key] = (value, ttl)
        return True

    def fill_many(self, fills: Sequence[tuple[str, bytes, bytes, int]]) -> list[bool]:
        return [self.fill(*item) for item in fills]

    def release(self, key: str, token: bytes) -> None:
        with self._lock:
            item = self._entries.get(key)
            if item is not None and item[0] == token:
                del self._entries[key]

    def delete_model(self, prefix: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k.startswith(prefix)]:
                del self._entries[key]

    def __len__(self) -> int:
        with self._lock:
            self._entries.expire()
            return len(self._entries)
