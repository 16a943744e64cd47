"""What sqlmodel-cache costs and saves as the work grows: processes, rows, a skewed load.

    python benchmarks/scale.py [--pg URL] [--redis URL] [--rows N] [--seconds S]
                               [--procs 1,2,4] [--json PATH] [--plot PATH]

Two tables hold the same N rows (bench.py's model fields and make_row): bench_scale
(ScaleRow, cached and in the in-process tier: ``CacheConfig(l1=True)``) and
bench_scale_plain (ScalePlain, not cached). For every P in --procs and each mode,
``no-cache`` (ScalePlain) then ``cache`` (ScaleRow), P worker processes (multiprocessing,
"spawn") run the same workload. Each configures the cache itself, in both modes so
that both pay the library's hooks: Redis, a run-wide random key prefix
(smc-scale-xxxxxxxx) and ``L1Config(maxsize=L1_SIZE)``. Once its invalidation feed is
subscribed it waits at a barrier; all then run the workload --warmup seconds unmeasured
(WARMUP_SECONDS by default), meet at the barrier again and run it --seconds, measured.

The workload: a row id drawn from a Zipf distribution (s = ZIPF_S) over the N rows,
the ranks shuffled onto the ids with a fixed seed so that hot rows are spread; then
95% ``with Session(engine) as s: s.get(Model, id)``, 5% the same get followed by
``row.count += 1; s.commit()``. Every operation is timed whole with perf_counter_ns,
from session creation to close. A commit of a cached row deletes its Redis entry and
drops it from the other processes' L1 through the invalidation feed.

Every cache run starts cold: its Redis keys are deleted before it (only those under
this run's prefix) and its processes, so their L1s, are new. The warm-up fills the
cache with the rows the skew makes hot; misses of rows first read in the measured
seconds are counted (the long tail of 100,000 rows is never all in the cache).

The table has a row per (mode, P): ops/s (the sum over processes of operations /
elapsed) and its ratio to no-cache's at the same P; p50 and p99 of the reads' latency
(over all processes); the hit ratio (``hits``, which include ``l1_hits``, over gets,
from ``SQLModelCache.stats()`` in each worker); SELECTs per get (SELECT statements the
worker's engine sent, counted by a before_cursor_execute listener, over gets, a
write's get included) and the share of them saved against no-cache at the same P.
Then the memory of one entry: in Redis (MEMORY USAGE and STRLEN, averaged over up to
REDIS_SAMPLE entries after the last cache run) and in L1 (in this process, under
tracemalloc: L1_MEMORY_ROWS gets that are L2 hits fill an empty L1; retained bytes /
rows, as bench.py's run_memory measures it), also as a multiple of the Redis entry.
The PNG (--plot) shows throughput and p99 read latency against P, cache and no-cache;
--json writes every figure, per-process throughput and cache counters too.

Only this script's two tables are dropped and created (and dropped again at the
end: a rerun inserts the rows anew), and only the Redis keys under its prefix are
deleted, never the whole database.
"""

# The report prints the multiplication sign on purpose, as bench.py does.
# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import bisect
import gc
import itertools
import json
import logging
import multiprocessing as mp
import os
import platform
import random
import secrets
import statistics
import sys
import time
import traceback
import tracemalloc
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.context import SpawnContext
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import psycopg
import redis
import sqlalchemy as sa
import sqlmodel
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, SQLModel

import sqlmodel_cache
from benchmarks.bench import (
    DEFAULT_PG,
    DEFAULT_REDIS,
    BenchBase,
    deep_size,
    ensure_database,
    live_runtime,
    make_row,
    model_stats,
)
from sqlmodel_cache import CacheConfig, L1Config, SQLModelCache
from sqlmodel_cache.transport import RedisSyncTransport
from sqlmodel_cache.transport._base import LEASE_MARK

ZIPF_S = 1.1
WRITE_SHARE = 0.05
SEED = 1729  # the rank -> id shuffle, and (plus the worker's index) each worker's draws
L1_SIZE = 10_000  # rows each process's L1 holds
TTL = 3600  # seconds: no entry expires during a run
WARMUP_SECONDS = 4.0  # the Zipf head is in the cache by then; the long tail never is
INSERT_BATCH = 5_000
REDIS_SAMPLE = 200  # entries MEMORY USAGE and STRLEN are averaged over
L1_MEMORY_ROWS = 2_000  # rows filled into L1 under tracemalloc (slow: keep it small)
FEED_TIMEOUT = 10.0
BARRIER_TIMEOUT = 120.0  # spawning and importing in P processes on a busy machine
DEFAULT_PLOT = "docs/scale.png"


class ScaleRow(BenchBase, table=True):
    __tablename__ = "bench_scale"
    __cache_config__ = CacheConfig(l1=True)


class ScalePlain(BenchBase, table=True):
    __tablename__ = "bench_scale_plain"


MODES: dict[str, type[BenchBase]] = {"no-cache": ScalePlain, "cache": ScaleRow}
TABLES = ("bench_scale", "bench_scale_plain")


# ---------------------------------------------------------------- workload --


class Picker:
    """Row ids drawn from Zipf(ZIPF_S) over 1..rows: rank k weighs k ** -ZIPF_S."""

    def __init__(self, rows: int, seed: int) -> None:
        self.cumulative = list(itertools.accumulate(k**-ZIPF_S for k in range(1, rows + 1)))
        self.total = self.cumulative[-1]
        # Ranks map onto ids through a fixed shuffle, the same in every process: the hot
        # rows are the same everywhere but not the first ids (not neighbours on disk).
        self.ids = list(range(1, rows + 1))
        random.Random(SEED).shuffle(self.ids)
        self.rng = random.Random(seed)

    def next_id(self) -> int:
        # random() < 1, so the point is below the last cumulative weight: a valid rank.
        rank = bisect.bisect_left(self.cumulative, self.rng.random() * self.total)
        return self.ids[rank]

    def next_is_write(self) -> bool:
        return self.rng.random() < WRITE_SHARE


def read(engine: Engine, model: type[BenchBase], ident: int) -> None:
    with Session(engine) as session:
        session.get(model, ident)


def write(engine: Engine, model: type[BenchBase], ident: int) -> None:
    with Session(engine) as session:
        row = session.get(model, ident)
        assert row is not None
        row.count += 1
        session.commit()


@dataclass
class Timings:
    """The latencies (ns) of one process's reads and writes, and how long it ran."""

    reads: array[int] = field(default_factory=lambda: array("q"))
    writes: array[int] = field(default_factory=lambda: array("q"))
    elapsed: float = 0.0

    @property
    def ops(self) -> int:
        return len(self.reads) + len(self.writes)


def drive(engine: Engine, model: type[BenchBase], picker: Picker, seconds: float) -> Timings:
    """Run the workload back to back for about `seconds`."""
    timings = Timings()
    clock = time.perf_counter_ns
    started = time.perf_counter()
    end = started + seconds
    while time.perf_counter() < end:
        ident, is_write = picker.next_id(), picker.next_is_write()
        start = clock()
        if is_write:
            write(engine, model, ident)
            timings.writes.append(clock() - start)
        else:
            read(engine, model, ident)
            timings.reads.append(clock() - start)
    timings.elapsed = time.perf_counter() - started
    return timings


class QueryCounter:
    """Statements an engine sends to the database, and how many of them are SELECTs."""

    def __init__(self, engine: Engine) -> None:
        self.selects = self.statements = 0
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements += 1
        if statement.lstrip()[:6].upper() == "SELECT":
            self.selects += 1


# ----------------------------------------------------------------- workers --


@dataclass(frozen=True)
class Job:
    """What one worker process runs (pickled to it: plain values only)."""

    mode: str
    index: int
    pg_url: str
    redis_url: str
    prefix: str
    rows: int
    seconds: float
    warmup: float


def configure_cache(redis_url: str, prefix: str) -> None:
    """The configuration every process of a run uses; returns once the L1 may serve."""
    SQLModelCache.configure(
        RedisSyncTransport.from_url(redis_url),
        default_ttl=TTL,
        key_prefix=prefix,
        l1=L1Config(maxsize=L1_SIZE, ttl=float(TTL)),
    )
    feed = live_runtime().feed
    assert feed is not None
    # Until the feed is subscribed the L1 neither serves nor keeps rows.
    if not feed.subscribed.wait(FEED_TIMEOUT):
        raise RuntimeError(f"the invalidation feed did not subscribe within {FEED_TIMEOUT} s")
    # With SQLAlchemy 2.1 the first get of a process whose mappers are not configured
    # yet goes to the database uncached (see propagation.py): configure them now.
    sa.orm.configure_mappers()


def run_worker(job: Job, barrier: Barrier) -> dict[str, Any]:
    """One process's run: configure, warm up together, then the measured seconds."""
    configure_cache(job.redis_url, job.prefix)
    engine = sa.create_engine(job.pg_url)
    try:
        model = MODES[job.mode]
        counter = QueryCounter(engine)
        picker = Picker(job.rows, seed=SEED + job.index)  # the same draws in both modes
        barrier.wait(BARRIER_TIMEOUT)
        warmup = drive(engine, model, picker, job.warmup)
        barrier.wait(BARRIER_TIMEOUT)
        before, selects, statements = model_stats(model), counter.selects, counter.statements
        timed = drive(engine, model, picker, job.seconds)
        after = model_stats(model)
        return {
            "index": job.index,
            "warmup_ops": warmup.ops,
            "timings": timed,
            "selects": counter.selects - selects,
            "statements": counter.statements - statements,
            "hits": after.hits - before.hits,
            "l1_hits": after.l1_hits - before.l1_hits,
            "misses": after.misses - before.misses,
            "fills": after.fills - before.fills,
            "invalidations": after.invalidations - before.invalidations,
            "bypassed": after.bypassed - before.bypassed,
            "errors": after.errors - before.errors,
        }
    finally:
        SQLModelCache.reset()
        engine.dispose()


def worker_main(job: Job, barrier: Barrier, results: Queue[dict[str, Any]]) -> None:
    """A worker process's entry point: its result, or its traceback, goes to the parent."""
    try:
        results.put(run_worker(job, barrier))
    except BaseException:
        results.put({"index": job.index, "error": traceback.format_exc()})
        barrier.abort()  # the other workers stop waiting for this one
        raise


def run_mode(
    ctx: SpawnContext, mode: str, procs: int, args: argparse.Namespace, prefix: str
) -> dict[str, Any]:
    """Run `procs` workers of one mode together; their figures, merged."""
    barrier = ctx.Barrier(procs)
    results: Queue[dict[str, Any]] = ctx.Queue()
    jobs = [
        Job(mode, i, args.pg, args.redis, prefix, args.rows, args.seconds, args.warmup)
        for i in range(procs)
    ]
    workers = [ctx.Process(target=worker_main, args=(job, barrier, results)) for job in jobs]
    for worker in workers:
        worker.start()
    # Read the results before joining: a worker exits only once its result is sent.
    deadline = time.monotonic() + 2 * BARRIER_TIMEOUT + args.warmup + args.seconds
    outs: list[dict[str, Any]] = []
    try:
        for _ in workers:
            outs.append(results.get(timeout=max(1.0, deadline - time.monotonic())))
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.terminate()
    errors = [out["error"] for out in outs if "error" in out]
    if errors:
        raise RuntimeError(f"a {mode} worker failed:\n{errors[0]}")
    return merge(mode, procs, outs)


def percentile(ordered: Sequence[int], q: float) -> float:
    """The q-quantile (nearest rank) of sorted ns values, in µs."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def merge(mode: str, procs: int, outs: list[dict[str, Any]]) -> dict[str, Any]:
    """One (mode, procs) row: the sums and latency percentiles over its processes."""
    timings: list[Timings] = [out["timings"] for out in outs]
    reads = sorted(itertools.chain.from_iterable(t.reads for t in timings))
    writes = sorted(itertools.chain.from_iterable(t.writes for t in timings))
    gets = sum(t.ops for t in timings)  # one get per operation, a write's included

    def total(name: str) -> int:
        return sum(int(out[name]) for out in outs)

    cached = mode == "cache"
    return {
        "mode": mode,
        "procs": procs,
        "ops": gets,
        "reads": len(reads),
        "writes": len(writes),
        "warmup_ops": total("warmup_ops"),
        "ops_per_s": sum(t.ops / t.elapsed for t in timings),
        "ops_per_s_by_process": [t.ops / t.elapsed for t in timings],
        "read_p50_us": percentile(reads, 0.50),
        "read_p99_us": percentile(reads, 0.99),
        "read_mean_us": statistics.fmean(reads) / 1000 if reads else float("nan"),
        "write_p50_us": percentile(writes, 0.50),
        "write_p99_us": percentile(writes, 0.99),
        "hit_ratio": total("hits") / gets if cached and gets else None,
        "l1_hit_ratio": total("l1_hits") / gets if cached and gets else None,
        "selects": total("selects"),
        "statements": total("statements"),
        "selects_per_get": total("selects") / gets if gets else float("nan"),
        **{
            name: total(name)
            for name in ("hits", "l1_hits", "misses", "fills", "invalidations", "bypassed")
        },
        "cache_errors": total("errors"),
    }


# ------------------------------------------------------- setup and memory --


@contextmanager
def quiet_library() -> Iterator[None]:
    """Silence the library's warning that writes (DDL included) in this process, which
    has not configured the cache, invalidate nothing: true and harmless here, as the
    setup comes before any process caches the rows and the drop after the last."""
    library_log = logging.getLogger("sqlmodel_cache")
    level = library_log.level
    library_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        library_log.setLevel(level)


def drop_tables(engine: Engine) -> None:
    with quiet_library():
        SQLModel.metadata.drop_all(engine, tables=[SQLModel.metadata.tables[t] for t in TABLES])


def setup_tables(engine: Engine, rows: int) -> float:
    """Drop and create this script's tables, insert the same rows into both; seconds."""
    started = time.perf_counter()
    tables = [SQLModel.metadata.tables[name] for name in TABLES]
    with quiet_library():
        drop_tables(engine)
        SQLModel.metadata.create_all(engine, tables=tables)
        # Core executemany (psycopg batches it into multi-row INSERTs): no ORM objects.
        with engine.begin() as conn:
            for first in range(1, rows + 1, INSERT_BATCH):
                last = min(first + INSERT_BATCH, rows + 1)
                batch = [make_row(i) for i in range(first, last)]
                for table in tables:
                    conn.execute(sa.insert(table), batch)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for name in TABLES:
            conn.execute(sa.text(f"ANALYZE {name}"))
    return time.perf_counter() - started


def scan_keys(client: redis.Redis, prefix: str, pattern: str = "*") -> list[bytes]:
    return list(client.scan_iter(match=f"{prefix}:{pattern}", count=1000))


def delete_keys(client: redis.Redis, prefix: str) -> int:
    """Delete this run's keys (only those under its prefix); how many there were."""
    keys = scan_keys(client, prefix)
    for first in range(0, len(keys), 1000):
        client.delete(*keys[first : first + 1000])
    return len(keys)


def redis_memory(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """MEMORY USAGE and STRLEN of ScaleRow entries, averaged over up to REDIS_SAMPLE."""
    keys = scan_keys(client, prefix, "ScaleRow:*")
    usage: list[int] = []
    length: list[int] = []
    for key in keys:
        if len(usage) == REDIS_SAMPLE:
            break
        # A key may hold a reader's lease (a miss being filled), not a row.
        if client.getrange(key, 0, len(LEASE_MARK) - 1) == LEASE_MARK:
            continue
        used = client.memory_usage(key)
        if used is not None:  # None: deleted meanwhile
            usage.append(int(used))
            length.append(int(client.strlen(key)))
    return {
        "entries": len(keys),
        "sampled": len(usage),
        "memory_usage_bytes": statistics.fmean(usage) if usage else float("nan"),
        "strlen_bytes": statistics.fmean(length) if length else float("nan"),
    }


def traced(action: Callable[[], None]) -> int:
    """Bytes still allocated after action (tracemalloc, after a collection)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        action()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def l1_memory(engine: Engine, redis_url: str, prefix: str, rows: int) -> dict[str, Any]:
    """Bytes a ScaleRow takes in L1: an empty L1 filled by L2 hits under tracemalloc."""
    count = min(L1_MEMORY_ROWS, rows, L1_SIZE)
    idents = range(1, count + 1)

    def get_all() -> None:
        for ident in idents:
            read(engine, ScaleRow, ident)

    configure_cache(redis_url, prefix)
    try:
        get_all()  # every row in Redis, so that the traced gets are all L2 hits
        SQLModelCache.reset()
        configure_cache(redis_url, prefix)  # an empty L1; the Redis entries stay
        l1 = live_runtime().l1
        assert l1 is not None
        len_before, before = len(l1), model_stats(ScaleRow)
        filled = traced(get_all)  # each an L2 hit that puts its row in L1
        after = model_stats(ScaleRow)
        new_rows = len(l1) - len_before
        assert after.hits - before.hits == count and after.l1_hits == before.l1_hits
        control = traced(get_all)  # the same gets again, now L1 hits: they keep nothing
        seen: set[int] = set()  # an object shared by several entries counts once
        # An entry is (the row's model info, shared by all rows of it; values; positions).
        # Its parts are sized one by one: a slice would be a temporary tuple, whose id a
        # later one may reuse, and deep_size would then skip that one as seen.
        values_bytes = sum(
            deep_size(key, seen) + sys.getsizeof(entry) + sum(deep_size(p, seen) for p in entry[1:])
            for key, entry in list(l1._entries.items())
        )
    finally:
        SQLModelCache.reset()
    return {
        "rows": new_rows,
        "retained_bytes": filled,
        "bytes_per_row": filled / max(1, new_rows),
        "control_retained_bytes": control,
        "values_deep_bytes_per_row": values_bytes / max(1, new_rows),
    }


# ------------------------------------------------------------------ report --


def compare(runs: list[dict[str, Any]]) -> None:
    """Add to each run its throughput / no-cache's at the same procs and, to cache runs,
    the share of SELECTs per get they saved against it."""
    plain = {run["procs"]: run for run in runs if run["mode"] == "no-cache"}
    for run in runs:
        base = plain.get(run["procs"])
        run["ratio_to_no_cache"] = run["ops_per_s"] / base["ops_per_s"] if base else None
        if run["mode"] == "cache":
            run["selects_saved"] = None
            if base and base["selects_per_get"]:
                run["selects_saved"] = 1 - run["selects_per_get"] / base["selects_per_get"]


def report(runs: list[dict[str, Any]], redis_mem: dict[str, Any], l1_mem: dict[str, Any]) -> None:
    """Print the table, then the memory of an entry in Redis and in L1."""
    header = (
        f"{'mode':<9}{'procs':>6}{'ops/s':>10}{'× no-cache':>12}{'read p50 µs':>13}"
        f"{'read p99 µs':>13}{'hit ratio':>11}{'SELECTs/get':>13}{'saved':>8}"
    )
    print(f"\n{header}\n{'-' * len(header)}")
    for run in sorted(runs, key=lambda r: (r["mode"] != "cache", r["procs"])):  # cache first
        ratio = "–" if run["ratio_to_no_cache"] is None else f"{run['ratio_to_no_cache']:.2f}"
        hit = "–" if run["hit_ratio"] is None else f"{run['hit_ratio']:.3f}"
        saved = "–" if run.get("selects_saved") is None else f"{run['selects_saved']:.1%}"
        print(
            f"{run['mode']:<9}{run['procs']:>6}{run['ops_per_s']:>10,.0f}{ratio:>12}"
            f"{run['read_p50_us']:>13.1f}{run['read_p99_us']:>13.1f}{hit:>11}"
            f"{run['selects_per_get']:>13.3f}{saved:>8}"
        )
    strlen, usage = redis_mem["strlen_bytes"], redis_mem["memory_usage_bytes"]
    print(
        f"\nRedis: {strlen:,.0f} bytes/entry (STRLEN), {usage:,.0f} bytes/entry (MEMORY USAGE), "
        f"mean of {redis_mem['sampled']} entries; {redis_mem['entries']:,} entries after the "
        "last cache run"
    )
    per_row = l1_mem["bytes_per_row"]
    print(
        f"L1: {per_row:,.0f} bytes/row retained (tracemalloc, {l1_mem['rows']:,} rows filled "
        f"by L2 hits; the same gets as L1 hits retained {l1_mem['control_retained_bytes']:+,} "
        f"bytes in all) = {per_row / strlen:.1f} × the Redis entry's STRLEN, "
        f"{per_row / usage:.1f} × its MEMORY USAGE; values alone "
        f"{l1_mem['values_deep_bytes_per_row']:,.0f} bytes/row (deep getsizeof)"
    )


def plot(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    """Throughput and p99 read latency against processes, cache and no-cache."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    for mode, style in (("cache", "o-"), ("no-cache", "s--")):
        points = sorted((run for run in runs if run["mode"] == mode), key=lambda r: r["procs"])
        procs = [run["procs"] for run in points]
        left.plot(procs, [run["ops_per_s"] for run in points], style, label=mode)
        right.plot(procs, [run["read_p99_us"] for run in points], style, label=mode)
    ticks = sorted({run["procs"] for run in runs})
    for axes, label, name in (
        (left, "operations/s, all processes", "throughput"),
        (right, "µs", "p99 read latency"),
    ):
        axes.set(xlabel="worker processes", ylabel=label, title=name, xticks=ticks)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -------------------------------------------------------------------- main --


def procs_list(text: str) -> list[int]:
    values = sorted({int(part) for part in text.split(",") if part.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("--procs wants positive integers, e.g. 1,2,4")
    return values


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG))
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--rows", type=int, default=100_000, help="rows in each table")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--procs", type=procs_list, default=[1, 2, 4], help="e.g. 1,2,4")
    parser.add_argument(
        "--warmup", type=float, default=WARMUP_SECONDS, help="unmeasured seconds before each run"
    )
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--plot", metavar="PATH", default=DEFAULT_PLOT, help="the PNG")
    args = parser.parse_args()
    if args.rows < 1 or args.seconds <= 0:
        parser.error("--rows and --seconds must be positive")
    return args


def main() -> None:
    args = parse_args()
    wall = time.perf_counter()
    url = make_url(args.pg)
    ensure_database(url)
    prefix = f"smc-scale-{secrets.token_hex(4)}"
    engine = sa.create_engine(url)
    client = redis.Redis.from_url(args.redis)
    title = (
        f"sqlmodel-cache: {args.rows:,} rows, Zipf s={ZIPF_S}, {1 - WRITE_SHARE:.0%} get / "
        f"{WRITE_SHARE:.0%} get + update + commit, {args.seconds:g} s per run "
        f"after {args.warmup:g} s of warm-up from cold"
    )
    print(f"{title}\nL1 maxsize {L1_SIZE:,} rows per process, {os.cpu_count()} CPUs", flush=True)
    runs: list[dict[str, Any]] = []
    try:
        setup_seconds = setup_tables(engine, args.rows)
        print(f"set up {args.rows:,} rows in each table in {setup_seconds:.1f} s", flush=True)
        ctx = mp.get_context("spawn")
        for procs in args.procs:
            for mode in MODES:
                if mode == "cache":
                    delete_keys(client, prefix)  # a cold start: no entry of earlier runs
                run = run_mode(ctx, mode, procs, args, prefix)
                runs.append(run)
                print(
                    f"  {mode:<8} procs={procs}: {run['ops_per_s']:>9,.0f} ops/s, reads p50 "
                    f"{run['read_p50_us']:.0f} µs, p99 {run['read_p99_us']:.0f} µs",
                    flush=True,
                )
        redis_mem = redis_memory(client, prefix)  # the entries of the last cache run
        l1_mem = l1_memory(engine, args.redis, prefix, args.rows)
    finally:
        drop_tables(engine)
        delete_keys(client, prefix)
        client.close()
        engine.dispose()
    compare(runs)
    report(runs, redis_mem, l1_mem)
    plot_path = Path(args.plot)
    plot(runs, plot_path, title)
    wall_seconds = time.perf_counter() - wall
    print(
        f"\nwrote {plot_path} ({plot_path.stat().st_size:,} bytes); wall time {wall_seconds:.1f} s"
    )
    if args.json:
        data = {
            "rows": args.rows,
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "procs": args.procs,
            "zipf_s": ZIPF_S,
            "write_share": WRITE_SHARE,
            "l1_maxsize": L1_SIZE,
            "cold_start": True,
            "cpus": os.cpu_count(),
            "setup_seconds": setup_seconds,
            "wall_seconds": wall_seconds,
            "versions": {
                "python": platform.python_version(),
                **{
                    m.__name__: m.__version__
                    for m in (sa, sqlmodel, redis, psycopg, sqlmodel_cache)
                },
            },
            "runs": runs,
            "redis_entry": redis_mem,
            "l1_memory": l1_mem,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
