"""What a statement does to the database, read off the statement alone (no I/O).

Every statement a connection sends is classified: a **read** (SELECT, SHOW,
EXPLAIN, savepoint control...), or a statement that may change data or the
session's view of it (DML, DDL, SET, CALL, anything unknown). For the latter
the **targets** name the tables it may have changed and, when its WHERE clause
pins them, the primary keys of the rows:

- a Core UPDATE or DELETE whose WHERE is a conjunction that fixes every
  primary-key column (``=`` a parameter, or ``IN`` a list) touches those rows,
  parameter set by parameter set; any other WHERE, or none, touches the table;
- an INSERT touches no cached row, unless it is an upsert (ON CONFLICT,
  ON DUPLICATE KEY, OR REPLACE...): by the primary key in its parameters when
  the conflict target is the primary key, else the table;
- textual SQL (``text()``, ``exec_driver_sql``) touches every known table whose
  name it mentions.

Isolation levels set in SQL are read here too, so a transaction that runs
``SET TRANSACTION ISOLATION LEVEL SERIALIZABLE`` is known to be one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList, ColumnClause

from . import _compat

Rows = list[tuple[Any, ...]]
Target = tuple[Table, "Rows | None"]  # a table, and the primary keys touched (None: unknown)

# First words of statements that read and change nothing.
_READS = frozenset(
    {"SELECT", "SHOW", "EXPLAIN", "DESCRIBE", "VALUES", "TABLE", "SAVEPOINT", "RELEASE"}
)
_WORD = re.compile(r"\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*([A-Za-z]+)", re.S)
_WRITES_IN_WITH = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.I)
_ROLLBACK_TO = re.compile(r"\s*ROLLBACK\s+TO\b", re.I)
_LEVEL = r"(READ\s+UNCOMMITTED|READ\s+COMMITTED|REPEATABLE\s+READ|SERIALIZABLE|SNAPSHOT)"
_TRANSACTION_LEVEL = re.compile(
    r"^\s*(?:SET\s+TRANSACTION|BEGIN|START\s+TRANSACTION)\b.*?ISOLATION\s+LEVEL\s+" + _LEVEL,
    re.I | re.S,
)
_SESSION_LEVEL = re.compile(
    r"^\s*SET\s+(?:SESSION\s+CHARACTERISTICS\s+AS\s+TRANSACTION\s+ISOLATION\s+LEVEL\s+"
    + _LEVEL
    + r"|(?:SESSION\s+)?default_transaction_isolation\s*(?:=|TO)\s*'?"
    + _LEVEL
    + ")",
    re.I | re.S,
)


def first_word(sql: str) -> str:
    """The statement's first keyword, upper-cased, past comments ("" when there is none)."""
    match = _WORD.match(sql)
    return match.group(1).upper() if match else ""


def is_read(sql: str) -> bool:
    """Whether SQL text only reads (a conservative judgement: unknown means no)."""
    word = first_word(sql)
    if word in _READS:
        return True
    if word == "WITH":
        return _WRITES_IN_WITH.search(sql) is None
    if word == "PRAGMA":
        return "=" not in sql  # PRAGMA x = y changes the connection
    return word == "ROLLBACK" and _ROLLBACK_TO.match(sql) is not None


def creates_only(sql: str) -> bool:
    """Whether SQL text is one CREATE statement (a table, an index...): it changes no row
    that exists. Anything after a ';' might, so such text does not count."""
    return first_word(sql) == "CREATE" and ";" not in sql.rstrip().rstrip(";")


def isolation_set(sql: str) -> tuple[str, str] | None:
    """("transaction" | "session", LEVEL) when SQL sets an isolation level, else None."""
    found = _TRANSACTION_LEVEL.match(sql)
    if found is not None:
        return "transaction", _normal(found.group(1))
    found = _SESSION_LEVEL.match(sql)
    if found is not None:
        return "session", _normal(found.group(1) or found.group(2))
    return None


def _normal(level: str) -> str:
    return " ".join(level.upper().split())


# -- compiled statements ------------------------------------------------------------


def _conjuncts(criteria: Iterable[Any]) -> Iterable[Any]:
    """The clauses ANDed together in criteria (an OR is one clause)."""
    stack = list(criteria)
    while stack:
        clause = stack.pop()
        if isinstance(clause, BooleanClauseList) and clause.operator is operators.and_:
            stack.extend(clause.clauses)
        else:
            yield clause


def _key_column(element: Any, table: Table) -> str | None:
    """The name of table's primary-key column that element is, else None."""
    if not isinstance(element, ColumnClause) or element.table is None:
        return None
    if getattr(element.table, "fullname", None) != table.fullname:
        return None
    name = element.name
    return name if name in table.primary_key.columns else None


def _pins(criteria: Iterable[Any], table: Table) -> dict[str, tuple[bool, BindParameter[Any]]]:
    """Key column name -> (is an IN list, its parameter), for `key = :p` / `key IN :p`."""
    pins: dict[str, tuple[bool, BindParameter[Any]]] = {}
    for clause in _conjuncts(criteria):
        if not isinstance(clause, BinaryExpression):
            continue
        left, right = clause.left, clause.right
        if clause.operator is operators.eq and _key_column(right, table):
            left, right = right, left
        name = _key_column(left, table)
        if name is None or not isinstance(right, BindParameter):
            continue
        if clause.operator is operators.eq:
            pins[name] = (False, right)
        elif clause.operator is operators.in_op and right.expanding:
            pins[name] = (True, right)
    return pins


def _pinned_rows(
    table: Table, pins: Mapping[str, tuple[bool, BindParameter[Any]]], compiled: Any,
    parameters: Sequence[Mapping[str, Any]],
) -> Rows | None:  # fmt: skip
    """The primary keys fixed by pins, for every parameter set; None when one is not known."""
    names = [column.name for column in table.primary_key.columns]
    if set(pins) != set(names):
        return None
    rows: Rows = []
    for params in parameters:
        choices = []
        for name in names:
            is_list, bind = pins[name]
            value = _compat.bound_value(compiled, bind, params, expanding=is_list)
            if value is _compat.UNKNOWN:
                return None
            choices.append(list(value) if is_list else [value])
        rows.extend(_product(choices))
    return rows


def _product(choices: list[list[Any]]) -> Rows:
    rows: Rows = [()]
    for options in choices:
        rows = [(*row, option) for row in rows for option in options]
    return rows


def dml_targets(compiled: Any, parameters: Sequence[Mapping[str, Any]]) -> list[Target]:
    """The tables and rows a compiled Core INSERT, UPDATE or DELETE may change."""
    statement = compiled.statement
    table = _compat.dml_table(statement)
    if table is None:
        return []
    kind = first_word(compiled.string)
    if kind in ("INSERT", "REPLACE"):
        return _insert_targets(statement, table, parameters, kind)
    criteria = _compat.where_criteria(statement)
    if not criteria:
        return [(table, None)]
    pins = _pins(criteria, table)
    return [(table, _pinned_rows(table, pins, compiled, parameters))]


def _insert_targets(
    statement: Any, table: Table, parameters: Sequence[Mapping[str, Any]], kind: str
) -> list[Target]:
    conflict = _compat.upsert_target(statement)
    if conflict is None and kind == "INSERT" and not _compat.has_prefixes(statement):
        return []  # new rows: nothing cached can hold them
    if _compat.ignores_conflicts(statement):
        return []  # ON CONFLICT DO NOTHING leaves existing rows as they were
    names = [column.name for column in table.primary_key.columns]
    if conflict is not None and conflict == set(names):
        try:
            return [(table, [tuple(params[name] for name in names) for params in parameters])]
        except KeyError:
            pass  # the key comes from a default or a sequence
    return [(table, None)]  # ON DUPLICATE KEY, OR REPLACE, another unique key: any row


def mentioned(sql: str, pattern: re.Pattern[str] | None) -> set[str]:
    """Names of known tables that textual SQL mentions (lower-cased)."""
    if pattern is None:
        return set()
    return {match.group(1).lower() for match in pattern.finditer(sql)}


def tables_pattern(names: Iterable[str]) -> re.Pattern[str] | None:
    """A pattern finding any of these table names as a word, quoted or not."""
    words = sorted({name.lower() for name in names}, key=len, reverse=True)
    if not words:
        return None
    alternatives = "|".join(re.escape(word) for word in words)
    return re.compile(rf"(?<![\w$])[\"`\[]?({alternatives})[\"`\]]?(?![\w$])", re.I)
