"""Holds: a commit's invalidation travels while the database commits.

Just before the database's COMMIT, the rows a transaction wrote are replaced in
Redis by holds (and other processes are told); nobody can read or fill a held key,
so a row read before the commit can never be stored. After the commit the holds
are released without waiting for Redis. Real Redis, real databases.
"""

from typing import Any

import pytest
import redis
from sqlalchemy import event
from sqlmodel import Session

from sqlmodel_cache import SQLModelCache, _runtime
from sqlmodel_cache.transport import RedisSyncTransport
from sqlmodel_cache.transport._base import HOLD_MARK

from .conftest import redis_server
from .heroes import name, seed
from .models import Hero
from .test_deferred_fills import Counting


class Landed(RedisSyncTransport):
    """Waits for each hold's replies at once, so that a test can act while the hold is
    surely in Redis and the database has not committed yet."""

    def begin_hold(self, keys: Any, channel: str, message: str, fills: Any = ()) -> Any:
        stored = super().begin_hold(keys, channel, message, fills)()
        return lambda: stored


class LateHold(RedisSyncTransport):
    """Sends each hold only when its replies are read, after the database committed: as
    if Redis took the hold after commands sent later on other connections."""

    def begin_hold(self, keys: Any, channel: str, message: str, fills: Any = ()) -> Any:
        begin = super().begin_hold

        def late() -> Any:
            return begin(keys, channel, message, fills)()

        return late


def _key(prefix: str, ident: int = 1) -> str:
    return f"{prefix}:Hero:id={ident}"


def _free(transport: RedisSyncTransport, key: str) -> bool:
    """Whether a reader could lease key now (then the lease is given back)."""
    value, token = transport.lease(key)
    if token is not None:
        transport.release(key, token)
    return value is None and token is not None


def test_a_get_during_the_commit_reads_the_database_and_stores_nothing(
    engine, sql, redis_client, prefix
):
    seed(engine, (1, "old"))
    SQLModelCache.configure(Landed(redis_client), key_prefix=prefix)
    assert name(engine, 1) == "old"  # cached
    seen: list[Any] = []

    def during_commit(conn) -> None:  # after sqlmodel-cache's own commit listener
        seen.append(redis_client.get(_key(prefix)))
        seen.append(name(engine, 1))  # another session, before the writer's COMMIT

    event.listen(engine, "commit", during_commit)
    try:
        with Session(engine) as session:
            session.get(Hero, 1, execution_options={"cache": False}).name = "new"
            session.commit()
    finally:
        event.remove(engine, "commit", during_commit)
    held, read = seen
    assert held.startswith(HOLD_MARK) and read == "old"
    assert SQLModelCache.stats().by_model["Hero"].unfilled.get("leased") == 1
    assert name(engine, 1) == "new"  # the first get after the commit fills
    sql.clear()
    assert name(engine, 1) == "new"
    assert sql.statements == []


def test_a_key_held_by_two_commits_is_free_once_both_are_over(redis_client, prefix):
    # One thread and one client: the pool hands back the connection the send-only
    # release used, and Redis answers a connection's commands in order.
    transport = RedisSyncTransport(redis_client)
    key = _key(prefix)
    for _ in range(2):
        transport.begin_hold([key], f"{prefix}:news", "-")()
    transport.unhold([key])
    assert not _free(transport, key)
    transport.unhold([key])
    assert _free(transport, key)


def test_deletes_leave_holds_to_their_commits(redis_client, prefix):
    transport = RedisSyncTransport(redis_client)
    key = _key(prefix)
    transport.begin_hold([key], f"{prefix}:news", "-")()
    transport.delete(key)
    transport.invalidate([key], f"{prefix}:news", "-")
    transport.delete_model(f"{prefix}:Hero:")
    assert redis_client.get(key).startswith(HOLD_MARK)
    transport.unhold([key])
    assert _free(transport, key)


def test_a_release_also_deletes_a_row_stored_after_the_hold_went(redis_client, prefix):
    transport = RedisSyncTransport(redis_client)
    key = _key(prefix)
    transport.begin_hold([key], f"{prefix}:news", "-")()
    redis_client.set(key, b"a row read before the commit")  # as after an expired hold
    transport.unhold([key])
    assert redis_client.get(key) is None


def test_a_commit_that_outlived_its_holds_invalidates_again(engine, redis_client, prefix):
    seed(engine, (1, "old"))
    counting = Counting(redis_client)
    SQLModelCache.configure(counting, key_prefix=prefix)
    assert name(engine, 1) == "old"
    runtime = _runtime.current
    assert runtime is not None
    runtime._hold_for = -1.0  # every commit now takes longer than its holds may last
    counting.calls.clear()
    with Session(engine) as session:
        session.get(Hero, 1, execution_options={"cache": False}).name = "new"
        session.commit()
    assert counting.calls == ["hold:1+0", "replies", "unhold:1", "invalidate:1+0"]
    assert name(engine, 1) == "new"


def test_a_failed_commit_releases_its_holds(engine, sql, redis_client, prefix):
    seed(engine, (1, "old"))
    transport = RedisSyncTransport(redis_client)
    SQLModelCache.configure(transport, key_prefix=prefix)
    assert name(engine, 1) == "old"

    def fail(conn) -> None:  # after the holds went out, before the database commits
        raise RuntimeError("the commit fails")

    event.listen(engine, "commit", fail)
    try:
        with Session(engine) as session:
            session.get(Hero, 1, execution_options={"cache": False}).name = "never"
            with pytest.raises(RuntimeError):
                session.commit()
    finally:
        event.remove(engine, "commit", fail)
    assert _free(transport, _key(prefix))
    assert name(engine, 1) == "old"
    sql.clear()
    assert name(engine, 1) == "old"  # filled again
    assert sql.statements == []


def test_a_server_refusing_client_reply_still_releases_holds(engine, sql, prefix):
    with redis_server("--rename-command", "CLIENT", '""') as port:
        client = redis.Redis(port=port)
        transport = RedisSyncTransport(client)
        SQLModelCache.configure(transport, key_prefix=prefix)
        seed(engine, (1, "a"))
        for new in ("b", "c"):  # the first release finds out, the second knows
            with Session(engine) as session:
                session.get(Hero, 1, execution_options={"cache": False}).name = new
                session.commit()
            assert transport._line is not None and transport._line.skips_replies is False
            assert name(engine, 1) == new
            sql.clear()
            assert name(engine, 1) == new
            assert sql.statements == []
        assert SQLModelCache.stats().errors == 0
        client.close()


def test_a_row_read_from_redis_before_the_hold_landed_is_not_kept_in_l1(
    engine, sql, redis_client, prefix
):
    seed(engine, (1, "old"))
    SQLModelCache.configure(LateHold(redis_client), key_prefix=prefix, l1=True)
    assert name(engine, 1) == "old"  # in Redis and L1
    runtime = _runtime.current
    assert runtime is not None and runtime.l1 is not None
    runtime.l1.drop([_key(prefix)])  # in Redis only
    seen: list[Any] = []

    def during_commit(conn) -> None:  # the hold is not in Redis yet
        sql.clear()
        seen.append(name(engine, 1))
        seen.append(list(sql.statements))

    event.listen(engine, "commit", during_commit)
    try:
        with Session(engine) as session:
            session.get(Hero, 1, execution_options={"cache": False}).name = "new"
            session.commit()
    finally:
        event.remove(engine, "commit", during_commit)
    assert seen == ["old", []]  # an L2 hit, which L1 took
    assert name(engine, 1) == "new"


def test_a_flight_that_began_before_the_hold_landed_shares_nothing_after_the_commit(
    engine, redis_client, prefix
):
    seed(engine, (1, "old"))
    SQLModelCache.configure(LateHold(redis_client), key_prefix=prefix)
    runtime = _runtime.current
    assert runtime is not None
    key = _key(prefix)
    flights: list[Any] = []

    def during_commit(conn) -> None:  # a leader starts: it may read the old row
        flights.append(runtime.flights.lead(key))

    event.listen(engine, "commit", during_commit)
    try:
        with Session(engine) as session:
            session.get(Hero, 1, execution_options={"cache": False}).name = "new"
            session.commit()
    finally:
        event.remove(engine, "commit", during_commit)
    (flight,) = flights
    assert flight is not None and flight.stale  # followers from now on read the database
    runtime.flights.finish(key, flight, None)
