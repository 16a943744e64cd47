"""Invalidations that could not be delivered, kept until they are.

Bounded: past ``limit`` keys it stops listing them and remembers instead that
everything under the key prefix must go, which is broader but never forgets.
"""

from __future__ import annotations

import threading


class Pending:
    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._keys: set[str] = set()
        self._prefixes: set[str] = set()
        self._everything = False
        self.waiting = False  # read without the lock on the hot path

    def add(self, keys: list[str] | tuple[str, ...], prefixes: tuple[str, ...] = ()) -> None:
        with self._lock:
            if not self._everything:
                self._keys.update(keys)
                self._prefixes.update(prefixes)
                if len(self._keys) > self._limit:
                    self._everything = True
                    self._keys.clear()
                    self._prefixes.clear()
            self.waiting = True

    def take(self) -> tuple[list[str], list[str], bool]:
        """Everything pending (keys, prefixes, all), now owned by the caller, who calls
        done() once delivered (or restore() when the delivery failed): until then
        ``waiting`` stays true, so no reader takes the cache for clean."""
        with self._lock:
            taken = list(self._keys), list(self._prefixes), self._everything
            self._keys, self._prefixes, self._everything = set(), set(), False
            return taken

    def done(self) -> None:
        """A delivery succeeded: nothing waits unless more arrived meanwhile."""
        with self._lock:
            self.waiting = bool(self._keys or self._prefixes or self._everything)

    def restore(self, keys: list[str], prefixes: list[str], everything: bool) -> None:
        """Put back what a failed delivery took."""
        if everything:
            with self._lock:
                self._everything = True
                self._keys.clear()
                self._prefixes.clear()
                self.waiting = True
        else:
            self.add(keys, tuple(prefixes))

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # what waits stays: delivering it twice is harmless
