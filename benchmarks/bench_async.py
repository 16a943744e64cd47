"""Latency of AsyncSession.get() with and without sqlmodel-cache, on PostgreSQL and Redis.

    python benchmarks/bench_async.py [--pg URL] [--redis URL] [--n N] [--json PATH]

The async rows of benchmarks/bench.py, for each of two async drivers of the same
database: asyncpg (``postgresql+asyncpg://``) and psycopg's async mode
(``postgresql+psycopg_async://``); --pg is the sync URL, as bench.py takes it.
Every session.get row times a whole unit of work, ``async with AsyncSession(engine)
as s: await s.get(...)`` (sqlmodel's AsyncSession on create_async_engine): session
creation, the get and close(). The commit rows time only ``row.count += 1; await
s.commit()`` on a row loaded from the database. The reference round trip is a raw
``GET`` on a redis.asyncio client in the same event loop. Each figure is the median
/ p90 of N single operations after a warm-up; the operations run interleaved, in
blocks of 100, so that load drift hits all alike.

The models, rows, statistics and tables are bench.py's (imported, not copied):
BenchPlain (not cached), BenchRow (cached, out of L1) and BenchRowL1 (cached, in
it). Each driver runs in an event loop of its own (one ``asyncio.run``) with the
cache configured on a RedisAsyncTransport under a random prefix of its own, and
reset after it; the L1 rows are timed only once the invalidation feed is subscribed.
A driver whose rows the cache does not take (every hit op would then fail) is
reported as not timed, with the reason, and the script exits with status 1.

Only bench.py's tables (bench_row, bench_row_l1, bench_plain, in the database of
--pg, created if missing) are dropped and created, and only the Redis keys under
this run's random prefixes are deleted.
"""

# The report prints the multiplication sign on purpose, as the targets are written.
# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

import redis
import redis.asyncio
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from benchmarks.bench import (
    COMMIT_CACHED,
    COMMIT_UNCACHED,
    DEFAULT_PG,
    DEFAULT_REDIS,
    L1_HIT,
    L1_MAXSIZE,
    L2_HIT,
    MISS,
    NO_CACHE,
    ROWS,
    BenchBase,
    BenchPlain,
    BenchRow,
    BenchRowL1,
    Results,
    counters,
    ensure_database,
    live_runtime,
    mark,
    model_stats,
    setup_tables,
    summarize,
)
from sqlmodel_cache import AsyncCachedSession, L1Config, SQLModelCache
from sqlmodel_cache.transport import RedisAsyncTransport

DRIVERS = ("asyncpg", "psycopg_async")  # SQLAlchemy's names: postgresql+<driver>://
REDIS_GET = "redis GET (raw, asyncio)"
L1_FAST_ASYNC = "AsyncCachedSession.get, L1 hit"


class NotCached(Exception):
    """The driver loads rows the cache does not take: its cache rows cannot be timed."""


AsyncOp = Callable[[int], Awaitable[int]]  # takes a row id, returns the elapsed ns timed
AsyncAround = Callable[[], AbstractAsyncContextManager[None]]


async def measure(
    ops: dict[str, AsyncOp], n: int, warmup: int, around: dict[str, AsyncAround], block: int = 100
) -> dict[str, list[int]]:
    """bench.measure for coroutines: every op n times, interleaved in blocks, after a
    warm-up round of each; ``around[name]`` (if any) is entered around each block, untimed."""
    samples: dict[str, list[int]] = {name: [] for name in ops}
    for rnd in range(-1, -(-n // block)):
        for name, op in ops.items():
            done = samples[name]
            count = warmup if rnd < 0 else min(block, n - len(done))
            async with around.get(name, nullcontext)():
                times = [await op((len(done) + j) % ROWS + 1) for j in range(count)]
            if rnd >= 0:
                done.extend(times)
        if rnd < 0:
            gc.collect()
    return samples


def session_get(
    engine: AsyncEngine, model: type[SQLModel], session_class: type[AsyncSession] = AsyncSession
) -> AsyncOp:
    async def op(ident: int) -> int:
        start = time.perf_counter_ns()
        async with session_class(engine) as session:
            await session.get(model, ident)
        return time.perf_counter_ns() - start

    return op


def commit_update(engine: AsyncEngine, model: type[BenchBase]) -> AsyncOp:
    async def op(ident: int) -> int:
        async with AsyncSession(engine) as session:
            # Load from the database in both cases: a cache hit would leave the session
            # without a connection, and the timed commit would then pay checkout + BEGIN.
            row = await session.get(model, ident, execution_options={"cache": False})
            assert row is not None
            start = time.perf_counter_ns()
            row.count += 1
            await session.commit()
            return time.perf_counter_ns() - start

    return op


async def wait_l1() -> None:
    """Wait until the L1 may serve: its feed is subscribed (bench.py's l1_ready)."""
    feed = live_runtime().feed
    assert feed is not None
    # A threading.Event: wait for it off the loop, though only when there is anything
    # to wait for (a thread hop before every timed block would add noise).
    if not feed.subscribed.is_set() and not await asyncio.to_thread(feed.subscribed.wait, 10):
        raise RuntimeError("the invalidation feed did not subscribe within 10 s")


@asynccontextmanager
async def l1_ready() -> AsyncIterator[None]:
    await wait_l1()
    yield


class AsyncBench:
    """One driver's engine, raw Redis client and the operations that need more than a
    session; built inside the event loop that runs them, since both belong to it."""

    def __init__(self, url: URL, redis_url: str, prefix: str) -> None:
        self.engine = create_async_engine(url)
        self.redis_url = redis_url
        self.client = redis.asyncio.Redis.from_url(redis_url)
        self.prefix = prefix
        self.raw_key = f"{prefix}:raw"
        self.get_l2 = session_get(self.engine, BenchRow)
        self.get_l1 = session_get(self.engine, BenchRowL1)
        self.get_l1_fast = session_get(self.engine, BenchRowL1, AsyncCachedSession)
        self.get_plain = session_get(self.engine, BenchPlain)
        self.commit_cached = commit_update(self.engine, BenchRow)
        self.commit_uncached = commit_update(self.engine, BenchPlain)

    def row_key(self, model: type, ident: int) -> str:
        return f"{self.prefix}:{model.__name__}:id={ident}"

    def configure(self) -> None:
        SQLModelCache.configure(
            RedisAsyncTransport.from_url(self.redis_url),
            default_ttl=3600,
            key_prefix=self.prefix,
            l1=L1Config(maxsize=L1_MAXSIZE, ttl=3600.0),
        )

    async def fill(self) -> None:
        """Put every row in the cache (L1 too, so the feed must listen first): the hit
        ops then only hit. The raw GET reads a value of a cached entry's size."""
        await self.client.set(self.raw_key, secrets.token_bytes(300).hex().encode())
        await wait_l1()
        for ident in range(1, ROWS + 1):
            await self.get_l2(ident)
            await self.get_l1(ident)
        for model in (BenchRow, BenchRowL1):
            # A driver may load values the cache refuses (and it only logs that once).
            stats = model_stats(model)
            if stats.fills != ROWS:
                raise NotCached(
                    f"{model.__name__}: {stats.fills} of {ROWS} rows cached after a get of "
                    f"each; unfilled: {dict(stats.unfilled)}"
                )

    async def redis_get(self, ident: int) -> int:
        start = time.perf_counter_ns()
        await self.client.get(self.raw_key)
        return time.perf_counter_ns() - start

    async def l1_hit(self, ident: int) -> int:
        return await self._l1_timed(self.get_l1, ident)

    async def l1_fast_hit(self, ident: int) -> int:
        return await self._l1_timed(self.get_l1_fast, ident)

    @staticmethod
    async def _l1_timed(get: AsyncOp, ident: int) -> int:
        l1_hits = counters(BenchRowL1).l1_hits
        elapsed = await get(ident)
        assert counters(BenchRowL1).l1_hits == l1_hits + 1, f"id {ident} was not an L1 hit"
        return elapsed

    async def hit(self, ident: int) -> int:
        hits = counters(BenchRow).hits
        elapsed = await self.get_l2(ident)
        assert counters(BenchRow).hits == hits + 1, f"id {ident} was not a hit"
        return elapsed

    async def miss(self, ident: int) -> int:
        await self.client.delete(self.row_key(BenchRow, ident))  # untimed: the get must fill
        fills = counters(BenchRow).fills
        elapsed = await self.get_l2(ident)
        assert counters(BenchRow).fills == fills + 1, f"id {ident} was not filled"
        return elapsed

    async def commit_and_refill(self, ident: int) -> int:
        elapsed = await self.commit_cached(ident)
        await self.get_l2(ident)  # untimed: the commit invalidated the entry the hits need
        return elapsed

    async def commit_plain_and_reread(self, ident: int) -> int:
        elapsed = await self.commit_uncached(ident)
        await self.get_plain(ident)  # as commit_and_refill: the database reads the row too
        return elapsed

    async def close(self) -> None:
        await self.client.aclose()
        await self.engine.dispose()


async def run_driver(url: URL, redis_url: str, prefix: str, n: int, warmup: int) -> Results:
    """Configure the cache, fill it and time every operation, in the running loop."""
    bench = AsyncBench(url, redis_url, prefix)
    try:
        bench.configure()
        await bench.fill()
        ops: dict[str, AsyncOp] = {
            REDIS_GET: bench.redis_get,
            NO_CACHE: bench.get_plain,
            L1_HIT: bench.l1_hit,
            L1_FAST_ASYNC: bench.l1_fast_hit,
            L2_HIT: bench.hit,
            MISS: bench.miss,
            COMMIT_CACHED: bench.commit_and_refill,
            COMMIT_UNCACHED: bench.commit_plain_and_reread,
        }
        samples = await measure(ops, n, warmup, {L1_HIT: l1_ready, L1_FAST_ASYNC: l1_ready})
    finally:
        await bench.close()
    return {name: summarize(times) for name, times in samples.items()}


def delete_keys(redis_url: str, prefixes: list[str]) -> None:
    """Delete the Redis keys under this run's prefixes, and only those."""
    client = redis.Redis.from_url(redis_url)
    try:
        for prefix in prefixes:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


def run(pg_url: str, redis_url: str, n: int, warmup: int) -> dict[str, Results | str]:
    """Set up the tables, time every operation of each driver and clean up; a driver
    whose rows the cache does not take gets the reason instead of results."""
    url = make_url(pg_url)
    ensure_database(url)
    engine = sa.create_engine(url)  # the sync URL's driver, for the tables only
    prefixes: list[str] = []
    out: dict[str, Results | str] = {}
    try:
        setup_tables(engine)
        for driver in DRIVERS:
            prefix = f"smc-bench-async-{secrets.token_hex(4)}"
            prefixes.append(prefix)
            async_url = url.set(drivername=f"postgresql+{driver}")
            try:
                out[driver] = asyncio.run(run_driver(async_url, redis_url, prefix, n, warmup))
            except NotCached as exc:  # the other driver may still be timed
                out[driver] = str(exc)
            finally:
                SQLModelCache.reset()  # the next driver configures a cache of its own
    finally:
        delete_keys(redis_url, prefixes)
        engine.dispose()
    return out


def check_targets(results: Results) -> list[dict[str, Any]]:
    """One driver's targets, each with the measured value and its bound (µs, medians)."""

    def med(name: str) -> float:
        return results[name][0]

    base, get, l1 = med(NO_CACHE), med(REDIS_GET), med(L1_HIT)
    rows = [
        ("L1 hit ≤ 0.15 × no-cache", l1, 0.15 * base),
        ("AsyncCachedSession L1 hit ≤ 0.03 × no-cache", med(L1_FAST_ASYNC), 0.03 * base),
        ("L2 hit ≤ L1 hit + raw GET + 15 µs", med(L2_HIT), l1 + get + 15),
        ("miss ≤ no-cache + 2 × raw GET + 30 µs", med(MISS), base + 2 * get + 30),
        (
            "commit cached ≤ commit uncached + raw GET + 30 µs",
            med(COMMIT_CACHED),
            med(COMMIT_UNCACHED) + get + 30,
        ),
    ]
    return [
        {"target": label, "value_us": value, "bound_us": bound, "ok": value <= bound}
        for label, value, bound in rows
    ]


def print_table(driver: str, results: Results) -> None:
    base = results[NO_CACHE][0]
    print(f"\nAsyncSession on postgresql+{driver}")
    print(f"{'operation':<36} {'median µs':>10} {'p90 µs':>10} {'/ no-cache':>11}")
    print("-" * 70)
    for name, (median, p90) in results.items():
        print(f"{name:<36} {median:>10.1f} {p90:>10.1f} {median / base:>11.3f}")


def report(all_results: dict[str, Results | str], n: int, warmup: int) -> dict[str, Any]:
    """Print one table per driver (or why it was not timed), then the targets; return
    everything for JSON."""
    print(f"N={n} (warm-up {warmup}), {os.cpu_count()} CPUs")
    data: dict[str, Any] = {}
    targets: dict[str, list[dict[str, Any]]] = {}
    for driver, results in all_results.items():
        if isinstance(results, str):
            print(f"\nAsyncSession on postgresql+{driver}\n✘ not timed: {results}")
            data[driver] = {"error": results}
            continue
        print_table(driver, results)
        base = results[NO_CACHE][0]
        data[driver] = {
            name: {"median_us": median, "p90_us": p90, "ratio_to_no_cache": median / base}
            for name, (median, p90) in results.items()
        }
        targets[driver] = check_targets(results)

    for driver, checked in targets.items():
        print(f"\nTARGETS, {driver} (medians)")
        for t in checked:
            print(
                f"{mark(t['ok'])} {t['target']:<52} {t['value_us']:8.1f} µs "
                f"(bound {t['bound_us']:7.1f})"
            )
    data["targets"] = targets
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG))
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--n", type=int, default=2000, help="timed operations per measurement")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    warmup = max(50, args.n // 10)  # as bench.py
    results = run(args.pg, args.redis, args.n, warmup)
    data = report(results, args.n, warmup)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
        print(f"\nwrote {args.json}")
    if any(isinstance(r, str) for r in results.values()):
        sys.exit(1)  # a driver could not be timed: not a verdict, a failure


if __name__ == "__main__":
    main()
