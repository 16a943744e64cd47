"""A circuit breaker: stop calling a failing cache, probe it again after a cool-down."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("sqlmodel_cache")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class Breaker:
    """Opens after ``failures`` consecutive failures (at once when the cache is unreachable);
    after ``cooldown`` seconds allow() lets one probe through, which closes it on success
    and reopens it on failure."""

    def __init__(
        self, failures: int, cooldown: float, *, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failures
        self._cooldown = cooldown
        self._timer = timer
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at = 0.0
        self.state = CLOSED

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Whether to call the cache now; a caller let through must report how its call
        went (success() or failure()). A probe that never reports is replaced by another
        after a cool-down, so the breaker cannot stay half-open."""
        if self.state is CLOSED:
            return True
        with self._lock:
            if self._timer() - self._opened_at >= self._cooldown:
                self.state = HALF_OPEN  # this caller is the probe; the others wait
                self._opened_at = self._timer()
                return True
            return False

    def success(self) -> None:
        if self.state is CLOSED and not self._failures:
            return
        with self._lock:
            self._failures = 0
            if self.state is not CLOSED:
                self.state = CLOSED
                log.info("cache reachable again: circuit breaker closed")

    def failure(self, *, at_once: bool = False) -> None:
        """A call failed; at_once (the cache is unreachable: refused, timed out) opens
        the breaker now, so that no more than one call pays the client's timeout."""
        at_once = at_once and self._threshold < sys.maxsize  # breaker=None: never opens
        with self._lock:
            self._failures += 1
            if self.state is HALF_OPEN or (
                self.state is CLOSED and (at_once or self._failures >= self._threshold)
            ):
                if self.state is CLOSED:
                    log.warning(
                        "cache %s: circuit breaker open, the database answers alone; "
                        "probing it every %.1f s",
                        "unreachable" if at_once else f"failed {self._failures} times in a row",
                        self._cooldown,
                    )
                self.state = OPEN
                self._opened_at = self._timer()
