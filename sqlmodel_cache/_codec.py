"""Row payloads: JSON data in a versioned envelope, never pickle.

An entry is ``[VERSION, fingerprint, v1, v2, ...]`` with one value per cached
column, in a fixed order. The fingerprint names the model and every column
with its SQL type, so an entry written for another shape of the model is
not read as this one.

Values describe themselves, so what a column really loads decides how it is
stored, whatever its declared type claims (a TypeDecorator may load anything):
``str``, ``int``, ``float``, ``bool`` and ``None`` are stored as themselves;
every other value as ``[tag, ...]``, a list whose first item names its type
(``["dt", "2024-05-01T12:00:00+00:00"]``, ``["u", "<hex>"]``, ``["j", <JSON
data>]``...). Decoding gives back an equal value of the identical type. A value
with no exact form (an unknown class, a pytz zone, JSON nested deeper than
``MAX_DEPTH``) raises ``Unencodable`` naming its column: the row is then served
from the database, never approximately cached.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import hashlib
import ipaddress
import json
import marshal
import re
import uuid
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from types import CodeType
from typing import Any

from sqlalchemy.types import TypeDecorator, TypeEngine

VERSION = 2
MAX_DEPTH = 100  # nesting levels of lists and dicts a cached value may have

Decoder = Callable[[list[Any], dict[str, type[enum.Enum]]], Any]


class Unencodable(Exception):
    """A value has no exact representation in a payload."""

    def __init__(self, reason: str, column: str | None = None) -> None:
        super().__init__(reason if column is None else f"column {column}: {reason}")
        self.reason = reason
        self.column = column


class _Absent:
    """A column the load did not fetch (a subclass column loaded on access)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()
_PLAIN = frozenset({str, int, float, bool, type(None)})
_MUTABLE = (list, dict)


def _type_name(kind: type) -> str:
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


# -- encoding ------------------------------------------------------------------------------


def _datetime(value: dt.datetime) -> list[Any]:
    zone = value.tzinfo
    if type(zone) is zoneinfo.ZoneInfo and zone.key:
        return ["dz", value.isoformat(), zone.key]  # decoding keeps the wall time and fold
    if value.fold:
        raise Unencodable("a datetime with fold=1 outside a named zone")
    if zone is None or (type(zone) is dt.timezone and _unnamed(zone)):
        return ["dt", value.isoformat()]
    if type(zone) is dt.timezone:
        return ["dn", value.isoformat(), zone.tzname(None)]
    raise Unencodable(f"a datetime with tzinfo {_type_name(type(zone))}")


def _unnamed(zone: dt.timezone) -> bool:
    return zone.tzname(None) == dt.timezone(zone.utcoffset(None)).tzname(None)


def _time(value: dt.time) -> list[Any]:
    zone = value.tzinfo
    if value.fold or not (zone is None or (type(zone) is dt.timezone and _unnamed(zone))):
        raise Unencodable(f"a time with tzinfo {_type_name(type(zone))} or fold=1")
    return ["t", value.isoformat()]


def _enum_tag(value: enum.Enum, enums: dict[str, type[enum.Enum]]) -> list[Any]:
    cls = type(value)
    name = value.name
    if name is None or cls.__members__.get(name) is not value:
        raise Unencodable(f"{_type_name(cls)} value {value!r} has no member name")
    class_id = cls.__qualname__  # not the module: a script's __main__ must read a worker's entries
    if enums.get(class_id) is not cls:
        enums[class_id] = cls  # learnt from a load: decodable in this process from now on
    return ["e", class_id, name]


_TAGGERS: dict[type, Callable[[Any], list[Any]]] = {
    dt.datetime: _datetime,
    dt.date: lambda v: ["d", v.isoformat()],
    dt.time: _time,
    dt.timedelta: lambda v: ["td", v.days, v.seconds, v.microseconds],
    decimal.Decimal: lambda v: ["n", str(v)],
    uuid.UUID: lambda v: ["u", v.hex],
    bytes: lambda v: ["b", base64.b64encode(v).decode()],
    ipaddress.IPv4Address: lambda v: ["ip4", str(v)],
    ipaddress.IPv6Address: lambda v: ["ip6", str(v)],
    ipaddress.IPv4Interface: lambda v: ["if4", str(v)],
    ipaddress.IPv6Interface: lambda v: ["if6", str(v)],
    ipaddress.IPv4Network: lambda v: ["nw4", str(v)],
    ipaddress.IPv6Network: lambda v: ["nw6", str(v)],
}


def _json_data(value: Any) -> bool:
    """Whether value is plain JSON data (dicts with str keys, lists, scalars); no recursion.

    Raises Unencodable past MAX_DEPTH levels, so nothing later recurses deeper.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Unencodable(f"data nested deeper than {MAX_DEPTH} levels")
        children = item.values() if type(item) is dict else item
        if type(item) is dict and not all(type(k) is str for k in item):
            return False
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind not in _PLAIN:
                return False
    return True


def encode_value(value: Any, enums: dict[str, type[enum.Enum]], depth: int = 0) -> Any:
    """The payload form of one value; raises Unencodable when it has no exact form."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    tagger = _TAGGERS.get(kind)
    if tagger is not None:
        return tagger(value)
    if kind is list or kind is dict:
        if _json_data(value):
            return ["j", value]
        if depth >= MAX_DEPTH:
            raise Unencodable(f"data nested deeper than {MAX_DEPTH} levels")
        if kind is list:
            return ["l", [encode_value(v, enums, depth + 1) for v in value]]
        if not all(type(k) is str for k in value):
            raise Unencodable("a dict with keys that are not str")
        return ["o", {k: encode_value(v, enums, depth + 1) for k, v in value.items()}]
    if kind is tuple:
        if depth >= MAX_DEPTH or any(type(v) in _MUTABLE for v in value):
            raise Unencodable("a tuple holding lists or dicts")
        return ["tu", [encode_value(v, enums, depth + 1) for v in value]]
    if value is ABSENT:
        return ["~"]
    if isinstance(value, enum.Enum):
        return _enum_tag(value, enums)
    if isinstance(value, uuid.UUID):
        # asyncpg loads its own subclass; psycopg, in another process, loads uuid.UUID from
        # the same entry. Served as uuid.UUID (equal; Uuid's python_type).
        return ["u", value.hex]
    raise Unencodable(f"{_type_name(kind)} values have no exact form")


# -- decoding ------------------------------------------------------------------------------


def _decode_datetime(item: list[Any], _: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(item[1])


def _decode_zoned(item: list[Any], _: Any) -> dt.datetime:
    # Going through the instant keeps the wall time and fold of the named zone.
    return dt.datetime.fromisoformat(item[1]).astimezone(zoneinfo.ZoneInfo(item[2]))


def _decode_named(item: list[Any], _: Any) -> dt.datetime:
    value = dt.datetime.fromisoformat(item[1])
    offset = value.utcoffset()
    assert offset is not None
    return value.replace(tzinfo=dt.timezone(offset, item[2]))


def _decode_enum(item: list[Any], enums: dict[str, type[enum.Enum]]) -> enum.Enum:
    return enums[item[1]].__members__[item[2]]  # an unknown class or member is a miss


def _decode_list(item: list[Any], enums: dict[str, type[enum.Enum]]) -> list[Any]:
    return [v if type(v) is not list else _decode(v, enums) for v in item[1]]


def _decode_dict(item: list[Any], enums: dict[str, type[enum.Enum]]) -> dict[str, Any]:
    return {k: v if type(v) is not list else _decode(v, enums) for k, v in item[1].items()}


def _decode_tuple(item: list[Any], enums: dict[str, type[enum.Enum]]) -> tuple[Any, ...]:
    return tuple(v if type(v) is not list else _decode(v, enums) for v in item[1])


def _from_text(make: Callable[[str], Any]) -> Decoder:
    return lambda item, _: make(item[1])


_DECODERS: dict[str, Decoder] = {
    "dt": _decode_datetime,
    "dz": _decode_zoned,
    "dn": _decode_named,
    "d": _from_text(dt.date.fromisoformat),
    "t": _from_text(dt.time.fromisoformat),
    "td": lambda item, _: dt.timedelta(days=item[1], seconds=item[2], microseconds=item[3]),
    "n": _from_text(decimal.Decimal),
    "u": _from_text(lambda text: uuid.UUID(hex=text)),
    "b": _from_text(base64.b64decode),
    "ip4": _from_text(ipaddress.IPv4Address),
    "ip6": _from_text(ipaddress.IPv6Address),
    "if4": _from_text(ipaddress.IPv4Interface),
    "if6": _from_text(ipaddress.IPv6Interface),
    "nw4": _from_text(ipaddress.IPv4Network),
    "nw6": _from_text(ipaddress.IPv6Network),
    "j": lambda item, _: item[1],
    "l": _decode_list,
    "o": _decode_dict,
    "tu": _decode_tuple,
    "e": _decode_enum,
    "~": lambda item, _: ABSENT,
}


def _decode(item: list[Any], enums: dict[str, type[enum.Enum]]) -> Any:
    return _DECODERS[item[0]](item, enums)


# -- copies of mutable values ---------------------------------------------------------------


def mutable_positions(values: Sequence[Any]) -> tuple[int, ...]:
    """Where values holds lists or dicts: what a shared copy of the row must not share."""
    return tuple(i for i, v in enumerate(values) if type(v) in _MUTABLE)


def copy_data(value: Any) -> Any:
    """A deep copy of lists and dicts (tuples and scalars are shared), without recursion."""
    if type(value) not in _MUTABLE:
        return value
    root: Any = [] if type(value) is list else {}
    stack = [(value, root)]
    while stack:
        source, target = stack.pop()
        items = source.items() if type(source) is dict else enumerate(source)
        is_list = type(target) is list
        for key, child in items:
            kind = type(child)
            copy: Any = child
            if kind is list or kind is dict:
                copy = [] if kind is list else {}
                stack.append((child, copy))
            if is_list:
                target.append(copy)
            else:
                target[key] = copy
    return root


class _Frozen(bytes):
    """A list or dict of plain JSON data, kept marshalled: a fraction of the memory its
    objects take, and marshal.loads makes a private copy faster than copy_data (or
    json.loads). Only this process ever reads it: nothing marshalled leaves L1."""

    __slots__ = ()


def _frozen(value: Any) -> Any:
    try:
        plain = _json_data(value)
    except Unencodable:
        plain = False
    return _Frozen(marshal.dumps(value)) if plain else copy_data(value)


def freeze(values: list[Any], positions: tuple[int, ...]) -> list[Any]:
    """A private copy of values to keep (in L1, for followers): the lists and dicts at
    positions copied, marshalled when they are plain JSON. thaw() gives them back."""
    if not positions:
        return values
    kept = list(values)
    for i in positions:
        kept[i] = _frozen(kept[i])
    return kept


_thawed = marshal.loads


def thaw(values: list[Any], positions: tuple[int, ...]) -> list[Any]:
    """values (as freeze() keeps them), with private copies of the lists and dicts at positions."""
    if not positions:
        return values
    copied = list(values)
    for i in positions:
        value = copied[i]
        copied[i] = _thawed(value) if type(value) is _Frozen else copy_data(value)
    return copied


# -- the row codec ------------------------------------------------------------------------

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def type_signature(sa_type: TypeEngine[Any]) -> str:
    """The column type as the fingerprint sees it: class, arguments and enum class.

    Classes are named without their module, so that processes that import the
    same model differently (a script run as __main__, another service) agree.

    A TypeDecorator's result-processing code is part of it: a deploy that
    changes what the type loads must not read entries of the old shape.
    """
    kind = type(sa_type)
    parts = [f"{kind.__qualname__}:{sa_type!r}"]
    enum_class = getattr(sa_type, "enum_class", None)
    if enum_class is not None:
        parts.append(enum_class.__qualname__)
    for cls in kind.__mro__:
        if cls is TypeDecorator or not issubclass(cls, TypeDecorator):
            continue
        for name in ("process_result_value", "result_processor"):
            code = getattr(cls.__dict__.get(name), "__code__", None)
            if code is not None:
                parts.append(_code_digest(code))
    return _ADDRESS.sub("", ":".join(parts))


def _code_digest(code: CodeType) -> str:
    """A digest of what a function does, the same in every process that has its source
    (no addresses, file paths or line numbers)."""
    digest = hashlib.blake2b(code.co_code, digest_size=8)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        text = _code_digest(const) if isinstance(const, CodeType) else repr(const)
        digest.update(text.encode())
    return digest.hexdigest()


def declared_enums(sa_type: TypeEngine[Any]) -> Iterator[type[enum.Enum]]:
    """The Enum classes a column's type names (through TypeDecorators and ARRAY items)."""
    stack: list[Any] = [sa_type]
    while stack:
        current = stack.pop()
        enum_class = getattr(current, "enum_class", None)
        if isinstance(enum_class, type) and issubclass(enum_class, enum.Enum):
            yield enum_class
        if isinstance(current, TypeDecorator):
            stack.append(current.impl_instance)
        item = getattr(current, "item_type", None)
        if isinstance(item, TypeEngine):
            stack.append(item)


_loads = json.JSONDecoder().decode


def parse(data: bytes | str) -> list[Any] | None:
    """The envelope of a payload, ``[VERSION, fingerprint, ...]``, or None if it is not one."""
    try:
        entry = _loads(data if type(data) is str else data.decode())  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - garbage, or nested past the recursion limit
        return None
    if type(entry) is not list or len(entry) < 2 or entry[0] != VERSION:
        return None
    return entry


class RowCodec:
    """Encodes and decodes the cached column values of one model."""

    __slots__ = ("_dumps", "_enums", "_length", "columns", "fingerprint")

    def __init__(self, shape: str, columns: Sequence[tuple[str, TypeEngine[Any]]]) -> None:
        self.columns = tuple(name for name, _ in columns)
        signature = [(name, type_signature(sa_type)) for name, sa_type in columns]
        text = repr((VERSION, shape, signature))
        self.fingerprint = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
        self._enums: dict[str, type[enum.Enum]] = {
            cls.__qualname__: cls for _, sa_type in columns for cls in declared_enums(sa_type)
        }
        self._length = len(columns) + 2
        self._dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def encode(self, values: Sequence[Any]) -> bytes:
        """Return the payload of one row; raise Unencodable when it has no exact form."""
        out: list[Any] = [VERSION, self.fingerprint]
        enums = self._enums
        for name, value in zip(self.columns, values):
            if type(value) in _PLAIN:
                out.append(value)
                continue
            try:
                out.append(encode_value(value, enums))
            except Unencodable as exc:
                raise Unencodable(exc.reason, name) from None
        try:
            return self._dumps(out).encode()
        except (ValueError, UnicodeEncodeError) as exc:
            raise self._culprit(values, exc) from None

    def _culprit(self, values: Sequence[Any], exc: Exception) -> Unencodable:
        """The Unencodable naming the column whose value JSON could not take."""
        for name, value in zip(self.columns, values):
            try:
                self._dumps(encode_value(value, {})).encode()
            except (ValueError, UnicodeEncodeError, Unencodable) as failure:
                return Unencodable(str(failure), name)
        return Unencodable(str(exc))

    def values(self, entry: list[Any]) -> list[Any] | None:
        """The column values of a parsed entry with this codec's fingerprint, or None."""
        if len(entry) != self._length:
            return None
        enums = self._enums
        try:
            return [v if type(v) is not list else _decode(v, enums) for v in entry[2:]]
        except Exception:  # noqa: BLE001 - anything undecodable is simply a miss
            return None

    def decode(self, data: bytes | str) -> list[Any] | None:
        """Return the column values of a payload, or None when it is not a valid entry."""
        entry = parse(data)
        if entry is None or entry[1] != self.fingerprint:
            return None
        return self.values(entry)
