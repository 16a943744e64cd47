"""Invalidation from PostgreSQL itself, for writes the application never sees (opt-in).

Two parts:

- **triggers**: on every table a cached model reads, statement-level
  ``AFTER INSERT / UPDATE / DELETE`` triggers with transition tables and an
  ``AFTER TRUNCATE`` trigger call one function, ``sqlmodel_cache_notify()``,
  which sends a notification on a channel named after the key prefix: the table,
  and the primary keys the statement touched (old and new ones for an UPDATE).
  PostgreSQL delivers notifications only when the transaction commits, so a
  rolled-back write never invalidates anything;
- **the listener** (``listen()``): one daemon thread with a connection of its
  own listens on that channel and turns every notification into the cache's own
  invalidation (Redis, and every process's in-process tier).

Payloads are JSON, ``{"t": "<table>", "k": [[key values...], ...]}``, each
shorter than PostgreSQL's 8000-byte limit: a statement's keys go out in as
many notifications as they need, up to ``max_rows`` rows (10,000 by default);
past that, or for a TRUNCATE, one ``{"t": "<table>"}`` says "the whole table".
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from . import _runtime
from ._errors import ConfigurationError
from ._registry import cached_info, registry

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ._pg_listen import Listener

log = logging.getLogger("sqlmodel_cache")

__all__ = [
    "FUNCTION",
    "MAX_ROWS",
    "Listener",
    "channel_name",
    "drop_trigger_ddl",
    "install_triggers",
    "listen",
    "remove_triggers",
    "trigger_ddl",
]

FUNCTION = "sqlmodel_cache_notify"
MAX_ROWS = 10_000
DEFAULT_PREFIX = "sqlmodelcache"
_NEW = "sqlmodel_cache_new"
_OLD = "sqlmodel_cache_old"
# (trigger name suffix, event, transition tables): PostgreSQL allows transition
# tables only on triggers of one event, hence one trigger per event.
_TRIGGERS = (
    ("ins", "INSERT", f"REFERENCING NEW TABLE AS {_NEW} "),
    ("upd", "UPDATE", f"REFERENCING OLD TABLE AS {_OLD} NEW TABLE AS {_NEW} "),
    ("del", "DELETE", f"REFERENCING OLD TABLE AS {_OLD} "),
    ("trn", "TRUNCATE", ""),
)
_CHANNEL_BYTES = 59  # PostgreSQL names hold 63 bytes; trigger names add "_" and 3 letters
_PLAIN = re.compile(r"[A-Za-z0-9_]*")
_PREPARER = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]

# The arguments (TG_ARGV): the channel, the table as the application names it
# (Table.fullname), the most rows named one by one, then the primary-key columns.
# pg_notify() takes payloads shorter than 8000 bytes: keys are packed into as many
# notifications as they need, each at most 7999 bytes.
_FUNCTION_SQL = f"""\
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger
LANGUAGE plpgsql AS $sqlmodel_cache$
-- sqlmodel-cache: names the rows a statement changed to sqlmodel_cache.postgres.listen().
DECLARE
  channel text := TG_ARGV[0];
  head text := '{{"t":' || to_json(TG_ARGV[1])::text;
  most bigint := TG_ARGV[2]::bigint;
  key_columns text := '';
  keys text[];
  touched bigint;
  key text;
  batch text := '';
BEGIN
  IF TG_OP = 'TRUNCATE' OR TG_NARGS < 4 THEN
    PERFORM pg_notify(channel, head || '}}');
    RETURN NULL;
  END IF;
  FOR i IN 3 .. TG_NARGS - 1 LOOP
    key_columns := key_columns || CASE WHEN i > 3 THEN ', ' ELSE '' END || quote_ident(TG_ARGV[i]);
  END LOOP;
  IF TG_OP = 'UPDATE' THEN  -- old and new keys: an UPDATE may change a key
    most := 2 * most;
  END IF;
  -- One query, reading at most one row past the limit: a huge statement costs no more.
  EXECUTE format(
    'SELECT array_agg(DISTINCT k), count(*) FROM (%s LIMIT %s) AS changed',
    CASE TG_OP
      WHEN 'INSERT' THEN format('SELECT jsonb_build_array(%s)::text AS k FROM {_NEW}', key_columns)
      WHEN 'DELETE' THEN format('SELECT jsonb_build_array(%s)::text AS k FROM {_OLD}', key_columns)
      ELSE format('SELECT jsonb_build_array(%1$s)::text AS k FROM {_OLD} UNION ALL '
                  'SELECT jsonb_build_array(%1$s)::text FROM {_NEW}', key_columns)
    END,
    most + 1) INTO keys, touched;
  IF touched = 0 THEN
    RETURN NULL;
  END IF;
  IF touched > most THEN
    PERFORM pg_notify(channel, head || '}}');
    RETURN NULL;
  END IF;
  FOREACH key IN ARRAY keys LOOP
    IF octet_length(head) + octet_length(batch) + octet_length(key) + 9 > 7999 THEN
      IF batch = '' THEN  -- one key alone is too long: the whole table
        PERFORM pg_notify(channel, head || '}}');
        RETURN NULL;
      END IF;
      PERFORM pg_notify(channel, head || ',"k":[' || batch || ']}}');
      batch := '';
    END IF;
    batch := CASE WHEN batch = '' THEN key ELSE batch || ',' || key END;
  END LOOP;
  PERFORM pg_notify(channel, head || ',"k":[' || batch || ']}}');
  RETURN NULL;
END
$sqlmodel_cache$"""

# Dropped only once no trigger calls it: other key prefixes may still use it.
_DROP_FUNCTION_SQL = f"""\
DO $sqlmodel_cache$
BEGIN
  IF to_regproc('{FUNCTION}') IS NOT NULL AND NOT EXISTS (
    SELECT FROM pg_catalog.pg_trigger WHERE tgfoid = to_regproc('{FUNCTION}')::oid
  ) THEN
    DROP FUNCTION {FUNCTION}();
  END IF;
END
$sqlmodel_cache$"""

# Serialises concurrent install_triggers() (processes starting together): two
# CREATE OR REPLACE FUNCTION at once fail with "tuple concurrently updated".
_LOCK_SQL = "SELECT pg_advisory_xact_lock(7365727664697301)"


def channel_name(key_prefix: str = DEFAULT_PREFIX) -> str:
    """The NOTIFY channel of a key prefix: ``sqlmodel_cache_<prefix>``, at most 59 bytes;
    a prefix with other characters than letters, digits and ``_``, or a long one, is
    shortened and given a hash of its own, so distinct prefixes never share a channel."""
    prefix = _prefix(key_prefix)
    name = f"sqlmodel_cache_{prefix}"
    if _PLAIN.fullmatch(prefix) and len(name) <= _CHANNEL_BYTES:
        return name
    tail = hashlib.sha256(prefix.encode()).hexdigest()[:8]
    kept = re.sub(r"[^A-Za-z0-9_]", "_", name)[: _CHANNEL_BYTES - 9]
    return f"{kept}_{tail}"


def trigger_ddl(
    *models: type, key_prefix: str | None = None, max_rows: int = MAX_ROWS
) -> list[str]:
    """The SQL statements that install the triggers for models (every cached model when
    none is given), to run in a migration: ``for sql in trigger_ddl(Hero): op.execute(sql)``.

    ``key_prefix``: the cache's (the configured one, else ``"sqlmodelcache"``);
    ``max_rows``: statements touching more rows notify "the whole table" instead.
    Running them again replaces the function and the triggers.
    """
    channel = channel_name(_prefix_or_configured(key_prefix))
    return _install_sql(_tables(models), channel, _positive("max_rows", max_rows))


def drop_trigger_ddl(*models: type, key_prefix: str | None = None) -> list[str]:
    """The SQL statements that remove those triggers (every cached model's when no model
    is given), and the function once no trigger of any key prefix calls it."""
    return _drop_sql(_tables(models), channel_name(_prefix_or_configured(key_prefix)))


def install_triggers(
    bind: sa.Engine | sa.Connection,
    *models: type,
    key_prefix: str | None = None,
    max_rows: int = MAX_ROWS,
) -> None:
    """Install (or replace) the triggers for models in one transaction (the connection's
    own, if it is in one: the caller commits). With no model: every cached model whose
    table this database has (the others are named in a WARNING)."""
    channel = channel_name(_prefix_or_configured(key_prefix))
    max_rows = _positive("max_rows", max_rows)
    tables = _tables(models)
    with _cursor(bind) as cursor:
        if not models:
            tables = _present(cursor, tables)
        for statement in [_LOCK_SQL, *_install_sql(tables, channel, max_rows)]:
            cursor.execute(statement)


def remove_triggers(
    bind: sa.Engine | sa.Connection, *models: type, key_prefix: str | None = None
) -> None:
    """Remove the triggers that install_triggers() created (harmless where there are none),
    and the function once no trigger calls it."""
    channel = channel_name(_prefix_or_configured(key_prefix))
    tables = _tables(models)
    with _cursor(bind) as cursor:
        if not models:
            tables = _present(cursor, tables)
        for statement in [_LOCK_SQL, *_drop_sql(tables, channel)]:
            cursor.execute(statement)


def listen(
    url_or_engine: str | sa.URL | sa.Engine | AsyncEngine,
    *,
    key_prefix: str | None = None,
    flush_on_start: bool = False,
) -> Listener:
    """Start the listener in this process: a daemon thread on a psycopg connection of its
    own, which turns every notification of the triggers into the running cache's
    invalidations (Redis and every process's in-process tier). It reconnects with
    backoff, and then drops every entry of the models whose tables have triggers, since
    notifications sent meanwhile are lost; ``flush_on_start=True`` does so on the first
    connection too. It stops on ``close()`` or ``SQLModelCache.reset()``.

    ``key_prefix``: whose channel to listen on (the configured prefix by default).
    """
    runtime = _runtime.current
    if runtime is None:
        raise ConfigurationError(_runtime.NOT_CONFIGURED)
    if type(flush_on_start) is not bool:
        raise ConfigurationError(f"flush_on_start must be True or False, got {flush_on_start!r}")
    prefix = runtime.settings.key_prefix if key_prefix is None else _prefix(key_prefix)
    try:
        from . import _pg_listen
    except ImportError as exc:  # pragma: no cover - the postgres extra brings psycopg
        raise ConfigurationError(
            f'listen() needs psycopg 3: pip install "sqlmodel-cache[postgres]" ({exc})'
        ) from None
    connect = _pg_listen.connector(url_or_engine)
    return _pg_listen.Listener(
        connect, channel_name(prefix), runtime, function=FUNCTION, flush_on_start=flush_on_start
    )


# -- helpers ------------------------------------------------------------------------------


def _prefix(key_prefix: Any) -> str:
    if type(key_prefix) is not str or not key_prefix or not key_prefix.isprintable():
        raise ConfigurationError(
            f"key_prefix must be a non-empty printable str, got {key_prefix!r}"
        )
    return key_prefix


def _prefix_or_configured(key_prefix: str | None) -> str:
    """key_prefix, else the configured one, else the library's default."""
    if key_prefix is not None:
        return _prefix(key_prefix)
    runtime = _runtime.current
    return runtime.settings.key_prefix if runtime is not None else DEFAULT_PREFIX


def _tables(models: Sequence[type]) -> list[sa.Table]:
    """Every table the models' keyspaces read (every cached model's when none is given),
    in a stable order."""
    if models:
        keyspaces: Iterable[Any] = [_keyspace(model) for model in models]
    else:
        keyspaces = registry.keyspaces()
    tables = {table for keyspace in keyspaces for table in keyspace.tables}
    return sorted(tables, key=lambda table: (table.fullname, id(table)))


def _keyspace(model: Any) -> Any:
    return cached_info(model).keyspace  # only cached models get triggers


def _literal(value: str) -> str:
    """A SQL string literal, whatever standard_conforming_strings says."""
    quoted = value.replace("'", "''")
    if "\\" in quoted:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return f"'{quoted}'"


def _install_sql(tables: Iterable[sa.Table], channel: str, max_rows: int) -> list[str]:
    statements = [_FUNCTION_SQL]
    for table in tables:
        target = _PREPARER.format_table(table)
        arguments = ", ".join(
            _literal(value)
            for value in (channel, table.fullname, str(max_rows), *table.primary_key.columns.keys())
        )
        for suffix, event, transition in _TRIGGERS:
            name = _PREPARER.quote_identifier(f"{channel}_{suffix}")
            statements.append(f"DROP TRIGGER IF EXISTS {name} ON {target}")
            statements.append(
                f"CREATE TRIGGER {name} AFTER {event} ON {target} {transition}"
                f"FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}({arguments})"
            )
    return statements


def _drop_sql(tables: Iterable[sa.Table], channel: str) -> list[str]:
    statements = [
        f"DROP TRIGGER IF EXISTS {_PREPARER.quote_identifier(f'{channel}_{suffix}')} "
        f"ON {_PREPARER.format_table(table)}"
        for table in tables
        for suffix, _event, _transition in _TRIGGERS
    ]
    statements.append(_DROP_FUNCTION_SQL)
    return statements


def _positive(name: str, value: Any) -> int:
    if type(value) is not int or value <= 0:
        raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
    return value


def _present(cursor: Any, tables: list[sa.Table]) -> list[sa.Table]:
    """The tables this database has; the others are said once, in a WARNING."""
    present: list[sa.Table] = []
    missing: list[sa.Table] = []
    for table in tables:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [_PREPARER.format_table(table)])
        (present if cursor.fetchone()[0] else missing).append(table)
    if missing:
        log.warning(
            "no sqlmodel-cache triggers on %s: this database has no such table",
            ", ".join(table.fullname for table in missing),
        )
    return present


@contextlib.contextmanager
def _cursor(bind: Any) -> Iterator[Any]:
    """A DBAPI cursor in one transaction on a PostgreSQL engine or connection, committed
    at the end unless the connection was already in a transaction (the caller's)."""
    if isinstance(bind, sa.Engine):
        with bind.connect() as conn, _cursor(conn) as cursor:
            yield cursor
        return
    if not isinstance(bind, sa.Connection):
        raise ConfigurationError(
            f"triggers are installed through a SQLAlchemy Engine or Connection, got {bind!r}"
        )
    if bind.dialect.name != "postgresql":
        raise ConfigurationError(
            f"database triggers need PostgreSQL, got a {bind.dialect.name} engine "
            f"({bind.engine.url.render_as_string()})"
        )
    version = bind.dialect.server_version_info or (0,)
    if version < (11,):
        raise ConfigurationError(
            f"the triggers need PostgreSQL 11 or later, this server is {version}"
        )
    # On the DBAPI connection, inside the SQLAlchemy transaction: the cache's own
    # listeners would read "DROP TRIGGER ... ON hero" as a write to hero, and drop
    # every entry of its models at the commit for nothing.
    transaction = None if bind.in_transaction() else bind.begin()
    try:
        dbapi = bind.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            yield cursor
        finally:
            cursor.close()
    except BaseException:
        if transaction is not None:
            transaction.rollback()
        raise
    if transaction is not None:
        transaction.commit()


def __getattr__(name: str) -> Any:
    # Listener needs psycopg, which the DDL helpers do not: imported on use.
    if name == "Listener":
        from ._pg_listen import Listener

        return Listener
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
