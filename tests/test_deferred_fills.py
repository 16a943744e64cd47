"""A miss stores its row at the end of its transaction, with the transaction's other
fills and invalidations: read-modify-write costs two round trips, N misses N + 1."""

from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import Session

from sqlmodel_cache import SQLModelCache, _writes
from sqlmodel_cache.transport import RedisSyncTransport

from .heroes import name, seed
from .models import Hero


class Counting(RedisSyncTransport):
    """Records each call that is one round trip to Redis."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.calls: list[str] = []

    def lease(self, key: str) -> tuple[bytes | None, bytes | None]:
        self.calls.append("lease")
        return super().lease(key)

    def fill_many(self, fills: Any) -> list[bool]:
        self.calls.append(f"fill_many:{len(fills)}")
        return super().fill_many(fills)

    def begin_fill_many(self, fills: Any) -> Any:
        self.calls.append(f"fill_many:{len(fills)}")  # sent now, replies read later
        replies = super().begin_fill_many(fills)

        def read() -> list[bool]:
            self.calls.append("replies")
            return replies()

        return read

    def release(self, key: str, token: bytes) -> None:
        self.calls.append("release")
        super().release(key, token)

    def begin_hold(self, keys: Any, channel: str, message: str, fills: Any = ()) -> Any:
        self.calls.append(f"hold:{len(keys)}+{len(fills)}")  # sent now, replies read later
        replies = super().begin_hold(keys, channel, message, fills)

        def read() -> list[bool]:
            self.calls.append("replies")
            return replies()

        return read

    def unhold(self, keys: Any) -> None:
        self.calls.append(f"unhold:{len(keys)}")  # sent, no reply to wait for
        super().unhold(keys)

    def invalidate(self, keys: Any, channel: str, message: str, fills: Any = ()) -> list[bool]:
        self.calls.append(f"invalidate:{len(keys)}+{len(fills)}")
        return super().invalidate(keys, channel, message, fills)


@pytest.fixture
def counting(redis_client, prefix) -> Counting:
    transport = Counting(redis_client)
    SQLModelCache.configure(transport, key_prefix=prefix)
    return transport


def _hits_without_sql(engine, sql, *idents: int) -> None:
    sql.clear()
    for ident in idents:
        assert name(engine, ident) is not None
    assert sql.statements == []


def test_read_modify_write_is_two_round_trips_and_fills_nothing_it_wrote(engine, sql, counting):
    seed(engine, (1, "a"))
    counting.calls.clear()
    with Session(engine) as session:
        hero = session.get(Hero, 1)
        assert hero is not None
        hero.name = "b"
        session.commit()
    assert counting.calls == ["lease", "hold:1+0", "replies", "unhold:1"]
    counting.calls.clear()
    assert name(engine, 1) == "b"  # the next reader fills the committed row
    assert counting.calls == ["lease", "fill_many:1", "replies"]
    _hits_without_sql(engine, sql, 1)


def test_misses_of_one_transaction_fill_in_one_round_trip_at_its_end(engine, sql, counting):
    seed(engine, (1, "a"), (2, "b"), (3, "c"))
    counting.calls.clear()
    with Session(engine) as session:
        for ident in (1, 2, 3):
            session.get(Hero, ident)
        assert counting.calls == ["lease"] * 3  # nothing stored while the transaction lasts
    assert counting.calls == ["lease"] * 3 + ["fill_many:3", "replies"]
    assert SQLModelCache.stats().by_model["Hero"].fills == 3
    _hits_without_sql(engine, sql, 1, 2, 3)


def test_a_commit_fills_what_it_read_and_invalidates_what_it_wrote(engine, sql, counting):
    seed(engine, (1, "a"), (2, "b"))
    counting.calls.clear()
    with Session(engine) as session:
        session.get(Hero, 1)  # read only: filled at the commit
        hero = session.get(Hero, 2)
        assert hero is not None
        hero.name = "B"  # read and written: only invalidated
        session.commit()
    # The fill goes out with the hold on the row written, before the database's COMMIT;
    # their replies are read after it, and the hold released without waiting.
    assert counting.calls == ["lease", "lease", "hold:1+1", "replies", "unhold:1"]
    _hits_without_sql(engine, sql, 1)
    assert name(engine, 2) == "B"


def test_a_commit_elsewhere_before_the_end_defeats_the_deferred_fill(engine, sql, counting):
    seed(engine, (1, "old"))
    counting.calls.clear()
    with Session(engine) as reader:
        assert reader.get(Hero, 1).name == "old"  # read under the lease, not stored yet
        with Session(engine) as writer:
            writer.get(Hero, 1, execution_options={"cache": False}).name = "new"
            writer.commit()  # its invalidation takes the reader's lease
    stats = SQLModelCache.stats().by_model["Hero"]
    assert (stats.fills, stats.unfilled.get("lease_lost")) == (0, 1)
    assert name(engine, 1) == "new"


def test_a_rolled_back_transaction_still_fills_what_it_read_before_writing(engine, sql, counting):
    seed(engine, (1, "a"), (2, "b"))
    counting.calls.clear()
    with Session(engine) as session:
        session.get(Hero, 1)
        session.get(Hero, 2).name = "never"
        session.flush()
        session.rollback()
    assert counting.calls == ["lease", "lease", "fill_many:2", "replies"]
    _hits_without_sql(engine, sql, 1)
    assert name(engine, 2) == "b"


def test_a_long_transaction_sends_its_fills_early(engine, sql, counting, monkeypatch):
    # Its leases stop other readers from filling: they must not wait for its end.
    monkeypatch.setattr(_writes, "_FILLS_MAX", 2)
    seed(engine, (1, "a"), (2, "b"), (3, "c"))
    counting.calls.clear()
    with Session(engine) as session:
        for ident in (1, 2, 3):
            session.get(Hero, ident)
        assert counting.calls == ["lease", "lease", "fill_many:2", "lease"]
    assert counting.calls[-2:] == ["fill_many:1", "replies"]
    _hits_without_sql(engine, sql, 1, 2, 3)


def test_fills_of_a_reset_runtime_are_dropped(engine, redis_client, prefix):
    seed(engine, (1, "a"))
    SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix)
    with Session(engine) as session:
        session.get(Hero, 1)
        SQLModelCache.reset()
        SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix + "-2")
    assert list(redis_client.scan_iter(match=f"{prefix}-2:*")) == []
    assert SQLModelCache.stats().by_model == {}


def test_fills_travel_while_the_database_ends_the_transaction(engine, sql, counting):
    # Sent before the database's ROLLBACK (or COMMIT), read after the connection is back.
    seed(engine, (1, "a"))
    counting.calls.clear()
    order: list[str] = []
    checkin = lambda *args: order.append(f"checkin after {counting.calls[-1]}")  # noqa: E731
    event.listen(engine.pool, "checkin", checkin)
    try:
        with Session(engine) as session:
            session.get(Hero, 1)
    finally:
        event.remove(engine.pool, "checkin", checkin)
    assert order == ["checkin after fill_many:1"]
    assert counting.calls == ["lease", "fill_many:1", "replies"]
    _hits_without_sql(engine, sql, 1)
