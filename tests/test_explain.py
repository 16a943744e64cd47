"""explain(): whether and how a model is cached, before any traffic, and why not."""

import pytest
from sqlalchemy import Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column
from sqlmodel import Session

from sqlmodel_cache import CacheConfig, ConfigurationError, L1Config, SQLModelCache
from sqlmodel_cache.transport import RedisSyncTransport

from .models import Disabled, Employee, Manager, Note, Place, Plain, Point
from .test_mappings import Square
from .written import MODERN_SQLMODEL, Device, Profile


def test_a_model_as_users_write_it_before_configure():
    report = SQLModelCache.explain(Profile)
    assert report.cached and report.reasons == ()
    assert report.key == "sqlmodelcache:Profile:id={id}"
    assert (report.ttl, report.tiers) == (300, ("L2 (MemoryTransport)",))
    assert "not configured yet" in report.notes[0]
    how = {column.name: column.how for column in report.columns}
    assert how["created_at"] == (
        "stored: datetime in UTC" if MODERN_SQLMODEL else "stored: datetime"
    )
    assert how["mood"] == "stored: Mood member"
    assert how["settings"] == "stored: JSON data, up to 100 levels deep"
    assert all(column.stored for column in report.columns)
    assert str(report).splitlines()[:2] == [
        "Profile: cached",
        "  key:    sqlmodelcache:Profile:id={id}",
    ]


def test_key_ttl_and_tiers_follow_the_configuration(redis_client, prefix):
    SQLModelCache.configure(
        RedisSyncTransport(redis_client), key_prefix=prefix, default_ttl=90, l1=L1Config(maxsize=50)
    )
    report = SQLModelCache.explain(Device)
    assert report.key == f"{prefix}:Device:id={{id}}"
    assert (report.ttl, report.ttl_source) == (90, "configure(default_ttl=...)")
    assert report.tiers == ("L1 (in process, up to 50 rows for 30 s)", "L2 (RedisSyncTransport)")
    how = {column.name: column.how for column in report.columns}
    assert how["address"] == "stored: ipaddress address or interface"
    assert how["readings"] == "stored: list of Decimal"
    assert how["fee"] == "stored: what Cents loads, checked row by row"


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (Plain, "it has no __cache_config__, @cached or CachedModel"),
        (Disabled, "its CacheConfig says enabled=False"),
        (Square, "concrete table inheritance: one identity may come from several tables"),
    ],
)
def test_why_a_model_is_not_cached(model, reason):
    report = SQLModelCache.explain(model)
    assert (report.cached, report.reasons) == (False, (reason,))
    assert f"because {reason}" in str(report)


def test_a_disabled_configuration_is_a_reason():
    SQLModelCache.configure(enabled=False)
    assert SQLModelCache.explain(Note).reasons == (
        "SQLModelCache is configured with enabled=False",
    )


def test_hierarchies_and_shared_tables_are_described():
    manager = SQLModelCache.explain(Manager)
    assert manager.key == "sqlmodelcache:Employee:id={id}"
    assert any("single-table inheritance" in note and "Employee" in note for note in manager.notes)
    assert SQLModelCache.explain(Employee).key == manager.key
    note = SQLModelCache.explain(Note)
    assert any("also cached under NoteCard" in line for line in note.notes)


class Articles(DeclarativeBase):
    pass


class Article(Articles):
    __tablename__ = "article"
    __cache_config__ = CacheConfig(ttl=60)
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(Text, deferred=True)
    length: Mapped[int] = column_property(func.length(body))


def test_columns_that_are_not_stored_say_so():
    report = SQLModelCache.explain(Article)
    how = {column.name: column.how for column in report.columns}
    assert how["body"] == "not stored: deferred, loaded when accessed"
    assert how["length"] == "not stored: an SQL expression, loaded when accessed"
    assert (report.ttl, report.ttl_source) == (60, "CacheConfig(ttl=60)")


def test_columns_that_kept_rows_out_are_counted_after_traffic(engine, cache):
    with Session(engine) as session:
        session.add(Place(id=1, name="home", location=Point(1, 2)))
        session.commit()
    with Session(engine) as session:
        session.get(Place, 1)
    location = {c.name: c for c in SQLModelCache.explain(Place).columns}["location"]
    assert location.uncacheable_rows == 1
    assert "[1 row(s) not cached for this column]" in str(SQLModelCache.explain(Place))


def test_explain_refuses_what_is_not_a_mapped_class():
    for thing in (int, "Hero", None):
        with pytest.raises(ConfigurationError, match="is not a mapped model class"):
            SQLModelCache.explain(thing)  # type: ignore[arg-type]
