"""The sqlmodel-cache command, end to end: real subprocesses against real Redis.

Every key a test touches is under its own prefix; flushes are checked in two other
processes with an L1, which must drop the flushed rows.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from redis.cluster import RedisCluster

import sqlmodel_cache
from sqlmodel_cache import SQLModelCache
from sqlmodel_cache._codec import VERSION
from sqlmodel_cache._registry import registry
from sqlmodel_cache._runtime import channel_of
from sqlmodel_cache.transport import RedisSyncTransport

from .conftest import REDIS_URL, free_port, redis_server
from .heroes import name, seed, write_unseen
from .models import Hero

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "sqlmodel-cache"
CLUSTER_URL = f"redis://127.0.0.1:{os.environ.get('TEST_REDIS_CLUSTER_PORT', '7101')}"
pg_only = pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)


def cli(
    *args: str, script: bool = False, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command (python -m, or the console script) with no terminal on stdin."""
    command = [str(SCRIPT)] if script else [sys.executable, "-m", "sqlmodel_cache"]
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,  # the tests look at the exit status
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr (and no traceback)."""
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def keys(client: Any, pattern: str) -> list[str]:
    """The keys matching pattern (every node's, on a cluster)."""
    return sorted(key.decode() for key in client.scan_iter(match=pattern, count=1000))


# -- ping ----------------------------------------------------------------------------------


def test_ping_reports_latency_version_and_mode(redis_client):
    result = cli("ping", "--url", REDIS_URL)
    assert result.returncode == 0, result.stderr
    version = redis_client.info("server")["redis_version"]
    assert f"Redis {version}" in result.stdout
    assert re.search(r"latency: \d+\.\d\d ms", result.stdout)
    assert "standalone" in result.stdout
    # The console script does the same, and takes the URL from REDIS_URL.
    env = {**os.environ, "REDIS_URL": REDIS_URL}
    scripted = cli("ping", script=True, env=env)
    assert scripted.returncode == 0, scripted.stderr
    assert scripted.stdout.startswith(f"{REDIS_URL}: reachable")


def test_ping_of_a_closed_port_fails_fast_in_one_line():
    url = f"redis://127.0.0.1:{free_port()}/0"
    start = time.monotonic()
    baseline = cli("--version")
    started = time.monotonic() - start  # what starting the command costs here
    assert baseline.returncode == 0
    start = time.monotonic()
    line = one_line_error(cli("ping", "--url", url))
    # redis-py's default retries would add seconds; the library's client gives up at once.
    assert time.monotonic() - start < started + 2
    assert url in line
    assert "refused" in line.lower()


def test_ping_with_a_wrong_password_fails_without_showing_it():
    with redis_server() as port:
        # Set once started: redis_server's readiness probe has no password.
        admin = redis.Redis(port=port)
        admin.config_set("requirepass", "right")
        admin.close()
        url = f"redis://default:wrong-secret@127.0.0.1:{port}/0"
        line = one_line_error(cli("ping", "--url", url))
        assert f"redis://default:***@127.0.0.1:{port}/0" in line
        assert "wrong-secret" not in line
        assert "invalid username-password pair" in line
        assert cli("ping", "--url", f"redis://default:right@127.0.0.1:{port}/0").returncode == 0


def test_ping_of_the_cluster():
    result = cli("ping", "--url", CLUSTER_URL, "--cluster")
    assert result.returncode == 0, result.stderr
    assert "Redis Cluster, 3 nodes (3 primaries)" in result.stdout
    # Without --cluster, a cluster node answers and says what it is.
    alone = cli("ping", "--url", CLUSTER_URL)
    assert "pass --cluster" in alone.stdout


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("http://127.0.0.1:6379", "Redis URL must specify one of the following schemes"),
        ("redis://127.0.0.1:6379/cache", "the path must be a database number"),
    ],
)
def test_a_bad_url_is_a_configuration_error(url, cause):
    line = one_line_error(cli("ping", "--url", url))
    assert f"cannot build a Redis client for {url!r}" in line
    assert cause in line


# -- inspect -------------------------------------------------------------------------------


@pg_only
def test_inspect_an_entry_the_library_wrote(engine, prefix):
    SQLModelCache.configure(RedisSyncTransport.from_url(REDIS_URL), key_prefix=prefix)
    seed(engine, (1, "Deadpond"))
    assert name(engine, 1) == "Deadpond"  # a miss: the session's end fills the entry
    key = f"{prefix}:Hero:id=1"
    info = registry.info(Hero)
    assert info is not None

    result = cli("inspect", "--url", REDIS_URL, key)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "model:       Hero\n" in out
    assert "state:       entry\n" in out
    assert f"format:      {VERSION}\n" in out
    assert f"fingerprint: {info.codec.fingerprint}\n" in out
    assert '  "Deadpond"\n' in out
    ttl = re.search(r"ttl: +([\d.]+) s", out)
    assert ttl is not None and 590 < float(ttl[1]) <= 600  # CacheConfig(ttl=600)
    assert re.search(r"size: +\d+ bytes", out)

    decoded = cli("inspect", "--url", REDIS_URL, "--model", "tests.models:Hero", key)
    assert decoded.returncode == 0, decoded.stderr
    assert "decoded as tests.models:Hero:" in decoded.stdout
    assert re.search(r"^  name +\= 'Deadpond'$", decoded.stdout, re.M)
    assert re.search(r"^  age +\= 10$", decoded.stdout, re.M)
    assert re.search(r"^  team_id +\= None$", decoded.stdout, re.M)


def _lease(transport: RedisSyncTransport, key: str) -> None:
    assert transport.lease(key)[1] is not None


def _hold(transport: RedisSyncTransport, key: str) -> None:
    transport.begin_hold([key], channel_of("smc-test-nobody"), "nobody")()


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        (_lease, "state:       lease held by a reader"),
        (_hold, "state:       held by a committing transaction (1 holder(s))"),
        (lambda transport, key: None, "state:       absent"),
        (
            lambda transport, key: transport.client.set(key, b"\xff\x00garbage"),
            "state:       not a sqlmodel-cache entry\nstarts with: b'\\xff\\x00garbage'",
        ),
        (
            lambda transport, key: transport.client.set(key, b'[1,"0123456789ab",7]'),
            f"not a sqlmodel-cache entry of this version (format 1; this library reads {VERSION})",
        ),
        (
            lambda transport, key: transport.client.hset(key, "a", "b"),
            "state:       not a sqlmodel-cache entry (a Redis hash)",
        ),
    ],
    ids=["lease", "hold", "absent", "garbage", "old-format", "hash"],
)
def test_inspect_what_else_a_key_may_hold(prefix, store, expected):
    transport = RedisSyncTransport.from_url(REDIS_URL, lease_ttl=60)
    key = f"{prefix}:Hero:id=7"
    store(transport, key)
    result = cli("inspect", "--url", REDIS_URL, key)
    assert result.returncode == 0, result.stderr
    assert "model:       Hero\n" in result.stdout
    assert expected in result.stdout


def test_inspect_with_the_model_names_an_entry_of_another_schema(redis_client, prefix):
    key = f"{prefix}:Hero:id=3"
    redis_client.set(key, json.dumps([VERSION, "0123456789ab", 3, "Old", 30, None]))
    result = cli("inspect", "--url", REDIS_URL, "--model", "tests.models:Hero", key)
    assert result.returncode == 0, result.stderr
    assert "fingerprint 0123456789ab does not match tests.models:Hero's" in result.stdout
    assert "another version of the model's schema" in result.stdout
    assert '  "Old"\n' in result.stdout  # the stored values are shown all the same


def test_inspect_with_a_model_that_is_not_cached_fails(prefix):
    result = cli("inspect", "--url", REDIS_URL, "--model", "tests.models:Plain", f"{prefix}:P:id=1")
    assert one_line_error(result) == "Error: tests.models:Plain is not a cached model"


# -- flush ---------------------------------------------------------------------------------


def ask(worker: subprocess.Popen[str], line: str) -> str:
    """One command to a tests._worker process, and its answer."""
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(line + "\n")
    worker.stdin.flush()
    return worker.stdout.readline().strip()


@contextlib.contextmanager
def readers(engine: sa.Engine, prefix: str, ident: int) -> Iterator[list[subprocess.Popen[str]]]:
    """Two processes with an L1 on prefix (tests._worker), each holding Hero ident in it."""
    db_url = engine.url.render_as_string(hide_password=False)
    args = [sys.executable, "-m", "tests._worker", db_url, REDIS_URL, prefix, "l1"]
    workers = [
        subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
            # Until the row comes from its L1 (another reader may hold the lease at first).
            assert "l1" in (ask(worker, f"tier {ident}") for _ in range(20))
        yield workers
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()


def read_again(workers: list[subprocess.Popen[str]], ident: int) -> list[tuple[str, str, str]]:
    """Each worker's (invalidation heard, where its next get came from, name read)."""
    return [
        (ask(worker, "news"), ask(worker, f"tier {ident}"), ask(worker, f"read {ident}"))
        for worker in workers
    ]


def assert_fresh(reports: list[tuple[str, str, str]]) -> None:
    """Both workers dropped the row from L1 and read the new name: the first from the
    database, the second from the entry the first stored meanwhile."""
    assert reports == [("yes", "db", "new new"), ("yes", "l2", "new new")]


@pg_only
def test_flush_a_model_reaches_every_process_l1(engine, redis_client, prefix):
    seed(engine, (1, "old"))
    redis_client.set(f"{prefix}:Team:id=1", b"another model's entry")
    with readers(engine, prefix, 1) as workers:
        write_unseen(engine, "UPDATE hero SET name = 'new' WHERE id = 1")
        result = cli("flush", "--url", REDIS_URL, "--prefix", prefix, "Hero")
        assert result.returncode == 0, result.stderr
        assert f"deleted 1 key(s) of Hero entries under {prefix}:" in result.stdout
        assert "(2 process(es) with an L1 listening)" in result.stdout
        assert keys(redis_client, f"{prefix}:*") == [f"{prefix}:Team:id=1"]
        assert_fresh(read_again(workers, 1))


@pg_only
def test_flush_all_reaches_every_process_l1(engine, redis_client, prefix):
    seed(engine, (1, "old"))
    redis_client.set(f"{prefix}:Team:id=1", b"another model's entry")
    sibling = f"{prefix}-other:Hero:id=1"  # shares the prefix's text, not the prefix
    redis_client.set(sibling, b"not ours")
    try:
        with readers(engine, prefix, 1) as workers:
            write_unseen(engine, "UPDATE hero SET name = 'new' WHERE id = 1")
            result = cli("flush", "--url", REDIS_URL, "--prefix", prefix, "--all", "--yes")
            assert result.returncode == 0, result.stderr
            assert f"deleted 2 key(s) of entries under {prefix}:" in result.stdout
            assert keys(redis_client, f"{prefix}:*") == []
            assert redis_client.get(sibling) == b"not ours"
            assert_fresh(read_again(workers, 1))
    finally:
        redis_client.delete(sibling)


def test_flush_all_without_yes_and_without_a_terminal_refuses(redis_client, prefix):
    redis_client.set(f"{prefix}:Hero:id=1", b"kept")
    line = one_line_error(cli("flush", "--url", REDIS_URL, "--prefix", prefix, "--all"))
    assert "--yes" in line
    assert redis_client.get(f"{prefix}:Hero:id=1") == b"kept"


@pytest.mark.parametrize(("answer", "kept"), [("n", True), ("y", False)])
def test_flush_all_asks_on_a_terminal(redis_client, prefix, answer, kept):
    key = f"{prefix}:Hero:id=1"
    redis_client.set(key, b"entry")
    terminal, stdin = os.openpty()
    args = ["flush", "--url", REDIS_URL, "--prefix", prefix, "--all"]
    with subprocess.Popen(
        [sys.executable, "-m", "sqlmodel_cache", *args],
        cwd=ROOT,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        os.close(stdin)
        os.write(terminal, f"{answer}\n".encode())  # the terminal keeps it until read
        out, err = process.communicate(timeout=60)
    os.close(terminal)
    assert f"Delete every entry under {prefix}: at {REDIS_URL}? [y/N]" in out
    assert process.returncode == (1 if kept else 0), err
    assert (redis_client.get(key) == b"entry") is kept


@pytest.mark.parametrize("args", [["Hero", "--all"], []], ids=["both", "neither"])
def test_flush_takes_a_model_or_all(redis_client, prefix, args):
    redis_client.set(f"{prefix}:Hero:id=1", b"kept")
    result = cli("flush", "--url", REDIS_URL, "--prefix", prefix, "--yes", *args)
    assert result.returncode == 2
    assert "give either MODEL or --all" in result.stderr
    assert redis_client.get(f"{prefix}:Hero:id=1") == b"kept"


def test_flush_on_the_cluster_reaches_every_node(prefix):
    cluster = RedisCluster.from_url(CLUSTER_URL)
    names = [f"{prefix}:Hero:id={i}" for i in range(50)]
    try:
        for key in names:
            cluster.set(key, b"entry")
        cluster.set(f"{prefix}:Team:id=1", b"kept")
        assert len({cluster.get_node_from_key(key).name for key in names}) == 3
        result = cli("flush", "--url", CLUSTER_URL, "--cluster", "--prefix", prefix, "Hero")
        assert result.returncode == 0, result.stderr
        assert "deleted 50 key(s) of Hero entries" in result.stdout
        assert keys(cluster, f"{prefix}:*") == [f"{prefix}:Team:id=1"]
    finally:
        for key in [*names, f"{prefix}:Team:id=1"]:
            cluster.delete(key)
        cluster.close()


# -- explain, --version --------------------------------------------------------------------


def test_explain_prints_the_report():
    result = cli("explain", "tests.models:Hero")
    assert result.returncode == 0, result.stderr
    assert result.stdout == str(SQLModelCache.explain(Hero)) + "\n"
    assert "Hero: cached" in result.stdout
    assert "key:    sqlmodelcache:Hero:id={id}" in result.stdout


def test_explain_imports_from_the_current_directory(tmp_path):
    (tmp_path / "shop.py").write_text(
        "from sqlmodel import Field, SQLModel\n"
        "from sqlmodel_cache import cached\n\n"
        "@cached(ttl=42)\n"
        "class Item(SQLModel, table=True):\n"
        "    id: int | None = Field(default=None, primary_key=True)\n"
    )
    result = cli("explain", "shop:Item", script=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Item: cached" in result.stdout
    assert "ttl:    42 s" in result.stdout


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.nowhere:Hero", "cannot import 'tests.nowhere': ModuleNotFoundError"),
        ("tests.models:Nobody", "'tests.models' has no attribute 'Nobody'"),
        ("tests.models:Power.FLIGHT", "tests.models:Power.FLIGHT is not a class"),
        ("tests.models:Power", "is not a mapped model class"),
        ("tests.models", "expected module:Model, got 'tests.models'"),
    ],
)
def test_explain_of_a_bad_target_fails_in_one_line(target, message):
    assert message in one_line_error(cli("explain", target))


def test_version_and_help():
    for script in (False, True):
        version = cli("--version", script=script)
        assert version.stdout == f"sqlmodel-cache, version {sqlmodel_cache.__version__}\n"
        usage = cli("--help", script=script)
        assert usage.returncode == 0
        assert usage.stdout.startswith("Usage: sqlmodel-cache [OPTIONS] COMMAND")
        for command in ("ping", "inspect", "flush", "explain"):
            assert f"  {command} " in usage.stdout
