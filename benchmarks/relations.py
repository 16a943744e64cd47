"""Beyond session.get: many-to-one loads, get_many and get_by, with and without the cache.

    python benchmarks/relations.py [--pg URL] [--redis URL] [--n N] [--json PATH]

Real PostgreSQL and Redis (the defaults of benchmarks/bench.py). Three cached models:
BenchTeam, BenchHero (each hero in a team of its own, so a chain of hero.team loads is
50 different rows) and BenchUser (natural key: email). "no library" rows run the same
code with sqlmodel-cache's listeners detached: what the application costs without it.
Figures are medians / p90 of N runs of each operation, interleaved in blocks.

Rows:
- 50 x hero.team: 50 heroes already loaded (untimed), then hero.team for each of them:
  50 lazy loads, each a cache hit (or, without the library, a SELECT).
- get_many 100, warm / cold: one session, SQLModelCache.get_many of 100 ids, all in
  Redis (warm) or none (cold: their keys deleted first, untimed; the rows are stored
  as the session closes, which is timed).
- 100 x session.get, no library / one SELECT ... IN (100), no library: the baselines.
- get_by hit / get_by miss / SELECT by email, no library.

Only this script's tables (bench_team, bench_hero, bench_user) are dropped and created,
and only keys under its own random prefix are deleted.
"""

# The report prints the multiplication sign on purpose; SQLModel reads the annotations
# of its relationships at runtime, so no `from __future__ import annotations`.
# ruff: noqa: RUF001

import argparse
import json
import os
import secrets
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlmodel import Field, Relationship, Session, SQLModel, col, select

from benchmarks.bench import DEFAULT_PG, DEFAULT_REDIS, ensure_database
from sqlmodel_cache import CacheConfig, SQLModelCache, _listeners
from sqlmodel_cache.transport import RedisSyncTransport

HEROES = 100


class BenchTeam(SQLModel, table=True):
    __cache_config__ = CacheConfig(ttl=3600)
    id: int = Field(primary_key=True)
    name: str
    heroes: list["BenchHero"] = Relationship(back_populates="team")


class BenchHero(SQLModel, table=True):
    __cache_config__ = CacheConfig(ttl=3600)
    id: int = Field(primary_key=True)
    name: str
    team_id: int = Field(foreign_key="benchteam.id")
    team: BenchTeam = Relationship(back_populates="heroes")


class BenchUser(SQLModel, table=True):
    __cache_config__ = CacheConfig(ttl=3600, natural_keys=("email",))
    id: int = Field(primary_key=True)
    email: str = Field(unique=True)
    name: str


Op = Callable[[], int]  # runs once, returns elapsed ns of its timed part


def setup(engine: sa.Engine) -> None:
    tables: Any = [BenchHero.__table__, BenchTeam.__table__, BenchUser.__table__]  # type: ignore[attr-defined]
    SQLModel.metadata.drop_all(engine, tables=tables)
    SQLModel.metadata.create_all(engine, tables=tables)
    with Session(engine) as session:
        session.add_all(BenchTeam(id=i, name=f"team {i}") for i in range(1, HEROES + 1))
        session.add_all(BenchHero(id=i, name=f"hero {i}", team_id=i) for i in range(1, HEROES + 1))
        session.add_all(
            BenchUser(id=i, email=f"u{i}@example.org", name=f"u{i}") for i in range(1, 11)
        )
        session.commit()


def team_chain(engine: sa.Engine) -> Op:
    def op() -> int:
        with Session(engine) as session:
            query = select(BenchHero).where(col(BenchHero.id) <= 50)
            heroes = session.exec(query).all()  # untimed: the parents
            start = time.perf_counter_ns()
            for hero in heroes:
                _ = hero.team.name
            return time.perf_counter_ns() - start

    return op


def many(engine: sa.Engine, cold: Callable[[], None] | None = None) -> Op:
    def op() -> int:
        if cold is not None:
            cold()
        start = time.perf_counter_ns()
        with Session(engine) as session:
            SQLModelCache.get_many(session, BenchHero, list(range(1, HEROES + 1)))
        return time.perf_counter_ns() - start

    return op


def gets(engine: sa.Engine) -> Op:
    def op() -> int:
        start = time.perf_counter_ns()
        with Session(engine) as session:
            for i in range(1, HEROES + 1):
                session.get(BenchHero, i)
        return time.perf_counter_ns() - start

    return op


def select_in(engine: sa.Engine) -> Op:
    def op() -> int:
        start = time.perf_counter_ns()
        with Session(engine) as session:
            session.exec(select(BenchHero).where(col(BenchHero.id).in_(range(1, HEROES + 1)))).all()
        return time.perf_counter_ns() - start

    return op


def by_email(engine: sa.Engine, email: str | Callable[[], str]) -> Op:
    def op() -> int:
        value = email() if callable(email) else email
        start = time.perf_counter_ns()
        with Session(engine) as session:
            SQLModelCache.get_by(session, BenchUser, email=value)
        return time.perf_counter_ns() - start

    return op


def select_by_email(engine: sa.Engine) -> Op:
    def op() -> int:
        start = time.perf_counter_ns()
        with Session(engine) as session:
            session.exec(select(BenchUser).where(col(BenchUser.email) == "u1@example.org")).one()
        return time.perf_counter_ns() - start

    return op


def detached(op: Op) -> Op:
    def run() -> int:
        with _listeners.detached():
            return op()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG))
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    url = make_url(args.pg)
    ensure_database(url)
    engine = sa.create_engine(url)
    setup(engine)
    client = redis.Redis.from_url(args.redis)
    prefix = f"smc-bench-rel-{secrets.token_hex(4)}"
    SQLModelCache.configure(RedisSyncTransport(client), key_prefix=prefix, default_ttl=3600)
    hero_keys = [f"{prefix}:BenchHero:id={i}" for i in range(1, HEROES + 1)]
    misses = iter(range(10**9))

    def forget_heroes() -> None:
        client.delete(*hero_keys)

    def a_missing_email() -> str:
        client.delete(f"{prefix}:BenchUser:~email=u2@example.org")
        next(misses)
        return "u2@example.org"

    ops: dict[str, Op] = {
        "50 × hero.team, cached": team_chain(engine),
        "50 × hero.team, no library": detached(team_chain(engine)),
        "get_many 100, warm": many(engine),
        "get_many 100, cold": many(engine, forget_heroes),
        "100 × session.get, no library": detached(gets(engine)),
        "SELECT ... IN (100), no library": detached(select_in(engine)),
        "get_by, hit": by_email(engine, "u1@example.org"),
        "get_by, mapping miss": by_email(engine, a_missing_email),
        "SELECT by email, no library": detached(select_by_email(engine)),
    }
    for op in ops.values():  # warm: the rows the warm operations read are in Redis
        op()
        op()
    samples: dict[str, list[int]] = {name: [] for name in ops}
    for _ in range(-(-args.n // 20)):
        for name, op in ops.items():
            samples[name] += [op() for _ in range(20)]
    medians = {name: statistics.median(s) / 1000 for name, s in samples.items()}
    p90 = {name: statistics.quantiles(s, n=10)[8] / 1000 for name, s in samples.items()}
    print(f"\nRELATIONS, MULTI-GET, NATURAL KEYS (benchmarks/relations.py), N={args.n}")
    print(f"{'operation':38}{'median µs':>12}{'p90 µs':>12}")
    print("-" * 62)
    for name in ops:
        print(f"{name:38}{medians[name]:12.1f}{p90[name]:12.1f}")
    ratios = {
        "hero.team chain, cached / no library": medians["50 × hero.team, cached"]
        / medians["50 × hero.team, no library"],
        "get_many warm / 100 gets, no library": medians["get_many 100, warm"]
        / medians["100 × session.get, no library"],
        "get_many warm / SELECT IN, no library": medians["get_many 100, warm"]
        / medians["SELECT ... IN (100), no library"],
        "get_many cold / SELECT IN, no library": medians["get_many 100, cold"]
        / medians["SELECT ... IN (100), no library"],
        "get_by hit / SELECT by email, no library": medians["get_by, hit"]
        / medians["SELECT by email, no library"],
    }
    print()
    for name, ratio in ratios.items():
        print(f"  {name:44} {ratio:6.3f}")
    SQLModelCache.reset()
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"medians": medians, "p90": p90, "ratios": ratios}, fh, indent=2)
    engine.dispose()


if __name__ == "__main__":
    main()
