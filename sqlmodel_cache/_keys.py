"""Cache keys: ``{prefix}:{Model}:{field}={value}[:{field}={value}...]``.

Values are percent-escaped so that no two different identities share a key:
``%`` (the escape itself), ``:`` and ``=`` (the separators) and control
characters are written as ``%XX``. Ints and UUIDs never need escaping and stay
readable.
"""

from __future__ import annotations

import decimal
import re
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.types import TypeDecorator, TypeEngine

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


def loaded_type(sa_type: TypeEngine[Any]) -> type | None:
    """The Python type a column loads, when its SQL type says (through a TypeDecorator that
    does not change what its implementation loads); None when it does not."""
    current: Any = sa_type
    while True:
        try:
            found = current.python_type
        except NotImplementedError:
            found = None
        if isinstance(found, type) and found is not object:
            return found
        if not isinstance(current, TypeDecorator) or _transforms(type(current)):
            return None
        current = current.impl_instance


def _transforms(kind: type) -> bool:
    """Whether a TypeDecorator class turns loaded values into something of its own."""
    return any(
        name in cls.__dict__
        for cls in kind.__mro__
        if cls is not TypeDecorator and issubclass(cls, TypeDecorator)
        for name in ("process_result_value", "result_processor")
    )


_INTEGER = re.compile(r"[+-]?[0-9]+")


def canonical(value: Any, kind: type | None) -> Any:
    """value as a key column of Python type kind holds it, converted the way the database
    would compare them (a UUID given as text, an int as a numeric string); raises
    ValueError when value cannot name such a key."""
    if kind is None or type(value) is kind:
        return value
    if type(value) is bool:
        raise ValueError("a bool is not a key value")
    if isinstance(value, kind):
        return value
    if kind is uuid.UUID:
        if isinstance(value, str):
            return uuid.UUID(value)  # any case, with or without dashes or braces
        if isinstance(value, bytes) and len(value) == 16:
            return uuid.UUID(bytes=value)
    elif kind is int:
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            return int(value)
        if isinstance(value, (float, decimal.Decimal)) and value == int(value):
            return int(value)
    elif kind is decimal.Decimal and isinstance(value, (int, str)):
        return decimal.Decimal(value)
    raise ValueError(f"{value!r} is not a {kind.__name__}")
