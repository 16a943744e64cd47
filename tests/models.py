"""Models shared by the tests."""

import datetime as dt
import decimal
import enum
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    Integer,
    Interval,
    LargeBinary,
    Numeric,
    String,
    Time,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import DateTime as SADateTime
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlmodel import Field, Relationship, SQLModel

from sqlmodel_cache import CacheConfig, CachedModel, cached


class Power(enum.Enum):
    FLIGHT = "flight"
    STRENGTH = "strength"


class Team(CachedModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = ""
    # Module-qualified: the examples define Hero classes of their own.
    heroes: list["Hero"] = Relationship(
        sa_relationship=relationship("tests.models.Hero", back_populates="team")
    )


class Hero(SQLModel, table=True):
    __cache_config__ = CacheConfig(ttl=600)

    id: int | None = Field(default=None, primary_key=True)
    name: str = ""
    age: int | None = None
    team_id: int | None = Field(default=None, foreign_key="team.id")
    team: Team | None = Relationship(
        sa_relationship=relationship("tests.models.Team", back_populates="heroes")
    )


@cached
class OrderItem(SQLModel, table=True):
    order_id: int = Field(primary_key=True)
    product_id: int = Field(primary_key=True)
    quantity: int = 0


@cached(ttl=120)
class Tag(SQLModel, table=True):
    name: str = Field(primary_key=True)
    note: str = ""


class Sample(CachedModel, table=True):
    """One column of every common type."""

    id: int | None = Field(default=None, primary_key=True)
    uid: uuid.UUID = Field(default_factory=uuid.uuid4)
    text: str | None = None
    flag: bool | None = None
    ratio: float | None = None
    price: decimal.Decimal | None = Field(default=None, sa_column=Column(Numeric(12, 4)))
    at: dt.datetime | None = Field(default=None, sa_column=Column(SADateTime(timezone=True)))
    naive_at: dt.datetime | None = Field(default=None, sa_column=Column(SADateTime()))
    day: dt.date | None = None
    clock: dt.time | None = Field(default=None, sa_column=Column(Time()))
    span: dt.timedelta | None = Field(default=None, sa_column=Column(Interval()))
    power: Power | None = None
    blob: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    data: Any = Field(default=None, sa_column=Column(JSON))


class Plain(SQLModel, table=True):
    """Never cached."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = ""


class Disabled(SQLModel, table=True):
    __cache_config__ = CacheConfig(enabled=False)

    id: int | None = Field(default=None, primary_key=True)
    name: str = ""


class Base(DeclarativeBase):
    """Plain SQLAlchemy declarative models are cached the same way."""


class Author(Base):
    __tablename__ = "author"
    __cache_config__ = CacheConfig()

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    books: Mapped[list["Book"]] = relationship(lazy="selectin", back_populates="author")


class Book(Base):
    __tablename__ = "book"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    author_id: Mapped[int] = mapped_column(ForeignKey("author.id"))
    author: Mapped[Author] = relationship(back_populates="books")


class Point:
    """A value type of the application's own: no exact form in a cache entry."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    __hash__ = None  # type: ignore[assignment]


class PointType(TypeDecorator[Point]):
    impl = String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else f"{value.x},{value.y}"

    def process_result_value(self, value: Any, dialect: Any) -> Point | None:
        return None if value is None else Point(*map(int, value.split(",")))


class Place(Base):
    """Rows with a location cannot be cached; rows without one can."""

    __tablename__ = "place"
    __cache_config__ = CacheConfig()

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    location: Mapped[Point | None] = mapped_column(PointType, nullable=True)


# -- inheritance ------------------------------------------------------------------


class Employee(Base):
    """Single-table inheritance: one table, the class chosen by `kind`."""

    __tablename__ = "employee"
    __cache_config__ = CacheConfig()

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    kind: Mapped[str] = mapped_column(String(20))
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "employee"}


class Manager(Employee):
    budget: Mapped[int | None] = mapped_column(Integer, nullable=True)
    __mapper_args__ = {"polymorphic_identity": "manager"}


class Engineer(Employee):
    language: Mapped[str | None] = mapped_column(String(20), nullable=True)
    __mapper_args__ = {"polymorphic_identity": "engineer"}


class Vehicle(Base):
    """Joined-table inheritance: a base table, and one more table per subclass."""

    __tablename__ = "vehicle"
    __cache_config__ = CacheConfig()

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wheels: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "vehicle"}


class Truck(Vehicle):
    __tablename__ = "truck"

    id: Mapped[int] = mapped_column(ForeignKey("vehicle.id"), primary_key=True)
    payload: Mapped[int] = mapped_column(Integer)
    __mapper_args__ = {"polymorphic_identity": "truck"}


class Bus(Vehicle):
    """Loaded with its base, whatever class a get asks for (polymorphic_load="inline")."""

    __tablename__ = "bus"

    id: Mapped[int] = mapped_column(ForeignKey("vehicle.id"), primary_key=True)
    seats: Mapped[int] = mapped_column(Integer)
    __mapper_args__ = {"polymorphic_identity": "bus", "polymorphic_load": "inline"}


# -- two classes, one table -------------------------------------------------------


class Note(SQLModel, table=True):
    __cache_config__ = CacheConfig()

    id: int | None = Field(default=None, primary_key=True)
    text: str = ""


class NoteCard(Base):
    """A read model over the note table, cached on its own keys."""

    __table__ = Note.__table__  # type: ignore[attr-defined]
    __cache_config__ = CacheConfig()


class NoteWriter(Base):
    """A write model over the note table, not cached itself."""

    __table__ = Note.__table__  # type: ignore[attr-defined]


# -- natural keys --------------------------------------------------------------------


class Member(SQLModel, table=True):
    """Found by email, or by (tenant_id, slug): both unique."""

    __cache_config__ = CacheConfig(natural_keys=("email", ("tenant_id", "slug")))
    __table_args__ = (UniqueConstraint("tenant_id", "slug"),)

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True)
    tenant_id: int
    slug: str
    name: str = ""
