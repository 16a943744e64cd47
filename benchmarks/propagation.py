"""How fast a commit in one process drops the row from another process's L1.

    python benchmarks/propagation.py [--pg URL] [--redis URL] [--n N] [--json PATH] [--busy]

This process (the writer) configures the cache on Redis under a random key
prefix, creates its own table (bench_propagation) with ROWS rows of a model in
the in-process tier (``CacheConfig(l1=True)``) and starts a reader: this file
again, with ``--child``, under the same prefix. The reader subscribes to the
invalidation feed, reads every row into its L1, then waits on the L1 epoch
(bumped by every invalidation it applies) and prints ``time.time()`` each time
it moves. The writer updates one row per round through a cached Session, notes
``time.time()`` as soon as ``commit()`` returns and reads the reader's line:
latency = reader's time - writer's time. The invalidation is published inside
commit(), so a reader may see it before commit() has returned to the writer: a
slightly negative latency is reported as it is. Both clocks are the same machine's.
With --busy, another thread of the reader runs gets back to back meanwhile. (The
writer's configure() asks for no L1, but the model opts in, so the writer has one
too; its feed skips the writer's own messages.)

The writer deletes its keys (only those under its prefix) and drops its table.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import select
import statistics
import subprocess
import sys
import threading
import time
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlmodel import Field, Session, SQLModel

from sqlmodel_cache import CacheConfig, SQLModelCache, _runtime
from sqlmodel_cache.transport import RedisSyncTransport

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/sqlmodel_cache_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
ROWS = 50
TARGET_MS = 100.0  # at p99
LINE_TIMEOUT = 5.0  # seconds the writer waits for the reader's line of one round


class PropRow(SQLModel, table=True):
    __tablename__ = "bench_propagation"
    __cache_config__ = CacheConfig(l1=True)

    id: int = Field(primary_key=True)
    count: int
    label: str


def ensure_database(url: URL) -> None:
    """CREATE DATABASE url.database unless it exists (via the postgres db, AUTOCOMMIT)."""
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        query = sa.text("SELECT 1 FROM pg_database WHERE datname = :name")
        if conn.scalar(query, {"name": url.database}) is None:
            conn.execute(sa.text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()


# ------------------------------------------------------------------ reader --


def keep_reading(engine: sa.Engine, stop: threading.Event) -> None:
    """A busy reader: gets of every row, back to back (L1 hits, and refills after drops)."""
    ident = 0
    while not stop.is_set():
        with Session(engine) as session:
            session.get(PropRow, ident % ROWS + 1)
        ident += 1


def child(pg_url: str, redis_url: str, prefix: str, n: int, busy: bool) -> int:
    """The reader: L1 on, every row warm; one line per epoch change, until n or stdin EOF.

    busy: a thread of the reader runs gets meanwhile, so the feed thread and the one
    that prints compete with it for the GIL (as in a loaded app process).
    """
    engine = sa.create_engine(pg_url)
    stop = threading.Event()
    reader: threading.Thread | None = None
    SQLModelCache.configure(RedisSyncTransport.from_url(redis_url), key_prefix=prefix, l1=True)
    try:
        runtime = _runtime.current
        assert runtime is not None and runtime.l1 is not None and runtime.feed is not None
        l1, feed = runtime.l1, runtime.feed
        if not feed.subscribed.wait(10):
            print("error: the invalidation feed did not subscribe", flush=True)
            return 1
        # With SQLAlchemy 2.1 the first get of a process that has not configured its
        # mappers yet goes to the database uncached: configure them first.
        sa.orm.configure_mappers()
        for ident in range(1, ROWS + 1):
            with Session(engine) as session:
                session.get(PropRow, ident)

        def watch_stdin() -> None:
            sys.stdin.buffer.read()  # returns at EOF: the writer is done or gone
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
        if busy:
            reader = threading.Thread(target=keep_reading, args=(engine, stop), daemon=True)
            reader.start()
        epoch = l1.epoch
        print(f"ready {len(l1)}", flush=True)
        seen = 0
        while seen < n and not stop.is_set():
            if l1.wait_past(epoch, timeout=5):
                now = time.time()
                epoch = l1.epoch
                print(repr(now), flush=True)
                seen += 1
        return 0
    finally:
        stop.set()
        if reader is not None:
            reader.join(5)
        SQLModelCache.reset()
        engine.dispose()


# ------------------------------------------------------------------ writer --


class Lines:
    """Lines of a child's unbuffered stdout, each read with a timeout."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buffer = b""

    def next(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                return None
            chunk = os.read(self._fd, 4096)
            if not chunk:
                return None  # the child exited
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


def percentile(values: list[float], pct: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def rounds(engine: sa.Engine, lines: Lines, n: int) -> tuple[list[float], list[float]]:
    """Latencies (ms) of the reader's L1 drop from commit() returning, and from its call."""
    latencies: list[float] = []
    from_call: list[float] = []
    for i in range(n):
        with Session(engine) as session:
            row = session.get(PropRow, i % ROWS + 1)
            assert row is not None
            row.count += 1
            called = time.time()
            session.commit()
            committed = time.time()
        line = lines.next(LINE_TIMEOUT)
        if line is None:
            break  # pairing lines with commits is lost from here: stop
        seen = float(line)
        latencies.append((seen - committed) * 1000)
        from_call.append((seen - called) * 1000)
    return latencies, from_call


def measure(pg_url: str, redis_url: str, n: int, busy: bool) -> dict[str, Any]:
    url = make_url(pg_url)
    ensure_database(url)
    engine = sa.create_engine(url)
    transport = RedisSyncTransport.from_url(redis_url)
    client = transport.client
    prefix = f"smc-prop-{secrets.token_hex(4)}"
    table = SQLModel.metadata.tables[PropRow.__tablename__]
    latencies: list[float] = []
    from_call: list[float] = []
    proc: subprocess.Popen[bytes] | None = None
    SQLModelCache.configure(transport, default_ttl=600, key_prefix=prefix)
    try:
        table.drop(engine, checkfirst=True)
        table.create(engine)
        with Session(engine) as session:
            session.add_all(PropRow(id=i, count=0, label=f"row {i}") for i in range(1, ROWS + 1))
            session.commit()
        render = url.render_as_string(hide_password=False)
        command = [sys.executable, os.path.abspath(__file__), "--child", "--pg", render]
        command += ["--redis", redis_url, "--prefix", prefix, "--n", str(n)]
        command += ["--busy"] if busy else []
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        ready = lines.next(timeout=60)
        if ready is None or not ready.startswith("ready"):
            raise RuntimeError(f"the reader did not start: {ready!r}")
        latencies, from_call = rounds(engine, lines, n)
    finally:
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        table.drop(engine, checkfirst=True)  # while configured: it invalidates the model
        SQLModelCache.reset()
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        engine.dispose()
    return {
        "reader": "busy" if busy else "idle",
        "rounds": n,
        "count": len(latencies),
        "lost": n - len(latencies),
        "rows_in_reader_l1": int(ready.split()[1]),
        "target_p99_ms": TARGET_MS,
        "latencies_ms": latencies,
        "from_commit_call_ms": from_call,
    }


def report(data: dict[str, Any]) -> None:
    lat = data["latencies_ms"]
    if len(lat) < 2:
        print(f"✘ only {len(lat)} of {data['rounds']} invalidations reached the reader")
        return
    stats = {
        "p50": statistics.median(lat),
        "p90": percentile(lat, 90),
        "p99": percentile(lat, 99),
        "max": max(lat),
        "min": min(lat),
    }
    data.update({f"{k}_ms": v for k, v in stats.items()})
    data["ok"] = stats["p99"] <= TARGET_MS and data["lost"] == 0
    call = data["from_commit_call_ms"]
    print(
        f"{data['reader']} reader: {data['count']} commits, {data['lost']} lost, "
        f"{data['rows_in_reader_l1']} rows warm in its L1. Its L1 drop came after:"
    )
    print("  commit() returned: " + ", ".join(f"{k} {v:.2f} ms" for k, v in stats.items()))
    print(
        f"  commit() called:   p50 {statistics.median(call):.2f} ms, "
        f"p90 {percentile(call, 90):.2f} ms, p99 {percentile(call, 99):.2f} ms, "
        f"max {max(call):.2f} ms (includes the database COMMIT)"
    )
    print(
        f"{'✔' if data['ok'] else '✘'} propagation p99 {stats['p99']:.2f} ms ≤ {TARGET_MS:.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG))
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--n", type=int, default=200, help="commits to time")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--busy", action="store_true", help="the reader also runs gets back to back meanwhile"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.pg, args.redis, args.prefix, args.n, args.busy)
    data = measure(args.pg, args.redis, args.n, args.busy)
    report(data)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
