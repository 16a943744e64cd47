"""Row payloads: JSON data in a versioned envelope, never pickle.

An entry is ``[VERSION, fingerprint, v1, v2, ...]`` with one value per cached
column, in a fixed order. The fingerprint names the table and every column with
its kind, so an entry written by another version of the model is a miss. Each
column gets its value codec once, from its SQL type, when the model is first
used; a value the codec cannot represent exactly makes the row uncacheable
rather than approximately cached.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import hashlib
import json
import uuid
import zoneinfo
from collections.abc import Callable, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.types import TypeEngine

VERSION = 1

Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]


class Unencodable(Exception):
    """A value has no exact representation in a payload."""


def _exact(*types: type) -> tuple[Encoder, Decoder]:
    """Values of exactly these types pass through JSON unchanged."""

    def check(value: Any) -> Any:
        if type(value) not in types:
            raise Unencodable(type(value).__name__)
        return value

    return check, check


def _json_native(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return True
    if kind is list:
        return all(map(_json_native, value))
    if kind is dict:
        return all(type(k) is str and _json_native(v) for k, v in value.items())
    return False


def _encode_json(value: Any) -> Any:
    # Tuples, sets or custom objects would come back as something else.
    if not _json_native(value):
        raise Unencodable("not plain JSON data")
    return value


def _decode_json(value: Any) -> Any:
    return value


def _encode_datetime(value: Any) -> Any:
    if type(value) is not dt.datetime:
        raise Unencodable(type(value).__name__)
    zone = value.tzinfo
    if zone is None or type(zone) is dt.timezone:
        return value.isoformat()
    if type(zone) is zoneinfo.ZoneInfo:
        return [value.isoformat(), zone.key]
    raise Unencodable(f"tzinfo {type(zone).__name__}")


def _decode_datetime(value: Any) -> Any:
    if type(value) is str:
        return dt.datetime.fromisoformat(value)
    text, zone = value
    # Going through the instant keeps the wall time and fold of the named zone.
    return dt.datetime.fromisoformat(text).astimezone(zoneinfo.ZoneInfo(zone))


def _encode_iso(kind: type) -> Encoder:
    def encode(value: Any) -> Any:
        if type(value) is not kind:
            raise Unencodable(type(value).__name__)
        zone = getattr(value, "tzinfo", None)
        if zone is not None and type(zone) is not dt.timezone:
            raise Unencodable(f"tzinfo {type(zone).__name__}")
        return cast(Any, value).isoformat()

    return encode


def _typed(kind: type, encode: Encoder, decode: Decoder) -> tuple[Encoder, Decoder]:
    def checked(value: Any) -> Any:
        if type(value) is not kind:
            raise Unencodable(type(value).__name__)
        return encode(value)

    return checked, decode


def _encode_timedelta(value: dt.timedelta) -> Any:
    return [value.days, value.seconds, value.microseconds]


def _decode_timedelta(value: Any) -> dt.timedelta:
    days, seconds, micros = value
    return dt.timedelta(days=days, seconds=seconds, microseconds=micros)


def _enum_codec(enum_class: type[enum.Enum]) -> tuple[Encoder, Decoder]:
    def encode(value: Any) -> Any:
        if type(value) is not enum_class:
            raise Unencodable(type(value).__name__)
        return value.name

    def decode(value: Any) -> Any:
        return enum_class[value]

    return encode, decode


_BY_PYTHON_TYPE: dict[type, tuple[str, tuple[Encoder, Decoder]]] = {
    bool: ("bool", _exact(bool)),
    int: ("int", _exact(int)),
    float: ("float", _exact(float)),
    str: ("str", _exact(str)),
    bytes: ("bytes", _typed(bytes, lambda v: base64.b64encode(v).decode(), base64.b64decode)),
    uuid.UUID: ("uuid", _typed(uuid.UUID, str, uuid.UUID)),
    decimal.Decimal: ("decimal", _typed(decimal.Decimal, str, decimal.Decimal)),
    dt.datetime: ("datetime", (_encode_datetime, _decode_datetime)),
    dt.date: ("date", (_encode_iso(dt.date), dt.date.fromisoformat)),
    dt.time: ("time", (_encode_iso(dt.time), dt.time.fromisoformat)),
    dt.timedelta: ("timedelta", _typed(dt.timedelta, _encode_timedelta, _decode_timedelta)),
}
_JSON = ("json", (_encode_json, _decode_json))


def column_codec(sa_type: TypeEngine[Any]) -> tuple[str, Encoder, Decoder]:
    """Choose the value codec of one column from its SQL type.

    The declared Python type picks the codec; every encoder checks the exact
    type it gets, so a TypeDecorator that loads something else is not cached.
    """
    if isinstance(sa_type, sa.JSON):
        return _JSON[0], *_JSON[1]
    try:
        python_type: Any = sa_type.python_type
    except NotImplementedError:
        python_type = None
    if isinstance(python_type, type) and issubclass(python_type, enum.Enum):
        members = ",".join(python_type.__members__)
        return (f"enum({members})", *_enum_codec(python_type))
    name, (encode, decode) = _BY_PYTHON_TYPE.get(python_type, _JSON)
    return name, encode, decode


class RowCodec:
    """Encodes and decodes the cached column values of one model."""

    __slots__ = ("_decoders", "_dumps", "_encoders", "_length", "_loads", "fingerprint", "kinds")

    def __init__(self, table: str, columns: Sequence[tuple[str, TypeEngine[Any]]]) -> None:
        codecs = [(attr, *column_codec(sa_type)) for attr, sa_type in columns]
        shape = repr((VERSION, table, [(attr, kind) for attr, kind, _, _ in codecs]))
        self.fingerprint = hashlib.blake2b(shape.encode(), digest_size=6).hexdigest()
        self.kinds = tuple(kind for _, kind, _, _ in codecs)
        self._encoders = [encode for _, _, encode, _ in codecs]
        self._decoders = [decode for _, _, _, decode in codecs]
        self._length = len(codecs) + 2
        self._dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        self._loads = json.JSONDecoder().decode

    def encode(self, values: Sequence[Any]) -> bytes:
        """Return the payload of one row; raise Unencodable when it has no exact form."""
        out: list[Any] = [VERSION, self.fingerprint]
        out.extend(None if v is None else enc(v) for enc, v in zip(self._encoders, values))
        try:
            return self._dumps(out).encode()
        except (TypeError, ValueError, UnicodeEncodeError) as exc:
            raise Unencodable(str(exc)) from exc

    def decode(self, data: bytes | str) -> list[Any] | None:
        """Return the column values of a payload, or None when it is not a valid entry."""
        try:
            entry = self._loads(data if type(data) is str else data.decode())  # type: ignore[union-attr]
            if (
                type(entry) is not list
                or len(entry) != self._length
                or entry[1] != self.fingerprint
                or entry[0] != VERSION
            ):
                return None
            return [None if v is None else dec(v) for dec, v in zip(self._decoders, entry[2:])]
        except Exception:  # noqa: BLE001 - anything undecodable is simply a miss
            return None
