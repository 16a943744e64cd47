"""OpenTelemetry metrics: the cache's counters as observable instruments.

``pip install "sqlmodel-cache[otel]"``, then once at startup::

    from sqlmodel_cache.otel import instrument

    instrument()  # or instrument(meter_provider=provider)

The instruments are read from the counters ``SQLModelCache.stats()`` shows, when the
metrics are collected: nothing is added to a get. They count since ``configure()``
(``stats(reset=True)`` does not touch them); a new ``configure()`` starts them again
from zero, which backends read as a counter reset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from . import __version__, _runtime
from ._stats import ModelStats

__all__ = ["instrument"]

_instrumented: set[int] = set()  # the meter providers given instruments (by id)


def _counts(read: Callable[[ModelStats], Iterable[tuple[int, dict[str, str]]]]) -> Any:
    """A callback observing, per model, what read takes from its counts."""

    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        runtime = _runtime.current
        if runtime is None:
            return
        for name, counts in runtime.stats.raw().items():
            for value, attributes in read(counts):
                yield Observation(value, {"model": name, **attributes})

    return observe


def _hits(c: ModelStats) -> Iterable[tuple[int, dict[str, str]]]:
    yield c.l1_hits, {"tier": "l1"}
    yield c.hits - c.l1_hits, {"tier": "l2"}


def _field(name: str) -> Callable[[ModelStats], Iterable[tuple[int, dict[str, str]]]]:
    def read(c: ModelStats) -> Iterable[tuple[int, dict[str, str]]]:
        yield getattr(c, name), {}

    return read


def _reasons(name: str) -> Callable[[ModelStats], Iterable[tuple[int, dict[str, str]]]]:
    def read(c: ModelStats) -> Iterable[tuple[int, dict[str, str]]]:
        for reason, count in getattr(c, name).items():
            yield count, {"reason": reason}

    return read


def _breaker_open(_options: CallbackOptions) -> Iterable[Observation]:
    runtime = _runtime.current
    if runtime is not None:
        yield Observation(int(runtime.breaker.state != "closed"))


_COUNTERS = (
    ("hits", _hits, "gets answered by the cache, by tier"),
    ("misses", _field("misses"), "gets the cache could not answer"),
    ("fills", _field("fills"), "rows stored in the cache"),
    ("invalidations", _field("invalidations"), "entries invalidated by commits"),
    ("errors", _field("errors"), "cache calls that failed (the database answered)"),
    ("bypasses", _reasons("bypasses"), "gets that did not read the cache, by reason"),
    ("unfilled", _reasons("unfilled"), "misses whose row was not stored, by reason"),
)


def instrument(meter_provider: metrics.MeterProvider | None = None) -> None:
    """Register the cache's instruments with meter_provider (the global one by default);
    once per provider."""
    if id(meter_provider) in _instrumented:
        return
    _instrumented.add(id(meter_provider))
    meter = metrics.get_meter("sqlmodel_cache", __version__, meter_provider=meter_provider)
    for name, read, description in _COUNTERS:
        meter.create_observable_counter(
            f"sqlmodel_cache.{name}", callbacks=[_counts(read)], description=description
        )
    meter.create_observable_gauge(
        "sqlmodel_cache.breaker_open",
        callbacks=[_breaker_open],
        description="1 while the circuit breaker keeps the cache out of use",
    )
