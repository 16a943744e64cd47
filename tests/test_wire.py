"""The lines that leases, fills and invalidations travel on: connections of our own (Wire)
and redis-py's pooled ones (PooledLine), against real Redis servers."""

import gc
import os
import select
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from sqlmodel_cache.transport import RedisSyncTransport
from sqlmodel_cache.transport._wire import PooledLine, Wire, line_for

from .conftest import REDIS_URL, redis_server


@pytest.fixture(params=["wire", "pooled"])
def client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """A client whose line is a Wire, or one only redis-py may speak for (RESP3)."""
    protocol = 2 if request.param == "wire" else 3
    made = redis.Redis.from_url(REDIS_URL, socket_timeout=0.5, protocol=protocol)
    yield made
    made.close()


@pytest.fixture
def line(client: redis.Redis) -> Wire | PooledLine:
    made = line_for(client)
    pooled = client.connection_pool.connection_kwargs["protocol"] == 3
    assert type(made) is (PooledLine if pooled else Wire)
    return made


def _client_id(line: Wire | PooledLine) -> int:
    (found,) = line.call([("CLIENT", "ID")])
    return int(found)


def test_plain_clients_get_a_wire_and_the_others_redis_py():
    plain = redis.Redis.from_url(REDIS_URL)
    assert type(line_for(plain)) is Wire
    others = [
        redis.Redis.from_url(REDIS_URL, protocol=3),
        redis.Redis.from_url(REDIS_URL, decode_responses=True),
        redis.Redis.from_url("rediss://127.0.0.1:6379/0"),  # TLS: no socket opened here
        redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(REDIS_URL)),
    ]
    for other in others:
        assert type(line_for(other)) is PooledLine


def test_commands_go_in_one_write_and_their_replies_come_back_in_order(line, prefix):
    key = f"{prefix}:k"
    assert line.call([("SET", key, b"v"), ("GET", key), ("DEL", key)]) == [b"OK", b"v", 1]
    replies = line.begin([("SET", key, "w"), ("GET", key)])
    assert replies() == [b"OK", b"w"]


def test_an_error_reply_is_raised_once_every_reply_was_read(line, prefix):
    key = f"{prefix}:k"
    with pytest.raises(redis.ResponseError):
        line.call([("SET", key, "text"), ("INCR", key), ("SET", key, "after")])
    assert line.call([("GET", key)]) == [b"after"]  # nothing left unread on the line


def test_a_connection_killed_while_idle_is_replaced_without_an_error(line, redis_client, prefix):
    killed = _client_id(line)
    assert redis_client.client_kill_filter(_id=killed) == 1  # as a restart would
    assert _client_id(line) != killed
    assert line.call([("SET", f"{prefix}:k", "v")]) == [b"OK"]


def test_a_stalled_server_is_a_timeout_not_a_hang():
    with redis_server() as port:
        line = line_for(redis.Redis(port=port, socket_timeout=0.2))
        assert line.call([("PING",)]) == [b"PONG"]
        server = _server_pid(port)
        os.kill(server, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError):
                line.call([("PING",)])
            assert time.monotonic() - started < 2
        finally:
            os.kill(server, signal.SIGCONT)


def _server_pid(port: int) -> int:
    return int(redis.Redis(port=port).info("server")["process_id"])


def test_a_dead_server_is_a_connection_error():
    with redis_server() as port:
        line = line_for(redis.Redis(port=port, socket_timeout=0.2))
        assert line.call([("PING",)]) == [b"PONG"]
    with pytest.raises(redis.ConnectionError):
        line.call([("PING",)])  # the idle connection is broken, and no new one connects


def test_replies_never_read_free_their_connection(client, line, prefix):
    line.call([("PING",)])
    idle = list(line._idle) if isinstance(line, Wire) else []
    replies = line.begin([("SET", f"{prefix}:k", "v")])
    if isinstance(line, Wire):
        assert line._idle == []  # the idle connection carries the command
    else:
        assert len(client.connection_pool._in_use_connections) == 1
    del replies  # a transaction that never ended, its session gone
    gc.collect()
    if isinstance(line, Wire):
        assert line._idle == [] and idle[0].sock.fileno() == -1  # closed, not reused
    else:
        assert len(client.connection_pool._in_use_connections) == 0
    assert line.call([("GET", f"{prefix}:k")]) == [b"v"]


def test_a_reply_nobody_waits_for_is_skipped(line, prefix):
    key = f"{prefix}:k"
    for value in ("a", "b"):  # the first time learns that the server skips, then it skips
        line.quietly(("SET", key, value))
        assert line.call([("GET", key)]) == [value.encode()]
    assert line.skips_replies is True


def test_a_quiet_command_is_not_lost_to_a_connection_closed_while_idle(line, redis_client, prefix):
    line.quietly(("PING",))  # learn that the server skips replies
    killed = _client_id(line)
    assert redis_client.client_kill_filter(_id=killed) == 1
    if isinstance(line, Wire):  # the server's close has reached the idle socket
        assert select.select([line._idle[-1].sock], [], [], 2)[0]
    line.quietly(("SET", f"{prefix}:k", "v"))  # a send there would succeed, and be lost
    assert redis_client.get(f"{prefix}:k") == b"v"


@pytest.mark.parametrize("kind", ["wire", "pooled"])
def test_a_server_refusing_client_reply_still_gets_quiet_commands(kind):
    with redis_server("--rename-command", "CLIENT", '""') as port:
        client = redis.Redis(port=port)
        if kind == "pooled":
            client = redis.Redis(connection_pool=redis.BlockingConnectionPool(port=port))
        line = line_for(client)
        for value in ("a", "b"):
            line.quietly(("SET", "k", value))
            assert line.call([("GET", "k")]) == [value.encode()]
        assert line.skips_replies is False


def test_a_forked_child_opens_connections_of_its_own(redis_client, prefix):
    line = line_for(redis.Redis.from_url(REDIS_URL))
    parents = _client_id(line)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through Redis and exits
        try:
            redis.Redis.from_url(REDIS_URL).set(f"{prefix}:child", _client_id(line))
        finally:
            os._exit(0)
    _, status = os.waitpid(child, 0)
    assert status == 0
    assert int(redis_client.get(f"{prefix}:child")) not in (parents, None)
    assert _client_id(line) == parents  # the parent's connection was left alone


def test_the_transport_leases_fills_and_invalidates_on_either_line(client, prefix):
    transport = RedisSyncTransport(client)
    key = f"{prefix}:row"
    value, token = transport.lease(key)
    assert value is None and token is not None
    assert transport.fill_many([(key, token, b"[row]", 30)]) == [True]
    assert transport.lease(key) == (b"[row]", None)
    assert transport.invalidate([key], f"{prefix}:news", "-") == []
    assert client.get(key) is None
