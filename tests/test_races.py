"""The stale-fill race, snapshot isolation, and a soak of concurrent reads and writes.

Interleavings are forced with engine events and threading events, never with sleeps.
"""

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlmodel import Session

from sqlmodel_cache import SQLModelCache, _runtime
from sqlmodel_cache._registry import registry
from sqlmodel_cache.transport import RedisSyncTransport

from .conftest import PG_URL
from .models import Hero, Plain

HERO: Any = Hero.__table__  # type: ignore[attr-defined]

# Every test runs with Session and again with CachedSession (see conftest.session_class).
pytestmark = [
    pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True),
    pytest.mark.usefixtures("session_class"),
]


class PlainRedis:
    """RedisSyncTransport without its atomic operations: best-effort fills only."""

    def __init__(self, inner: RedisSyncTransport) -> None:
        self.get, self.set, self.delete = inner.get, inner.set, inner.delete


def _seed(engine, **names: str) -> None:
    with Session(engine) as session:
        for ident, name in names.items():
            session.add(Hero(id=int(ident.lstrip("h")), name=name))
        session.commit()


def _name(engine, ident: int) -> str:
    with Session(engine) as session:
        hero = session.get(Hero, ident)
        assert hero is not None
        return hero.name


def _rename(engine, ident: int, name: str) -> None:
    with Session(engine) as session:
        hero = session.get(Hero, ident, execution_options={"cache": False})
        assert hero is not None
        hero.name = name
        session.commit()


def _race(engine) -> str:
    """A reader misses and reads 'old'; before it fills, a writer commits 'new'.

    Returns what a later get serves.
    """
    reader_read = threading.Event()
    writer_done = threading.Event()
    seen: list[str] = []

    def pause_after_select(conn, cursor, statement, *args):
        if threading.current_thread().name == "reader" and "FROM hero" in statement:
            reader_read.set()
            assert writer_done.wait(10)

    def read() -> None:
        seen.append(_name(engine, 1))

    event.listen(engine, "after_cursor_execute", pause_after_select)
    try:
        reader = threading.Thread(target=read, name="reader")
        reader.start()
        assert reader_read.wait(10)
        _rename(engine, 1, "new")  # commits and invalidates while the reader is paused
        writer_done.set()
        reader.join(10)
    finally:
        event.remove(engine, "after_cursor_execute", pause_after_select)
    assert seen == ["old"]  # the reader really did read the old row
    return _name(engine, 1)


def test_a_fill_that_lost_the_race_is_not_stored(engine, cache):
    _seed(engine, h1="old")
    assert _race(engine) == "new"
    assert SQLModelCache.stats().by_model["Hero"].fills == 1  # only the fresh read filled


def test_without_leases_the_race_serves_a_stale_row(engine, redis_client, prefix):
    # The control: the same interleaving with best-effort fills stores the old row.
    SQLModelCache.configure(PlainRedis(RedisSyncTransport(redis_client)), key_prefix=prefix)
    _seed(engine, h1="old")
    assert _race(engine) == "old"


@pytest.fixture
def repeatable_read(engine) -> Iterator[sa.Engine]:
    rr = sa.create_engine(PG_URL, isolation_level="REPEATABLE READ")
    yield rr
    rr.dispose()


def test_no_fill_from_a_snapshot_older_than_the_lease(engine, repeatable_read, snapshot_cache):
    _seed(engine, h1="old")
    with Session(engine) as session:
        session.add(Plain(id=1))
        session.commit()
    with Session(repeatable_read) as reader:
        reader.get(Plain, 1)  # the transaction's snapshot is taken here
        _rename(engine, 1, "new")  # committed and invalidated after the snapshot
        assert reader.get(Hero, 1).name == "old"  # what this snapshot sees
    assert _name(engine, 1) == "new"
    assert SQLModelCache.stats().by_model["Hero"].fills == 1  # only the last get filled


def test_snapshot_isolation_still_fills_when_the_get_starts_the_transaction(
    engine, repeatable_read, snapshot_cache
):
    _seed(engine, h1="old")
    with Session(repeatable_read) as session:
        session.get(Hero, 1)
    assert SQLModelCache.stats().by_model["Hero"].fills == 1


def test_snapshot_isolation_fills_when_the_get_is_the_first_statement(
    engine, repeatable_read, snapshot_cache
):
    _seed(engine, h1="old")
    with Session(repeatable_read) as session:
        session.connection()  # SQLAlchemy has begun; the database has not taken a snapshot
        session.get(Hero, 1)
    assert SQLModelCache.stats().by_model["Hero"].fills == 1


def test_read_committed_fills_later_in_a_transaction(engine, cache):
    _seed(engine, h1="a", h2="b")
    with Session(engine) as session:
        session.get(Hero, 1)
        session.get(Hero, 2)
    assert SQLModelCache.stats().by_model["Hero"].fills == 2


def test_soak_concurrent_reads_and_writes_leave_no_stale_entry(engine, cache, prefix):
    rows = 4
    _seed(engine, **{f"h{i}": "v0" for i in range(1, rows + 1)})
    deadline = time.monotonic() + 3.0
    errors: list[BaseException] = []
    counts = {"reads": 0, "writes": 0}

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while time.monotonic() < deadline:
                ident = rng.randint(1, rows)
                if rng.random() < 0.3:
                    with Session(engine) as session:
                        hero = session.get(Hero, ident)
                        assert hero is not None
                        hero.name = f"v{rng.randint(1, 10**9)}"
                        session.commit()
                    counts["writes"] += 1
                else:
                    _name(engine, ident)
                    counts["reads"] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert counts["writes"] > 20 and counts["reads"] > 50

    codec = registry.info(Hero).codec
    stale = []
    with engine.connect() as conn:
        truth = dict(conn.execute(sa.text("SELECT id, name FROM hero")).all())
    for ident, name in truth.items():
        data = cache.get(f"{prefix}:Hero:id={ident}")
        values = None if data is None else codec.decode(data)
        if values is not None and values[1] != name:
            stale.append((ident, values[1], name))
    hits = SQLModelCache.stats().hits
    print(
        f"soak: {counts['reads']} reads, {counts['writes']} writes, {hits} hits, {len(stale)} stale"
    )
    assert stale == []
    assert hits > 0


class HoldingTransport(RedisSyncTransport):
    """Holds the thread named "leader" right after its fill succeeded."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.filled, self.go_on = threading.Event(), threading.Event()

    def fill_many(self, fills: Any) -> list[bool]:
        stored = super().fill_many(fills)
        if threading.current_thread().name == "leader":
            self.filled.set()
            assert self.go_on.wait(10)
        return stored


@pytest.mark.parametrize("follower_arrives", ["before the commit", "after the commit"])
def test_a_follower_never_takes_a_row_read_before_an_invalidation(
    engine, redis_client, prefix, follower_arrives, monkeypatch
):
    # The leader read the old row (and, once followed, stored it at once); a commit
    # invalidates it before the leader hands the row to its followers.
    _seed(engine, h1="old")
    transport = HoldingTransport(redis_client)
    SQLModelCache.configure(transport, key_prefix=prefix)
    runtime = _runtime.current
    assert runtime is not None
    followed: list[str] = []
    follow = runtime.flights.follow

    def recorded_follow(key: str) -> Any:
        followed.append(key)
        return follow(key)

    monkeypatch.setattr(runtime.flights, "follow", recorded_follow)
    read, read_go = threading.Event(), threading.Event()

    def hold_the_leader_after_its_read(conn, cursor, statement, *args: Any) -> None:
        if threading.current_thread().name == "leader" and statement.startswith("SELECT"):
            read.set()
            assert read_go.wait(10)

    event.listen(engine, "after_cursor_execute", hold_the_leader_after_its_read)
    got: dict[str, str] = {}
    leader = threading.Thread(target=lambda: got.update(leader=_name(engine, 1)), name="leader")
    follower = threading.Thread(target=lambda: got.update(follower=_name(engine, 1)))
    try:
        leader.start()
        assert read.wait(10)
        if follower_arrives == "before the commit":
            follower.start()
            deadline = time.monotonic() + 10
            while runtime.flights.following == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            assert runtime.flights.following == 1
            read_go.set()
            assert transport.filled.wait(10)  # followed, the leader stores the row at once
        with engine.begin() as conn:  # a commit in this process: invalidates Hero 1
            conn.execute(sa.update(HERO).where(HERO.c.id == 1).values(name="new"))
        if follower_arrives == "after the commit":
            follower.start()
            follower.join(10)  # done without waiting for the leader: it did not follow
            assert not follower.is_alive() and followed == []
    finally:
        read_go.set()
        transport.go_on.set()
        leader.join(10)
        follower.join(10)
        event.remove(engine, "after_cursor_execute", hold_the_leader_after_its_read)
    assert got == {"leader": "old", "follower": "new"}
    assert _name(engine, 1) == "new"
