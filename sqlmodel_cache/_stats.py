"""Counters of what the cache did, per model: all counting goes through ``Stats``.

Besides hits, misses and fills, two maps say why the cache was not used:
``bypasses[reason]`` counts gets answered by the database without reading the
cache at all (the model is disabled, the call said ``cache=False``, the load
had loader options...), and ``unfilled[reason]`` counts misses whose row was
not stored (a value with no exact form, a snapshot older than the lease...).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

import attrs

log = logging.getLogger("sqlmodel_cache")
_debug = log.isEnabledFor  # logging caches the answer per level: one dict lookup a get
DEBUG = logging.DEBUG

_FIELDS = ("hits", "l1_hits", "misses", "fills", "invalidations", "errors", "too_large")


class Counters:
    """Mutable counters of one model; plain int attributes so counting stays cheap."""

    __slots__ = (*_FIELDS, "bypasses", "unfilled")

    def __init__(self) -> None:
        self.hits = self.l1_hits = self.misses = 0
        self.fills = self.invalidations = self.errors = self.too_large = 0
        self.bypasses: dict[str, int] = {}
        self.unfilled: dict[str, int] = {}

    def snapshot(self) -> ModelStats:
        return ModelStats(
            **{name: getattr(self, name) for name in _FIELDS},
            bypasses=dict(self.bypasses),
            unfilled=dict(self.unfilled),
        )


def _add(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for reason, count in counts.items():
        into[reason] = into.get(reason, 0) + count


@attrs.frozen
class ModelStats:
    """Counts for one model (or the totals).

    ``hits`` include ``l1_hits``; ``too_large`` counts rows not cached for
    exceeding max_entry_bytes (also in ``unfilled``); ``bypasses`` and
    ``unfilled`` map each reason the cache was not used to how often.
    """

    hits: int = 0
    l1_hits: int = 0
    misses: int = 0
    fills: int = 0
    invalidations: int = 0
    errors: int = 0
    too_large: int = 0
    bypasses: Mapping[str, int] = attrs.field(factory=dict)
    unfilled: Mapping[str, int] = attrs.field(factory=dict)

    @property
    def bypassed(self) -> int:
        """Gets answered by the database without reading the cache, for any reason."""
        return sum(self.bypasses.values())


@attrs.frozen
class CacheStats(ModelStats):
    """Totals, ``by_model["Hero"]`` with the same fields, and the circuit breaker's state
    ("closed", "open" or "half-open")."""

    by_model: Mapping[str, ModelStats] = attrs.field(factory=dict)
    breaker: str = "closed"


class Stats:
    """All counters of one configuration."""

    def __init__(self) -> None:
        self._models: dict[str, Counters] = {}
        self._lock = threading.Lock()
        self.unattributed = Counters()  # errors not tied to one model
        # The counts at the last snapshot(reset=True), by model (None: unattributed):
        # counters only grow, so that metrics read from them stay monotonic.
        self._base: dict[str | None, ModelStats] = {}

    def for_model(self, name: str) -> Counters:
        counters = self._models.get(name)
        if counters is None:
            with self._lock:
                counters = self._models.setdefault(name, Counters())
        return counters

    def hit(self, name: str, key: str, *, l1: bool = False) -> None:
        counters = self.for_model(name)
        counters.hits += 1
        if l1:
            counters.l1_hits += 1
        if _debug(DEBUG):
            log.debug("get %s: %s hit", key, "L1" if l1 else "L2")

    def miss(self, name: str, key: str) -> None:
        self.for_model(name).misses += 1
        if _debug(DEBUG):
            log.debug("get %s: miss", key)

    def fill(self, name: str) -> None:
        self.for_model(name).fills += 1

    def invalidated(self, name: str) -> None:
        self.for_model(name).invalidations += 1

    def error(self, name: str | None) -> None:
        (self.for_model(name) if name else self.unattributed).errors += 1

    def bypass(self, name: str, reason: str) -> None:
        """A get the database answered without the cache being read."""
        bypasses = self.for_model(name).bypasses
        bypasses[reason] = bypasses.get(reason, 0) + 1
        if _debug(DEBUG):
            log.debug("get of %s: bypassed (%s)", name, reason)

    def unfilled(self, name: str, reason: str) -> None:
        """A miss whose row was not stored."""
        counters = self.for_model(name)
        counters.unfilled[reason] = counters.unfilled.get(reason, 0) + 1
        if reason == "too_large":
            counters.too_large += 1

    def raw(self) -> dict[str, ModelStats]:
        """Every model's counts since configure(), never reset (what metrics export)."""
        return {name: c.snapshot() for name, c in list(self._models.items())}

    def snapshot(self, breaker: str = "closed", *, reset: bool = False) -> CacheStats:
        """The counts since configure() or the last reset; reset starts them from zero."""
        raw = self.raw()
        unattributed = self.unattributed.snapshot()
        base = self._base
        by_model = {name: _minus(counts, base.get(name)) for name, counts in raw.items()}
        parts = [*by_model.values(), _minus(unattributed, base.get(None))]
        if reset:
            self._base = {name: counts for name, counts in raw.items()}
            self._base[None] = unattributed
        totals = {name: sum(getattr(p, name) for p in parts) for name in _FIELDS}
        bypasses: dict[str, int] = {}
        unfilled: dict[str, int] = {}
        for part in parts:
            _add(bypasses, part.bypasses)
            _add(unfilled, part.unfilled)
        return CacheStats(
            **totals, bypasses=bypasses, unfilled=unfilled, by_model=by_model, breaker=breaker
        )


def _minus(now: ModelStats, before: ModelStats | None) -> ModelStats:
    """The counts of now since before."""
    if before is None:
        return now
    return ModelStats(
        **{name: getattr(now, name) - getattr(before, name) for name in _FIELDS},
        bypasses=_since(now.bypasses, before.bypasses),
        unfilled=_since(now.unfilled, before.unfilled),
    )


def _since(now: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {
        reason: n - before.get(reason, 0) for reason, n in now.items() if n > before.get(reason, 0)
    }
