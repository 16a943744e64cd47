"""The rows a transaction wrote: what its commit must invalidate."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._registry import ModelInfo
    from ._runtime import Runtime


class Writes:
    """Key bodies per model, and models whose touched rows are unknown (all of them go)."""

    __slots__ = ("_rows", "_whole")

    def __init__(self) -> None:
        self._rows: dict[ModelInfo, set[str]] = {}
        self._whole: set[ModelInfo] = set()

    def __bool__(self) -> bool:
        return bool(self._rows or self._whole)

    def add(self, info: ModelInfo, body: str) -> None:
        self._rows.setdefault(info, set()).add(body)

    def add_model(self, info: ModelInfo) -> None:
        self._whole.add(info)

    def touches(self, info: ModelInfo, body: str) -> bool:
        """Whether this transaction wrote (or may have written) that row."""
        return info in self._whole or body in self._rows.get(info, ())

    def models(self) -> Iterable[ModelInfo]:
        return self._rows.keys() | self._whole

    def merge(self, other: Writes, info: ModelInfo) -> None:
        """Take over other's writes to one model."""
        if info in other._whole:
            self._whole.add(info)
        self._rows.setdefault(info, set()).update(other._rows.get(info, ()))

    def invalidate(self, runtime: Runtime) -> None:
        runtime.invalidate((info, body) for info, bodies in self._rows.items() for body in bodies)
        if self._whole:
            runtime.invalidate_models(self._whole)
