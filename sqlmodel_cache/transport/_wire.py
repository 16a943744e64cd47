"""Lines to plain Redis for the calls every get and commit makes: lease, fills, invalidations.

A line sends a batch of commands in one write and reads their replies later
(``begin``), or sends one without wanting its reply (``quietly``). Two kinds,
chosen once per client:

- ``Wire``: connections of our own, opened and authenticated by redis-py, then
  spoken to directly: a blocking socket whose timeouts the kernel enforces, and
  replies parsed by hiredis. Around one command redis-py spends about as much
  CPU as the round trip itself costs on loopback (a pool checkout that polls the
  socket, a poll before every send and receive, per-command bookkeeping); this
  costs a send, a receive and a C parse. Only where it changes nothing else: a
  ``redis.Redis`` on a plain ``ConnectionPool`` of TCP or Unix-socket connections
  (no TLS), RESP2, hiredis installed, POSIX.
- ``PooledLine``: redis-py's own pooled connections, for every other client.

A batch whose connection turned out broken is sent again on a new one (the Wire:
once, when the connection was used before and so may predate a restart; the
PooledLine: as the client's retry policy says), so every command sent over a
line must be safe to run twice.
"""

from __future__ import annotations

import inspect
import socket
import struct
import sys
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import redis

from .._forks import reset_after_fork

HiredisReader: Any
try:
    from hiredis import Reader as HiredisReader
except ImportError:  # redis-py without hiredis: PooledLine only
    HiredisReader = None

Command = tuple[Any, ...]
Replies = Callable[[], list[Any]]

SKIP_REPLY = ("CLIENT", "REPLY", "SKIP")
BROKEN = (ConnectionError, BrokenPipeError, redis.ConnectionError)


def replies_reader() -> Any:
    """A hiredis reader that hands error replies over as redis-py's ResponseError."""
    return HiredisReader(protocolError=redis.InvalidResponse, replyError=redis.ResponseError)


def parsed(reader: Any, replies: list[Any], count: int) -> bool:
    """Move what reader has parsed into replies, up to count; whether that makes count."""
    while len(replies) < count:
        reply = reader.gets()
        if reply is False:
            return False
        replies.append(reply)
    return True


def feed(reader: Any, data: bytes) -> None:
    """Give reader what a receive returned (nothing: the server closed the connection)."""
    if not data:
        raise redis.ConnectionError("Redis closed the connection")
    reader.feed(data)


def raise_errors(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            raise reply
    return replies


# -- redis-py's connections ---------------------------------------------------------

# redis-py before 6 requires a command name to check a connection out.
_CHECKOUT_ARGS = (
    ("PUBLISH",)
    if inspect.signature(redis.ConnectionPool.get_connection).parameters["command_name"].default
    is inspect.Parameter.empty
    else ()
)


class _Line:
    """What both lines share: sending a command whose reply nobody wants."""

    skips_replies: bool | None = None  # whether the server takes CLIENT REPLY SKIP

    def begin(self, commands: Sequence[Command]) -> Replies:
        raise NotImplementedError

    def call(self, commands: Sequence[Command]) -> list[Any]:
        return self.begin(commands)()

    def _send_then_read_one(self, commands: Sequence[Command]) -> Any:
        """Send commands, read the first reply only, then close the connection."""
        raise NotImplementedError

    def _send_only(self, commands: Sequence[Command]) -> None:
        raise NotImplementedError

    def quietly(self, command: Command) -> None:
        """Send command with CLIENT REPLY SKIP before it, so that no reply comes back and
        nothing waits. Whether the server takes CLIENT REPLY is learnt the first time, by
        a PING after the command (where SKIP works, its PONG is the only reply). Some
        managed services refuse CLIENT commands: there the command is answered as usual."""
        if self.skips_replies is False:
            self.begin([command])()
        elif self.skips_replies:
            self._send_only([SKIP_REPLY, command])
        else:
            first = self._send_then_read_one([SKIP_REPLY, command, ("PING",)])
            self.skips_replies = not isinstance(first, redis.ResponseError)


class PooledLine(_Line):
    """Commands over the client's own pooled connections, without a pipeline's bookkeeping."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool

    def begin(self, commands: Sequence[Command]) -> Replies:
        """Send commands now; the returned function reads their replies (and raises the
        first error among them). Meanwhile the connection stays checked out; should the
        function be dropped unread, the connection is closed and given back."""
        pool = self._pool
        conn: Any = pool.get_connection(*_CHECKOUT_ARGS)
        packed = conn.pack_commands(commands)

        def resend(_error: Exception) -> None:
            conn.disconnect()  # the client's retry policy says whether, and how often
            conn.send_packed_command(packed)

        try:
            conn.retry.call_with_retry(
                lambda: conn.send_packed_command(packed), lambda _error: conn.disconnect()
            )
        except BaseException:
            pool.release(conn)
            raise

        def replies() -> list[Any]:
            abandoned.detach()
            try:
                got = conn.retry.call_with_retry(
                    lambda: [conn.read_response() for _ in commands], resend
                )
            except BaseException:
                conn.disconnect()
                raise
            finally:
                pool.release(conn)
            return raise_errors(got)

        abandoned = weakref.finalize(replies, _drop, pool, conn)
        return replies

    def _send_then_read_one(self, commands: Sequence[Command]) -> Any:
        pool = self._pool
        conn: Any = pool.get_connection(*_CHECKOUT_ARGS)
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            try:
                return conn.read_response()
            except redis.ResponseError as exc:
                return exc
        finally:
            conn.disconnect()  # replies may follow: nobody is to read them
            pool.release(conn)

    def _send_only(self, commands: Sequence[Command]) -> None:
        pool = self._pool
        conn: Any = pool.get_connection(*_CHECKOUT_ARGS)
        try:
            conn.send_packed_command(conn.pack_commands(commands))
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)


def _drop(pool: Any, conn: Any) -> None:
    conn.disconnect()
    pool.release(conn)


# -- connections of our own ---------------------------------------------------------


def pack(commands: Sequence[Command]) -> bytes:
    """Commands in RESP, ready to send (arguments: bytes, str or int)."""
    out: list[bytes] = []
    add = out.append
    for command in commands:
        add(b"*%d\r\n" % len(command))
        for arg in command:
            kind = type(arg)
            data = arg if kind is bytes else arg.encode() if kind is str else b"%d" % arg
            add(b"$%d\r\n" % len(data))
            add(data)
            add(b"\r\n")
    return b"".join(out)


def _timeval(seconds: float | None) -> bytes:
    whole = int(seconds or 0)
    return struct.pack("@ll", whole, int(((seconds or 0) - whole) * 1_000_000))


class _Conn:
    """One blocking socket to Redis and the reader of its replies."""

    __slots__ = ("_redis_conn", "reader", "sock")

    def __init__(self, redis_conn: Any) -> None:
        redis_conn.connect()  # redis-py says hello: AUTH, SELECT, client name...
        self._redis_conn = redis_conn  # keeps the socket open while we use it
        sock: socket.socket = redis_conn._sock
        timeout = _timeval(redis_conn.socket_timeout)
        # Blocking mode: a send or receive is one system call, and the kernel enforces
        # the client's read timeout (a receive past it fails with EAGAIN).
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
        self.sock = sock
        self.reader = replies_reader()

    def read(self, count: int) -> list[Any]:
        replies: list[Any] = []
        while not parsed(self.reader, replies, count):
            try:
                data = self.sock.recv(65536)
            except BlockingIOError as exc:
                raise redis.TimeoutError("Timeout reading from Redis") from exc
            feed(self.reader, data)
        return replies

    def open(self) -> bool:
        """Whether the server has not closed this idle connection (one peek, no wait)."""
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True  # nothing to read: as an idle connection should be
        except OSError:
            return False

    def close(self) -> None:
        self._redis_conn.disconnect()


class Wire(_Line):
    """Connections of our own to the Redis of a plain client (see the module docstring)."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool: Any = client.connection_pool
        self._idle: list[_Conn] = []  # list.pop and list.append are atomic: no lock
        self._parents: list[_Conn] = []
        reset_after_fork(self)

    def _after_fork(self) -> None:
        # The parent's sockets: not the child's to use, nor to close (kept referenced,
        # so that no finalizer touches them).
        self._parents.extend(self._idle)
        self._idle = []

    def _take(self) -> tuple[_Conn, bool]:
        """A connection, and whether it was used before (and so may be broken by now)."""
        try:
            return self._idle.pop(), True
        except IndexError:
            return self._connect(), False

    def _connect(self) -> _Conn:
        try:
            pool = self._pool  # its connection class and settings; not its connections
            return _Conn(pool.connection_class(**pool.connection_kwargs))
        except OSError as exc:
            raise redis.ConnectionError(f"Error connecting to Redis: {exc}") from exc

    def _sent(self, payload: bytes) -> tuple[_Conn, bool]:
        """A connection payload was sent on (a new one if a reused one was broken), and
        whether that connection was used before."""
        conn, reused = self._take()
        try:
            conn.sock.sendall(payload)
        except OSError as exc:
            conn.close()
            if not reused:
                raise _translated(exc) from exc
            conn, reused = self._connect(), False
            self._send(conn, payload)
        return conn, reused

    @staticmethod
    def _send(conn: _Conn, payload: bytes) -> None:
        try:
            conn.sock.sendall(payload)
        except OSError as exc:
            conn.close()
            raise _translated(exc) from exc

    def _read(self, conn: _Conn, reused: bool, payload: bytes, count: int) -> list[Any]:
        """The count replies to payload, sent on conn; conn goes back to the idle ones."""
        try:
            try:
                got = conn.read(count)
            except BROKEN:
                if not reused:
                    raise
                conn.close()  # it broke before it got them: once more, on a new one
                conn = self._connect()
                self._send(conn, payload)
                got = conn.read(count)
        except BaseException:
            conn.close()
            raise
        self._idle.append(conn)
        return raise_errors(got)

    def call(self, commands: Sequence[Command]) -> list[Any]:
        """Send commands and read their replies (raising the first error among them)."""
        payload = pack(commands)
        conn, reused = self._sent(payload)
        return self._read(conn, reused, payload, len(commands))

    def begin(self, commands: Sequence[Command]) -> Replies:
        """Send commands now; the returned function reads their replies (and raises the
        first error among them). Should the function be dropped unread, the connection
        is closed."""
        payload = pack(commands)
        conn, reused = self._sent(payload)

        def replies() -> list[Any]:
            abandoned.detach()
            return self._read(conn, reused, payload, len(commands))

        abandoned = weakref.finalize(replies, conn.close)
        return replies

    def _send_then_read_one(self, commands: Sequence[Command]) -> Any:
        conn = self._connect()
        try:
            self._send(conn, pack(commands))
            return conn.read(1)[0]
        finally:
            conn.close()  # replies may follow: nobody is to read them

    def _send_only(self, commands: Sequence[Command]) -> None:
        # Nothing will tell whether these commands arrived: not on a connection the
        # server closed while it was idle (a send there succeeds, and is lost).
        while self._idle and not self._idle[-1].open():
            self._idle.pop().close()
        conn, _reused = self._sent(pack(commands))
        self._idle.append(conn)


def _translated(exc: OSError) -> redis.RedisError:
    if isinstance(exc, BlockingIOError):
        return redis.TimeoutError("Timeout writing to Redis")
    return redis.ConnectionError(f"Error writing to Redis: {exc}")


def plain_settings(settings: dict[str, Any]) -> bool:
    """Whether connections with these settings may be spoken to directly: RESP2, bytes
    replies, hiredis to parse them, POSIX socket options to time them out."""
    return (
        HiredisReader is not None
        and sys.platform != "win32"
        and settings.get("protocol") in (None, 2, "2")
        and not settings.get("decode_responses")
    )


def _eligible(client: Any) -> bool:
    if type(client) is not redis.Redis:
        return False
    pool = client.connection_pool
    return (
        type(pool) is redis.ConnectionPool
        and pool.connection_class in (redis.Connection, redis.UnixDomainSocketConnection)
        and plain_settings(pool.connection_kwargs)
    )


def line_for(client: redis.Redis) -> Wire | PooledLine:
    """The cheapest line to client's Redis that behaves exactly as its own connections."""
    return Wire(client) if _eligible(client) else PooledLine(client)
