"""Latency of session.get() with and without sqlmodel-cache, on PostgreSQL and Redis.

    python benchmarks/bench.py [--pg URL] [--redis URL] [--n N] [--json PATH]
                               [--no-propagation]

Every session.get row times a whole unit of work, ``with Session(engine) as s:
s.get(...)``: session creation, the get and close() (which returns the pooled
connection, with its ROLLBACK, when the database was used). The commit rows time
only ``row.count += 1; session.commit()`` on a row loaded from the database.
Each figure is the median / p90 of N single operations after a warm-up; the
operations run interleaved, in blocks of 100, so that load drift hits all alike.

Three models share one schema: BenchPlain (not cached), BenchRow (cached, out of
the in-process tier: ``CacheConfig(l1=False)``) and BenchRowL1 (cached, in it:
``CacheConfig(l1=True)``). The cache is configured once, with an
``L1Config(maxsize=L1_MAXSIZE)``, and the L1 rows are timed only once the
invalidation feed is subscribed. After the latency table come multi-threaded
throughput, the memory an L1 row takes, and (benchmarks/propagation.py, in
subprocesses) how fast a commit reaches another process's L1, idle or busy.

Only this script's tables (bench_row, bench_row_l1, bench_plain, and
propagation.py's bench_propagation) are dropped and created, and only the Redis
keys under its random prefixes are deleted.
"""

# The report prints the multiplication sign on purpose, as the targets are written.
# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import datetime as dt
import enum
import gc
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import redis
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlmodel import JSON, Field, Session, SQLModel

import sqlmodel_cache
from sqlmodel_cache import (
    CacheConfig,
    CachedSession,
    L1Config,
    ModelStats,
    SQLModelCache,
    _listeners,
    _runtime,
)
from sqlmodel_cache.transport import RedisSyncTransport

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/sqlmodel_cache_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
ROWS = 1000  # rows the latency and throughput operations cycle through
L1_MAXSIZE = ROWS  # the L1 holds exactly the rows the L1 operations use
OVERFLOW = 200  # extra BenchRowL1 rows, read to show that L1 stays within maxsize
THREADS = 8
THROUGHPUT_SECONDS = 2.0
SINGLE_THREAD_SECONDS = 1.0
RAW_SELECT = (
    "SELECT id, uid, created, price, payload, body, flag, count, ratio, label "
    "FROM bench_plain WHERE id = %s"
)
PROPAGATION = Path(__file__).with_name("propagation.py")
ASYNC_ROWS = Path(__file__).with_name("bench_async.py")

Op = Callable[[int], int]  # takes a row id, returns the elapsed ns of its timed part
Results = dict[str, tuple[float, float]]  # name -> (median, p90) in µs
Around = Callable[[], AbstractContextManager[None]]

# Row names of the latency table.
REDIS_GET = "redis GET (raw, tight loop)"
REDIS_GET_AFTER_PG = "redis GET right after a PG SELECT"
REDIS_GET_IN_HIT = "redis GET in a hit's place"
REDIS_LEASE = "redis lease script (EVALSHA)"
PG_SELECT = "SELECT by id (raw psycopg)"
NO_CACHE = "session.get, no-cache"
NO_LIBRARY = "session.get, no library"
L1_HIT = "session.get, L1 hit"
L1_FAST = "CachedSession.get, L1 hit"
L2_HIT = "session.get, L2 hit"
MISS = "session.get, miss + fill"
BYPASS = "session.get, bypass"
COMMIT_CACHED = "update + commit, cached"
COMMIT_UNCACHED = "update + commit, uncached"
RMW_CACHED = "get + update + commit, cached"
RMW_UNCACHED = "get + update + commit, uncached"


class BenchBase(SQLModel):
    """Written as SQLModel's docs write models: plain annotations (datetime maps to
    SQLModel's own UTCDateTime), sa_type only for the JSON column."""

    id: int = Field(primary_key=True)
    uid: uuid.UUID
    created: dt.datetime
    price: Decimal = Field(max_digits=12, decimal_places=2)
    payload: dict[str, Any] = Field(sa_type=JSON)
    body: str
    flag: bool
    count: int
    ratio: float
    label: str


class BenchRow(BenchBase, table=True):
    __tablename__ = "bench_row"
    __cache_config__ = CacheConfig(l1=False)


class BenchRowL1(BenchBase, table=True):
    __tablename__ = "bench_row_l1"
    __cache_config__ = CacheConfig(l1=True)


class BenchPlain(BenchBase, table=True):
    __tablename__ = "bench_plain"


TABLES = {BenchRow: ROWS, BenchRowL1: ROWS + OVERFLOW, BenchPlain: ROWS}


def make_row(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "uid": uuid.uuid4(),
        "created": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=i),
        "price": Decimal(f"{i % 997}.{i % 100:02d}"),
        "payload": {"tags": ["a", "b", str(i)], "score": i * 0.5, "nested": {"ok": i % 2 == 0}},
        "body": (f"row {i} " + "lorem ipsum dolor sit amet " * 8)[:200],
        "flag": i % 2 == 0,
        "count": i,
        "ratio": i / 7,
        "label": f"label-{i}",
    }


def ensure_database(url: URL) -> None:
    """CREATE DATABASE url.database unless it exists (via the postgres db, AUTOCOMMIT)."""
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        query = sa.text("SELECT 1 FROM pg_database WHERE datname = :name")
        if conn.scalar(query, {"name": url.database}) is None:
            conn.execute(sa.text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()


def setup_tables(engine: Engine) -> None:
    tables = [SQLModel.metadata.tables[str(model.__tablename__)] for model in TABLES]
    SQLModel.metadata.drop_all(engine, tables=tables)
    SQLModel.metadata.create_all(engine, tables=tables)
    with Session(engine) as session:
        for model, count in TABLES.items():
            session.add_all(model(**make_row(i)) for i in range(1, count + 1))
        session.commit()


def measure(
    ops: dict[str, Op], n: int, warmup: int, around: dict[str, Around], block: int = 100
) -> dict[str, list[int]]:
    """Time every op n times, interleaved in blocks, after a warm-up round of each.

    ``around[name]`` (if any) is entered around each block of that op, untimed.
    """
    samples: dict[str, list[int]] = {name: [] for name in ops}
    for rnd in range(-1, -(-n // block)):
        for name, op in ops.items():
            done = samples[name]
            count = warmup if rnd < 0 else min(block, n - len(done))
            with around.get(name, nullcontext)():
                times = [op((len(done) + j) % ROWS + 1) for j in range(count)]
            if rnd >= 0:
                done.extend(times)
        if rnd < 0:
            gc.collect()
    return samples


def summarize(samples: list[int]) -> tuple[float, float]:
    """(median, p90) in microseconds."""
    return statistics.median(samples) / 1000, statistics.quantiles(samples, n=10)[8] / 1000


def session_get(
    engine: Engine, model: type[SQLModel], session_class: type[Session] = Session, **options: Any
) -> Op:
    def op(ident: int) -> int:
        start = time.perf_counter_ns()
        with session_class(engine) as session:
            session.get(model, ident, **options)
        return time.perf_counter_ns() - start

    return op


def read_modify_write(engine: Engine, model: type[BenchBase]) -> Op:
    """The most common request: get a row, change it, commit; all of it timed. On the
    cached model the get misses (the previous commit of the row invalidated it)."""

    def op(ident: int) -> int:
        start = time.perf_counter_ns()
        with Session(engine) as session:
            row = session.get(model, ident)
            assert row is not None
            row.count += 1
            session.commit()
        return time.perf_counter_ns() - start

    return op


def commit_update(engine: Engine, model: type[BenchBase]) -> Op:
    def op(ident: int) -> int:
        with Session(engine) as session:
            # Load from the database in both cases: a cache hit would leave the session
            # without a connection, and the timed commit would then pay checkout + BEGIN.
            row = session.get(model, ident, execution_options={"cache": False})
            assert row is not None
            start = time.perf_counter_ns()
            row.count += 1
            session.commit()
            return time.perf_counter_ns() - start

    return op


def model_stats(model: type) -> ModelStats:
    return SQLModelCache.stats().by_model.get(model.__name__, ModelStats())


def counters(model: type) -> Any:
    """The live counters of model, read between single timed operations: a stats()
    snapshot builds objects for every model, whose garbage the next operation would pay."""
    runtime = _runtime.current
    assert runtime is not None
    return runtime.stats.for_model(model.__name__)


def live_runtime() -> _runtime.Runtime:
    runtime = _runtime.current
    assert runtime is not None and runtime.l1 is not None and runtime.feed is not None
    return runtime


def deep_size(obj: Any, seen: set[int]) -> int:
    """sys.getsizeof of obj and of everything it holds, each object once (not classes,
    enum members or other singletons: they are not the entry's)."""
    if obj is None or isinstance(obj, (bool, type, enum.Enum)) or id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        size += sum(deep_size(item, seen) for item in obj)
    else:
        if hasattr(obj, "__dict__"):
            size += deep_size(vars(obj), seen)
        for cls in type(obj).__mro__:
            slots = getattr(cls, "__slots__", ())
            for slot in [slots] if isinstance(slots, str) else slots:
                size += deep_size(getattr(obj, slot, None), seen)
    return size


class Bench:
    """The connections of one run and the operations that need more than a session."""

    def __init__(self, url: URL, redis_url: str) -> None:
        self.engine = sa.create_engine(url)  # pool: 5 + 10 overflow, enough for THREADS
        self.lease_transport = RedisSyncTransport.from_url(redis_url)  # also the raw lease row
        self.client = self.lease_transport.client
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.raw = psycopg.connect(dsn, autocommit=True)
        self.prefix = f"smc-bench-{secrets.token_hex(4)}"
        self.raw_key = f"{self.prefix}:raw"
        self.get_l2 = session_get(self.engine, BenchRow)
        self.get_l1 = session_get(self.engine, BenchRowL1)
        self.get_l1_fast = session_get(self.engine, BenchRowL1, CachedSession)
        self.get_plain = session_get(self.engine, BenchPlain)
        self.commit_cached = commit_update(self.engine, BenchRow)
        self.rmw_cached = read_modify_write(self.engine, BenchRow)
        self.commit_plain = commit_update(self.engine, BenchPlain)
        self.rmw_plain = read_modify_write(self.engine, BenchPlain)

    def row_key(self, model: type, ident: int) -> str:
        return f"{self.prefix}:{model.__name__}:id={ident}"

    def configure(self) -> None:
        transport = RedisSyncTransport(self.client)
        SQLModelCache.configure(
            transport,
            default_ttl=3600,
            key_prefix=self.prefix,
            l1=L1Config(maxsize=L1_MAXSIZE, ttl=3600.0),
        )

    def reconfigure(self) -> None:
        SQLModelCache.reset()
        self.configure()

    @contextmanager
    def no_library(self) -> Iterator[None]:
        """As if sqlmodel-cache were not installed: no runtime and none of its listeners.

        The runtime is set aside, not reset: right after a reset the next hundred
        or so gets run about 25% faster than in a process that never configured
        the cache (measured; the cause is not pinned down), which would skew this
        row.
        """
        with _listeners.detached():
            yield

    @contextmanager
    def l1_ready(self) -> Iterator[None]:
        """Wait until the (possibly just reconfigured) L1 may serve: its feed is subscribed."""
        feed = live_runtime().feed
        assert feed is not None
        if not feed.subscribed.wait(10):
            raise RuntimeError("the invalidation feed did not subscribe within 10 s")
        yield

    def redis_get(self, ident: int) -> int:
        start = time.perf_counter_ns()
        self.client.get(self.raw_key)
        return time.perf_counter_ns() - start

    def redis_get_after_pg(self, ident: int) -> int:
        self.raw.execute(RAW_SELECT, (ident,)).fetchone()  # untimed
        start = time.perf_counter_ns()
        self.client.get(self.raw_key)
        return time.perf_counter_ns() - start

    def redis_get_in_hit(self, ident: int) -> int:
        # The same Python work as a hit comes first (an L1 hit, untimed), so the GET
        # meets the CPU and the Redis server as the one inside an L2 hit does.
        self.get_l1(ident)
        start = time.perf_counter_ns()
        self.client.get(self.raw_key)
        return time.perf_counter_ns() - start

    def redis_lease(self, ident: int) -> int:
        # What an L2 hit sends: the lease script (GET, or SET of a lease on a miss).
        start = time.perf_counter_ns()
        self.lease_transport.lease(self.raw_key)
        return time.perf_counter_ns() - start

    def pg_select(self, ident: int) -> int:
        start = time.perf_counter_ns()
        self.raw.execute(RAW_SELECT, (ident,)).fetchone()
        return time.perf_counter_ns() - start

    def l1_hit(self, ident: int) -> int:
        return self._l1_timed(self.get_l1, ident)

    def l1_fast_hit(self, ident: int) -> int:
        return self._l1_timed(self.get_l1_fast, ident)

    @staticmethod
    def _l1_timed(get: Op, ident: int) -> int:
        # After each reconfigure (the no-library blocks) L1 starts empty: the first get
        # of a row is an L2 hit that puts it in L1, and is not kept.
        for _ in range(3):
            l1_hits = counters(BenchRowL1).l1_hits
            elapsed = get(ident)
            if counters(BenchRowL1).l1_hits == l1_hits + 1:
                return elapsed
        raise AssertionError(f"id {ident} of BenchRowL1 never became an L1 hit")

    def hit(self, ident: int) -> int:
        hits = counters(BenchRow).hits
        elapsed = self.get_l2(ident)
        assert counters(BenchRow).hits == hits + 1, f"id {ident} was not a hit"
        return elapsed

    def miss(self, ident: int) -> int:
        self.client.delete(self.row_key(BenchRow, ident))  # untimed: the get misses and fills
        fills = counters(BenchRow).fills
        elapsed = self.get_l2(ident)
        assert counters(BenchRow).fills == fills + 1, f"id {ident} was not filled"
        return elapsed

    def commit_and_refill(self, ident: int) -> int:
        elapsed = self.commit_cached(ident)
        self.get_l2(ident)  # untimed: the commit invalidated the entry the hits need
        return elapsed

    def commit_plain_and_reread(self, ident: int) -> int:
        # The same untimed get after the commit as commit_and_refill: the row is read
        # again in both, so the database does the same work before the next commit.
        elapsed = self.commit_plain(ident)
        self.get_plain(ident)
        return elapsed

    def rmw_plain_and_reread(self, ident: int) -> int:
        elapsed = self.rmw_plain(ident)
        self.get_plain(ident)  # as rmw_and_refill
        return elapsed

    def rmw_and_refill(self, ident: int) -> int:
        self.client.delete(self.row_key(BenchRow, ident))  # untimed: its get misses
        elapsed = self.rmw_cached(ident)
        self.get_l2(ident)  # untimed, as commit_and_refill
        return elapsed

    def close(self) -> None:
        """Delete this run's keys (only those under its prefix) and close the connections."""
        SQLModelCache.reset()
        keys = list(self.client.scan_iter(match=f"{self.prefix}:*", count=1000))
        if keys:
            self.client.delete(*keys)
        self.raw.close()
        self.engine.dispose()


def throughput(op: Op, threads: int, seconds: float) -> tuple[int, float]:
    """(operations, ops/s) of `threads` threads running op back to back for about `seconds`."""
    start_line = threading.Barrier(threads + 1)
    stop = threading.Event()
    counts = [0] * threads
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        ident, done = index * (ROWS // threads), 0
        start_line.wait()
        try:
            while not stop.is_set():
                op(ident % ROWS + 1)
                ident += 1
                done += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's thread
            errors.append(exc)
        counts[index] = done

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    start_line.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in workers:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    total = sum(counts)
    return total, total / elapsed


def run_throughput(bench: Bench) -> dict[str, dict[str, Any]]:
    """ops/s of 1 and THREADS threads for no-cache gets, L2 hits and L1 hits."""
    with bench.l1_ready():
        for ident in range(1, ROWS + 1):  # every row the L1 threads read is in L1
            bench.get_l1(ident)
    kinds: dict[str, tuple[Op, type | None]] = {
        "no-cache": (bench.get_plain, None),
        "L2 hit": (bench.get_l2, BenchRow),
        "L1 hit": (bench.get_l1, BenchRowL1),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, (op, model) in kinds.items():
        row: dict[str, Any] = {}
        for threads, seconds in ((1, SINGLE_THREAD_SECONDS), (THREADS, THROUGHPUT_SECONDS)):
            before = model_stats(model) if model else None
            gc.collect()
            ops, rate = throughput(op, threads, seconds)
            row[f"threads_{threads}"] = {"ops": ops, "ops_per_s": rate}
            if model is not None and before is not None:
                after = model_stats(model)
                served = after.l1_hits - before.l1_hits if name == "L1 hit" else None
                served = after.hits - before.hits if served is None else served
                # Counters are plain ints shared by threads: a rare lost increment is possible.
                row[f"threads_{threads}"]["hit_share"] = served / ops
                row[f"threads_{threads}"]["misses"] = after.misses - before.misses
        out[name] = row
    return out


def run_memory(bench: Bench) -> dict[str, Any]:
    """Bytes a row takes in L1, and the L1 size against maxsize after reading more rows."""
    bench.reconfigure()  # an empty L1
    with bench.l1_ready():
        pass
    runtime = live_runtime()
    l1 = runtime.l1
    assert l1 is not None

    def traced(op: Op, idents: range) -> int:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for ident in idents:
                op(ident)
            gc.collect()
            return tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()

    rows = range(1, ROWS + 1)
    # Control: the same number of gets that keep nothing in process (L2 hits, no L1).
    control = traced(bench.get_l2, rows)
    len_before = len(l1)
    l1_hits = model_stats(BenchRowL1).l1_hits
    filled = traced(bench.get_l1, rows)  # each an L2 hit that puts its row in L1
    len_after = len(l1)
    assert model_stats(BenchRowL1).l1_hits == l1_hits, "the L1 was not empty"
    entries = dict(l1._entries.items())
    seen: set[int] = set()  # an object shared by several entries counts once
    # An entry is (the row's model info, shared by all rows of it; values; positions).
    # Each part on its own: a slice like entry[1:] is a temporary whose id a later
    # one may reuse, and deep_size would then skip it as seen.
    values_bytes = sum(
        deep_size(key, seen)
        + sys.getsizeof(entry)
        + sum(deep_size(part, seen) for part in entry[1:])
        for key, entry in entries.items()
    )
    for ident in range(ROWS + 1, ROWS + OVERFLOW + 1):  # more rows than maxsize
        bench.get_l1(ident)
    new_rows = len_after - len_before
    return {
        "rows": new_rows,
        "retained_bytes": filled,
        "bytes_per_row": filled / new_rows,
        "control_retained_bytes": control,
        "values_deep_bytes_per_row": values_bytes / max(1, len(entries)),
        "len_before": len_before,
        "len_after_fill": len_after,
        "rows_read_in_total": ROWS + OVERFLOW,
        "len_after_overflow": len(l1),
        "maxsize": L1_MAXSIZE,
    }


def run(pg_url: str, redis_url: str, n: int) -> tuple[Results, dict[str, Any]]:
    """Set up, time every operation and clean up; returns the results and run facts."""
    url = make_url(pg_url)
    ensure_database(url)
    bench = Bench(url, redis_url)
    engine, warmup = bench.engine, max(50, n // 10)
    extra: dict[str, Any] = {}
    try:
        setup_tables(engine)
        bench.configure()
        bench.client.set(bench.raw_key, secrets.token_bytes(300).hex().encode())  # 600 bytes
        for ident in range(1, ROWS + 1):  # fill every entry, so the hit ops only hit
            bench.get_l2(ident)
            bench.get_l1(ident)
        entry_size = len(bench.client.get(bench.row_key(BenchRow, 1)) or b"")
        bypass = session_get(engine, BenchRow, execution_options={"cache": False})
        ops: dict[str, Op] = {
            REDIS_GET: bench.redis_get,
            REDIS_GET_AFTER_PG: bench.redis_get_after_pg,
            REDIS_GET_IN_HIT: bench.redis_get_in_hit,
            REDIS_LEASE: bench.redis_lease,
            PG_SELECT: bench.pg_select,
            NO_CACHE: bench.get_plain,
            NO_LIBRARY: bench.get_plain,
            L1_HIT: bench.l1_hit,
            L1_FAST: bench.l1_fast_hit,
            L2_HIT: bench.hit,
            MISS: bench.miss,
            BYPASS: bypass,
            COMMIT_CACHED: bench.commit_and_refill,
            COMMIT_UNCACHED: bench.commit_plain_and_reread,
            RMW_CACHED: bench.rmw_and_refill,
            RMW_UNCACHED: bench.rmw_plain_and_reread,
        }
        around: dict[str, Around] = {
            NO_LIBRARY: bench.no_library,
            L1_HIT: bench.l1_ready,
            L1_FAST: bench.l1_ready,
            REDIS_GET_IN_HIT: bench.l1_ready,
        }
        started = time.perf_counter()
        samples = measure(ops, n, warmup, around)
        extra["latency_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        extra["memory"] = run_memory(bench)
        extra["throughput"] = run_throughput(bench)
        extra["memory_throughput_seconds"] = time.perf_counter() - started
    finally:
        bench.close()
    results = {name: summarize(times) for name, times in samples.items()}
    meta = {"n": n, "warmup": warmup, "rows": ROWS, "cached_entry_bytes": entry_size, **extra}
    return results, meta


def check_targets(results: Results) -> list[dict[str, Any]]:
    """The targets, each with the measured value and its bound (µs, medians)."""

    def med(name: str) -> float:
        return results[name][0]

    base, get = med(NO_CACHE), med(REDIS_GET)
    get_hit = med(REDIS_GET_IN_HIT)
    commit_without = med(COMMIT_UNCACHED)
    in_place = med(REDIS_GET_AFTER_PG)  # a round trip where a commit or a miss makes it
    rows: list[tuple[str, float, float, float | None]] = [
        ("L1 hit ≤ 0.15 × no-cache", med(L1_HIT), 0.15 * base, None),
        ("CachedSession L1 hit ≤ 0.03 × no-cache", med(L1_FAST), 0.03 * base, None),
        (
            "L2 hit ≤ L1 hit + Redis GET + 15 µs",
            med(L2_HIT),
            med(L1_HIT) + get + 15,
            med(L1_HIT) + get_hit + 15,
        ),
        (
            "miss ≤ no-cache + 2 × Redis GET + 30 µs",
            med(MISS),
            base + 2 * get + 30,
            base + 2 * in_place + 30,
        ),
        (
            "commit with invalidation ≤ commit without cache + Redis GET + 30 µs",
            med(COMMIT_CACHED),
            commit_without + get + 30,
            commit_without + in_place + 30,
        ),
        (
            "get + update + commit ≤ the same uncached + 2 × Redis GET + 30 µs",
            med(RMW_CACHED),
            med(RMW_UNCACHED) + 2 * get + 30,
            med(RMW_UNCACHED) + 2 * in_place + 30,
        ),
        ("bypass ≤ 1.05 × no-cache", med(BYPASS), 1.05 * base, None),
        ("uncached model: no-cache ≤ 1.05 × no library", base, 1.05 * med(NO_LIBRARY), None),
    ]
    return [
        {
            "target": label,
            "value_us": value,
            "bound_us": bound,
            "ok": value <= bound,
            "bound_with_get_after_pg_us": alt,
            "ok_with_get_after_pg": None if alt is None else value <= alt,
        }
        for label, value, bound, alt in rows
    ]


def mark(ok: bool) -> str:
    return "✔" if ok else "✘"


def report(results: Results, meta: dict[str, Any]) -> dict[str, Any]:
    """Print the table, the targets, throughput and memory; return everything for JSON."""
    base = results[NO_CACHE][0]
    n, warmup, size = meta["n"], meta["warmup"], meta["cached_entry_bytes"]
    print(f"N={n} (warm-up {warmup}), cached entry {size} bytes, {os.cpu_count()} CPUs\n")
    print(f"{'operation':<36} {'median µs':>10} {'p90 µs':>10} {'/ no-cache':>11}")
    print("-" * 70)
    for name, (median, p90) in results.items():
        print(f"{name:<36} {median:>10.1f} {p90:>10.1f} {median / base:>11.3f}")

    targets = check_targets(results)
    print(
        "\nTARGETS (medians; Redis GET = the tight-loop row; [..] = with the GET measured where"
        "\nthe operation makes it: in a hit's place for the L2 hit, after a PG query otherwise)"
    )
    for t in targets:
        line = (
            f"{mark(t['ok'])} {t['target']:<72} {t['value_us']:8.1f} µs "
            f"(bound {t['bound_us']:7.1f})"
        )
        if t["bound_with_get_after_pg_us"] is not None:
            line += (
                f"  [{mark(t['ok_with_get_after_pg'])} bound "
                f"{t['bound_with_get_after_pg_us']:7.1f}]"
            )
        print(line)

    throughput = meta["throughput"]
    print(
        f"\nTHROUGHPUT (a fresh Session per get; 1 thread for {SINGLE_THREAD_SECONDS:.0f} s, "
        f"{THREADS} threads for {THROUGHPUT_SECONDS:.0f} s)"
    )
    plain_rate = throughput["no-cache"][f"threads_{THREADS}"]["ops_per_s"]
    for name, row in throughput.items():
        one, many = row["threads_1"], row[f"threads_{THREADS}"]
        share = f", hit share {many['hit_share']:.3f}" if "hit_share" in many else ""
        print(
            f"  {name:<9} {THREADS} threads: {many['ops_per_s']:>9,.0f} ops/s "
            f"({many['ops_per_s'] / plain_rate:5.2f} × no-cache); "
            f"1 thread: {one['ops_per_s']:>8,.0f} ops/s{share}"
        )

    memory = meta["memory"]
    print(
        f"\nL1 MEMORY: {memory['bytes_per_row']:,.0f} bytes/row retained (tracemalloc, "
        f"{memory['rows']} rows filled; control without L1: "
        f"{memory['control_retained_bytes']:+,} bytes in all); values alone "
        f"{memory['values_deep_bytes_per_row']:,.0f} bytes/row (deep getsizeof); "
        f"Redis entry {size} bytes"
    )
    within = memory["len_after_overflow"] <= memory["maxsize"]
    print(
        f"{mark(within)} L1 size after reading {memory['rows_read_in_total']} rows: "
        f"len(l1) = {memory['len_after_overflow']} ≤ maxsize = {memory['maxsize']}"
    )

    def med(name: str) -> float:
        return results[name][0]

    ratios = {
        "L1 hit / no-cache": med(L1_HIT) / base,
        "L2 hit / no-cache": med(L2_HIT) / base,
        "(L2 hit - raw redis GET) / no-cache": (med(L2_HIT) - med(REDIS_GET)) / base,
        "miss / no-cache": med(MISS) / base,
        "bypass / no-cache": med(BYPASS) / base,
        "no-cache / no library": base / med(NO_LIBRARY),
        "commit-with-cache / commit-without": med(COMMIT_CACHED) / med(COMMIT_UNCACHED),
        "(commit-with - commit-without) / raw redis GET": (
            med(COMMIT_CACHED) - med(COMMIT_UNCACHED)
        )
        / med(REDIS_GET),
        "redis GET after PG / tight-loop GET": med(REDIS_GET_AFTER_PG) / med(REDIS_GET),
    }
    return {
        **meta,
        "cpus": os.cpu_count(),
        "versions": {
            "python": platform.python_version(),
            **{m.__name__: m.__version__ for m in (sa, redis, psycopg, sqlmodel_cache)},
        },
        "results": {
            name: {"median_us": median, "p90_us": p90, "ratio_to_no_cache": median / base}
            for name, (median, p90) in results.items()
        },
        "ratios": ratios,
        "targets": targets,
    }


def run_propagation(pg_url: str, redis_url: str) -> dict[str, Any]:
    """Run benchmarks/propagation.py with an idle, then a busy reader (it prints its own
    lines); return its JSON results by reader."""
    print("\nCROSS-PROCESS L1 INVALIDATION (benchmarks/propagation.py)", flush=True)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for reader, flags in (("idle", []), ("busy", ["--busy"])):
            path = Path(tmp) / f"{reader}.json"
            command = [sys.executable, str(PROPAGATION), "--pg", pg_url, "--redis", redis_url]
            done = subprocess.run([*command, *flags, "--json", str(path)], check=False)
            if done.returncode != 0 or not path.exists():
                print(f"✘ propagation.py {' '.join(flags)} failed (exit code {done.returncode})")
                out[reader] = None
            else:
                out[reader] = json.loads(path.read_text(encoding="utf-8"))
    return out


def run_async(pg_url: str, redis_url: str, n: int) -> dict[str, Any] | None:
    """Run benchmarks/bench_async.py (AsyncSession on asyncpg and psycopg; it prints its
    own tables); return its JSON results."""
    print("\nASYNCSESSION (benchmarks/bench_async.py)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "async.json"
        command = [sys.executable, str(ASYNC_ROWS), "--pg", pg_url, "--redis", redis_url]
        done = subprocess.run([*command, "--n", str(n), "--json", str(path)], check=False)
        if done.returncode != 0 or not path.exists():
            print(f"✘ bench_async.py failed (exit code {done.returncode})")
            return None
        return json.loads(path.read_text(encoding="utf-8"))


def run_relations(pg_url: str, redis_url: str) -> dict[str, Any] | None:
    """Run benchmarks/relations.py (many-to-one loads, get_many, get_by; it prints its own
    table); return its JSON results."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "relations.json"
        command = [sys.executable, "-m", "benchmarks.relations", "--pg", pg_url]
        done = subprocess.run(
            [*command, "--redis", redis_url, "--json", str(path)],
            check=False,
            cwd=Path(__file__).resolve().parent.parent,
        )
        if done.returncode != 0 or not path.exists():
            print(f"✘ relations.py failed (exit code {done.returncode})")
            return None
        return json.loads(path.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG))
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--n", type=int, default=2000, help="timed operations per measurement")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--no-propagation", action="store_true", help="skip benchmarks/propagation.py"
    )
    parser.add_argument("--no-async", action="store_true", help="skip benchmarks/bench_async.py")
    parser.add_argument("--no-relations", action="store_true", help="skip benchmarks/relations.py")
    args = parser.parse_args()
    results, meta = run(args.pg, args.redis, args.n)
    data = report(results, meta)
    if not args.no_async:
        data["async"] = run_async(args.pg, args.redis, args.n)
    if not args.no_relations:
        data["relations"] = run_relations(args.pg, args.redis)
    if not args.no_propagation:
        data["propagation"] = run_propagation(args.pg, args.redis)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
