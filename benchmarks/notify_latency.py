"""How fast a write the application never sees leaves every tier, through PostgreSQL triggers.

    python benchmarks/notify_latency.py [--pg URL] [--redis URL] [--n N] [--json PATH]

Three processes on one machine, under a random key prefix, on a table of this
benchmark's own (bench_notify, ROWS rows of a model with ``CacheConfig(l1=True)``)
with the triggers of ``sqlmodel_cache.postgres`` installed:

- the **listener** (this file with ``--listener``): ``listen()``, as the one
  listener of a deployment would run;
- the **reader** (``--reader``): an application process with an in-process tier.
  On ``warm ID`` it reads the row until its L1 holds it (so Redis holds it too),
  answers ``ok``, then waits on its L1 epoch and prints ``time.monotonic()`` when
  an invalidation moves it;
- this process, the **writer**: for each of N rounds it has the reader warm one
  row, sends ``UPDATE bench_notify ... WHERE id = ID`` on a raw psycopg
  connection (as psql would) and notes ``time.monotonic()`` when its COMMIT has
  returned; then (a) asks Redis, back to back, until the row's entry is gone, and
  (b) reads the reader's line. Latency = time seen - time committed. The
  monotonic clock is the machine's (CLOCK_MONOTONIC), the same in every process.

The writer deletes its keys (only those under its prefix), the triggers and its table.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlmodel import Field, Session, SQLModel

if __package__ in (None, ""):  # run as a file, as its children are: the repo importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench import ensure_database
from benchmarks.propagation import Lines
from sqlmodel_cache import CacheConfig, SQLModelCache, _runtime
from sqlmodel_cache.postgres import install_triggers, listen, remove_triggers
from sqlmodel_cache.transport import RedisSyncTransport

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/sqlmodel_cache_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
ROWS = 50
TARGET_MS = 100.0  # at p99, for every tier: the bound a commit by the application meets
LINE_TIMEOUT = 5.0  # seconds the writer waits for one line of a child


class NotifyRow(SQLModel, table=True):
    __tablename__ = "bench_notify"
    __cache_config__ = CacheConfig(l1=True)

    id: int = Field(primary_key=True)
    count: int


# ---------------------------------------------------------------- children --


def run_listener(pg_url: str, redis_url: str, prefix: str) -> int:
    """The deployment's listener, until stdin closes."""
    SQLModelCache.configure(RedisSyncTransport.from_url(redis_url), key_prefix=prefix)
    listener = listen(pg_url)
    try:
        if not listener.wait_connections(1, 10):
            print("error: the listener did not connect", flush=True)
            return 1
        print("ready", flush=True)
        sys.stdin.buffer.read()  # returns at EOF: the writer is done or gone
        return 0
    finally:
        listener.close()
        SQLModelCache.reset()


def run_reader(pg_url: str, redis_url: str, prefix: str) -> int:
    """An application process with L1: ``warm ID`` commands, one epoch-change time each."""
    engine = sa.create_engine(pg_url)
    SQLModelCache.configure(RedisSyncTransport.from_url(redis_url), key_prefix=prefix, l1=True)
    try:
        runtime = _runtime.current
        assert runtime is not None and runtime.l1 is not None and runtime.feed is not None
        l1 = runtime.l1
        if not runtime.feed.subscribed.wait(10):
            print("error: the invalidation feed did not subscribe", flush=True)
            return 1
        sa.orm.configure_mappers()
        print("ready", flush=True)
        for line in sys.stdin:
            ident = int(line.split()[1])
            for _ in range(20):  # until a get is an L1 hit (a lease may be held at first)
                before = SQLModelCache.stats().l1_hits
                with Session(engine) as session:
                    session.get(NotifyRow, ident)
                if SQLModelCache.stats().l1_hits > before:
                    break
            epoch = l1.epoch
            print("ok", flush=True)
            moved = l1.wait_past(epoch, LINE_TIMEOUT)
            seen = time.monotonic()
            print(repr(seen) if moved else "timeout", flush=True)
        return 0
    finally:
        SQLModelCache.reset()
        engine.dispose()


# ------------------------------------------------------------------ writer --


def start(role: str, pg_url: str, redis_url: str, prefix: str) -> tuple[Any, Lines]:
    command = [sys.executable, os.path.abspath(__file__), f"--{role}", "--pg", pg_url]
    command += ["--redis", redis_url, "--prefix", prefix]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdout is not None
    lines = Lines(proc.stdout)
    ready = lines.next(timeout=60)
    if ready != "ready":
        proc.kill()
        raise RuntimeError(f"the {role} did not start: {ready!r}")
    return proc, lines


def stop(proc: Any) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def percentile(values: list[float], pct: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def rounds(
    raw: psycopg.Connection[Any], client: Any, prefix: str, reader: Any, lines: Lines, n: int
) -> tuple[list[float], list[float], int]:
    """Latencies (ms) of the L2 deletion and of the reader's L1 drop; rounds lost."""
    l2: list[float] = []
    l1: list[float] = []
    lost = 0
    for i in range(n):
        ident = i % ROWS + 1
        key = f"{prefix}:NotifyRow:id={ident}"
        reader.stdin.write(f"warm {ident}\n".encode())
        if lines.next(LINE_TIMEOUT) != "ok" or not client.exists(key):
            raise RuntimeError(f"round {i}: the reader did not cache row {ident}")
        raw.execute("UPDATE bench_notify SET count = count + 1 WHERE id = %s", [ident])
        raw.commit()
        committed = time.monotonic()
        deadline = committed + LINE_TIMEOUT
        while client.exists(key):  # back to back: each EXISTS is a round trip
            if time.monotonic() > deadline:
                break
        gone = time.monotonic()
        seen = lines.next(LINE_TIMEOUT)
        if seen is None or seen == "timeout" or gone > deadline:
            lost += 1
            if seen is None:
                break  # pairing lines with rounds is lost from here: stop
            continue
        l2.append((gone - committed) * 1000)
        l1.append((float(seen) - committed) * 1000)
    return l2, l1, lost


def measure(pg_url: str, redis_url: str, n: int) -> dict[str, Any]:
    url = make_url(pg_url)
    ensure_database(url)
    engine = sa.create_engine(url)
    transport = RedisSyncTransport.from_url(redis_url)
    client = transport.client
    prefix = f"smc-notify-{secrets.token_hex(4)}"
    table = SQLModel.metadata.tables[NotifyRow.__tablename__]
    render = url.render_as_string(hide_password=False)
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    children: list[Any] = []
    SQLModelCache.configure(transport, default_ttl=600, key_prefix=prefix)
    try:
        table.drop(engine, checkfirst=True)
        table.create(engine)
        with Session(engine) as session:
            session.add_all(NotifyRow(id=i, count=0) for i in range(1, ROWS + 1))
            session.commit()
        install_triggers(engine, NotifyRow)
        listener, _ = start("listener", render, redis_url, prefix)
        children.append(listener)
        reader, lines = start("reader", render, redis_url, prefix)
        children.append(reader)
        with psycopg.connect(libpq) as raw:
            l2, l1, lost = rounds(raw, client, prefix, reader, lines, n)
    finally:
        for proc in reversed(children):
            stop(proc)
        remove_triggers(engine, NotifyRow)
        table.drop(engine, checkfirst=True)
        SQLModelCache.reset()
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        engine.dispose()
    return {"rounds": n, "lost": lost, "target_p99_ms": TARGET_MS, "l2_ms": l2, "l1_ms": l1}


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": statistics.median(values),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def report(data: dict[str, Any]) -> None:
    if len(data["l1_ms"]) < 2:
        print(f"✘ only {len(data['l1_ms'])} of {data['rounds']} rounds completed")
        return
    rows = {
        "L2 entry gone (Redis)": summary(data["l2_ms"]),
        "other process's L1 dropped": summary(data["l1_ms"]),
    }
    print(
        f"{data['rounds']} external UPDATEs (raw psycopg, as psql), {data['lost']} lost; "
        "ms after the writer's COMMIT returned:"
    )
    print(f"  {'':28} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}")
    for label, stats in rows.items():
        print(f"  {label:28} " + " ".join(f"{stats[k]:8.2f}" for k in ("p50", "p90", "p99", "max")))
        data[label] = stats
    worst = max(stats["p99"] for stats in rows.values())
    data["ok"] = worst <= TARGET_MS and data["lost"] == 0
    print(
        f"{'✔' if data['ok'] else '✘'} every tier dropped the row within {worst:.2f} ms at p99 "
        f"(target ≤ {TARGET_MS:.0f} ms), {data['lost']} lost"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG))
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--n", type=int, default=200, help="external writes to time")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--listener", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.listener:
        return run_listener(args.pg, args.redis, args.prefix)
    if args.reader:
        return run_reader(args.pg, args.redis, args.prefix)
    data = measure(args.pg, args.redis, args.n)
    report(data)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
