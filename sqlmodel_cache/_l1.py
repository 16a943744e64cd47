"""The in-process tier: decoded rows, bounded and expiring, dropped on every invalidation.

Coherence rests on an epoch: every invalidation (local, or received from
another process) and every loss of the invalidation feed bumps it, and a row
read from Redis enters L1 only if the epoch did not move since before that read.
So a row read just before an invalidation can never be stored just after it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from cachetools import TTLCache

from ._config import L1Config


class L1:
    """Thread-safe; ``usable`` is False while invalidations might be missed."""

    def __init__(self, config: L1Config, *, usable: bool) -> None:
        self._entries: TTLCache[str, Any] = TTLCache(config.maxsize, config.ttl)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.epoch = 0
        self.usable = usable

    def get(self, key: str) -> Any:
        if not self.usable:
            return None
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, values: Any, epoch: int) -> None:
        """Keep values unless an invalidation arrived since epoch was read."""
        with self._lock:
            if self.usable and epoch == self.epoch:
                self._entries[key] = values

    def wait_past(self, epoch: int, timeout: float) -> bool:
        """Wait until an invalidation (or a change of the feed) moves the epoch past epoch."""
        with self._changed:
            return self._changed.wait_for(lambda: self.epoch > epoch, timeout)

    def _bump(self) -> None:
        self.epoch += 1
        self._changed.notify_all()

    def drop(self, keys: Iterable[str], prefixes: Iterable[str] = ()) -> None:
        with self._lock:
            self._bump()
            for key in keys:
                self._entries.pop(key, None)
            for prefix in prefixes:
                for key in [k for k in self._entries if k.startswith(prefix)]:
                    del self._entries[key]

    def suspend(self) -> None:
        """Invalidations may be missed from now on: forget everything and stop serving."""
        with self._lock:
            self.usable = False
            self._bump()
            self._entries.clear()

    def resume(self) -> None:
        """Invalidations arrive again; rows cached before may be stale, so start empty."""
        with self._lock:
            self._bump()
            self._entries.clear()
            self.usable = True

    def _after_fork(self, *, usable: bool) -> None:
        """In a forked child: new locks, no rows (nothing would drop the parent's)."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._entries.clear()
        self.epoch += 1
        self.usable = usable

    def __len__(self) -> int:
        with self._lock:
            self._entries.expire()
            return len(self._entries)
