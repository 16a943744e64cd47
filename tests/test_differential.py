"""Differential: a corpus of statements (ORM, Core, executemany, bulk helpers, upserts,
text) gives the same results, the same exceptions and the same database, with the
library (configured, cache warm) and without it (its listeners detached)."""

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import selectinload
from sqlmodel import Session, col

from sqlmodel_cache import SQLModelCache, _listeners
from sqlmodel_cache.transport import RedisSyncTransport

from .heroes import seed
from .models import Hero

HERO: Any = Hero.__table__  # type: ignore[attr-defined]


def _upsert(session: Session) -> Any:
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = module.insert(Hero).values(id=1, name="upserted")
    return statement.on_conflict_do_update(
        index_elements=[HERO.c.id], set_={"name": statement.excluded.name}
    ).returning(col(Hero.id), col(Hero.name))


def _identity_then_bulk(session: Session) -> Any:
    hero = session.get(Hero, 1)
    session.execute(
        update(Hero).where(col(Hero.name) == "one").values(name="bulk"),
        execution_options={"synchronize_session": "evaluate"},
    )
    return hero.name if hero else None


def _refresh_after_core(session: Session) -> Any:
    hero = session.get(Hero, 2)
    session.execute(update(HERO).where(HERO.c.id == 2).values(name="core"))
    session.refresh(hero)
    return hero.name if hero else None


def _flush(session: Session, *objects: Any) -> None:
    session.add_all(objects)
    session.flush()


CORPUS: dict[str, Callable[[Any], Any]] = {  # Any: rowcount is on a CursorResult
    "get": lambda s: s.get(Hero, 1),
    "get missing": lambda s: s.get(Hero, 99),
    "get with options": lambda s: s.get(Hero, 1, options=[selectinload(Hero.team)]),  # type: ignore[arg-type]
    "get for update": lambda s: s.get(Hero, 2, with_for_update=True),
    "select": lambda s: s.scalars(select(Hero).where(col(Hero.name) == "two")).all(),
    "core update returning": lambda s: s.execute(
        update(HERO).where(HERO.c.id.in_([1, 2])).values(name="x").returning(HERO.c.id)
    ).all(),
    "orm update fetch": lambda s: s.execute(
        update(Hero).where(col(Hero.age) > 15).values(name="old"),
        execution_options={"synchronize_session": "fetch"},
    ).rowcount,
    "orm update, identity map synchronized": _identity_then_bulk,
    "executemany core_only": lambda s: s.execute(
        update(Hero).execution_options(dml_strategy="core_only")
        .where(col(Hero.id) == sa.bindparam("i")).values(name=sa.bindparam("n")),
        [{"i": 1, "n": "a"}, {"i": 3, "n": "c"}, {"i": 42, "n": "none"}],
    ).rowcount,
    "orm executemany by key": lambda s: s.execute(
        update(Hero), [{"id": 1, "name": "k1"}, {"id": 2, "name": "k2"}]
    ).all(),
    "delete returning": lambda s: s.execute(
        delete(HERO).where(HERO.c.id == 3).returning(HERO.c.name)
    ).all(),
    "orm delete": lambda s: s.execute(delete(Hero).where(col(Hero.id) == 3)).rowcount,
    "insert returning": lambda s: s.scalars(
        insert(Hero).returning(col(Hero.id)), [{"id": 7, "name": "s"}, {"id": 8, "name": "e"}]
    ).all(),
    "upsert returning": lambda s: s.execute(_upsert(s)).all(),
    "bulk_update_mappings": lambda s: s.bulk_update_mappings(Hero, [{"id": 2, "name": "m"}]),
    "text select": lambda s: s.execute(text("SELECT id, name FROM hero ORDER BY id")).all(),
    "text update": lambda s: s.execute(text("UPDATE hero SET age = age + 1")).rowcount,
    "refresh after a core update": _refresh_after_core,
    "duplicate key": lambda s: s.execute(insert(HERO).values(id=1, name="dup")),
    "orm flush of a duplicate": lambda s: _flush(s, Hero(id=2, name="dup")),
}  # fmt: skip


def _normal(value: Any) -> Any:
    """Results as plain data: instances as their column values, rows as tuples."""
    if isinstance(value, Hero):
        return ("Hero", value.id, value.name, value.age, value.team_id)
    if isinstance(value, (list, tuple)):
        return [_normal(item) for item in value]
    if isinstance(value, sa.Row):
        return tuple(value)
    return value


def _run(engine: sa.Engine, operation: Callable[[Session], Any]) -> tuple[Any, Any]:
    """(result or exception, the rows afterwards) of one operation on fresh rows."""
    with engine.begin() as conn:
        conn.execute(delete(HERO))
    seed(engine, (1, "one"), (2, "two"), (3, "three"))
    for ident in (1, 2, 3):  # warm: the library's run starts from hits
        with Session(engine) as session:
            session.get(Hero, ident)
    with Session(engine) as session:
        try:
            outcome = _normal(operation(session))
            session.commit()
        except sa.exc.DBAPIError as exc:
            outcome = (type(exc).__name__, type(exc.orig).__name__)
            session.rollback()
    with Session(engine) as session:
        rows = [tuple(r) for r in session.execute(select(HERO).order_by(HERO.c.id))]
    return outcome, rows


@pytest.mark.parametrize("operation", list(CORPUS))
def test_the_library_changes_no_result(engine, redis_client, prefix, operation):
    SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix, l1=True)
    # An engine of its own: SQLAlchemy's compiled cache must not carry statements
    # compiled without the library into the runs with it (2.0 keys some alike).
    plain = sa.create_engine(engine.url)
    try:
        with _listeners.detached():
            expected = _run(plain, CORPUS[operation])
    finally:
        plain.dispose()
    assert _run(engine, CORPUS[operation]) == expected
    assert SQLModelCache.stats().errors == 0
