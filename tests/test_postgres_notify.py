"""Invalidation from PostgreSQL itself (sqlmodel_cache.postgres): triggers and the listener.

Writes go through raw psycopg connections, as psql's would: the library never
sees them, only the triggers' notifications. Waiting is deterministic: a
``Channel`` listens on the same channel as the listener, and ``settle()`` sends
a marker notification after the writes, reads every notification up to it, and
waits until the listener has handled as many (NOTIFY is delivered in commit
order, and the listener handles notifications in the order they arrive).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import sqlalchemy as sa
from sqlmodel import Session

from sqlmodel_cache import ConfigurationError, SQLModelCache, _pg_listen, _runtime
from sqlmodel_cache.postgres import (
    FUNCTION,
    _drop_sql,
    _install_sql,
    channel_name,
    drop_trigger_ddl,
    install_triggers,
    listen,
    remove_triggers,
    trigger_ddl,
)
from sqlmodel_cache.transport import RedisSyncTransport

from ._proxy import Proxy
from .conftest import PG_URL, REDIS_URL, SQLCounter
from .heroes import seed
from .models import Hero, Note, NoteCard, OrderItem, Plain, Tag
from .written import Account

pytestmark = [
    pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True),
    pytest.mark.usefixtures("db_engine"),
]

ROOT = Path(__file__).resolve().parent.parent
LIBPQ = sa.make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
WATCHED = (Hero, OrderItem, Tag, Account, Note)
WAIT = 10.0  # seconds: only ever reached when something is broken


def libpq_url(**parts: Any) -> str:
    return sa.make_url(LIBPQ).set(**parts).render_as_string(hide_password=False)


def until(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll condition until it holds or the deadline passes; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def exit_code(pid: int) -> int:
    """A forked child's exit code, once it ends (killed after WAIT seconds: -1)."""
    deadline = time.monotonic() + WAIT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -1
        time.sleep(0.005)


def psql(*statements: str, commit: bool = True) -> None:
    """Statements in one transaction of a connection the library does not know (psql's)."""
    with psycopg.connect(LIBPQ) as conn:
        for statement in statements:
            conn.execute(statement)
        if commit:
            conn.commit()
        else:
            conn.rollback()


def triggers_on(table: str, channel: str) -> int:
    with psycopg.connect(LIBPQ) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND tgname LIKE %s",
            [table, channel + "%"],
        ).fetchone()
    assert row is not None
    return int(row[0])


def function_exists() -> bool:
    with psycopg.connect(LIBPQ) as conn:
        row = conn.execute("SELECT to_regproc(%s) IS NOT NULL", [FUNCTION]).fetchone()
    return bool(row and row[0])


def get(engine: sa.Engine, sql: SQLCounter, model: type, ident: Any) -> tuple[Any, int]:
    """A cached get's row (as a dict, None if absent) and the SELECTs it sent."""
    sql.clear()
    with Session(engine) as session:
        row = session.get(model, ident)
        values = None if row is None else {c.key: getattr(row, c.key) for c in row.__table__.c}
    return values, sql.selects


def warm(engine: sa.Engine, sql: SQLCounter, model: type, ident: Any) -> None:
    """Cache a row: its second get sends no SQL."""
    get(engine, sql, model, ident)
    assert get(engine, sql, model, ident)[1] == 0


class Notices:
    """conn's notifications from now on, one at a time (psycopg 3.1 has no
    notifies(timeout=...): a handler collects what each wait-and-poll reads)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.arrived: list[Any] = []
        conn.add_notify_handler(self.arrived.append)

    def next(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not self.arrived:
            left = deadline - time.monotonic()
            assert left > 0, "no notification came"
            select.select([self.conn.fileno()], [], [], left)
            self.conn.execute("SELECT 1")  # reads what came in, handing it to the handler
        return self.arrived.pop(0)


class Channel:
    """Another session listening on the listener's channel: sees what the triggers send."""

    def __init__(self, channel: str, listener: _pg_listen.Listener) -> None:
        self.name = channel
        self.listener = listener
        self.conn = psycopg.connect(LIBPQ, autocommit=True)
        self.conn.execute(f'LISTEN "{channel}"')
        self.notices = Notices(self.conn)
        self.sender = psycopg.connect(LIBPQ, autocommit=True)
        self.base = listener.handled  # both listen from here on
        self.seen = 0

    def send(self, payload: str) -> None:
        self.sender.execute("SELECT pg_notify(%s, %s)", [self.name, payload])

    def settle(self) -> list[dict[str, Any]]:
        """The notifications sent since the last settle(), once the listener handled them."""
        marker = json.dumps({"t": f"marker-{uuid.uuid4().hex}"})
        self.send(marker)
        payloads = []
        while (payload := self.notices.next(WAIT).payload) != marker:
            payloads.append(payload)
        self.seen += len(payloads) + 1
        assert self.listener.wait_handled(self.base + self.seen, WAIT)
        return [json.loads(payload) for payload in payloads if payload.startswith("{")]

    def close(self) -> None:
        self.conn.close()
        self.sender.close()


@pytest.fixture
def runtime(engine: sa.Engine, redis_client: redis.Redis, prefix: str) -> _runtime.Runtime:
    SQLModelCache.configure(RedisSyncTransport(redis_client), key_prefix=prefix, l1=True)
    assert _runtime.current is not None and _runtime.current.feed is not None
    assert _runtime.current.feed.subscribed.wait(WAIT)
    return _runtime.current


@pytest.fixture
def triggers(engine: sa.Engine, runtime: _runtime.Runtime, prefix: str) -> Iterator[str]:
    """The triggers for WATCHED under the test's prefix; yields the channel."""
    install_triggers(engine, *WATCHED)  # the configured prefix
    yield channel_name(prefix)
    remove_triggers(engine, *WATCHED, key_prefix=prefix)


@pytest.fixture
def listener(engine: sa.Engine, triggers: str) -> Iterator[_pg_listen.Listener]:
    running = listen(engine)
    assert running.wait_connections(1, WAIT)
    yield running
    running.close()


@pytest.fixture
def channel(listener: _pg_listen.Listener, triggers: str) -> Iterator[Channel]:
    spy = Channel(triggers, listener)
    yield spy
    spy.close()


def ask(worker: subprocess.Popen[str], line: str) -> str:
    """One command to a tests._worker process, and its answer."""
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(line + "\n")
    worker.stdin.flush()
    return worker.stdout.readline().strip()


@contextlib.contextmanager
def other_process(engine: sa.Engine, prefix: str) -> Iterator[subprocess.Popen[str]]:
    """Another process on the same cache, with an L1 (tests._worker)."""
    db_url = engine.url.render_as_string(hide_password=False)
    args = [sys.executable, "-m", "tests._worker", db_url, REDIS_URL, prefix, "l1"]
    worker = subprocess.Popen(
        args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        yield worker
    finally:
        worker.kill()
        worker.wait()


# -- writes the application never sees -----------------------------------------------------


def test_a_psql_update_reaches_l2_this_l1_and_another_process_l1(engine, sql, channel, prefix):
    seed(engine, (1, "old"), (2, "two"))
    channel.settle()
    with other_process(engine, prefix) as worker:
        # Until the row comes from its L1 (this process may hold the lease at first).
        assert "l1" in (ask(worker, "tier 1") for _ in range(20))
        warm(engine, sql, Hero, 1)
        warm(engine, sql, Hero, 2)
        psql("UPDATE hero SET name = 'new' WHERE id = 1")
        assert channel.settle() == [{"t": "hero", "k": [[1]]}]
        # The other process heard it, and its next get found neither L1 nor L2: the database.
        assert ask(worker, "news") == "yes"
        assert ask(worker, "tier 1") == "db"
        assert ask(worker, "read 1") == "new new"
    assert get(engine, sql, Hero, 1) == ({"id": 1, "name": "new", "age": 10, "team_id": None}, 0)
    assert get(engine, sql, Hero, 2)[1] == 0  # the row nobody wrote is still cached


def test_a_psql_update_drops_this_process_l1_and_l2(engine, sql, channel, redis_client, prefix):
    seed(engine, (1, "old"))
    channel.settle()
    warm(engine, sql, Hero, 1)
    psql("UPDATE hero SET name = 'new' WHERE id = 1")
    channel.settle()
    assert not redis_client.exists(f"{prefix}:Hero:id=1")
    assert get(engine, sql, Hero, 1) == ({"id": 1, "name": "new", "age": 10, "team_id": None}, 1)
    assert get(engine, sql, Hero, 1)[1] == 0  # cached again


def test_a_psql_delete_invalidates(engine, sql, channel):
    seed(engine, (1, "one"), (2, "two"))
    channel.settle()
    warm(engine, sql, Hero, 1)
    warm(engine, sql, Hero, 2)
    psql("DELETE FROM hero WHERE id = 2")
    assert channel.settle() == [{"t": "hero", "k": [[2]]}]
    assert get(engine, sql, Hero, 2) == (None, 1)
    assert get(engine, sql, Hero, 1)[1] == 0


def test_an_insert_names_its_new_rows(engine, sql, channel):
    seed(engine, (1, "one"))  # so that Hero has counters
    channel.settle()
    before = SQLModelCache.stats().by_model["Hero"].invalidations
    psql("INSERT INTO hero (id, name) VALUES (7, 'seven'), (8, 'eight')")
    assert channel.settle() == [{"t": "hero", "k": [[7], [8]]}]
    assert SQLModelCache.stats().by_model["Hero"].invalidations == before + 2
    assert get(engine, sql, Hero, 7)[0]["name"] == "seven"


def test_an_upsert_invalidates_the_row_it_updates(engine, sql, channel):
    seed(engine, (1, "old"))
    channel.settle()
    warm(engine, sql, Hero, 1)
    psql(
        "INSERT INTO hero (id, name) VALUES (1, 'new') "
        "ON CONFLICT (id) DO UPDATE SET name = excluded.name"
    )
    assert {"t": "hero", "k": [[1]]} in channel.settle()
    assert get(engine, sql, Hero, 1)[0]["name"] == "new"


def test_a_primary_key_change_names_the_old_and_the_new_key(engine, sql, channel):
    seed(engine, (1, "one"), (2, "two"))
    channel.settle()
    warm(engine, sql, Hero, 1)
    warm(engine, sql, Hero, 2)
    psql("UPDATE hero SET id = 3 WHERE id = 1")
    [payload] = channel.settle()
    assert payload["t"] == "hero" and sorted(payload["k"]) == [[1], [3]]
    assert get(engine, sql, Hero, 1) == (None, 1)
    assert get(engine, sql, Hero, 3)[0]["name"] == "one"
    assert get(engine, sql, Hero, 2)[1] == 0  # untouched, still cached


def test_a_rolled_back_write_invalidates_nothing(engine, sql, channel):
    seed(engine, (1, "old"))
    channel.settle()
    warm(engine, sql, Hero, 1)
    psql("UPDATE hero SET name = 'new' WHERE id = 1", "DELETE FROM orderitem", commit=False)
    assert channel.settle() == []  # NOTIFY is delivered on commit only
    assert get(engine, sql, Hero, 1) == ({"id": 1, "name": "old", "age": 10, "team_id": None}, 0)


def test_a_statement_beyond_one_payload_leaves_nothing_stale(engine, sql, channel):
    psql("INSERT INTO hero (id, name) SELECT g, 'old' FROM generate_series(1, 5000) AS g")
    assert len(channel.settle()) > 1  # the keys did not fit one notification
    for ident in (1, 2500, 5000):
        warm(engine, sql, Hero, ident)
    psql("UPDATE hero SET name = 'new'")
    payloads = channel.settle()
    assert len(payloads) > 1
    assert all(len(json.dumps(p, separators=(",", ":"))) < 8000 for p in payloads)
    named = sorted(key for payload in payloads for [key] in payload["k"])
    assert named == list(range(1, 5001))  # each row once, in batches
    for ident in (1, 2500, 5000):
        assert get(engine, sql, Hero, ident) == (
            {"id": ident, "name": "new", "age": None, "team_id": None},
            1,
        )


def test_past_max_rows_the_whole_table_goes(engine, sql, channel, prefix):
    install_triggers(engine, Hero, key_prefix=prefix, max_rows=100)  # replaces the fixture's
    seed(engine, *[(i, "old") for i in range(1, 301)])
    channel.settle()
    for ident in (1, 300):
        warm(engine, sql, Hero, ident)
    psql("UPDATE hero SET name = 'new' WHERE id <= 200")
    assert channel.settle() == [{"t": "hero"}]
    assert get(engine, sql, Hero, 1)[0]["name"] == "new"
    assert get(engine, sql, Hero, 300)[1] == 1  # not written, but its model was dropped


def test_truncate_drops_the_whole_model(engine, sql, channel):
    psql("INSERT INTO orderitem VALUES (1, 5, 1), (1, 6, 1)")
    channel.settle()
    warm(engine, sql, OrderItem, (1, 5))
    psql("TRUNCATE orderitem")
    assert channel.settle() == [{"t": "orderitem"}]
    assert get(engine, sql, OrderItem, (1, 5)) == (None, 1)


def test_a_composite_key(engine, sql, channel):
    psql("INSERT INTO orderitem VALUES (1, 5, 1), (1, 6, 1)")
    channel.settle()
    warm(engine, sql, OrderItem, (1, 5))
    warm(engine, sql, OrderItem, (1, 6))
    psql("UPDATE orderitem SET quantity = 9 WHERE order_id = 1 AND product_id = 5")
    assert channel.settle() == [{"t": "orderitem", "k": [[1, 5]]}]
    assert get(engine, sql, OrderItem, (1, 5)) == (
        {"order_id": 1, "product_id": 5, "quantity": 9},
        1,
    )
    assert get(engine, sql, OrderItem, (1, 6))[1] == 0


def test_a_uuid_key(engine, sql, channel):
    ident = uuid.uuid4()
    with Session(engine) as session:
        session.add(Account(id=ident, email="a@example.com", opened_at=dt.datetime.now(dt.UTC)))
        session.commit()
    channel.settle()
    warm(engine, sql, Account, ident)
    psql(f"UPDATE account SET email = 'b@example.com' WHERE id = '{ident}'")
    assert channel.settle() == [{"t": "account", "k": [[str(ident)]]}]
    row, selects = get(engine, sql, Account, ident)
    assert (row["email"], selects) == ("b@example.com", 1)


def test_a_text_key_with_separators_and_quotes(engine, sql, channel):
    odd = "a:b=c%'\"\\ é"
    with Session(engine) as session:
        session.add(Tag(name=odd, note="old"))
        session.commit()
    channel.settle()
    warm(engine, sql, Tag, odd)
    with psycopg.connect(LIBPQ) as conn:
        conn.execute("UPDATE tag SET note = 'new' WHERE name = %s", [odd])
    channel.settle()
    assert get(engine, sql, Tag, odd) == ({"name": odd, "note": "new"}, 1)


def test_every_class_reading_the_table_drops_the_row(engine, sql, channel):
    psql("INSERT INTO note (id, text) VALUES (1, 'old')")
    channel.settle()
    warm(engine, sql, Note, 1)
    warm(engine, sql, NoteCard, 1)
    psql("UPDATE note SET text = 'new' WHERE id = 1")
    channel.settle()
    assert get(engine, sql, Note, 1) == ({"id": 1, "text": "new"}, 1)
    assert get(engine, sql, NoteCard, 1)[1] == 1


def test_unknown_tables_and_foreign_payloads_are_ignored(engine, sql, channel, caplog):
    seed(engine, (1, "one"))
    channel.settle()
    warm(engine, sql, Hero, 1)
    with caplog.at_level(logging.DEBUG, logger="sqlmodel_cache"):
        channel.send('{"t": "another_apps_table", "k": [[1]]}')
        channel.send('{"t": "another_apps_table", "k": [[2]]}')
        channel.send("not json")
        channel.settle()
    said = [r.getMessage() for r in caplog.records]
    assert sum("another_apps_table" in m for m in said) == 1  # once
    assert sum("did not send" in m for m in said) == 1
    assert get(engine, sql, Hero, 1)[1] == 0  # nothing was dropped


def test_a_key_that_cannot_be_read_drops_the_whole_model(engine, sql, channel, caplog):
    seed(engine, (1, "one"), (2, "two"))
    channel.settle()
    warm(engine, sql, Hero, 1)
    warm(engine, sql, Hero, 2)
    with caplog.at_level(logging.WARNING, logger="sqlmodel_cache"):
        channel.send('{"t": "hero", "k": [["one"]]}')
        channel.settle()
    assert "every entry of its models is dropped" in caplog.text
    assert get(engine, sql, Hero, 2)[1] == 1


# -- installing and removing ----------------------------------------------------------------


def test_installing_twice_is_harmless(engine, sql, channel, prefix):
    install_triggers(engine, *WATCHED, key_prefix=prefix)
    assert triggers_on("hero", channel.name) == 4  # insert, update, delete, truncate
    seed(engine, (1, "old"))
    channel.settle()
    warm(engine, sql, Hero, 1)
    psql("UPDATE hero SET name = 'new' WHERE id = 1")
    assert channel.settle() == [{"t": "hero", "k": [[1]]}]  # one notification, not two
    assert get(engine, sql, Hero, 1)[0]["name"] == "new"


def test_remove_triggers_stops_notifications_and_drops_the_function_last(
    engine, sql, channel, prefix
):
    other = f"{prefix}-other"
    install_triggers(engine, Hero, key_prefix=other)
    seed(engine, (1, "old"))
    channel.settle()
    warm(engine, sql, Hero, 1)
    remove_triggers(engine, *WATCHED, key_prefix=prefix)
    assert triggers_on("hero", channel.name) == 0
    assert function_exists()  # the other prefix's triggers still call it
    psql("UPDATE hero SET name = 'new' WHERE id = 1")
    assert channel.settle() == []
    assert get(engine, sql, Hero, 1)[1] == 0  # nothing told the cache: stale, as before
    remove_triggers(engine, Hero, key_prefix=other)
    assert not function_exists()
    remove_triggers(engine, Hero, key_prefix=other)  # again: harmless


def test_trigger_ddl_through_a_plain_connection_works_the_same(engine, sql, runtime, prefix):
    # The Alembic route: op.execute(sql) for each statement, in the migration's transaction.
    with engine.begin() as conn:
        for statement in trigger_ddl(Hero, key_prefix=prefix):
            conn.execute(sa.text(statement))
    with listen(engine) as running:
        assert running.wait_connections(1, WAIT)
        spy = Channel(channel_name(prefix), running)
        try:
            seed(engine, (1, "old"))
            spy.settle()
            warm(engine, sql, Hero, 1)
            psql("UPDATE hero SET name = 'new' WHERE id = 1")
            assert spy.settle() == [{"t": "hero", "k": [[1]]}]
            assert get(engine, sql, Hero, 1)[0]["name"] == "new"
            with psycopg.connect(LIBPQ) as conn:  # and psql's route for the downgrade
                for statement in drop_trigger_ddl(Hero, key_prefix=prefix):
                    conn.execute(statement)
            psql("UPDATE hero SET name = 'newer' WHERE id = 1")
            assert spy.settle() == []
        finally:
            spy.close()
    assert not function_exists()


def test_ddl_quotes_identifiers_and_names_channels_safely():
    statements = trigger_ddl(OrderItem, key_prefix="My App:v2 'quoted'")
    channel = channel_name("My App:v2 'quoted'")
    assert len(channel.encode()) <= 59 and channel.startswith("sqlmodel_cache_My_App_v2")
    assert channel != channel_name("My App:v2 'quoted '")  # distinct prefixes stay distinct
    assert channel_name() == "sqlmodel_cache_sqlmodelcache"
    assert len(channel_name("x" * 200)) == 59
    create = [s for s in statements if s.startswith("CREATE TRIGGER")]
    assert len(create) == 4
    assert f'CREATE TRIGGER "{channel}_upd" AFTER UPDATE ON orderitem' in create[1]
    assert "'orderitem', '10000', 'order_id', 'product_id')" in create[1]


def test_ddl_quotes_schemas_upper_case_and_keywords():
    metadata = sa.MetaData()
    odd = sa.Table(
        "Order",
        metadata,
        sa.Column("select", sa.Integer, primary_key=True),
        sa.Column("Group", sa.Text, primary_key=True),
        schema="Odd Schema",
    )
    channel = f"smc_quoting_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(LIBPQ, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "Odd Schema"')
        try:
            conn.execute(
                'CREATE TABLE "Odd Schema"."Order" ("select" int, "Group" text, '
                'PRIMARY KEY ("select", "Group"))'
            )
            for statement in _install_sql([odd], channel, 10):
                conn.execute(statement)
            assert triggers_on('"Odd Schema"."Order"', channel) == 4
            conn.execute(f'LISTEN "{channel}"')
            notices = Notices(conn)
            conn.execute("""INSERT INTO "Odd Schema"."Order" VALUES (1, 'it''s')""")
            notify = notices.next(WAIT)
            assert json.loads(notify.payload) == {"t": "Odd Schema.Order", "k": [[1, "it's"]]}
            for statement in _drop_sql([odd], channel):
                conn.execute(statement)
            assert triggers_on('"Odd Schema"."Order"', channel) == 0
        finally:
            conn.execute('DROP SCHEMA "Odd Schema" CASCADE')


def test_bad_input_raises_configuration_errors(engine, tmp_path):
    with pytest.raises(ConfigurationError, match="Plain is not cached"):
        trigger_ddl(Plain)
    with pytest.raises(ConfigurationError, match="is not a mapped model class"):
        trigger_ddl(int)
    with pytest.raises(ConfigurationError, match="max_rows must be a positive int"):
        trigger_ddl(Hero, max_rows=0)
    with pytest.raises(ConfigurationError, match="key_prefix must be a non-empty"):
        drop_trigger_ddl(Hero, key_prefix="")
    sqlite = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ConfigurationError, match="triggers need PostgreSQL, got a sqlite"):
        install_triggers(sqlite, Hero)
    with pytest.raises(ConfigurationError, match="Engine or Connection"):
        install_triggers(PG_URL, Hero)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not configured"):
        listen(engine)
    SQLModelCache.configure()
    with pytest.raises(ConfigurationError, match="needs PostgreSQL, got a sqlite URL"):
        listen(sqlite)
    with pytest.raises(ConfigurationError, match="needs PostgreSQL, got a sqlite URL"):
        listen("sqlite:///x.db")
    with pytest.raises(ConfigurationError, match="PostgreSQL URL or SQLAlchemy engine"):
        listen(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="PostgreSQL URL or engine"):
        listen("not a url")
    with pytest.raises(ConfigurationError, match="flush_on_start must be True or False"):
        listen(engine, flush_on_start=1)  # type: ignore[arg-type]
    sqlite.dispose()


# -- the listener's life --------------------------------------------------------------------


@pytest.fixture
def listener_role(engine: sa.Engine) -> Iterator[str]:
    """A login role of the test's own, so that the listener's logins can be refused."""
    role = f"smc_listener_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(LIBPQ, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    yield role
    with psycopg.connect(LIBPQ, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role]
        )
        conn.execute(f"DROP ROLE {role}")


def test_after_a_lost_connection_it_reconnects_and_drops_what_it_watches(
    engine, sql, triggers, listener_role
):
    seed(engine, (1, "old"), (2, "two"))
    running = listen(libpq_url(username=listener_role))
    try:
        assert running.wait_connections(1, WAIT)
        pid = running.backend_pid
        warm(engine, sql, Hero, 1)
        warm(engine, sql, Hero, 2)
        psql(
            f"ALTER ROLE {listener_role} NOLOGIN",  # it cannot come back until allowed to
            f"SELECT pg_terminate_backend({pid})",
        )
        assert until(lambda: not running.connected.is_set())
        psql("UPDATE hero SET name = 'new' WHERE id = 1")  # nobody hears of it
        assert get(engine, sql, Hero, 1) == (
            {"id": 1, "name": "old", "age": 10, "team_id": None},
            0,
        )
        psql(f"ALTER ROLE {listener_role} LOGIN")
        assert running.wait_connections(2, WAIT)
        assert running.backend_pid != pid
        assert get(engine, sql, Hero, 1) == (
            {"id": 1, "name": "new", "age": 10, "team_id": None},
            1,
        )
        assert get(engine, sql, Hero, 2)[1] == 1  # the whole model went: a flush, not a notice
        assert get(engine, sql, OrderItem, (9, 9))[1] == 1  # watched too (nothing to drop)
    finally:
        running.close()


def test_a_silent_connection_is_replaced(engine, sql, triggers, monkeypatch):
    monkeypatch.setattr(_pg_listen, "_PING_EVERY", 0.1)
    monkeypatch.setattr(_pg_listen, "_SILENCE", 0.3)
    seed(engine, (1, "old"))
    proxy = Proxy(sa.make_url(PG_URL).port or 5432)
    running = listen(libpq_url(port=proxy.port, host="127.0.0.1"))
    try:
        assert running.wait_connections(1, WAIT)
        assert until(lambda: running._heartbeats >= 3)  # answered: a quiet channel is fine
        assert running.connections == 1
        warm(engine, sql, Hero, 1)
        proxy.stall()  # a partition: the socket stays open, nothing comes back
        assert until(lambda: not running.connected.is_set())
        psql("UPDATE hero SET name = 'new' WHERE id = 1")
        proxy.heal()
        assert running.wait_connections(2, WAIT)
        assert get(engine, sql, Hero, 1)[0]["name"] == "new"
    finally:
        running.close()
        proxy.close()


def backend_alive(pid: int | None) -> bool:
    with psycopg.connect(LIBPQ) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    return row == (1,)


def test_flush_on_start_drops_what_it_watches_on_the_first_connection(engine, sql, triggers):
    seed(engine, (1, "old"))
    warm(engine, sql, Hero, 1)
    psql("UPDATE hero SET name = 'new' WHERE id = 1")  # before any listener ran
    with listen(engine, flush_on_start=True) as running:
        assert running.wait_connections(1, WAIT)
        assert get(engine, sql, Hero, 1)[0]["name"] == "new"


@pytest.mark.greenlet
def test_an_async_engine_lends_its_url(engine, sql, triggers):
    from sqlalchemy.ext.asyncio import create_async_engine

    async_engine = create_async_engine(PG_URL)
    with listen(async_engine) as running:
        assert running.wait_connections(1, WAIT)
    assert not running.running


def test_reset_stops_the_listener_and_closes_its_connection(engine, listener):
    pid = listener.backend_pid
    assert backend_alive(pid)
    SQLModelCache.reset()
    assert until(lambda: not listener.running)
    assert until(lambda: not backend_alive(pid))


def test_close_stops_it_and_one_per_process_is_harmless(engine, sql, channel):
    second = listen(engine)  # as in every process of a deployment
    try:
        assert second.wait_connections(1, WAIT)
        seed(engine, (1, "old"))
        channel.settle()
        warm(engine, sql, Hero, 1)
        done = second.handled
        psql("UPDATE hero SET name = 'new' WHERE id = 1")
        channel.settle()
        assert second.wait_handled(done + 2, WAIT)  # the write, and the marker
        assert get(engine, sql, Hero, 1) == (
            {"id": 1, "name": "new", "age": 10, "team_id": None},
            1,
        )
    finally:
        second.close()
    assert not second.running and not second.connected.is_set()


def test_a_forked_child_starts_no_listener_and_leaves_the_parent_s_alone(engine, sql, channel):
    listener = channel.listener
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            if not listener.running and not listener.connected.is_set():
                listener.close()  # must not touch the parent's connection
                code = 0
        finally:
            os._exit(code)
    assert exit_code(pid) == 0
    seed(engine, (1, "old"))
    channel.settle()
    warm(engine, sql, Hero, 1)
    psql("UPDATE hero SET name = 'new' WHERE id = 1")
    assert channel.settle() == [{"t": "hero", "k": [[1]]}]
    assert listener.connections == 1  # the same connection all along
    assert get(engine, sql, Hero, 1)[0]["name"] == "new"
