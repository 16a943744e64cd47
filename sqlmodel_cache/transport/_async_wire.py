"""The asyncio twin of ``Wire``: connections of our own for one event loop's hot path.

A connection is opened and authenticated by redis-py's asyncio connection class,
then spoken to through its stream: commands packed once and written, replies
parsed by hiredis, the client's read timeout kept with one ``asyncio.timeout``.
About 40 µs less per call than ``redis.asyncio``'s own path. Only for clients
that ``Wire`` would take too (see ``_wire``): anything else keeps redis.asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis
import redis.asyncio

from ._wire import (
    BROKEN,
    SKIP_REPLY,
    Command,
    feed,
    pack,
    parsed,
    plain_settings,
    raise_errors,
    replies_reader,
)

AsyncReplies = Callable[[], Awaitable[list[Any]]]


class _AsyncConn:
    """One stream to Redis and the reader of its replies."""

    __slots__ = ("_redis_conn", "reader", "stream", "timeout", "writer")

    def __init__(self, redis_conn: Any) -> None:
        self._redis_conn = redis_conn
        self.stream: asyncio.StreamReader = redis_conn._reader
        self.writer: asyncio.StreamWriter = redis_conn._writer
        self.timeout: float | None = redis_conn.socket_timeout
        self.reader = replies_reader()

    async def read(self, count: int) -> list[Any]:
        replies: list[Any] = []
        while not parsed(self.reader, replies, count):
            try:
                async with asyncio.timeout(self.timeout):
                    data = await self.stream.read(65536)
            except TimeoutError as exc:
                raise redis.TimeoutError("Timeout reading from Redis") from exc
            feed(self.reader, data)
        return replies

    def send(self, payload: bytes) -> None:
        try:
            self.writer.write(payload)  # buffered by the transport if the socket is full
        except (OSError, RuntimeError) as exc:
            raise redis.ConnectionError(f"Error writing to Redis: {exc}") from exc
        if self.writer.transport.is_closing():
            raise redis.ConnectionError("Redis closed the connection")

    def close(self) -> None:
        """Close now, from this connection's event loop (no await: it may be cancelled)."""
        self.writer.transport.abort()


def _abandon(loop: asyncio.AbstractEventLoop, conn: _AsyncConn) -> None:
    """Close a connection whose replies nobody will read (from whatever thread the
    garbage collector runs in: the loop closes it)."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: so is the socket
        loop.call_soon_threadsafe(conn.close)


class AsyncWire:
    """Connections of our own to the Redis of a plain asyncio client, for one event loop."""

    skips_replies: bool | None = None  # whether the server takes CLIENT REPLY SKIP

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._pool: Any = client.connection_pool
        self._idle: list[_AsyncConn] = []

    def close(self) -> None:
        """Close the idle connections (those in use close when their caller is done)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def _connect(self) -> _AsyncConn:
        pool = self._pool  # its connection class and settings; not its connections
        redis_conn = pool.connection_class(**pool.connection_kwargs)
        try:
            await redis_conn.connect()  # redis-py says hello: AUTH, SELECT, client name...
        except OSError as exc:
            raise redis.ConnectionError(f"Error connecting to Redis: {exc}") from exc
        return _AsyncConn(redis_conn)

    async def _sent(self, payload: bytes) -> tuple[_AsyncConn, bool]:
        """A connection payload was sent on, and whether it was used before."""
        while self._idle:
            conn = self._idle.pop()
            if conn.stream.at_eof():  # the server closed it while idle
                conn.close()
                continue
            try:
                conn.send(payload)
                return conn, True
            except redis.ConnectionError:
                conn.close()  # closed while idle (a restart): a new one
        conn = await self._connect()
        conn.send(payload)
        return conn, False

    async def _read(self, conn: _AsyncConn, reused: bool, payload: bytes, count: int) -> list[Any]:
        """The count replies to payload, sent on conn; conn goes back to the idle ones."""
        try:
            try:
                got = await conn.read(count)
            except BROKEN:
                if not reused:
                    raise
                conn.close()  # it broke before it got them: once more, on a new one
                conn = await self._connect()
                conn.send(payload)
                got = await conn.read(count)
        except BaseException:  # a cancellation too: replies may still come
            conn.close()
            raise
        self._idle.append(conn)
        return raise_errors(got)

    async def call(self, commands: Sequence[Command]) -> list[Any]:
        """Send commands and read their replies (raising the first error among them)."""
        payload = pack(commands)
        conn, reused = await self._sent(payload)
        return await self._read(conn, reused, payload, len(commands))

    async def begin(self, commands: Sequence[Command]) -> AsyncReplies:
        """Send commands now; the returned coroutine function reads their replies. Should
        it be dropped unread, the connection is closed."""
        payload = pack(commands)
        conn, reused = await self._sent(payload)

        async def replies() -> list[Any]:
            abandoned.detach()
            return await self._read(conn, reused, payload, len(commands))

        abandoned = weakref.finalize(replies, _abandon, asyncio.get_running_loop(), conn)
        return replies

    async def quietly(self, command: Command) -> None:
        """Send command with CLIENT REPLY SKIP before it (see Wire.quietly)."""
        if self.skips_replies is False:
            await self.call([command])
        elif self.skips_replies:
            conn, _reused = await self._sent(pack([SKIP_REPLY, command]))
            self._idle.append(conn)
        else:
            conn = await self._connect()
            try:
                conn.send(pack([SKIP_REPLY, command, ("PING",)]))
                (first,) = await conn.read(1)
            finally:
                conn.close()  # replies may follow: nobody is to read them
            self.skips_replies = not isinstance(first, redis.ResponseError)


def async_wire_for(client: Any) -> AsyncWire | None:
    """An AsyncWire for client, where its connections are plain ones (see _wire)."""
    if type(client) is not redis.asyncio.Redis:
        return None
    pool = client.connection_pool
    plain = (redis.asyncio.Connection, redis.asyncio.UnixDomainSocketConnection)
    if type(pool) is not redis.asyncio.ConnectionPool or pool.connection_class not in plain:
        return None
    return AsyncWire(client) if plain_settings(pool.connection_kwargs) else None
