"""Redis transports: redis-py clients (plain or cluster, sync or asyncio) behind the contract."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from .._errors import ConfigurationError, TransportError
from .._forks import reset_after_fork
from ._async_wire import AsyncReplies, AsyncWire, async_wire_for
from ._base import HOLD_MARK, LEASE_MARK, new_lease_token
from ._clients import async_twin, check_bytes, from_url, sync_twin, warn_if_unbounded
from ._wire import line_for

# Every script touches one key, so they run on Redis Cluster too. They are sent
# once and then called by SHA (redis-py's Script loads them again if needed).
_LEASE = """
local value = redis.call('GET', KEYS[1])
if value then
    if string.sub(value, 1, string.len(ARGV[3])) == ARGV[3] then return 0 end
    return value
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_FILL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
    return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""
# Holds (see Runtime.hold): a committing transaction replaces its keys' values with a
# hold counting its holders, before the database commits; readers take a hold for
# another reader's lease, so none fills the key until the last holder released it after
# its commit. Deletes leave holds alone (a held key holds no row); a release also
# deletes whatever is there that is not a hold (a row stored after a hold expired).
# Multi-key scripts: plain Redis only. GETRANGE reads no more than a hold's length.
_HOLD = """
local mark = ARGV[1]
for _, key in ipairs(KEYS) do
    local head = redis.call('GETRANGE', key, 0, 63)
    local count = 1
    if string.sub(head, 1, #mark) == mark then
        count = (tonumber(string.sub(head, #mark + 1)) or 0) + 1
    end
    redis.call('SET', key, mark .. count, 'PX', ARGV[2])
end
return 0
"""
_UNHOLD = """
local mark = ARGV[1]
for _, key in ipairs(KEYS) do
    local head = redis.call('GETRANGE', key, 0, 63)
    local count = 0
    if string.sub(head, 1, #mark) == mark then
        count = (tonumber(string.sub(head, #mark + 1)) or 1) - 1
    end
    local ttl = redis.call('PTTL', key)
    if count > 0 and ttl > 0 then
        redis.call('SET', key, mark .. count, 'PX', ttl)
    else
        redis.call('DEL', key)
    end
end
return 0
"""
_DROP = """
local mark = ARGV[1]
for _, key in ipairs(KEYS) do
    if string.sub(redis.call('GETRANGE', key, 0, #mark - 1), 1, #mark) ~= mark then
        redis.call('DEL', key)
    end
end
return 0
"""
_SCAN_BATCH = 500


class _Translate:
    """Turns a redis-py error into TransportError, naming the operation."""

    __slots__ = ("_action",)

    def __init__(self, action: str) -> None:
        self._action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and isinstance(exc, (redis.RedisError, OSError)):
            down = isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError))
            raise TransportError(f"Redis {self._action} failed: {exc}", unreachable=down) from exc


_GET, _SET, _DEL = _Translate("GET"), _Translate("SET"), _Translate("DEL")
_LEASE_OP, _FILL_OP = _Translate("lease"), _Translate("fill")
_RELEASE_OP, _SCAN_OP = _Translate("release"), _Translate("SCAN/DEL")
_INVALIDATE_OP = _Translate("DEL/PUBLISH")
_UNHOLD_OP = _Translate("release of holds")


def _lease_reply(found: Any, token: bytes) -> tuple[bytes | None, bytes | None]:
    if type(found) is int:
        return None, (token if found == 1 else None)
    return found, None


# The lease in one native command, cheaper than a script: SET NX GET answers the
# value (a hit), another reader's lease, or nil once it installed ours. Redis
# before 7.0 refuses NX with GET; the transport then uses the script for good.
def _lease_command(key: str, token: bytes, lease_ms: int) -> tuple[Any, ...]:
    return ("SET", key, token, "NX", "GET", "PX", lease_ms)


def _has_native_lease(exc: redis.ResponseError) -> bool:
    """False when exc is the server refusing SET NX GET; else re-raises it."""
    if "syntax error" not in str(exc).lower():
        raise exc
    return False


def _native_reply(found: Any, token: bytes) -> tuple[bytes | None, bytes | None]:
    if found is None:
        return None, token
    if found.startswith(LEASE_MARK):
        return None, None
    return found, None


def _drop_command(keys: Sequence[Any]) -> tuple[Any, ...]:
    """Delete keys, but not holds (see _DROP)."""
    return ("EVAL", _DROP, len(keys), *keys, HOLD_MARK)


Fills = Sequence[tuple[str, bytes, bytes, int]]  # (key, lease token, value, ttl) each
AsyncStored = Callable[[], Awaitable[list[bool]]]  # whether each fill was stored


def _fill_commands(fills: Fills) -> list[tuple[Any, ...]]:
    # EVAL, not EVALSHA: one of many replies cannot be a NOSCRIPT to recover from.
    return [("EVAL", _FILL, 1, key, token, value, ttl) for key, token, value, ttl in fills]


def _lease_scripts(
    keys: Sequence[str], tokens: Sequence[bytes], lease_ms: int
) -> list[tuple[Any, ...]]:
    """The lease script for each key: what servers before Redis 7 get."""
    return [("EVAL", _LEASE, 1, k, t, lease_ms, LEASE_MARK) for k, t in zip(keys, tokens)]


def _hold_commands(
    keys: Sequence[str], channel: str, message: str, fills: Fills, lease_ms: int
) -> list[tuple[Any, ...]]:
    """Hold keys, publish message, then the fills: what a commit sends before COMMIT."""
    hold = ("EVAL", _HOLD, len(keys), *keys, HOLD_MARK, lease_ms)
    return [hold, ("PUBLISH", channel, message), *_fill_commands(fills)]


def _unhold_command(keys: Sequence[str]) -> tuple[Any, ...]:
    return ("EVAL", _UNHOLD, len(keys), *keys, HOLD_MARK)


def _glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so a prefix matches literally."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _lease_ms(lease_ttl: float) -> int:
    if not isinstance(lease_ttl, (int, float)) or lease_ttl <= 0:
        raise ConfigurationError(
            f"lease_ttl must be a positive number of seconds, got {lease_ttl!r}"
        )
    return max(1, int(lease_ttl * 1000))


class RedisSyncTransport:
    """Wraps a ``redis.Redis`` or ``RedisCluster`` client; Redis errors become TransportError."""

    def __init__(self, client: redis.Redis | RedisCluster, *, lease_ttl: float = 5.0) -> None:
        if not isinstance(client, (redis.Redis, RedisCluster)):
            raise ConfigurationError(
                f"RedisSyncTransport needs a redis.Redis or RedisCluster client, got {client!r}"
            )
        check_bytes(client, "RedisSyncTransport")
        warn_if_unbounded(client)
        self.client = client
        self.lease_ttl = lease_ttl
        self._lease_ms = _lease_ms(lease_ttl)
        # Plain Redis: the calls every get and commit makes go over a line (see _wire).
        # Holds need multi-key scripts, which Redis Cluster refuses across slots.
        self._line = None if isinstance(client, RedisCluster) else line_for(client)
        self.holds = self._line is not None
        self._lease_script = client.register_script(_LEASE)
        self._fill_script = client.register_script(_FILL)
        self._release_script = client.register_script(_RELEASE)
        self._native_lease = True  # until the server says it has no SET NX GET

    @classmethod
    def from_url(
        cls, url: str, *, cluster: bool = False, lease_ttl: float = 5.0, **options: Any
    ) -> RedisSyncTransport:
        """A transport on a new client for url (``redis://``, ``rediss://``, ``unix://``).

        The client gets timeouts and retries fit for a cache (0.5 s to connect and
        to read, one retry of a broken connection, health checks); options override
        them and are passed to ``redis.Redis.from_url`` (``RedisCluster.from_url``
        with cluster=True, which connects to the cluster at once).
        """
        kind = RedisCluster if cluster else redis.Redis
        return cls(from_url(kind, url, options, asyncio=False), lease_ttl=lease_ttl)

    def get(self, key: str) -> bytes | None:
        with _GET:
            if self._line is not None:
                return self._line.call([("GET", key)])[0]  # type: ignore[no-any-return]
            return self.client.get(key)  # type: ignore[return-value]

    def set(self, key: str, value: bytes, ttl: int) -> None:
        with _SET:
            if self._line is not None:
                self._line.call([("SET", key, value, "EX", ttl)])
            else:
                self.client.set(key, value, ex=ttl)

    def delete(self, *keys: str) -> None:
        if keys:
            with _DEL:
                self._delete(keys)

    def _delete(self, keys: Sequence[Any]) -> None:
        if self._line is not None:
            self._line.call([_drop_command(keys)])
        else:  # RedisCluster.delete splits the keys by slot, so no CROSSSLOT error
            self.client.delete(*keys)

    def lease(self, key: str) -> tuple[bytes | None, bytes | None]:
        token = new_lease_token()
        with _LEASE_OP:
            if self._native_lease:
                try:
                    command = _lease_command(key, token, self._lease_ms)
                    if self._line is not None:
                        found = self._line.call([command])[0]
                    else:
                        client: Any = self.client
                        found = client.execute_command(*command, get=True)
                except redis.ResponseError as exc:
                    self._native_lease = _has_native_lease(exc)
                else:
                    return _native_reply(found, token)
            found = self._lease_script(keys=[key], args=[token, self._lease_ms, LEASE_MARK])
        return _lease_reply(found, token)

    def lease_many(self, keys: Sequence[str]) -> list[tuple[bytes | None, bytes | None]]:
        """lease() for each key: one round trip on plain Redis, one per node on a cluster."""
        tokens = [new_lease_token() for _ in keys]
        with _LEASE_OP:
            if self._line is None:
                pipe: Any = self.client.pipeline()  # grouped by node
                for key, token in zip(keys, tokens):
                    pipe.set(key, token, nx=True, get=True, px=self._lease_ms)
                return [_native_reply(f, t) for f, t in zip(pipe.execute(), tokens)]
            if self._native_lease:
                commands = [_lease_command(k, t, self._lease_ms) for k, t in zip(keys, tokens)]
                try:
                    found = self._line.call(commands)
                except redis.ResponseError as exc:
                    self._native_lease = _has_native_lease(exc)
                else:
                    return [_native_reply(f, t) for f, t in zip(found, tokens)]
            found = self._line.call(_lease_scripts(keys, tokens, self._lease_ms))
        return [_lease_reply(f, t) for f, t in zip(found, tokens)]

    def fill(self, key: str, token: bytes, value: bytes, ttl: int) -> bool:
        with _FILL_OP:
            return bool(self._fill_script(keys=[key], args=[token, value, ttl]))

    def release(self, key: str, token: bytes) -> None:
        with _RELEASE_OP:
            self._release_script(keys=[key], args=[token])

    def fill_many(self, fills: Fills) -> list[bool]:
        """fill() for each (key, token, value, ttl): one round trip on plain Redis."""
        if self._line is None:
            return [self.fill(*item) for item in fills]
        with _FILL_OP:
            return [bool(r) for r in self._line.call(_fill_commands(fills))]

    def begin_fill_many(self, fills: Fills) -> Callable[[], list[bool]]:
        """fill_many(fills) in two halves: sent now, and the returned function reads
        whether each was stored (the caller waits on something else meanwhile)."""
        if self._line is None:
            done = self.fill_many(fills)  # a round trip per node anyway: at once
            return lambda: done
        with _FILL_OP:
            replies = self._line.begin(_fill_commands(fills))

        def stored() -> list[bool]:
            with _FILL_OP:
                return [bool(r) for r in replies()]

        return stored

    def begin_hold(
        self, keys: Sequence[str], channel: str, message: str, fills: Fills = ()
    ) -> Callable[[], list[bool]]:
        """Just before the database commits: hold keys (nobody reads or fills them until
        unhold), publish message on channel and send fills (keys not held), in one write.
        The returned function reads the replies once the commit is over: whether each fill
        was stored. Plain Redis."""
        assert self._line is not None, "holds need plain Redis"
        commands = _hold_commands(keys, channel, message, fills, self._lease_ms)
        with _INVALIDATE_OP:
            replies = self._line.begin(commands)

        def stored() -> list[bool]:
            with _INVALIDATE_OP:
                return [bool(r) for r in replies()[2:]]

        return stored

    def unhold(self, keys: Sequence[str]) -> None:
        """Release holds once their commit is over, without waiting for the reply: a
        hold that stays (the release lost) only keeps readers from filling until it
        expires, after lease_ttl."""
        assert self._line is not None, "holds need plain Redis"
        with _UNHOLD_OP:
            self._line.quietly(_unhold_command(keys))

    def invalidate(
        self, keys: Sequence[str], channel: str, message: str, fills: Fills = ()
    ) -> list[bool]:
        """Delete keys, publish message on channel, then fill_many(fills) (keys that are
        not deleted): one round trip on plain Redis. Whether each fill was stored."""
        with _INVALIDATE_OP:
            if self._line is None:
                # No multi-key DEL across slots, and nodes do not order a pipeline's
                # commands among themselves: the deletes must finish before the news.
                if keys:
                    pipe = self.client.pipeline()
                    for key in keys:
                        pipe.delete(key)
                    pipe.execute()
                self.client.publish(channel, message)
                return self.fill_many(fills) if fills else []
            commands: list[tuple[Any, ...]] = [_drop_command(keys)] if keys else []
            commands.append(("PUBLISH", channel, message))
            replies = self._line.call(commands + _fill_commands(fills))
            return [bool(r) for r in replies[len(commands) :]]

    def delete_model(self, prefix: str) -> None:
        with _SCAN_OP:
            batch: list[Any] = []
            for key in self.client.scan_iter(match=_glob_escape(prefix) + "*", count=_SCAN_BATCH):
                batch.append(key)
                if len(batch) >= _SCAN_BATCH:
                    self._delete(batch)
                    batch.clear()
            if batch:
                self._delete(batch)


async def _closed_with_loop(
    client: redis.asyncio.Redis | AsyncRedisCluster, wire: AsyncWire | None
) -> AsyncGenerator[None, None]:
    """Waits at its yield while the loop runs; the loop's shutdown closes it, the client
    and the wire."""
    try:
        yield
    finally:
        if wire is not None:
            wire.close()
        await client.aclose()


class _LoopClient:
    """An asyncio client and its scripts, for one event loop."""

    __slots__ = ("client", "closer", "fill", "lease", "release", "wire")

    def __init__(self, client: redis.asyncio.Redis | AsyncRedisCluster) -> None:
        self.client = client
        self.wire = async_wire_for(client)  # None: redis.asyncio's own path
        self.lease = client.register_script(_LEASE)
        self.fill = client.register_script(_FILL)
        self.release = client.register_script(_RELEASE)
        # An event loop has one public "I am ending" hook: asyncio.run (and uvicorn)
        # close the async generators started in it, while it still runs. Start one.
        self.closer = _closed_with_loop(client, self.wire)
        with contextlib.suppress(StopIteration):
            self.closer.asend(None).send(None)


class RedisAsyncTransport:
    """Wraps a ``redis.asyncio.Redis`` or ``RedisCluster`` for AsyncSession and Session alike.

    asyncio clients belong to the event loop they first connect in: the given
    client serves the first loop that uses the cache, and every other loop gets
    a client of its own with the same settings. Plain Sessions, which run with
    no loop of theirs, use ``sync``: a blocking client on the same Redis (built
    from the same settings unless ``sync_client`` is given).
    """

    def __init__(
        self,
        client: redis.asyncio.Redis | AsyncRedisCluster,
        *,
        sync_client: redis.Redis | RedisCluster | None = None,
        lease_ttl: float = 5.0,
    ) -> None:
        if not isinstance(client, (redis.asyncio.Redis, AsyncRedisCluster)):
            raise ConfigurationError(
                "RedisAsyncTransport needs a redis.asyncio.Redis or RedisCluster client, "
                f"got {client!r}"
            )
        check_bytes(client, "RedisAsyncTransport")
        warn_if_unbounded(client)
        self.client = client
        self.lease_ttl = lease_ttl
        self._lease_ms = _lease_ms(lease_ttl)
        twin = sync_client if sync_client is not None else sync_twin(client)
        self.sync = RedisSyncTransport(twin, lease_ttl=lease_ttl)
        # Holds and two-halved calls need a wire on both faces (every loop's client is
        # a twin of this one, so this one tells).
        self.holds = async_wire_for(client) is not None and self.sync.holds
        self._loops: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._binding = threading.Lock()
        self._given_client_used = False
        self._native_lease = True  # until the server says it has no SET NX GET
        reset_after_fork(self)

    @classmethod
    def from_url(
        cls, url: str, *, cluster: bool = False, lease_ttl: float = 5.0, **options: Any
    ) -> RedisAsyncTransport:
        """A transport on a new asyncio client for url, with the settings of
        RedisSyncTransport.from_url; options are passed to ``redis.asyncio.Redis.from_url``
        (``redis.asyncio.RedisCluster.from_url`` with cluster=True)."""
        kind = AsyncRedisCluster if cluster else redis.asyncio.Redis
        return cls(from_url(kind, url, options, asyncio=True), lease_ttl=lease_ttl)

    def _after_fork(self) -> None:
        # The parent's event loops, and their connections, are not the child's.
        self._loops = {}
        self._binding = threading.Lock()

    def _bound(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        bound = self._loops.get(loop)
        if bound is None:
            bound = self._bind(loop)
        return bound

    def _bind(self, loop: asyncio.AbstractEventLoop) -> _LoopClient:
        with self._binding:
            # Loops that ended closed their clients (or, if closed without shutting
            # down, leave sockets for the garbage collector): forget them.
            self._loops = {old: c for old, c in self._loops.items() if not old.is_closed()}
            if self._given_client_used:
                bound = _LoopClient(async_twin(self.client))
            else:
                self._given_client_used = True
                bound = _LoopClient(self.client)
            self._loops[loop] = bound
            return bound

    async def get(self, key: str) -> bytes | None:
        with _GET:
            return await self._bound().client.get(key)  # type: ignore[return-value]

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        with _SET:
            await self._bound().client.set(key, value, ex=ttl)

    async def delete(self, *keys: str) -> None:
        if keys:
            with _DEL:
                await self._delete(self._bound(), keys)

    @staticmethod
    async def _delete(bound: _LoopClient, keys: Sequence[Any]) -> None:
        client: Any = bound.client
        if bound.wire is not None:
            await bound.wire.call([_drop_command(keys)])
        elif isinstance(client, AsyncRedisCluster):
            await client.delete(*keys)
        else:  # the holds of commits stay (see _DROP)
            await client.execute_command(*_drop_command(keys))

    async def lease(self, key: str) -> tuple[bytes | None, bytes | None]:
        token = new_lease_token()
        bound = self._bound()
        with _LEASE_OP:
            if self._native_lease:
                try:
                    command = _lease_command(key, token, self._lease_ms)
                    if bound.wire is not None:
                        found = (await bound.wire.call([command]))[0]
                    else:
                        found = await bound.client.execute_command(*command, get=True)
                except redis.ResponseError as exc:
                    self._native_lease = _has_native_lease(exc)
                else:
                    return _native_reply(found, token)
            found = await bound.lease(keys=[key], args=[token, self._lease_ms, LEASE_MARK])
        return _lease_reply(found, token)

    async def lease_many(self, keys: Sequence[str]) -> list[tuple[bytes | None, bytes | None]]:
        """lease() for each key, in one round trip (one per node on a cluster)."""
        tokens = [new_lease_token() for _ in keys]
        bound = self._bound()
        with _LEASE_OP:
            if self._native_lease:
                commands = [_lease_command(k, t, self._lease_ms) for k, t in zip(keys, tokens)]
                try:
                    if bound.wire is not None:
                        found = await bound.wire.call(commands)
                    else:
                        pipe: Any = bound.client.pipeline()
                        for key, token in zip(keys, tokens):
                            pipe.set(key, token, nx=True, get=True, px=self._lease_ms)
                        found = await pipe.execute()
                except redis.ResponseError as exc:
                    self._native_lease = _has_native_lease(exc)
                else:
                    return [_native_reply(f, t) for f, t in zip(found, tokens)]
            found = [
                await bound.lease(keys=[key], args=[token, self._lease_ms, LEASE_MARK])
                for key, token in zip(keys, tokens)
            ]
        return [_lease_reply(f, t) for f, t in zip(found, tokens)]

    async def fill(self, key: str, token: bytes, value: bytes, ttl: int) -> bool:
        with _FILL_OP:
            return bool(await self._bound().fill(keys=[key], args=[token, value, ttl]))

    async def release(self, key: str, token: bytes) -> None:
        with _RELEASE_OP:
            await self._bound().release(keys=[key], args=[token])

    async def fill_many(self, fills: Fills) -> list[bool]:
        """fill() for each (key, token, value, ttl): one round trip on plain Redis."""
        bound = self._bound()
        client = bound.client
        if isinstance(client, AsyncRedisCluster):
            return [await self.fill(*item) for item in fills]
        with _FILL_OP:
            if bound.wire is not None:
                return [bool(r) for r in await bound.wire.call(_fill_commands(fills))]
            plain = client.pipeline(transaction=False)
            for command in _fill_commands(fills):
                plain.execute_command(*command)
            return [bool(r) for r in await plain.execute()]

    async def invalidate(
        self, keys: Sequence[str], channel: str, message: str, fills: Fills = ()
    ) -> list[bool]:
        """Delete keys, publish message on channel, then fill_many(fills) (keys that are
        not deleted): one round trip on plain Redis. Whether each fill was stored."""
        bound = self._bound()
        client = bound.client
        with _INVALIDATE_OP:
            if bound.wire is not None:
                commands: list[tuple[Any, ...]] = [_drop_command(keys)] if keys else []
                commands.append(("PUBLISH", channel, message))
                replies = await bound.wire.call(commands + _fill_commands(fills))
                return [bool(r) for r in replies[len(commands) :]]
            if isinstance(client, AsyncRedisCluster):
                if keys:
                    pipe = client.pipeline()
                    for key in keys:
                        pipe.delete(key)
                    await pipe.execute()
                # redis-py < 8 gives the asyncio cluster client no publish() method.
                await client.execute_command("PUBLISH", channel, message)
                return await self.fill_many(fills) if fills else []
            plain = client.pipeline(transaction=False)
            if keys:
                plain.execute_command(*_drop_command(keys))
            plain.publish(channel, message)
            for command in _fill_commands(fills):
                plain.execute_command(*command)
            replies = await plain.execute()
            return [bool(r) for r in replies[len(replies) - len(fills) :]]

    async def delete_model(self, prefix: str) -> None:
        bound = self._bound()
        with _SCAN_OP:
            batch: list[Any] = []
            match = _glob_escape(prefix) + "*"
            async for key in bound.client.scan_iter(match=match, count=_SCAN_BATCH):
                batch.append(key)
                if len(batch) >= _SCAN_BATCH:
                    await self._delete(bound, batch)
                    batch.clear()
            if batch:
                await self._delete(bound, batch)

    # -- calls in two halves, and holds (only with a wire: see holds) ------------------

    def _wire(self) -> AsyncWire:
        wire = self._bound().wire
        assert wire is not None, "only transports with holds have a wire"
        return wire

    async def begin_fill_many(self, fills: Fills) -> AsyncStored:
        """fill_many(fills) in two halves (see RedisSyncTransport.begin_fill_many)."""
        wire = self._bound().wire
        if wire is None:
            done = await self.fill_many(fills)  # redis.asyncio's path: at once

            async def known() -> list[bool]:
                return done

            return known
        with _FILL_OP:
            replies = await wire.begin(_fill_commands(fills))
        return _stored(replies, _FILL_OP, 0)

    async def begin_hold(
        self, keys: Sequence[str], channel: str, message: str, fills: Fills = ()
    ) -> AsyncStored:
        """See RedisSyncTransport.begin_hold."""
        with _INVALIDATE_OP:
            replies = await self._wire().begin(
                _hold_commands(keys, channel, message, fills, self._lease_ms)
            )
        return _stored(replies, _INVALIDATE_OP, 2)

    async def unhold(self, keys: Sequence[str]) -> None:
        """See RedisSyncTransport.unhold."""
        with _UNHOLD_OP:
            await self._wire().quietly(_unhold_command(keys))


def _stored(replies: AsyncReplies, op: _Translate, skip: int) -> AsyncStored:
    """Whether each fill was stored, from the replies of a batch whose first skip
    commands were not fills."""

    async def stored() -> list[bool]:
        with op:
            return [bool(r) for r in (await replies())[skip:]]

    return stored
