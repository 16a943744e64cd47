"""Cache keys: ``{prefix}:{Model}:{field}={value}[:{field}={value}...]``.

Values are percent-escaped so that no two different identities share a key:
``%`` (the escape itself), ``:`` and ``=`` (the separators) and control
characters are written as ``%XX``. Ints and UUIDs never need escaping and stay
readable.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

_ESCAPES = {ord(c): f"%{ord(c):02X}" for c in "%:="}
_ESCAPES.update({i: f"%{i:02X}" for i in [*range(0x20), 0x7F]})


def key_part(value: Any) -> str:
    """Return the escaped text of one primary-key value."""
    kind = type(value)
    if kind is int or kind is uuid.UUID:
        return str(value)
    text = value if kind is str else str(value)
    return text.translate(_ESCAPES)


class KeyTemplate:
    """Builds the key body (``Model:field=value...``) of one model; the prefix is added at use."""

    __slots__ = ("_names", "_order")

    def __init__(self, class_name: str, field_names: Sequence[str]) -> None:
        # field_names follow the mapper's primary-key order; keys sort them by name.
        self._order = sorted(range(len(field_names)), key=lambda i: field_names[i])
        self._names = [
            f"{class_name}:{field_names[i]}=" if n == 0 else f":{field_names[i]}="
            for n, i in enumerate(self._order)
        ]

    def body(self, values: Sequence[Any]) -> str:
        """Return the key body for primary-key values given in mapper order."""
        if len(self._order) == 1:
            return self._names[0] + key_part(values[0])
        return "".join(name + key_part(values[i]) for name, i in zip(self._names, self._order))
