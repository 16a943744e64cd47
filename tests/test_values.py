"""Exact values: a hit returns what a database load returns, type for type."""

import datetime as dt
import decimal
import uuid
import zoneinfo

import pytest
from sqlalchemy import inspect
from sqlmodel import Session

from sqlmodel_cache import SQLModelCache

from .models import Power, Sample

ROWS = [
    Sample(
        id=1,
        uid=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        text="héllo: wörld = 100% \x01 \u2603",
        flag=True,
        ratio=0.1 + 0.2,
        price=decimal.Decimal("12345678.9012"),
        at=dt.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=dt.UTC),
        naive_at=dt.datetime(1999, 12, 31, 23, 59, 59, 999999),
        day=dt.date(2000, 1, 1),
        clock=dt.time(12, 34, 56, 789),
        span=dt.timedelta(days=-3, seconds=5, microseconds=7),
        power=Power.FLIGHT,
        blob=bytes(range(256)),
        data={"list": [1, 2.5, "x", None, True], "nested": {"a": {"b": []}}, "empty": {}},
    ),
    Sample(id=2),  # every nullable column NULL
    Sample(
        id=3,
        text="",
        flag=False,
        ratio=-0.0,
        price=decimal.Decimal("0.0000"),
        blob=b"",
        data=[],
        power=Power.STRENGTH,
    ),
    Sample(id=4, data="just a string", ratio=1e300),
    Sample(
        id=5,
        at=dt.datetime(2024, 11, 3, 1, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York")),
        data=0,
    ),
]


def _values(obj: Sample | None) -> dict[str, tuple[type, object]]:
    assert obj is not None
    return {
        attr.key: (type(attr.value), attr.value)
        for attr in inspect(obj).attrs
        if attr.key in Sample.model_fields
    }


@pytest.fixture
def samples(engine):
    with Session(engine) as session:
        session.add_all(Sample(**row.model_dump()) for row in ROWS)
        session.commit()


@pytest.mark.parametrize("ident", [row.id for row in ROWS])
def test_a_hit_equals_a_database_load(engine, cache, sql, samples, ident):
    with Session(engine) as session:
        loaded = _values(session.get(Sample, ident, execution_options={"cache": False}))
    with Session(engine) as session:
        session.get(Sample, ident)  # miss: fills
    sql.clear()
    with Session(engine) as session:
        hit = session.get(Sample, ident)
        assert sql.statements == []
        assert _values(hit) == loaded
        assert not session.is_modified(hit)
    assert SQLModelCache.stats().by_model["Sample"].hits == 1


def test_json_and_binary_edits_on_a_hit_persist(engine, cache, samples):
    with Session(engine) as session:
        session.get(Sample, 1)
    with Session(engine) as session:
        hit = session.get(Sample, 1)
        hit.data = {"replaced": True}
        hit.blob = b"\xff"
        session.commit()
    with Session(engine) as session:
        fresh = session.get(Sample, 1, execution_options={"cache": False})
        assert (fresh.data, fresh.blob) == ({"replaced": True}, b"\xff")
