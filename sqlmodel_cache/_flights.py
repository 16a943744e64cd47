"""Single flight: concurrent misses of one key in this process make one database read.

The first miss leads: it reads Redis, then the database, and fills. Later misses
of the same key follow: they wait (briefly) for the leader's row instead of
reading too. In an AsyncSession the wait is awaited, so the event loop keeps
running the leader. A flight nobody follows costs no more than a dict entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

from sqlalchemy.util import await_only

from ._compat import in_greenlet

_WAIT = 2.0  # seconds a follower waits before reading the database itself


class Flight:
    """One leader's load; a future exists only once somebody follows it. A flight turns
    stale when its key is invalidated while it flies: its row may predate that."""

    __slots__ = ("future", "stale")

    def __init__(self) -> None:
        self.future: Future[Any] | None = None
        self.stale = False


class Flights:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flying: dict[str, Flight] = {}
        self.following = 0  # callers waiting right now (for observability)

    def lead(self, key: str) -> Flight | None:
        """A flight to finish when this caller leads the key's load, or None to follow."""
        with self._lock:
            current = self._flying.get(key)
            if current is not None and not current.stale:
                return None
            flight = self._flying[key] = Flight()  # a stale flight is left to its leader
            return flight

    def finish(self, key: str, flight: Flight, values: Any) -> None:
        """End the flight; values are the leader's row (None: followers read the database).
        Called whatever happened to the leader (an error, a cancellation)."""
        with self._lock:
            if self._flying.get(key) is flight:
                del self._flying[key]
            future = flight.future
            if flight.stale:
                values = None
        if future is not None and not future.done():
            future.set_result(values)

    def invalidated(self, keys: Iterable[str], prefixes: Iterable[str] = ()) -> None:
        """Keys were invalidated: rows loaded before are not to be shared any more."""
        with self._lock:
            if not self._flying:
                return
            for key in keys:
                flight = self._flying.get(key)
                if flight is not None:
                    flight.stale = True
            for prefix in prefixes:
                for key, flight in self._flying.items():
                    if key.startswith(prefix):
                        flight.stale = True

    def follow(self, key: str) -> Any:
        """The leader's row, or None when there is none (or no leader any more), or when
        the key was invalidated while the leader read it."""
        with self._lock:
            flight = self._flying.get(key)
            if flight is None or flight.stale:
                return None
            if flight.future is None:
                flight.future = Future()
            future = flight.future
            self.following += 1
        try:
            if in_greenlet():
                shared = await_only(_await_alone(future, _WAIT))
            else:
                shared = future.result(_WAIT)
        except TimeoutError:  # the leader is slow: read the database instead
            return None
        finally:
            with self._lock:
                self.following -= 1
        return None if flight.stale else shared


async def _await_alone(future: Future[Any], timeout: float) -> Any:
    """The leader's result, awaited so that this follower giving up (a timeout, its task
    cancelled) touches neither the leader nor the other followers."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()  # this follower's own: cancelling it cancels nothing else

    def settle(done: Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # this follower's loop is gone
            loop.call_soon_threadsafe(_pass_on, waiter, done)

    future.add_done_callback(settle)
    return await asyncio.wait_for(waiter, timeout)


def _pass_on(waiter: asyncio.Future[Any], done: Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(done.result())
