"""Single flight: concurrent misses of one key in this process make one database read.

The first miss leads: it reads Redis, then the database, and fills. Later misses
of the same key follow: they wait (briefly) for the leader's row instead of
reading too. In an AsyncSession the wait is awaited, so the event loop keeps
running the leader. A flight nobody follows costs no more than a dict entry.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

from sqlalchemy.util import await_only
from sqlalchemy.util.concurrency import in_greenlet

_WAIT = 2.0  # seconds a follower waits before reading the database itself


class Flight:
    """One leader's load; a future exists only once somebody follows it."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: Future[Any] | None = None


class Flights:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flying: dict[str, Flight] = {}
        self.following = 0  # callers waiting right now (for observability)

    def lead(self, key: str) -> Flight | None:
        """A flight to finish when this caller leads the key's load, or None to follow."""
        with self._lock:
            if key in self._flying:
                return None
            flight = self._flying[key] = Flight()
            return flight

    def finish(self, key: str, flight: Flight, values: Any) -> None:
        """End the flight; values are the leader's row (None: followers read the database)."""
        with self._lock:
            if self._flying.get(key) is flight:
                del self._flying[key]
            future = flight.future
        if future is not None:
            future.set_result(values)

    def follow(self, key: str) -> Any:
        """The leader's row, or None when there is none (or no leader any more)."""
        with self._lock:
            flight = self._flying.get(key)
            if flight is None:
                return None
            if flight.future is None:
                flight.future = Future()
            future = flight.future
            self.following += 1
        try:
            if in_greenlet():
                return await_only(asyncio.wait_for(asyncio.wrap_future(future), _WAIT))
            return future.result(_WAIT)
        except TimeoutError:  # the leader is slow: read the database instead
            return None
        finally:
            with self._lock:
                self.following -= 1
