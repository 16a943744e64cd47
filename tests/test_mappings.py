"""Mapper inheritance and tables shared by several classes, on SQLite and PostgreSQL with
real Redis: every class of a hierarchy reads one key per row, gets return the right
subclass, and a write through any class drops what every other class reads."""

import logging
import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy import event, inspect, update
from sqlalchemy.ext.declarative import ConcreteBase
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlmodel import Session, col

from sqlmodel_cache import CacheConfig, SQLModelCache, _registry, _runtime
from sqlmodel_cache._registry import registry
from sqlmodel_cache.transport import RedisSyncTransport

from .conftest import entries
from .models import (
    Bus,
    Employee,
    Engineer,
    Manager,
    Note,
    NoteCard,
    NoteWriter,
    Truck,
    Vehicle,
)


def add(engine, *objects) -> None:
    with Session(engine) as session:
        session.add_all(objects)
        session.commit()


def loaded(obj) -> dict[str, object]:
    """The column attributes an instance holds, without loading any."""
    state = inspect(obj)
    columns = state.mapper.column_attrs
    return {prop.key: state.dict[prop.key] for prop in columns if prop.key in state.dict}


def get_fresh(engine, model, ident, sql):
    """A get in a new session, and the SQL it sent."""
    sql.clear()
    with Session(engine, expire_on_commit=False) as session:
        obj = session.get(model, ident)
        return obj, type(obj), None if obj is None else loaded(obj), len(sql.statements)


@pytest.fixture
def staff(engine):
    add(
        engine,
        Employee(id=1, name="Ann"),
        Manager(id=2, name="Bob", budget=100),
        Engineer(id=3, name="Cy", language="Python"),
    )
    return engine


def from_database(engine, model, ident):
    with Session(engine) as session:
        obj = session.get(model, ident, execution_options={"cache": False})
        return type(obj), None if obj is None else loaded(obj)


def test_single_table_gets_return_the_row_s_class_from_one_key(staff, cache, prefix, sql):
    cases = [(model, ident) for model in (Employee, Manager, Engineer) for ident in (1, 2, 3)]
    expected = {case: from_database(staff, *case) for case in cases}
    assert expected[Employee, 2][0] is Manager and expected[Manager, 3][0] is type(None)
    for _ in range(3):
        for case in cases:
            _, kind, values, _ = get_fresh(staff, *case, sql)
            assert kind is expected[case][0], case
            if values is not None:  # a hit may hold more columns than a base get loads
                assert values.items() >= expected[case][1].items(), case
    assert entries(cache, prefix) == [f"{prefix}:Employee:id={i}" for i in (1, 2, 3)]
    with Session(staff) as session:  # other queries of the hierarchy are untouched
        kinds = [type(e) for e in session.scalars(sa.select(Employee).order_by(Employee.id))]
        assert kinds == [Employee, Manager, Engineer]
    for case in cases:
        if expected[case][1] is not None:
            assert get_fresh(staff, *case, sql)[3] == 0, case


def test_a_base_class_hit_returns_the_subclass_clean_and_editable(staff, cache, prefix, sql):
    assert get_fresh(staff, Manager, 2, sql)[3] == 1  # fills the whole Manager row
    with Session(staff) as session:
        sql.clear()
        boss = session.get(Employee, 2)
        assert type(boss) is Manager and sql.statements == []
        assert (boss.name, boss.budget) == ("Bob", 100)
        assert not session.is_modified(boss)
        boss.budget = 150
        session.commit()
    assert not cache.exists(f"{prefix}:Employee:id=2")
    assert get_fresh(staff, Manager, 2, sql)[0].budget == 150


def test_a_subclass_column_a_base_get_did_not_load_stays_unloaded(staff, cache, sql):
    get_fresh(staff, Employee, 2, sql)  # fills from a base get: budget not loaded
    with Session(staff) as session:
        sql.clear()
        boss = session.get(Employee, 2)
        assert sql.statements == [] and "budget" in inspect(boss).unloaded
        assert boss.budget == 100  # loaded on access, as after a database load
        assert len(sql.statements) == 1
    sql.clear()
    with Session(staff) as session:
        assert session.get(Manager, 2).budget == 100  # needs budget: reads and refills
        assert len(sql.statements) == 1
    assert get_fresh(staff, Manager, 2, sql)[3] == 0  # now a hit with every column
    assert get_fresh(staff, Employee, 2, sql)[3] == 0


def test_a_get_of_the_wrong_subclass_goes_to_the_database(staff, cache, sql):
    get_fresh(staff, Manager, 2, sql)
    assert get_fresh(staff, Engineer, 2, sql)[:1] == (None,)
    assert get_fresh(staff, Engineer, 2, sql)[3] == 1
    stats = SQLModelCache.stats().by_model["Engineer"]
    assert (stats.misses, stats.fills, stats.hits) == (2, 0, 0)


def test_writes_through_any_class_drop_the_hierarchy_s_key(staff, cache, prefix, sql):
    for ident in (1, 2, 3):
        get_fresh(staff, Employee, ident, sql)
    with Session(staff) as session:
        session.get(Engineer, 3).language = "Rust"
        session.commit()
    assert entries(cache, prefix) == [f"{prefix}:Employee:id={i}" for i in (1, 2)]
    with Session(staff) as session:
        session.execute(update(Manager).where(Manager.id == 2).values(budget=7))
        session.commit()
    assert entries(cache, prefix) == [f"{prefix}:Employee:id=1"]
    assert get_fresh(staff, Manager, 2, sql)[0].budget == 7


@pytest.fixture
def fleet(engine):
    add(
        engine,
        Vehicle(id=1, wheels=2),
        Truck(id=2, wheels=6, payload=40),
        Bus(id=3, wheels=4, seats=50),
    )
    return engine


def test_joined_table_gets_return_the_row_s_class(fleet, cache, prefix, sql):
    assert get_fresh(fleet, Truck, 2, sql)[3] == 1
    _, kind, values, count = get_fresh(fleet, Vehicle, 2, sql)
    assert (kind, count) == (Truck, 0)
    assert values == {"id": 2, "wheels": 6, "kind": "truck", "payload": 40}
    plain = {"id": 1, "wheels": 2, "kind": "vehicle"}
    assert get_fresh(fleet, Vehicle, 1, sql)[1:] == (Vehicle, plain, 1)
    assert get_fresh(fleet, Vehicle, 1, sql)[3] == 0
    assert entries(cache, prefix) == [f"{prefix}:Vehicle:id={i}" for i in (1, 2)]


def test_a_subclass_loaded_inline_is_whole_from_a_base_get(fleet, cache, sql):
    # polymorphic_load="inline": a get of Vehicle loads a Bus's seats too, so the
    # entry it fills serves gets of Bus as well.
    _, kind, values, _ = get_fresh(fleet, Vehicle, 3, sql)
    assert kind is Bus and values["seats"] == 50
    assert get_fresh(fleet, Bus, 3, sql)[1:] == (Bus, values, 0)


def test_a_joined_subclass_written_in_bulk_drops_its_key(fleet, cache, prefix, sql):
    get_fresh(fleet, Truck, 2, sql)
    with Session(fleet) as session:
        session.execute(update(Truck).where(Truck.id == 2).values(payload=41))
        session.commit()
    assert entries(cache, prefix) == []
    assert get_fresh(fleet, Truck, 2, sql)[0].payload == 41


# -- two classes, one table ----------------------------------------------------


def text_of(engine, model, ident, sql) -> str:
    return get_fresh(engine, model, ident, sql)[0].text


@pytest.fixture
def notes(engine, cache, sql):
    add(engine, Note(id=1, text="a"), Note(id=2, text="b"))
    for ident in (1, 2):
        text_of(engine, Note, ident, sql)
        text_of(engine, NoteCard, ident, sql)
    return engine


def test_a_commit_through_one_class_drops_the_other_s_entry(notes, cache, prefix, sql):
    assert entries(cache, prefix) == [
        f"{prefix}:{model}:id={i}" for model in ("Note", "NoteCard") for i in (1, 2)
    ]
    with Session(notes) as session:
        session.get(NoteCard, 1).text = "from the card"
        session.commit()
    assert entries(cache, prefix) == [f"{prefix}:Note:id=2", f"{prefix}:NoteCard:id=2"]
    assert text_of(notes, Note, 1, sql) == "from the card"


def test_a_class_that_is_not_cached_still_invalidates_the_classes_that_are(
    notes, cache, prefix, sql
):
    with Session(notes) as session:
        session.get(NoteWriter, 1).text = "written"
        session.execute(update(NoteWriter).where(col(Note.id) == 2).values(text="bulk"))
        session.commit()
    assert entries(cache, prefix) == []
    assert (text_of(notes, Note, 1, sql), text_of(notes, NoteCard, 2, sql)) == ("written", "bulk")


def test_invalidate_reaches_every_class_over_the_table(notes, cache, prefix):
    SQLModelCache.invalidate(NoteCard, 1)
    assert entries(cache, prefix) == [f"{prefix}:Note:id=2", f"{prefix}:NoteCard:id=2"]


def test_a_transaction_that_wrote_a_row_through_one_class_reads_it_through_another(
    notes, cache, sql
):
    with Session(notes) as session:
        session.get(Note, 1).text = "mine"
        session.flush()
        assert session.get(NoteCard, 1).text == "mine"
        session.rollback()
    assert text_of(notes, NoteCard, 1, sql) == "a"


# -- shapes that are not cached ---------------------------------------------------


class ConcreteModels(DeclarativeBase):
    pass


class Shape(ConcreteBase, ConcreteModels):
    __tablename__ = "shape"
    __cache_config__ = CacheConfig()
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    __mapper_args__ = {"polymorphic_identity": "shape", "concrete": True}


class Square(Shape):
    __tablename__ = "square"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    side: Mapped[int] = mapped_column(sa.Integer)
    __mapper_args__ = {"polymorphic_identity": "square", "concrete": True}


def test_concrete_inheritance_is_bypassed_loudly_never_raising(
    engine, redis_client, prefix, caplog
):
    caplog.set_level(logging.WARNING, logger="sqlmodel_cache")
    _registry._warned.clear()  # warned once per process: make this test's process-like
    registry.mapped()
    ConcreteModels.metadata.create_all(engine)
    try:
        SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix)
        add(engine, Square(id=1, side=3))
        for side in (3, 4):
            with Session(engine) as session:
                square = session.get(Square, 1)
                assert square.side == side
                assert session.execute(sa.select(Shape)).scalars().all() == [square]
                square.side = side + 1
                session.commit()
        info = registry.info(Square)
        assert info is not None and "concrete" in (info.problem or "")
        assert SQLModelCache.stats().by_model["Square"].bypasses == {"unsupported_mapping": 2}
        assert sum("Square is not cached" in r.getMessage() for r in caplog.records) == 1
    finally:
        ConcreteModels.metadata.drop_all(engine)


def test_a_follower_never_takes_a_row_missing_columns_its_get_loads(staff, cache, sql):
    # A get of Manager waits on a concurrent get of Employee, whose row lacks budget.
    runtime = _runtime.current
    assert runtime is not None
    release = threading.Event()

    def hold_the_leader(conn, cursor, statement, *args):
        if "FROM employee" in statement and threading.current_thread().name == "leader":
            assert release.wait(10)

    loaded: dict[str, set[str]] = {}

    def get(model, label):
        with Session(staff) as session:
            obj = session.get(model, 2)  # held: the identity map alone keeps it weakly
            loaded[label] = set(inspect(obj).dict)

    leader = threading.Thread(target=get, args=(Employee, "leader"), name="leader")
    follower = threading.Thread(target=get, args=(Manager, "follower"), name="follower")
    event.listen(staff, "after_cursor_execute", hold_the_leader)
    try:
        sql.clear()
        leader.start()
        deadline = time.monotonic() + 10
        while sql.selects == 0 and time.monotonic() < deadline:  # the leader has sent its SELECT
            time.sleep(0.001)
        follower.start()
        while runtime.flights.following == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert runtime.flights.following == 1
        release.set()
        leader.join(10)
        follower.join(10)
    finally:
        event.remove(staff, "after_cursor_execute", hold_the_leader)
    assert "budget" not in loaded["leader"] and "budget" in loaded["follower"]
    assert sql.selects == 2
