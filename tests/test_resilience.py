"""Outages: a stalled, cut, refused or restarted Redis never reaches the caller and never
leads to a stale read. Real Redis behind a TCP proxy; the breaker on a fake clock."""

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import event
from sqlmodel import Session

from sqlmodel_cache import BreakerConfig, SQLModelCache, _runtime
from sqlmodel_cache._breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from sqlmodel_cache._pending import Pending
from sqlmodel_cache.transport import MemoryTransport, RedisSyncTransport

from .conftest import REDIS_URL, entries, free_port
from .heroes import name, rename, seed

TIMEOUT = 0.25
ROOT = Path(__file__).resolve().parent.parent


def client_for(port: int) -> redis.Redis:
    """A client through a proxy on port, to the test Redis's database (TEST_REDIS_URL)."""
    return redis.Redis(
        port=port,
        db=redis.Redis.from_url(REDIS_URL).connection_pool.connection_kwargs.get("db", 0),
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


# -- the breaker and the pending set, without I/O ---------------------------------


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_probes_and_closes():
    clock = Clock()
    breaker = Breaker(failures=2, cooldown=5, timer=clock)
    breaker.failure()
    assert breaker.allow() and breaker.state is CLOSED
    breaker.success()  # a success resets the count
    breaker.failure()
    breaker.failure()
    assert breaker.state is OPEN and not breaker.allow()
    clock.now = 4.9
    assert not breaker.allow()
    clock.now = 5.0
    assert breaker.allow() and breaker.state is HALF_OPEN  # one probe
    assert not breaker.allow()  # and only one
    breaker.failure()
    assert breaker.state is OPEN and not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state is CLOSED and breaker.allow()


def test_an_unreachable_cache_opens_the_breaker_at_once():
    clock = Clock()
    breaker = Breaker(failures=3, cooldown=5, timer=clock)
    breaker.failure()  # a bad reply: counted
    assert breaker.state is CLOSED
    breaker.failure(at_once=True)  # refused or timed out: no second call pays for it
    assert breaker.state is OPEN and not breaker.allow()
    never = Breaker(failures=sys.maxsize, cooldown=5, timer=clock)  # breaker=None
    never.failure(at_once=True)
    assert never.state is CLOSED and never.allow()


def test_pending_is_bounded_but_never_forgets():
    pending = Pending(limit=3)
    pending.add(["a", "b"])
    pending.add(["c"], ("p:",))
    keys, prefixes, everything = pending.take()
    assert (sorted(keys), prefixes, everything) == (["a", "b", "c"], ["p:"], False)
    assert pending.waiting  # until the delivery says it is done
    pending.done()
    assert not pending.waiting
    pending.add(["a", "b", "c", "d"])  # past the limit: everything must go
    assert pending.take() == ([], [], True)
    pending.add(["e"])  # arrived during the delivery
    pending.done()
    assert pending.waiting and pending.take() == (["e"], [], False)


def test_a_probe_that_never_reports_is_replaced():
    clock = Clock()
    breaker = Breaker(failures=1, cooldown=5, timer=clock)
    breaker.failure()
    clock.now = 5.0
    assert breaker.allow() and breaker.state is HALF_OPEN  # a probe that goes silent
    clock.now = 9.9
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()  # another probe
    breaker.success()
    assert breaker.state is CLOSED


def _runtime_with_clock() -> tuple[Any, Clock]:

    SQLModelCache.configure(MemoryTransport(), breaker=BreakerConfig(failures=1, cooldown=5))
    runtime = _runtime.current
    assert runtime is not None
    clock = Clock()
    runtime.breaker = Breaker(failures=1, cooldown=5, timer=clock)
    return runtime, clock


def test_the_probe_runs_in_the_background_not_on_a_request():
    runtime, clock = _runtime_with_clock()
    runtime.breaker.failure()
    assert runtime.breaker.state == "open"
    clock.now = 5.0
    assert not runtime._ready()  # the request after the cool-down is not the probe
    runtime.prober.join(5)
    assert runtime.breaker.state == "closed"  # the background probe read a key
    assert runtime._ready()


def test_a_failed_probe_keeps_the_breaker_open():
    runtime, clock = _runtime_with_clock()
    runtime.transport = Flaky()
    runtime.transport.down = True
    runtime.breaker.failure()
    clock.now = 5.0
    assert not runtime._ready()
    runtime.prober.join(5)
    assert runtime.breaker.state == "open" and not runtime._ready()
    runtime.transport.down = False
    clock.now = 10.0
    assert not runtime._ready()
    runtime.prober.join(5)
    assert runtime.breaker.state == "closed"


def test_a_blind_spell_never_leaves_the_breaker_half_open():
    runtime, clock = _runtime_with_clock()
    runtime.breaker.failure()
    runtime._blind_until = time.monotonic() + 3600  # lost invalidations, no delete_model
    clock.now = 5.0
    assert not runtime._ready()
    assert runtime.breaker.state == "open"  # no probe was spent on a call never made
    runtime._blind_until = 0.0
    assert not runtime._ready()
    runtime.prober.join(5)
    assert runtime.breaker.state == "closed" and runtime._ready()


# -- real Redis behind a proxy --------------------------------------------------------


def test_a_stalled_redis_costs_only_the_first_request_its_timeout(engine, proxy, prefix):
    # A timeout says Redis cannot be reached: the breaker opens at once, whatever
    # its failure count, so only one request pays the client's timeout.
    seed(engine, (1, "a"))
    SQLModelCache.configure(
        RedisSyncTransport(client_for(proxy.port)),
        key_prefix=prefix,
        breaker=BreakerConfig(failures=5, cooldown=60),
    )
    assert name(engine, 1) == "a"
    proxy.stall()
    timings = []
    for _ in range(20):
        start = time.perf_counter()
        assert name(engine, 1) == "a"
        timings.append(time.perf_counter() - start)
    slow = [t for t in timings if t >= TIMEOUT * 0.8]
    print(
        f"stalled: first gets {[round(t * 1000) for t in timings[:3]]} ms, "
        f"then median {sorted(timings[3:])[8] * 1000:.1f} ms"
    )
    assert len(slow) == 1  # then the breaker is open and the database answers alone
    stats = SQLModelCache.stats()
    assert stats.breaker == "open" and stats.errors == 1


def test_a_write_while_redis_is_cut_off_is_not_served_stale_after(engine, proxy, prefix):
    seed(engine, (1, "old"))
    SQLModelCache.configure(
        RedisSyncTransport(client_for(proxy.port)), key_prefix=prefix, breaker=None
    )
    assert name(engine, 1) == "old"
    assert name(engine, 1) == "old"  # cached
    proxy.cut()
    rename(engine, 1, "new")  # its invalidation cannot reach Redis
    assert name(engine, 1) == "new"
    proxy.heal()
    assert name(engine, 1) == "new"  # the missed deletion went first
    assert name(engine, 1) == "new"
    assert SQLModelCache.stats().hits >= 1


def test_the_breaker_closes_after_the_outage_and_delivers_first(engine, proxy, prefix):
    seed(engine, (1, "old"))
    SQLModelCache.configure(
        RedisSyncTransport(client_for(proxy.port)),
        key_prefix=prefix,
        breaker=BreakerConfig(failures=1, cooldown=0.2),
    )
    name(engine, 1)
    proxy.cut()
    rename(engine, 1, "new")  # fails: the breaker opens and the deletion waits
    assert SQLModelCache.stats().breaker == "open"
    proxy.heal()
    time.sleep(0.25)  # the cool-down itself, not a race
    assert name(engine, 1) == "new"  # from the database: this get starts the probe
    runtime = _runtime.current
    assert runtime is not None and runtime.prober is not None
    runtime.prober.join(5)  # which delivered the deletion, and closed the breaker
    assert SQLModelCache.stats().breaker == "closed"
    assert name(engine, 1) == "new"
    assert name(engine, 1) == "new"
    assert SQLModelCache.stats().hits == 1


@pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)  # SQLite would lock
def test_a_fill_in_flight_during_an_outage_loses_to_the_invalidation(
    engine, proxy, prefix, redis_client
):
    seed(engine, (1, "old"))
    SQLModelCache.configure(
        RedisSyncTransport(client_for(proxy.port)), key_prefix=prefix, breaker=None
    )
    read = threading.Event()
    resume = threading.Event()

    def pause(conn, cursor, statement, *args):
        if threading.current_thread().name == "reader" and "FROM hero" in statement:
            read.set()
            assert resume.wait(10)

    event.listen(engine, "after_cursor_execute", pause)
    try:
        reader = threading.Thread(target=name, args=(engine, 1), name="reader")
        reader.start()  # it holds a lease and has read "old"
        assert read.wait(10)
        proxy.cut()
        rename(engine, 1, "new")  # the deletion (that would void the lease) fails
        proxy.heal()
        resume.set()  # the reader now tries to fill "old"
        reader.join(10)
    finally:
        event.remove(engine, "after_cursor_execute", pause)
    # Not even briefly in Redis, where other processes would read it:
    assert entries(redis_client, prefix) == []
    assert name(engine, 1) == "new"
    assert name(engine, 1) == "new"


def test_a_refused_port_is_only_a_slower_database(engine, prefix):
    seed(engine, (1, "a"))
    SQLModelCache.configure(RedisSyncTransport(client_for(free_port())), key_prefix=prefix)
    for new in ("b", "c", "d"):
        rename(engine, 1, new)
        assert name(engine, 1) == new
    stats = SQLModelCache.stats()
    # Refused: open after the first failure, so the other gets never call Redis.
    assert stats.breaker == "open" and stats.errors == 1 and stats.hits == 0


def test_redis_restarted_empty_mid_run(engine, prefix):
    binary = shutil.which("redis-server")
    assert binary
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]

    def start() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        probe = redis.Redis(port=port)
        for _ in range(500):
            try:
                probe.ping()
                return server
            except redis.ConnectionError:
                time.sleep(0.01)
        raise AssertionError("redis-server did not start")

    server = start()
    try:
        seed(engine, (1, "a"))
        SQLModelCache.configure(
            RedisSyncTransport(client_for(port)), key_prefix=prefix, breaker=None
        )
        assert name(engine, 1) == "a"
        assert name(engine, 1) == "a"
        server.kill()
        server.wait()
        rename(engine, 1, "b")  # while Redis is down
        assert name(engine, 1) == "b"
        server = start()  # back, and empty
        assert name(engine, 1) == "b"
        assert name(engine, 1) == "b"
        rename(engine, 1, "c")
        assert name(engine, 1) == "c"
        assert SQLModelCache.stats().hits >= 2
    finally:
        server.kill()
        server.wait()


def test_rows_above_max_entry_bytes_are_not_cached(engine, cache, prefix, redis_client):
    from .conftest import entries
    from .models import Sample

    SQLModelCache.reset()
    SQLModelCache.configure(
        RedisSyncTransport(redis_client), key_prefix=prefix, max_entry_bytes=600
    )
    with Session(engine) as session:
        session.add(Sample(id=1, data={"small": True}))
        session.add(Sample(id=2, data={"huge": "x" * 1000}))
        session.commit()
    for ident in (1, 2, 1, 2):
        with Session(engine) as session:
            assert session.get(Sample, ident) is not None
    stats = SQLModelCache.stats().by_model["Sample"]
    assert (stats.fills, stats.hits, stats.too_large) == (1, 1, 2)
    assert entries(redis_client, prefix) == [f"{prefix}:Sample:id=1"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"breaker": 3}, "breaker must be a BreakerConfig or None"),
        ({"max_entry_bytes": 0}, "max_entry_bytes must be a positive int"),
    ],
)
def test_configure_checks_resilience_settings(kwargs, message):
    from sqlmodel_cache import ConfigurationError

    with pytest.raises(ConfigurationError, match=message):
        SQLModelCache.configure(**kwargs)
    with pytest.raises(ConfigurationError, match="failures must be a positive int"):
        BreakerConfig(failures=0)


class Flaky:
    """A plain three-method transport that can be switched off (no delete_model)."""

    def __init__(self) -> None:
        self.store: dict[str, bytes] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("down")

    def get(self, key: str) -> bytes | None:
        self._check()
        return self.store.get(key)

    def set(self, key: str, value: bytes, ttl: int) -> None:
        self._check()
        self.store[key] = value

    def delete(self, *keys: str) -> None:
        self._check()
        for key in keys:
            self.store.pop(key, None)


def test_too_many_lost_invalidations_without_delete_model_stop_reads(engine):

    seed(engine, (1, "a"), (2, "b"), (3, "c"))
    transport = Flaky()
    SQLModelCache.configure(transport, breaker=None)
    assert _runtime.current is not None
    _runtime.current.pending = Pending(limit=2)  # overflow after two keys
    for ident in (1, 2, 3):
        name(engine, ident)
    transport.down = True
    for ident in (1, 2, 3):
        rename(engine, ident, f"new{ident}")  # three invalidations lost: past the bound
    transport.down = False
    # The store still holds all three old rows and nothing can drop them all at
    # once: reads stay off until they have expired, rather than serve them.
    assert [name(engine, i) for i in (1, 2, 3)] == ["new1", "new2", "new3"]
    assert [name(engine, i) for i in (1, 2, 3)] == ["new1", "new2", "new3"]
    assert len(transport.store) == 3


class GatedMemory(MemoryTransport):
    """An in-process store whose deletes can fail, or wait at a gate."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.gate: threading.Event | None = None
        self.at_gate = threading.Event()

    def delete(self, *keys: str) -> None:
        if self.down:
            raise ConnectionError("down")
        if self.gate is not None:
            self.at_gate.set()
            assert self.gate.wait(10)
        super().delete(*keys)


def test_no_reader_uses_the_cache_while_lost_invalidations_are_delivered(engine):
    seed(engine, (1, "old"), (2, "two"))
    transport = GatedMemory()
    SQLModelCache.configure(transport, l1=True, breaker=None)
    name(engine, 1)  # in L2 and L1
    transport.down = True
    rename(engine, 1, "new")  # its invalidation is lost: pending
    transport.down = False
    transport.gate = threading.Event()
    delivering = threading.Thread(target=name, args=(engine, 2))  # its get delivers first
    delivering.start()
    assert transport.at_gate.wait(10)  # the delete of Hero 1 is on its way, not done
    assert name(engine, 1) == "new"  # not the old row, still in L2
    transport.gate.set()
    delivering.join(10)
    assert name(engine, 1) == "new"
    assert transport.get("sqlmodelcache:Hero:id=1") is not None  # filled again, fresh
    assert name(engine, 1) == "new"


def test_invalidations_still_waiting_at_exit_get_one_more_attempt(
    engine, proxy, prefix, redis_client
):
    # A writer loses Redis, commits, and exits: its invalidation is delivered on the
    # way out rather than left until the entry's TTL.
    seed(engine, (1, "old"))
    script = (
        "import sys, sqlalchemy as sa\n"
        "from sqlmodel_cache import SQLModelCache\n"
        "from sqlmodel_cache.transport import RedisSyncTransport\n"
        "from tests.heroes import name, rename\n"
        "from tests.test_resilience import client_for\n"
        f"client = client_for({proxy.port})\n"
        f"SQLModelCache.configure(RedisSyncTransport(client), key_prefix={prefix!r})\n"
        f"engine = sa.create_engine({engine.url.render_as_string(hide_password=False)!r})\n"
        "name(engine, 1)\n"
        "print('filled', flush=True); sys.stdin.readline()\n"
        "rename(engine, 1, 'new')\n"
        "print('committed', SQLModelCache.stats().errors, flush=True); sys.stdin.readline()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "filled\n"
        assert entries(redis_client, prefix) == [f"{prefix}:Hero:id=1"]
        proxy.cut()
        child.stdin.write("\n")
        child.stdin.flush()
        committed = child.stdout.readline().split()
        assert committed[0] == "committed" and int(committed[1]) >= 1  # the delete failed
        proxy.heal()
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
    assert entries(redis_client, prefix) == []
