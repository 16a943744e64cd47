"""The PostgreSQL listener: the triggers' notifications become the cache's invalidations.

A daemon thread with a psycopg connection of its own, in autocommit mode,
listens on the key prefix's channel and waits on its socket. Each
notification names a table and the primary keys a statement touched (or none:
the whole table); rows go to ``Runtime.invalidate_writes`` exactly as a
commit's do, so Redis and every process's in-process tier drop them. When the
connection is lost (or stays silent past a heartbeat), notifications sent
meanwhile are lost for good: once it listens again, every entry of the models
whose tables have triggers is dropped. A forked child does not inherit the
thread, and starts none.
"""

from __future__ import annotations

import contextlib
import decimal
import json
import logging
import selectors
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import pq, rows, sql

from . import _runtime
from ._errors import ConfigurationError
from ._forks import reset_after_fork
from ._keys import canonical, loaded_type
from ._registry import registry
from ._writes import Writes

log = logging.getLogger("sqlmodel_cache")

_POLL = 0.1  # seconds between checks of the stop flag
_MAX_BACKOFF = 2.0
_STEADY = 10.0  # a connection that lasted this long starts the next backoff afresh
_PING_EVERY = 5.0  # seconds of silence before a heartbeat query
_SILENCE = 10.0  # seconds a heartbeat may go unanswered before the connection counts as lost
_BATCH = 16  # notifications merged into one invalidation (one Redis round trip)
_CONNECT_TIMEOUT = 10
# Key types a notification's JSON names exactly; rows of any other key (dates, bytes,
# enums...) are invalidated by dropping every entry of their models.
_EXACT = frozenset({int, str, uuid.UUID, decimal.Decimal})

Link = tuple["psycopg.Connection[Any]", Callable[[], None]]  # a connection, how to close it
# Connections a forked child inherited: kept, never closed (that would end the parent's LISTEN).
_orphans: list[Link] = []


def connector(url_or_engine: Any) -> Callable[[], Link]:
    """How the listener connects, checked now. A psycopg Engine lends its own connect logic
    (connect_args, do_connect events); any other engine, or a URL, gives a libpq URL."""
    engine = getattr(url_or_engine, "sync_engine", url_or_engine)  # an AsyncEngine's
    if isinstance(engine, sa.Engine):
        _check_backend(engine.url)
        if engine.dialect.driver == "psycopg" and not engine.dialect.is_async:

            def lent() -> Link:
                fairy = engine.raw_connection()
                conn: psycopg.Connection[Any] = fairy.driver_connection  # type: ignore[assignment]
                fairy.detach()  # ours for good: it never goes back to the pool
                return conn, conn.close

            return lent
        url = engine.url
    elif isinstance(url_or_engine, (str, sa.URL)):
        try:
            url = sa.make_url(url_or_engine)
        except sa.exc.ArgumentError as exc:
            raise ConfigurationError(f"listen() needs a PostgreSQL URL or engine: {exc}") from None
        _check_backend(url)
    else:
        raise ConfigurationError(
            f"listen() needs a PostgreSQL URL or SQLAlchemy engine, got {url_or_engine!r}"
        )
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    options = {} if "connect_timeout" in url.query else {"connect_timeout": _CONNECT_TIMEOUT}

    def direct() -> Link:
        conn = psycopg.connect(conninfo, **options)  # type: ignore[arg-type]
        return conn, conn.close

    return direct


def _check_backend(url: sa.URL) -> None:
    if url.get_backend_name() != "postgresql":
        raise ConfigurationError(
            f"listen() needs PostgreSQL, got a {url.get_backend_name()} URL "
            f"({url.render_as_string()})"
        )


def _tables_named() -> dict[str, list[sa.Table]]:
    """Every table a cached model reads, by the name its notifications carry."""
    tables: dict[str, list[sa.Table]] = {}
    for keyspace in registry.keyspaces():
        for table in keyspace.tables:
            found = tables.setdefault(table.fullname, [])
            if table not in found:
                found.append(table)
    return tables


def _row(key: Any, kinds: tuple[type, ...]) -> list[Any]:
    """A notification's key values as the row's key holds them; ValueError if they cannot be."""
    if not isinstance(key, list) or len(key) != len(kinds):
        raise ValueError(f"{key!r} is not a key of {len(kinds)} value(s)")
    return [canonical(value, kind) for value, kind in zip(key, kinds)]


class Listener:
    """A running listener (``sqlmodel_cache.postgres.listen()``): close() stops it.

    ``handled`` counts the notifications acted on (their invalidations done) and
    ``connections`` the times it began to listen; ``connected`` is set while it listens.
    """

    def __init__(
        self,
        connect: Callable[[], Link],
        channel: str,
        runtime: _runtime.Runtime,
        *,
        function: str,
        flush_on_start: bool,
    ) -> None:
        self.channel = channel
        self.connected = threading.Event()
        self.handled = 0
        self.connections = 0
        self.backend_pid: int | None = None  # its connection's, while connected
        self._connect = connect
        self._runtime = runtime
        self._function = function
        self._flush_next = flush_on_start
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._link: Link | None = None
        self._backlog: list[str] = []  # payloads psycopg read during a query of ours
        self._kinds: dict[sa.Table, tuple[type, ...] | None] = {}
        self._said: set[str] = set()
        self._heartbeats = 0  # heartbeat replies received (tests wait on it)
        reset_after_fork(self)
        runtime.on_close.append(self._stop.set)  # reset() stops it at once
        self._thread = threading.Thread(
            target=self._run, name="sqlmodel-cache-pg-listener", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether its thread runs (False once closed, after reset(), and in a forked child)."""
        return self._thread.is_alive() and not self._stop.is_set()

    def close(self) -> None:
        """Stop listening and close the connection (waits up to 5 s for the thread)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(5)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_handled(self, count: int, timeout: float) -> bool:
        """Wait until ``handled`` reaches count; whether it did within timeout seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: self.handled >= count, timeout)

    def wait_connections(self, count: int, timeout: float) -> bool:
        """Wait until ``connections`` reaches count (listening, and flushed after a loss)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.connections >= count, timeout)

    def _after_fork(self) -> None:
        """In a forked child: no thread, and the parent's connection left alone."""
        if self._link is not None:
            _orphans.append(self._link)
        self._link = None
        self._stop.set()
        self.connected.clear()
        self._changed = threading.Condition()

    def _stopped(self) -> bool:
        return self._stop.is_set() or _runtime.current is not self._runtime

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        backoff = _POLL
        failing = False  # said once per outage
        while not self._stopped():
            began = time.monotonic()
            try:
                self._listen()
            except Exception as exc:  # noqa: BLE001 - the listener must outlive any error
                if self.connected.is_set():
                    self._flush_next = True  # what was sent while away is lost
                    log.warning(
                        "lost the PostgreSQL invalidation channel %s (%r): reconnecting, then "
                        "dropping every entry of the models it watches",
                        self.channel,
                        exc,
                    )
                elif not failing:
                    log.warning(
                        "cannot listen on the PostgreSQL channel %s (%r): retrying",
                        self.channel,
                        exc,
                    )
                failing = True
            else:
                failing = False
            finally:
                self._disconnect()
            if time.monotonic() - began >= _STEADY:
                backoff = _POLL
            self._pause(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)
        if _runtime.current is not self._runtime and not self._stop.is_set():
            log.info("SQLModelCache was reset: the PostgreSQL listener on %s stops", self.channel)

    def _pause(self, seconds: float) -> None:
        """Wait before reconnecting, noticing close() and reset() within _POLL."""
        deadline = time.monotonic() + seconds
        while not self._stopped() and time.monotonic() < deadline:
            self._stop.wait(min(_POLL, max(deadline - time.monotonic(), 0.0)))

    def _listen(self) -> None:
        """Connect, LISTEN, flush if notifications may have been lost, then wait for them."""
        conn, _close = self._link = self._connect()
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            conn.rollback()  # a pooled connection may come in a transaction
        conn.autocommit = True
        conn.execute("SET application_name = 'sqlmodel-cache listener'")
        watched = self._watched(conn)
        conn.add_notify_handler(lambda notify: self._backlog.append(notify.payload))
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        first = self.connections == 0
        if self._flush_next:
            self._flush(watched)  # after LISTEN: a write committed from now on notifies
            self._flush_next = False
        if first:
            if watched:
                log.info(
                    "listening for PostgreSQL invalidations on %s (%d table(s))",
                    self.channel,
                    len(watched),
                )
            else:
                log.warning(
                    "no table has sqlmodel-cache triggers notifying channel %s: run "
                    "sqlmodel_cache.postgres.install_triggers() with this key prefix",
                    self.channel,
                )
        self.backend_pid = conn.info.backend_pid
        with self._changed:
            self.connections += 1
            self.connected.set()
            self._changed.notify_all()
        self._pump(conn)

    def _watched(self, conn: psycopg.Connection[Any]) -> set[str]:
        """The tables whose triggers notify this channel (their names as notifications carry
        them), read from the triggers' arguments."""
        query = (
            "SELECT t.tgargs FROM pg_catalog.pg_trigger t "
            "JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid WHERE p.proname = %s"
        )
        encoding = conn.info.encoding
        with conn.cursor(row_factory=rows.tuple_row) as cursor:
            found = cursor.execute(query, [self._function]).fetchall()
        watched = set()
        for (arguments,) in found:
            parts = bytes(arguments).split(b"\x00")
            if len(parts) > 1 and parts[0].decode(encoding) == self.channel:
                watched.add(parts[1].decode(encoding))
        return watched

    def _pump(self, conn: psycopg.Connection[Any]) -> None:
        """Hand notifications over as they arrive, until stopped or the connection is lost."""
        pgconn = conn.pgconn
        encoding = conn.info.encoding
        pinged: float | None = None
        with selectors.DefaultSelector() as selector:
            selector.register(pgconn.socket, selectors.EVENT_READ)
            heard = time.monotonic()
            ready = True  # the LISTEN's reply may have brought notifications along
            while not self._stopped():
                if ready:
                    pgconn.consume_input()  # raises once the connection is lost
                    heard = time.monotonic()
                    payloads, self._backlog = self._backlog, []
                    payloads.extend(n.extra.decode(encoding) for n in iter(pgconn.notifies, None))
                    if pinged is not None and _answered(pgconn):
                        pinged = None
                        self._heartbeats += 1
                    if payloads:
                        self._handle(payloads)
                if pgconn.status != pq.ConnStatus.OK:
                    raise ConnectionError("the connection to PostgreSQL is broken")
                now = time.monotonic()
                if pinged is None and now - heard > _PING_EVERY:
                    # A partition can leave the socket open and quiet: ask for a reply.
                    pgconn.send_query(b"SELECT 1")
                    pinged = now
                elif pinged is not None and now - pinged > _SILENCE:
                    raise ConnectionError(f"no reply from PostgreSQL for {_SILENCE} s")
                ready = bool(selector.select(_POLL))

    def _disconnect(self) -> None:
        link, self._link = self._link, None
        self.connected.clear()
        self.backend_pid = None
        self._backlog = []
        if link is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                link[1]()

    # -- notifications into invalidations ------------------------------------------------

    def _handle(self, payloads: list[str]) -> None:
        for start in range(0, len(payloads), _BATCH):
            batch = payloads[start : start + _BATCH]
            writes = Writes()
            tables = _tables_named()
            for payload in batch:
                self._read(payload, tables, writes)
            if writes:
                try:
                    self._runtime.invalidate_writes(writes)  # fail-open, like a commit's
                except Exception as exc:  # noqa: BLE001 - a bug must not end the listener
                    log.warning("could not apply a PostgreSQL invalidation: %r", exc)
            with self._changed:
                self.handled += len(batch)
                self._changed.notify_all()

    def _read(self, payload: str, tables: dict[str, list[sa.Table]], writes: Writes) -> None:
        """Add what one notification invalidates to writes."""
        try:
            message = json.loads(payload, parse_float=decimal.Decimal)
            name, keys = message["t"], message.get("k")
            if not isinstance(name, str) or not (keys is None or isinstance(keys, list)):
                raise TypeError(name)
        except (ValueError, KeyError, TypeError, AttributeError):
            self._once(
                "payload",
                logging.WARNING,
                "ignoring a notification on %s that sqlmodel-cache's triggers did not send: %.100r",
                self.channel,
                payload,
            )
            return
        found = tables.get(name)
        if not found:
            # Another application's prefix, or a table no cached model reads any more.
            self._once(
                "table:" + name,
                logging.DEBUG,
                "ignoring PostgreSQL notifications for table %s: no cached model reads it",
                name,
            )
            return
        for table in found:
            route = registry.table_route(table)
            if route is None:
                continue
            kinds = self._kinds_of(table)
            if keys is None or kinds is None:
                writes.add_all(route)
                continue
            try:
                for key in keys:
                    writes.add_row(route, _row(key, kinds))
            except ValueError as exc:
                self._once(
                    "value:" + name,
                    logging.WARNING,
                    "a PostgreSQL notification for %s named a key that is not one (%s): "
                    "every entry of its models is dropped instead",
                    name,
                    exc,
                )
                writes.add_all(route)

    def _kinds_of(self, table: sa.Table) -> tuple[type, ...] | None:
        """The Python types of table's key columns, when notifications name them exactly."""
        try:
            return self._kinds[table]
        except KeyError:
            pass
        kinds = [loaded_type(column.type) for column in table.primary_key.columns]
        exact: tuple[type, ...] | None = None
        if kinds and all(kind in _EXACT for kind in kinds):
            exact = tuple(kind for kind in kinds if kind is not None)
        else:
            log.warning(
                "rows of %s are keyed by %s: PostgreSQL notifications cannot name them "
                "exactly, so every change to it drops every entry of its models",
                table.fullname,
                ", ".join(getattr(kind, "__name__", "no known type") for kind in kinds)
                or "nothing",
            )
        self._kinds[table] = exact
        return exact

    def _flush(self, watched: Iterable[str]) -> None:
        """Drop every entry of the models reading the watched tables."""
        writes = Writes()
        tables = _tables_named()
        for name in watched:
            for table in tables.get(name, ()):
                route = registry.table_route(table)
                if route is not None:
                    writes.add_all(route)
        if writes:
            self._runtime.invalidate_writes(writes)
        log.info(
            "dropped every entry of %s: notifications sent while nothing listened on %s are lost",
            ", ".join(sorted(keyspace.name for keyspace in writes.whole)) or "no model",
            self.channel,
        )

    def _once(self, what: str, level: int, message: str, *args: Any) -> None:
        if what not in self._said:
            self._said.add(what)
            log.log(level, message, *args)


def _answered(pgconn: Any) -> bool:
    """Whether the heartbeat's results are all in (read them if so)."""
    while not pgconn.is_busy():
        if pgconn.get_result() is None:
            return True
    return False
