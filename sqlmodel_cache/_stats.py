"""Counters of what the cache did, per model."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

_FIELDS = ("hits", "l1_hits", "misses", "fills", "invalidations", "errors", "too_large")


class Counters:
    """Mutable counters of one model; plain int attributes so counting stays cheap."""

    __slots__ = _FIELDS

    def __init__(self) -> None:
        self.hits = self.l1_hits = self.misses = 0
        self.fills = self.invalidations = self.errors = self.too_large = 0

    def snapshot(self) -> ModelStats:
        return ModelStats(*(getattr(self, name) for name in _FIELDS))


@attrs.frozen
class ModelStats:
    """Counts for one model (or the totals): hits include l1_hits; too_large counts rows
    not cached for exceeding max_entry_bytes."""

    hits: int = 0
    l1_hits: int = 0
    misses: int = 0
    fills: int = 0
    invalidations: int = 0
    errors: int = 0
    too_large: int = 0


@attrs.frozen
class CacheStats(ModelStats):
    """Totals, ``by_model["Hero"]`` with the same fields, and the circuit breaker's state
    ("closed", "open" or "half-open")."""

    by_model: Mapping[str, ModelStats] = attrs.field(factory=dict)
    breaker: str = "closed"


class Stats:
    """All counters of one configuration; `for_model` hands out a model's counters."""

    def __init__(self) -> None:
        self._models: dict[str, Counters] = {}
        self.unattributed = Counters()  # errors not tied to one model

    def for_model(self, name: str) -> Counters:
        counters = self._models.get(name)
        if counters is None:
            counters = self._models.setdefault(name, Counters())
        return counters

    def snapshot(self, breaker: str = "closed") -> CacheStats:
        by_model = {name: c.snapshot() for name, c in self._models.items()}
        parts = [*by_model.values(), self.unattributed.snapshot()]
        totals = {name: sum(getattr(p, name) for p in parts) for name in _FIELDS}
        return CacheStats(**totals, by_model=by_model, breaker=breaker)
