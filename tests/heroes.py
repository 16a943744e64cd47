"""Small steps on Hero rows that many tests take: each in a session of its own."""

import sqlalchemy as sa
from sqlmodel import Session

from .models import Hero


def seed(engine: sa.Engine, *heroes: tuple[int, str]) -> None:
    """Insert heroes given as (id, name); age is id * 10."""
    with Session(engine) as session:
        session.add_all(Hero(id=i, name=n, age=i * 10) for i, n in heroes)
        session.commit()


def name(engine: sa.Engine, ident: int, **options: object) -> str | None:
    """session.get one hero (options as session.get takes them); its name or None."""
    with Session(engine) as session:
        hero = session.get(Hero, ident, **options)  # type: ignore[arg-type]
        return None if hero is None else hero.name


def rename(engine: sa.Engine, ident: int, new: str) -> None:
    """Get a hero, rename it and commit."""
    with Session(engine) as session:
        hero = session.get(Hero, ident)
        assert hero is not None
        hero.name = new
        session.commit()


def write_unseen(engine: sa.Engine, sql: str) -> None:
    """A write the library cannot see (another program's): raw DBAPI, committed."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(sql)
        cursor.close()
        raw.commit()
    finally:
        raw.close()
