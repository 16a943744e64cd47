"""The examples run as documented: quickstart as a script, the FastAPI apps end to end
over HTTP (httpx) against PostgreSQL and Redis."""

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event

from examples import fastapi_sync
from sqlmodel_cache import SQLModelCache

from .conftest import PG_URL, REDIS_URL

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_runs_on_sqlite_and_the_embedded_cache():
    run = subprocess.run(
        [sys.executable, "examples/quickstart.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "second get (hit)             -> Deadpond         (no SQL)" in run.stdout


def _crud(app: FastAPI, sync_engine, prefix: str | None = None, redis_client=None) -> None:
    selects: list[str] = []

    def seen(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(sync_engine, "before_cursor_execute", seen)
    with TestClient(app) as client:
        created = client.post("/heroes", json={"name": "Deadpond", "secret_name": "Dive"})
        assert created.status_code == 201
        hero_id = created.json()["id"]
        assert client.get(f"/heroes/{hero_id}").json()["name"] == "Deadpond"
        selects.clear()
        for _ in range(3):
            assert client.get(f"/heroes/{hero_id}").json()["name"] == "Deadpond"
        assert selects == []  # repeated GETs are hits
        if prefix is not None:
            assert SQLModelCache.get_config().key_prefix == prefix
            assert redis_client.exists(f"{prefix}:Hero:id={hero_id}")
        patched = client.patch(f"/heroes/{hero_id}", json={"name": "Deadpond Prime"})
        assert patched.json()["name"] == "Deadpond Prime"
        assert client.get(f"/heroes/{hero_id}").json()["name"] == "Deadpond Prime"
        assert client.delete(f"/heroes/{hero_id}").status_code == 204
        assert client.get(f"/heroes/{hero_id}").status_code == 404
        assert SQLModelCache.stats().errors == 0
    event.remove(sync_engine, "before_cursor_execute", seen)


pg_only = pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)


@pg_only
@pytest.mark.parametrize("async_redis", [False, True])
def test_fastapi_sync_app(engine, prefix, async_redis):
    app = fastapi_sync.create_app(PG_URL, REDIS_URL, key_prefix=prefix, async_redis=async_redis)
    _crud(app, app.state.engine)


@pg_only
def test_fastapi_sync_app_takes_its_key_prefix_from_the_environment(
    engine, prefix, redis_client, monkeypatch
):
    monkeypatch.setenv("CACHE_KEY_PREFIX", prefix)
    app = fastapi_sync.create_app(PG_URL, REDIS_URL)
    _crud(app, app.state.engine, prefix, redis_client)


@pg_only
@pytest.mark.greenlet
@pytest.mark.parametrize("from_env", [False, True])
def test_fastapi_async_app(engine, prefix, redis_client, monkeypatch, from_env):
    from examples import fastapi_async

    if from_env:
        monkeypatch.setenv("CACHE_KEY_PREFIX", prefix)
        app = fastapi_async.create_app(PG_URL, REDIS_URL)
    else:
        app = fastapi_async.create_app(PG_URL, REDIS_URL, key_prefix=prefix)
    _crud(app, app.state.engine.sync_engine, prefix, redis_client)
