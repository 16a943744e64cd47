"""Pre-fork servers: a forked child never serves what it inherited, and hears other
processes' commits on a feed of its own. os.fork, multiprocessing's fork start method,
gunicorn --preload and uvicorn workers, on PostgreSQL and real Redis."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from sqlmodel_cache import SQLModelCache, _runtime
from sqlmodel_cache.transport import RedisSyncTransport

from .conftest import PG_URL, REDIS_URL
from .heroes import name, rename, seed

ROOT = Path(__file__).resolve().parent.parent
pg_only = pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)
PROPAGATION = 1.0  # seconds within which every process must drop a committed row


def configure_l1(prefix: str) -> _runtime.Runtime:
    SQLModelCache.configure(
        RedisSyncTransport(redis.Redis.from_url(REDIS_URL)), key_prefix=prefix, l1=True
    )
    runtime = _runtime.current
    assert runtime is not None and runtime.feed is not None
    assert runtime.feed.subscribed.wait(5)
    return runtime


def child_reads(engine: sa.Engine, go: Any, answers: Any) -> None:
    """In the child: what a get returns after the parent's next commit, then after the
    one following, once the child's own feed listens."""
    engine.dispose(close=False)  # SQLAlchemy's advice: not the parent's connections
    runtime = _runtime.current
    assert runtime is not None and runtime.feed is not None and runtime.l1 is not None
    go.recv()  # the parent committed "newer": the L1 this child inherited holds "new"
    answers.send(name(engine, 1))
    assert runtime.feed.subscribed.wait(5)  # a feed of its own
    name(engine, 1)  # now in its own L1
    epoch = runtime.l1.epoch
    answers.send("filled")
    go.recv()  # the parent committed "newest"
    runtime.l1.wait_past(epoch, PROPAGATION)
    answers.send(name(engine, 1))


def _fork_and_check(engine: sa.Engine, start: Any) -> None:
    seed(engine, (1, "old"))
    rename(engine, 1, "new")
    assert name(engine, 1) == "new"  # in the parent's L1, which the child inherits
    go_r, go_w = multiprocessing.Pipe(duplex=False)
    answers_r, answers_w = multiprocessing.Pipe(duplex=False)
    wait = start(engine, go_r, answers_w)
    try:
        rename(engine, 1, "newer")  # before the child can hear of it
        go_w.send("go")
        assert answers_r.poll(20) and answers_r.recv() == "newer"
        assert answers_r.poll(20) and answers_r.recv() == "filled"
        rename(engine, 1, "newest")  # the child hears this one
        go_w.send("go")
        assert answers_r.poll(20) and answers_r.recv() == "newest"
    finally:
        go_w.close()  # a child still waiting gets EOFError and ends
        assert wait() == 0


@pg_only
def test_a_child_of_os_fork_starts_clean_and_listens(engine, prefix):
    configure_l1(prefix)

    def start(engine: sa.Engine, *pipes: Any) -> Any:
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                child_reads(engine, *pipes)
                code = 0
            finally:
                os._exit(code)

        def wait() -> int:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return status
                time.sleep(0.01)
            os.kill(pid, signal.SIGKILL)  # stuck (a lock held at the fork, say)
            return os.waitpid(pid, 0)[1] or -1

        return wait

    _fork_and_check(engine, start)


@pg_only
def test_a_multiprocessing_fork_child_starts_clean_and_listens(engine, prefix):
    configure_l1(prefix)
    context = multiprocessing.get_context("fork")

    def start(engine: sa.Engine, *pipes: Any) -> Any:
        process = context.Process(target=child_reads, args=(engine, *pipes))
        process.start()

        def wait() -> int:
            process.join(20)
            if process.exitcode is None:
                process.kill()
                process.join()
                return -1
            return process.exitcode

        return wait

    _fork_and_check(engine, start)


# -- real servers ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(port: int, method: str, path: str, body: str | None = None) -> tuple[str, str]:
    """(serving pid, body) of one request on a connection of its own."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read().decode()
        assert response.status < 300, (response.status, payload)
        return response.getheader("X-Pid") or "", payload
    finally:
        conn.close()


@pytest.fixture
def server(prefix: str) -> Iterator[Any]:
    """Starts a server command on a free port; yields (port, started) once it answers."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], path: str) -> int:
        port = free_port()
        env = dict(
            os.environ,
            DATABASE_URL=PG_URL,
            REDIS_URL=REDIS_URL,
            CACHE_KEY_PREFIX=prefix,
            CACHE_L1="1",
        )
        args = [arg.replace("{port}", str(port)) for arg in command]
        process = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE)
        processes.append(process)
        deadline = time.monotonic() + 30
        while True:
            try:
                request(port, "GET", path)
                return port
            except (OSError, AssertionError):
                assert process.poll() is None, process.stderr.read().decode()[-3000:]
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)

    yield start
    for process in processes:
        process.terminate()
        process.wait(20)


def every_worker_sees(port: int, path: str, workers: int, value: str, since: float) -> None:
    """Requests until each of the workers answered value; none may answer another
    value later than PROPAGATION seconds after since."""
    seen: set[str] = set()
    for _ in range(2000):
        pid, body = request(port, "GET", path)
        if value in body:
            seen.add(pid)
            if len(seen) == workers:
                return
        else:
            assert time.monotonic() - since < PROPAGATION, (pid, body)
    pytest.fail(f"only {len(seen)} of {workers} workers answered in 2000 requests")


@pg_only
def test_gunicorn_preload_workers_start_clean_and_see_each_other_s_commits(engine, server):
    seed(engine, (1, "old"))
    command = [sys.executable, "-m", "gunicorn", "-w", "4", "--preload"]
    port = server([*command, "-b", "127.0.0.1:{port}", "tests.wsgi_app:app"], "/")
    every_worker_sees(port, "/", 4, "old", time.monotonic())  # each holds it in L1 now
    committed = time.monotonic()
    request(port, "POST", "/?name=new")
    every_worker_sees(port, "/", 4, "new", committed)


@pg_only
def test_uvicorn_workers_serving_the_example_see_each_other_s_commits(engine, server):
    command = [sys.executable, "-m", "uvicorn", "tests.asgi_app:app", "--workers", "2"]
    port = server([*command, "--port", "{port}"], "/docs")
    _, created = request(port, "POST", "/heroes", '{"name": "Deadpond", "secret_name": "D"}')
    path = f"/heroes/{json.loads(created)['id']}"
    every_worker_sees(port, path, 2, '"Deadpond"', time.monotonic())
    committed = time.monotonic()
    request(port, "PATCH", path, '{"name": "Deadpond Prime"}')
    every_worker_sees(port, path, 2, '"Deadpond Prime"', committed)
