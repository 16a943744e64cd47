"""Models written the way users write them: plain annotations, SQLModel's own mappings.

No ``sa_column`` overrides here: each field gets whatever type the installed
SQLModel maps it to (``UTCDateTime`` and ``AutoString`` on SQLModel >= 0.0.48,
plain ``DateTime`` and ``AutoString`` before). ``Device`` is a SQLAlchemy 2.x
declarative model with PostgreSQL types and user TypeDecorators.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import ipaddress
import uuid
from typing import Any

import sqlmodel
from sqlalchemy import JSON, DateTime, Enum, Integer, Numeric, String, TypeDecorator, Uuid
from sqlalchemy.dialects.postgresql import ARRAY, CIDR, INET, INTERVAL, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlmodel import Field, SQLModel

from sqlmodel_cache import CacheConfig, cached

# SQLModel maps pydantic's NaiveDatetime (and datetime to UTCDateTime) from 0.0.48 on.
MODERN_SQLMODEL = tuple(map(int, sqlmodel.__version__.split(".")[:3])) >= (0, 0, 48)
if MODERN_SQLMODEL:
    from pydantic import NaiveDatetime
else:  # pragma: no cover - the oldest SQLModel we allow
    NaiveDatetime = dt.datetime  # type: ignore[misc]


class Mood(str, enum.Enum):  # noqa: UP042 - the way most apps still write it
    HAPPY = "happy"
    GRUMPY = "grumpy"


class Profile(SQLModel, table=True):
    __cache_config__ = CacheConfig()

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)
    bio: str | None = None
    created_at: dt.datetime
    last_seen: NaiveDatetime | None = None
    birthday: dt.date | None = None
    wakes_at: dt.time | None = None
    streak: dt.timedelta | None = None
    balance: decimal.Decimal = Field(default=decimal.Decimal(0), max_digits=12, decimal_places=2)
    ref: uuid.UUID = Field(default_factory=uuid.uuid4)
    mood: Mood = Mood.HAPPY
    avatar: bytes | None = None
    score: float = 0.0
    active: bool = True
    settings: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


@cached
class Account(SQLModel, table=True):
    """A UUID primary key, as many APIs have."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    email: str = Field(max_length=200, unique=True)
    opened_at: dt.datetime


def now() -> dt.datetime:
    """A created_at value this SQLModel accepts: aware where it maps to UTCDateTime."""
    value = dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)
    return value if MODERN_SQLMODEL else value.replace(tzinfo=None)


class PgBase(DeclarativeBase):
    """PostgreSQL-only models."""


class Cents(TypeDecorator[decimal.Decimal]):
    """Money kept as integer cents, loaded as Decimal."""

    impl = Integer
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> int | None:
        return None if value is None else int(value * 100)

    def process_result_value(self, value: Any, dialect: Any) -> decimal.Decimal | None:
        return None if value is None else decimal.Decimal(value) / 100


class CommaList(TypeDecorator[list[str]]):
    """A list of words kept as one comma-separated string."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else ",".join(value)

    def process_result_value(self, value: Any, dialect: Any) -> list[str] | None:
        return None if value is None else value.split(",")


class Device(PgBase):
    __tablename__ = "written_device"
    __cache_config__ = CacheConfig()

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tags: Mapped[list[str]] = mapped_column(ARRAY(String))
    readings: Mapped[list[list[decimal.Decimal]]] = mapped_column(
        ARRAY(Numeric(10, 3), dimensions=2)
    )
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB)
    address: Mapped[ipaddress.IPv4Address | ipaddress.IPv6Address] = mapped_column(INET)
    subnet: Mapped[ipaddress.IPv4Network | ipaddress.IPv6Network] = mapped_column(CIDR)
    uptime: Mapped[dt.timedelta] = mapped_column(INTERVAL)
    price: Mapped[decimal.Decimal] = mapped_column(Numeric(12, 4))
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    peers: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(Uuid))
    fee: Mapped[decimal.Decimal] = mapped_column(Cents)
    words: Mapped[list[str]] = mapped_column(CommaList)
    mood: Mapped[Mood | None] = mapped_column(Enum(Mood, name="device_mood"), nullable=True)
