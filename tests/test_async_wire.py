"""AsyncWire, and what an AsyncSession sends over it: fills and holds in two halves.
Real Redis servers, real databases. The wire needs no greenlet; AsyncSession does
(those tests are marked, and import it where they run)."""

import asyncio
import gc
import os
import signal
import time
from typing import Any

import pytest
import redis
import redis.asyncio
from sqlalchemy import event
from sqlmodel import Session

from sqlmodel_cache import SQLModelCache
from sqlmodel_cache.transport import RedisAsyncTransport
from sqlmodel_cache.transport._async_wire import AsyncWire, async_wire_for
from sqlmodel_cache.transport._base import HOLD_MARK

from .conftest import REDIS_URL, redis_server
from .heroes import name, seed
from .models import Hero


def _wire(**options: Any) -> AsyncWire:
    wire = async_wire_for(redis.asyncio.Redis.from_url(REDIS_URL, **options))
    assert wire is not None
    return wire


def test_only_plain_asyncio_clients_get_a_wire():
    assert async_wire_for(redis.asyncio.Redis.from_url(REDIS_URL)) is not None
    for other in (
        redis.asyncio.Redis.from_url(REDIS_URL, protocol=3),
        redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True),
        redis.asyncio.Redis.from_url("rediss://127.0.0.1:6379/0"),
        redis.asyncio.Redis(connection_pool=redis.asyncio.BlockingConnectionPool()),
    ):
        assert async_wire_for(other) is None


def test_replies_come_back_in_order_and_errors_after_all_were_read(prefix):
    async def main() -> None:
        wire = _wire()
        key = f"{prefix}:k"
        assert await wire.call([("SET", key, b"v"), ("GET", key)]) == [b"OK", b"v"]
        replies = await wire.begin([("SET", key, "text"), ("INCR", key), ("SET", key, "w")])
        with pytest.raises(redis.ResponseError):
            await replies()
        assert await wire.call([("GET", key)]) == [b"w"]

    asyncio.run(main())


def test_a_connection_killed_while_idle_is_replaced(redis_client):
    async def main() -> None:
        wire = _wire()
        (killed,) = await wire.call([("CLIENT", "ID")])
        assert redis_client.client_kill_filter(_id=killed) == 1
        (now,) = await wire.call([("CLIENT", "ID")])
        assert now != killed

    asyncio.run(main())


def test_a_quiet_command_is_not_lost_to_a_connection_closed_while_idle(redis_client, prefix):
    async def main() -> None:
        wire = _wire()
        await wire.quietly(("PING",))  # learn that the server skips replies
        (killed,) = await wire.call([("CLIENT", "ID")])
        assert redis_client.client_kill_filter(_id=killed) == 1
        deadline = time.monotonic() + 2
        while not wire._idle[-1].stream.at_eof() and time.monotonic() < deadline:
            await asyncio.sleep(0.001)  # until the loop has seen the server's close
        await wire.quietly(("SET", f"{prefix}:k", "v"))
        assert redis_client.get(f"{prefix}:k") == b"v"

    asyncio.run(main())


def _stalled(port: int) -> int:
    pid = int(redis.Redis(port=port).info("server")["process_id"])
    os.kill(pid, signal.SIGSTOP)
    return pid


def test_a_stalled_server_is_a_timeout_and_a_cancelled_read_closes_its_connection():
    async def main(port: int) -> None:
        wire = async_wire_for(redis.asyncio.Redis(port=port, socket_timeout=0.2))
        assert wire is not None
        assert await wire.call([("PING",)]) == [b"PONG"]
        conn = await wire._connect()  # for the cancelled read below
        pid = _stalled(port)
        try:
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError):
                await wire.call([("PING",)])
            assert time.monotonic() - started < 2
            wire._idle.append(conn)
            task = asyncio.ensure_future(wire.call([("PING",)]))
            await asyncio.sleep(0.05)  # the PING is sent on conn; its reply cannot come
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Its reply may still come: the connection is closed, nobody may read it.
            assert conn.writer.transport.is_closing() and wire._idle == []
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await wire.call([("PING",)]) == [b"PONG"]

    with redis_server() as port:
        asyncio.run(main(port))


def test_replies_never_read_close_their_connection(prefix):
    async def main() -> None:
        wire = _wire()
        await wire.call([("PING",)])
        (conn,) = wire._idle
        replies = await wire.begin([("SET", f"{prefix}:k", "v")])
        del replies  # a transaction that never ended, its session gone
        gc.collect()
        await asyncio.sleep(0)  # the loop closes it
        assert conn.writer.transport.is_closing() and wire._idle == []
        assert await wire.call([("GET", f"{prefix}:k")]) == [b"v"]

    asyncio.run(main())


@pytest.mark.parametrize("refused", [False, True], ids=["skipped", "client-refused"])
def test_a_quiet_command_leaves_nothing_unread(refused):
    async def main(port: int) -> None:
        wire = async_wire_for(redis.asyncio.Redis(port=port))
        assert wire is not None
        for value in ("a", "b"):
            await wire.quietly(("SET", "k", value))
            assert await wire.call([("GET", "k")]) == [value.encode()]
        assert wire.skips_replies is not refused

    options = ("--rename-command", "CLIENT", '""') if refused else ()
    with redis_server(*options) as port:
        asyncio.run(main(port))


@pytest.mark.greenlet
def test_an_async_commit_holds_its_rows_while_the_database_commits(engine, prefix, redis_client):
    from sqlmodel.ext.asyncio.session import AsyncSession

    from .test_async import Selects, aname, async_engine

    seed(engine, (1, "old"))
    seen: list[Any] = []

    def during_commit(conn: Any) -> None:
        seen.append(redis_client.get(f"{prefix}:Hero:id=1"))
        seen.append(name(engine, 1))  # a plain Session, before the writer's COMMIT

    async def main() -> None:
        SQLModelCache.configure(RedisAsyncTransport.from_url(REDIS_URL), key_prefix=prefix)
        aengine = async_engine(engine)
        event.listen(aengine.sync_engine, "commit", during_commit)
        assert await aname(aengine, 1) == "old"
        async with AsyncSession(aengine) as session:
            hero = await session.get(Hero, 1, execution_options={"cache": False})
            hero.name = "new"
            await session.commit()
        assert redis_client.get(f"{prefix}:Hero:id=1") is None  # released
        selects = Selects(aengine)
        assert await aname(aengine, 1) == "new"  # fills
        assert await aname(aengine, 1) == "new"
        assert selects.count == 1
        await aengine.dispose()

    asyncio.run(main())
    held, read = seen
    assert held.startswith(HOLD_MARK) and read == "old"
    assert SQLModelCache.stats().by_model["Hero"].unfilled.get("leased") == 1


class CountingAsync(RedisAsyncTransport):
    """Records the calls an AsyncSession makes in two halves."""

    calls: list[str]

    async def begin_fill_many(self, fills: Any) -> Any:
        self.calls.append(f"fill_many:{len(fills)}")  # sent now, replies read later
        replies = await super().begin_fill_many(fills)

        async def read() -> list[bool]:
            self.calls.append("replies")
            return await replies()

        return read


@pytest.mark.greenlet
def test_an_async_miss_fills_while_the_database_rolls_back(engine, prefix):

    from .test_async import Selects, aname, async_engine

    seed(engine, (1, "a"))
    transport = CountingAsync(redis.asyncio.Redis.from_url(REDIS_URL))
    transport.calls = []
    order: list[str] = []

    def checkin(*args: Any) -> None:
        order.append(f"checkin after {transport.calls[-1]}")

    async def main() -> None:
        SQLModelCache.configure(transport, key_prefix=prefix)
        aengine = async_engine(engine)
        event.listen(aengine.sync_engine.pool, "checkin", checkin)
        assert await aname(aengine, 1) == "a"
        selects = Selects(aengine)
        assert await aname(aengine, 1) == "a"
        assert selects.count == 0
        await aengine.dispose()

    asyncio.run(main())
    assert order == ["checkin after fill_many:1"]  # sent before the ROLLBACK, read after
    assert transport.calls == ["fill_many:1", "replies"]


def test_a_plain_session_on_the_async_transport_holds_through_its_sync_twin(engine, prefix):
    seed(engine, (1, "a"))
    SQLModelCache.configure(RedisAsyncTransport.from_url(REDIS_URL), key_prefix=prefix)
    assert name(engine, 1) == "a"
    with Session(engine) as session:
        session.get(Hero, 1, execution_options={"cache": False}).name = "b"
        session.commit()
    assert name(engine, 1) == "b"
