"""Payload codec and key format, without I/O."""

import datetime as dt
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.types import TypeEngine

from sqlmodel_cache._codec import RowCodec, Unencodable
from sqlmodel_cache._keys import KeyTemplate, key_part

COLUMNS: list[tuple[str, TypeEngine[Any]]] = [
    ("id", sa.Integer()),
    ("name", sa.String()),
    ("at", sa.DateTime(timezone=True)),
]


def codec() -> RowCodec:
    return RowCodec("hero", COLUMNS)


def test_round_trip():
    values = [1, "a", dt.datetime(2020, 1, 1, tzinfo=dt.UTC)]
    assert codec().decode(codec().encode(values)) == values
    assert codec().decode(codec().encode(values).decode()) == values  # decode_responses=True


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x81garbage",
        b"not json",
        b"{}",
        b"null",
        b'"a string"',
        b"[1]",
        b'[1, "0000", 1, "a", null]',  # wrong fingerprint
        b"[" + b"1," * 100_000 + b"1]",  # far larger than any entry
    ],
)
def test_anything_else_decodes_as_a_miss(data):
    assert codec().decode(data) is None


def test_wrong_shapes_with_a_valid_envelope_are_misses():
    good = codec().encode([1, "a", None])
    head = good[: good.index(b",", good.index(b",") + 1)]  # '[1,"<fingerprint>"'
    for body in (b',"1","a",null]', b",1,2,null]", b',1,"a",5]', b',1,"a"]', b',1,"a",null,null]'):
        assert codec().decode(head + body) is None, body
    assert codec().decode(head + b',1,"a",null]') == [1, "a", None]


def test_another_schema_version_is_a_miss():
    old = RowCodec("hero", COLUMNS[:2]).encode([1, "a"])
    assert codec().decode(old) is None
    renamed = RowCodec("hero", [COLUMNS[0], ("title", sa.String()), COLUMNS[2]])
    assert codec().decode(renamed.encode([1, "a", None])) is None


@pytest.mark.parametrize(
    "values",
    [
        ["1", "a", None],  # str in an int column
        [True, "a", None],  # bool is not an int
        [1, "a", dt.date(2020, 1, 1)],  # a date is not a datetime
        [1, "\ud800", None],  # lone surrogate
    ],
)
def test_values_without_an_exact_encoding_are_refused(values):
    with pytest.raises(Unencodable):
        codec().encode(values)


def test_json_columns_accept_only_plain_json_data():
    json_codec = RowCodec("t", [("data", sa.JSON())])
    assert json_codec.decode(json_codec.encode([{"a": [1, None]}])) == [{"a": [1, None]}]
    for value in ({"a": (1, 2)}, {1: "int key"}, {"a": {1, 2}}, [uuid.uuid4()]):
        with pytest.raises(Unencodable):
            json_codec.encode([value])


def test_key_format():
    assert "sqlmodelcache:" + KeyTemplate("Hero", ["id"]).body([42]) == "sqlmodelcache:Hero:id=42"
    body = KeyTemplate("OrderItem", ["product_id", "order_id"]).body([5, 1])
    assert body == "OrderItem:order_id=1:product_id=5"  # sorted by name, values follow
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert KeyTemplate("T", ["id"]).body([ident]) == f"T:id={ident}"


TRICKY = [
    "",
    "a",
    "a:b",
    "a=b",
    "a%b",
    "a%3Ab",
    "%",
    "%25",
    ":",
    "=",
    "a\nb",
    "a\x00",
    "a\x7f",
    "1",
    " ",
    "a b",
    "é",
    "☃",
]


def test_escaping_never_collides():
    parts = [key_part(value) for value in TRICKY]
    assert len(set(parts)) == len(parts)
    for part in parts:
        assert ":" not in part and "=" not in part
        assert all(ch.isprintable() for ch in part)


def test_composite_keys_never_collide():
    template = KeyTemplate("M", ["a", "b"])
    bodies = {template.body([x, y]) for x in TRICKY for y in TRICKY}
    assert len(bodies) == len(TRICKY) ** 2
