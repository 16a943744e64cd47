"""Payload codec and key format, without I/O."""

import datetime as dt
import decimal
import enum
import ipaddress
import sys
import uuid
import zoneinfo
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.types import TypeEngine

from sqlmodel_cache._codec import (
    MAX_DEPTH,
    RowCodec,
    Unencodable,
    copy_data,
    freeze,
    mutable_positions,
    thaw,
)
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
        b'[1, "0000", 1, "a", null]',  # an older version, wrong fingerprint
        b"[" + b"1," * 100_000 + b"1]",  # far larger than any entry
        b"[" * 100_000 + b"]" * 100_000,  # nested past any recursion limit
    ],
)
def test_anything_else_decodes_as_a_miss(data):
    assert codec().decode(data) is None


def test_malformed_values_in_a_valid_envelope_are_misses():
    good = codec().encode([1, "a", None])
    head = good[: good.index(b",", good.index(b",") + 1)]  # '[2,"<fingerprint>"'
    for body in (
        b',1,"a"]',  # too few values
        b',1,"a",null,null]',  # too many
        b',1,"a",["nope","x"]]',  # unknown tag
        b',1,"a",["dt"]]',  # tag without its data
        b',1,"a",["dt","not a date"]]',
        b',1,"a",["e","tests.Nope","A"]]',  # an enum class this process never saw
        b',1,"a",[]]',
    ):
        assert codec().decode(head + body) is None, body
    assert codec().decode(head + b',1,"a",null]') == [1, "a", None]


def test_another_schema_version_is_a_miss():
    old = RowCodec("hero", COLUMNS[:2]).encode([1, "a"])
    assert codec().decode(old) is None
    renamed = RowCodec("hero", [COLUMNS[0], ("title", sa.String()), COLUMNS[2]])
    assert codec().decode(renamed.encode([1, "a", None])) is None
    retyped = RowCodec("hero", [COLUMNS[0], ("name", sa.Integer()), COLUMNS[2]])
    assert codec().decode(retyped.encode([1, 5, None])) is None
    another_model = RowCodec("villain", COLUMNS)
    assert codec().decode(another_model.encode([1, "a", None])) is None


class Color(enum.Enum):
    RED = "r"
    BLUE = "b"


class Flags(enum.IntFlag):
    A = 1
    B = 2


class Shade(str, enum.Enum):  # noqa: UP042 - the way many models still write it
    DARK = "dark"


class Size(enum.StrEnum):
    BIG = "big"


VALUES = [
    0,
    -(2**70),
    1.5,
    -0.0,
    float("inf"),
    1e300,
    True,
    False,
    None,
    "",
    "héllo ☃ \x00 \n",
    dt.datetime(2024, 2, 29, 23, 59, 59, 123456),
    dt.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=dt.UTC),
    dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
    dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET")),
    dt.datetime(2024, 11, 3, 1, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York")),
    dt.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("America/New_York")),
    dt.date(1, 1, 1),
    dt.time(23, 59, 59, 999999),
    dt.time(12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.timedelta(days=-3, seconds=5, microseconds=7),
    decimal.Decimal("12345678.9012"),
    decimal.Decimal("-0"),
    decimal.Decimal("1E+3"),
    decimal.Decimal("NaN"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    b"",
    bytes(range(256)),
    ipaddress.IPv4Address("192.0.2.1"),
    ipaddress.IPv6Address("2001:db8::1"),
    ipaddress.IPv4Interface("192.0.2.1/24"),
    ipaddress.IPv6Interface("2001:db8::1/64"),
    ipaddress.IPv4Network("192.0.2.0/24"),
    ipaddress.IPv6Network("2001:db8::/32"),
    Color.BLUE,
    Flags.B,
    Shade.DARK,
    Size.BIG,
    {"list": [1, 2.5, "x", None, True], "nested": {"a": {"b": []}}, "empty": {}},
    [],
    [[1, 2], [3, 4]],
    [uuid.UUID(int=1), None],  # PostgreSQL ARRAY(UUID)
    [[decimal.Decimal("1.5")], [decimal.Decimal("-2")]],  # ARRAY(Numeric, dimensions=2)
    [ipaddress.IPv4Address("192.0.2.1")],  # ARRAY(INET)
    {"when": dt.date(2020, 1, 1), "tags": ("a", "b")},  # HSTORE-like or a TypeDecorator's dict
    (1, (2, "three")),  # ARRAY(as_tuple=True)
]


def _same(a, b) -> bool:
    """Equal and of the identical type, all the way down (NaN equals itself)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, decimal.Decimal) and a.is_nan():
        return str(a) == str(b)
    if isinstance(a, (dt.datetime, dt.time)):
        return (a, a.fold, a.tzname() if a.tzinfo else None) == (
            b,
            b.fold,
            b.tzname() if b.tzinfo else None,
        )
    return bool(a == b)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_every_value_round_trips_to_an_equal_value_of_the_identical_type(value):
    row = RowCodec("t", [("id", sa.Integer()), ("v", sa.PickleType()), ("e", sa.Enum(Color))])
    decoded = row.decode(row.encode([1, value, None]))
    assert decoded is not None
    assert _same(decoded[1], value), (decoded[1], value)


class Opaque:
    pass


class PytzLike(dt.tzinfo):
    def utcoffset(self, _):
        return dt.timedelta(hours=1)

    def dst(self, _):
        return None

    def tzname(self, _):
        return "X"


@pytest.mark.parametrize(
    "value",
    [
        Opaque(),
        {1, 2},
        "\ud800",  # a lone surrogate
        dt.datetime(2024, 1, 1, tzinfo=PytzLike()),
        dt.time(1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
        {1: "a key that is not a str", "b": uuid.UUID(int=1)},
        ([1],),  # a tuple holding a list: it could not be shared safely
        memoryview(b"x"),
    ],
    ids=repr,
)
def test_values_without_an_exact_form_are_refused_naming_the_column(value):
    row = RowCodec("t", [("id", sa.Integer()), ("payload", sa.PickleType())])
    with pytest.raises(Unencodable, match="column payload") as caught:
        row.encode([1, value])
    assert caught.value.column == "payload"


@pytest.mark.parametrize(
    "make", [lambda v: [v], lambda v: {"k": v}, lambda v: [v, uuid.UUID(int=1)]]
)
def test_data_nested_past_the_limit_is_refused_without_recursion(make):
    limit = sys.getrecursionlimit()
    value: object = 1
    for _ in range(limit * 3):  # deeper than Python could recurse
        value = make(value)
    row = RowCodec("t", [("data", sa.JSON())])
    with pytest.raises(Unencodable, match="nested deeper than"):
        row.encode([value])
    shallow: object = 1
    for _ in range(MAX_DEPTH - 1):
        shallow = [shallow]
    assert row.decode(row.encode([shallow])) == [shallow]


def test_copies_of_deep_data_share_nothing_and_need_no_recursion():
    value: Any = {"leaf": [1]}
    for _ in range(sys.getrecursionlimit() * 3):
        value = [value, {"k": "v"}]
    copied = copy_data(value)
    a, b = copied, value
    while isinstance(a, list):
        assert a is not b and a[1] == b[1] and a[1] is not b[1]
        a, b = a[0], b[0]
    assert a == b and a is not b and a["leaf"] is not b["leaf"]


def test_enums_decode_only_to_classes_the_process_knows():
    row = RowCodec("t", [("c", sa.Enum(Color))])
    assert row.decode(row.encode([Color.RED])) == [Color.RED]  # declared by the column type
    other = RowCodec("t", [("c", sa.Enum(Color))])
    payload = RowCodec("t", [("c", sa.Enum(Color))]).encode([Shade.DARK])  # learnt on encode
    assert other.decode(payload) is None  # another process that never loaded a Shade
    assert RowCodec("t", [("c", sa.Enum(Color))]).decode(payload) is None
    learner = RowCodec("t", [("c", sa.Enum(Color))])
    learner.encode([Shade.DARK])
    assert learner.decode(payload) == [Shade.DARK]


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


def test_a_type_decorator_that_loads_something_else_changes_the_fingerprint():
    def first_deploy() -> type[sa.types.TypeDecorator[Any]]:
        class Money(sa.types.TypeDecorator[Any]):
            impl = sa.Integer
            cache_ok = True

            def process_result_value(self, value: Any, dialect: Any) -> Any:
                return value

        Money.__qualname__ = "Money"  # the same class, deployed twice
        return Money

    def second_deploy() -> type[sa.types.TypeDecorator[Any]]:
        class Money(sa.types.TypeDecorator[Any]):
            impl = sa.Integer
            cache_ok = True

            def process_result_value(self, value: Any, dialect: Any) -> Any:
                return decimal.Decimal(value) / 100

        Money.__qualname__ = "Money"
        return Money

    before = RowCodec("t", [("m", first_deploy()())])
    assert before.fingerprint == RowCodec("t", [("m", first_deploy()())]).fingerprint
    assert before.fingerprint != RowCodec("t", [("m", second_deploy()())]).fingerprint


def test_the_same_model_imported_from_another_module_reads_the_same_entries():
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    from sqlmodel_cache import CacheConfig
    from sqlmodel_cache._registry import registry

    def declare(module: str) -> Any:
        class Models(DeclarativeBase):
            pass

        namespace = {
            "__module__": module,
            "__tablename__": "shared_model",
            "__cache_config__": CacheConfig(),
            "__annotations__": {"id": Mapped[int], "color": Mapped[Color]},
            "id": mapped_column(primary_key=True),
            "color": mapped_column(sa.Enum(Color)),
        }
        return type("SharedModel", (Models,), namespace)

    script, worker = declare("__main__"), declare("app.models")  # a script, a worker
    written, read = registry.info(script), registry.info(worker)
    assert written is not None and read is not None
    assert read.codec.decode(written.codec.encode([1, Color.RED])) == [1, Color.RED]


def test_every_process_computes_the_same_fingerprints():
    import subprocess
    from pathlib import Path

    from sqlmodel_cache._registry import registry

    from .written import Device, Profile

    script = (
        "from sqlmodel_cache._registry import registry\n"
        "from tests.written import Device, Profile\n"
        "print(*(registry.info(m).codec.fingerprint for m in (Device, Profile)))\n"
    )
    root = Path(__file__).resolve().parent.parent
    theirs = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    ours = [registry.info(model).codec.fingerprint for model in (Device, Profile)]
    assert theirs == ours


@pytest.mark.parametrize(
    "value",
    [
        {"tags": ["a", "b"], "score": 2.5, "nested": {"ok": True, "none": None}},
        [1, -0.0, float("inf"), "é\ud800", [[]], {}],
        [uuid.UUID(int=1), uuid.UUID(int=2)],  # not plain JSON: copied as objects
        {"k": (1, 2)},  # a tuple inside: not plain JSON either
    ],
)
def test_freeze_and_thaw_give_back_equal_private_copies(value):
    values = ["x", value, 3]
    positions = mutable_positions(values)
    assert positions == (1,)
    kept = freeze(values, positions)
    for _ in range(2):  # every thaw is a copy of its own
        back = thaw(kept, positions)
        assert back == values and repr(back) == repr(values)
        assert back[1] is not value and back[1] is not kept[1]
        (back[1].append if type(back[1]) is list else back[1].update)(
            *([0] if type(back[1]) is list else [{"added": 1}])
        )
    assert thaw(kept, positions) == values
