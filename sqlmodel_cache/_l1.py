"""The in-process tier: decoded rows, bounded and expiring, dropped on every invalidation.

Coherence rests on an epoch: every invalidation (local, or received from
another process) and every loss of the invalidation feed bumps it, and a row
read from Redis enters L1 only if the epoch did not move since before that read.
So a row read just before an invalidation can never be stored just after it.

Every row of a tier lives the same ttl, so the order rows were put in is also the
order they expire in: one dict (insertion-ordered) is both the index and the
expiry queue, and the oldest row is the first to go when the tier is full. A
read is a dict lookup and a clock comparison, without the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ._config import L1Config

# An entry: (member ModelInfo, values as freeze() keeps them, their mutable positions,
# the monotonic time it expires at).
Entry = tuple[Any, list[Any], tuple[int, ...], float]


class L1:
    """Thread-safe; ``usable`` is False while invalidations might be missed."""

    def __init__(
        self, config: L1Config, *, usable: bool, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: dict[str, Entry] = {}
        self._maxsize = config.maxsize
        self._ttl = config.ttl
        self._timer = timer
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.epoch = 0
        self.usable = usable

    def get(self, key: str) -> Entry | None:
        """The live entry of key, if any (a dict read is atomic: no lock needed)."""
        entry = self._entries.get(key)
        if entry is None or not self.usable or entry[3] <= self._timer():
            return None
        return entry

    def put(
        self, key: str, member: Any, values: list[Any], positions: tuple[int, ...], epoch: int
    ) -> None:
        """Keep a row unless an invalidation arrived since epoch was read."""
        with self._lock:
            if not self.usable or epoch != self.epoch:
                return
            entries = self._entries
            entries.pop(key, None)  # to the end of the queue, with its new expiry
            if len(entries) >= self._maxsize:
                self._evict(entries)
            entries[key] = (member, values, positions, self._timer() + self._ttl)

    def _evict(self, entries: dict[str, Entry]) -> None:
        """Make room: the expired rows, and the oldest ones while the tier is full."""
        now = self._timer()
        while entries:
            oldest = next(iter(entries))
            if entries[oldest][3] > now and len(entries) < self._maxsize:
                return
            del entries[oldest]

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
        """The rows not expired yet."""
        now = self._timer()
        with self._lock:
            return sum(entry[3] > now for entry in self._entries.values())
