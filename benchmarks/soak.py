"""Production soak: pre-fork servers on PostgreSQL + a Redis that dies, stalls and
comes back empty, under a load of reads and read-modify-writes.

gunicorn (4 sync workers, ``--preload``) and uvicorn (the async app, 2 workers)
serve one cached table (``benchmarks/soak_apps.py``), with L1 on, against a
redis-server this script starts on a port of its own. A load generator of its
own (closed loop, CLIENTS threads, loopback only) sends 90% reads and 10% writes
to both servers. Phases: the same servers with the cache off (the baseline),
then with it on: steady, Redis killed, restarted empty, stalled (SIGSTOP),
resumed. It checks:

- no HTTP errors at all (the cache must never fail a request);
- no stale reads: once a write has returned, every read that starts PROPAGATION
  seconds later (or that long after Redis is back, for a write made while it was
  away) answers that version or a newer one; ``lag`` is the largest staleness seen;
- p99 latency while Redis is away within 2x the no-cache p99.

    python benchmarks/soak.py        # SOAK_PHASE seconds per phase (default 8)
"""

from __future__ import annotations

import bisect
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate
from pathlib import Path

import psycopg
import redis
import sqlalchemy as sa
from sqlmodel import Session

from sqlmodel_cache import _listeners

ROOT = Path(__file__).resolve().parent.parent
DATABASE_URL = os.environ.get(
    "SOAK_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/sqlmodel_cache_soak"
)
PHASE = float(os.environ.get("SOAK_PHASE", "8"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "8"))
ROWS = 50
WRITES = 0.10
# The documented worst case for another process's L1 after a commit: its feed
# notices a silent Redis after 2 s, plus one 1 s read on the feed's connection.
PROPAGATION = 3.0
OUTAGES = ("redis killed", "redis stalled")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if time.monotonic() > deadline:
            sys.exit(f"error: {what} did not come up in {timeout} s")
        time.sleep(0.05)


class RedisServer:
    """A redis-server of the soak's own, on a free port, keeping nothing on disk."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("error: redis-server is not installed (make services installs it)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._args = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        self._args += ["--save", "", "--appendonly", "no"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self._args, stdout=subprocess.DEVNULL)
        probe = redis.Redis(port=self.port, socket_timeout=1)
        wait_until(probe.ping, "redis-server")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)


def prepare_database() -> None:
    sys.path.insert(0, str(ROOT))  # as the servers import it (PYTHONPATH=ROOT)
    from benchmarks.soak_apps import SoakRow

    url = sa.make_url(DATABASE_URL)
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        if not conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [url.database]
        ).fetchone():
            conn.execute(f'CREATE DATABASE "{url.database}"')

    engine = sa.create_engine(url)
    table = SoakRow.__table__  # type: ignore[attr-defined]
    table.drop(engine, checkfirst=True)
    table.create(engine)
    with _listeners.detached(), Session(engine) as session:  # a fresh Redis: nothing cached
        session.add_all(SoakRow(id=i, version=0) for i in range(1, ROWS + 1))
        session.commit()
    engine.dispose()


class Servers:
    """gunicorn (WSGI, sync workers, --preload) and uvicorn (ASGI) on one table."""

    def __init__(self, redis_url: str, cache: str, log: Path) -> None:
        self.ports = {"gunicorn": free_port(), "uvicorn": free_port()}
        env = dict(
            os.environ,
            DATABASE_URL=DATABASE_URL,
            REDIS_URL=redis_url,
            CACHE_KEY_PREFIX="soak",
            SOAK_CACHE=cache,
            PYTHONPATH=str(ROOT),
        )
        python = sys.executable
        commands = {
            "gunicorn": [python, "-m", "gunicorn", "-w", "4", "--preload", "--log-level", "warning",
                         "-b", f"127.0.0.1:{self.ports['gunicorn']}", "benchmarks.soak_apps:wsgi"],
            "uvicorn": [python, "-m", "uvicorn", "benchmarks.soak_apps:asgi", "--workers", "2",
                        "--port", str(self.ports["uvicorn"]), "--log-level", "warning"],
        }  # fmt: skip
        self._log = log.open("ab")
        self.processes = [
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=dict(env, SOAK_SERVER="wsgi" if name == "gunicorn" else "asgi"),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for name, command in commands.items()
        ]
        for name, port in self.ports.items():
            wait_until(partial(_answers, port), name)

    def stop(self) -> None:
        for process in self.processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            process.wait(30)
        self._log.close()


def _answers(port: int) -> bool:
    return request(port, "GET", "/rows/1")[0] == 200


def request(port: int, method: str, path: str) -> tuple[int, dict[str, int] | None]:
    """One request on a connection of its own: (status, body).

    Not keep-alive: uvicorn --workers leaves Nagle on for accepted connections, so
    each keep-alive request after the first would wait ~40 ms for a delayed ACK
    (uvicorn issue 3149), an artifact that would swamp what the soak measures.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    return response.status, json.loads(body) if response.status == 200 else None


@dataclass
class Phase:
    name: str
    reads: list[tuple[float, int, int]] = field(default_factory=list)  # start, row, version
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    stale: int = 0
    lag: float = 0.0


class Load:
    """CLIENTS threads sending reads and writes to the given servers; results go to the
    current phase. Versions and confirmed writes last across server restarts."""

    def __init__(self) -> None:
        self.phase = Phase("warm-up")
        self.versions = [0] * (ROWS + 1)
        self.row_locks = [threading.Lock() for _ in range(ROWS + 1)]
        self.writes: list[list[tuple[float, int]]] = [[] for _ in range(ROWS + 1)]  # done, v
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, ports: list[int]) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._run, args=(ports, seed)) for seed in range(CLIENTS)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, ports: list[int], seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            row, port = rng.randint(1, ROWS), rng.choice(ports)
            lock = self.row_locks[row]
            if rng.random() < WRITES and lock.acquire(blocking=False):
                try:
                    self._write(port, row)
                finally:
                    lock.release()
            else:
                self._read(port, row)

    def _write(self, port: int, row: int) -> None:
        version = self.versions[row] + 1
        self.versions[row] = version  # even if it fails: the next write goes above it
        start = time.monotonic()
        status = _send(port, "PUT", f"/rows/{row}?version={version}")[0]
        done = time.monotonic()
        with self._lock:
            self.phase.latencies.append(done - start)
            if status == 200:
                self.writes[row].append((done, version))
            else:
                self.phase.errors += 1

    def _read(self, port: int, row: int) -> None:
        start = time.monotonic()
        status, body = _send(port, "GET", f"/rows/{row}")
        done = time.monotonic()
        with self._lock:
            self.phase.latencies.append(done - start)
            if status == 200 and body is not None:
                self.phase.reads.append((start, row, body["version"]))
            else:
                self.phase.errors += 1

    def run_phase(self, name: str, seconds: float) -> Phase:
        with self._lock:
            self.phase = Phase(name)
        time.sleep(seconds)  # the load runs meanwhile: this is the phase's length
        with self._lock:
            finished, self.phase = self.phase, Phase("between")
        return finished


def _send(port: int, method: str, path: str) -> tuple[int, dict[str, int] | None]:
    try:
        return request(port, method, path)
    except (OSError, http.client.HTTPException):
        return 0, None  # counted as an error, like any answer but 200


def check_staleness(
    phase: Phase, writes: list[list[tuple[float, int]]], outages: list[tuple[float, float]]
) -> None:
    """Count reads answering older than a write that returned PROPAGATION s before they
    started (PROPAGATION s after Redis was back, for a write made while it was away)."""
    due: list[tuple[list[float], list[int]]] = []  # per row: when each version is due, by then
    for row_writes in writes:
        deadlines = []
        for done, version in row_writes:
            back = max([b for d, b in outages if d <= done <= b], default=done)
            deadlines.append((back + PROPAGATION, version))
        deadlines.sort()
        due.append(([t for t, _ in deadlines], list(accumulate((v for _, v in deadlines), max))))
    for start, row, version in phase.reads:
        times, versions = due[row]
        index = bisect.bisect_right(times, start)
        if index and versions[index - 1] > version:
            phase.stale += 1
        # The staleness seen: since the first write newer than this answer returned.
        newer = [done for done, v in writes[row] if v > version and done <= start]
        if newer:
            phase.lag = max(phase.lag, start - min(newer))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def run() -> tuple[list[Phase], list[list[tuple[float, int]]], list[tuple[float, float]]]:
    prepare_database()
    server = RedisServer()
    server.start()
    log = Path(tempfile.mkdtemp(prefix="smc-soak-")) / "servers.log"
    print(f"soak: {PHASE:g} s per phase, {CLIENTS} clients, {ROWS} rows, "
          f"{WRITES:.0%} writes; server logs in {log}", flush=True)  # fmt: skip
    load = Load()
    outages: list[tuple[float, float]] = []
    phases: list[Phase] = []
    try:
        servers = Servers(server.url, "off", log)
        load.start(list(servers.ports.values()))
        try:
            load.run_phase("warm-up", 1)
            phases.append(load.run_phase("no cache", PHASE))
        finally:
            load.stop()
            servers.stop()
        servers = Servers(server.url, "on", log)
        load.start(list(servers.ports.values()))
        try:
            load.run_phase("warm-up", 2)
            phases.append(load.run_phase("cache, steady", PHASE))
            down = time.monotonic()
            server.kill()
            phases.append(load.run_phase("redis killed", PHASE))
            server.start()
            outages.append((down, time.monotonic()))
            phases.append(load.run_phase("restarted empty", PHASE))
            down = time.monotonic()
            server.signal(signal.SIGSTOP)
            phases.append(load.run_phase("redis stalled", PHASE))
            server.signal(signal.SIGCONT)
            outages.append((down, time.monotonic()))
            phases.append(load.run_phase("resumed", PHASE))
        finally:
            load.stop()
            servers.stop()
    finally:
        server.signal(signal.SIGCONT)
        server.kill()
    return phases, load.writes, outages


def report(
    phases: list[Phase], writes: list[list[tuple[float, int]]], outages: list[tuple[float, float]]
) -> int:
    print("\n| phase | requests | req/s | p50 ms | p99 ms | max ms | errors | stale | lag ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for phase in phases:
        check_staleness(phase, writes, outages)
        latencies = phase.latencies
        print(
            f"| {phase.name} | {len(latencies)} | {len(latencies) / PHASE:.0f} "
            f"| {percentile(latencies, 0.5) * 1000:.1f} | {percentile(latencies, 0.99) * 1000:.1f} "
            f"| {max(latencies, default=0) * 1000:.0f} | {phase.errors} | {phase.stale} "
            f"| {phase.lag * 1000:.0f} |"
        )
    baseline = percentile(phases[0].latencies, 0.99)
    worst = max(percentile(p.latencies, 0.99) for p in phases if p.name in OUTAGES)
    errors = sum(p.errors for p in phases)
    stale = sum(p.stale for p in phases)
    verdicts = [
        (errors == 0, f"HTTP errors: {errors} (want 0)"),
        (stale == 0, f"stale reads: {stale} (want 0, propagation bound {PROPAGATION:g} s)"),
        (
            worst <= 2 * baseline,
            f"p99 with Redis away {worst * 1000:.1f} ms vs no cache {baseline * 1000:.1f} ms: "
            f"{worst / baseline:.2f}x (want <= 2x)",
        ),
    ]
    print()
    for ok, text in verdicts:
        print(("PASS  " if ok else "FAIL  ") + text)
    return 0 if all(ok for ok, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(report(*run()))
