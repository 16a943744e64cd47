"""The SQLAlchemy listeners, attached once at import.

They are attached to ``sqlalchemy.orm.Session`` (so every subclass, and the
sync session inside an ``AsyncSession``, is covered) and to ``Engine`` and
``Pool`` for transactions that a session does not own. Statements that do not
concern a cached model cost a dict lookup. Reads are served by ``_reads``;
writes are tracked and invalidated by ``_writes``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, Result
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.pool import Pool

from . import _reads, _runtime, _writes
from ._registry import registry

log = logging.getLogger("sqlmodel_cache")


def _on_execute(state: ORMExecuteState) -> Result[Any] | None:
    if state.is_select:
        mapper = state.bind_mapper
        info = None if mapper is None else registry.info(mapper.class_)
        if info is None:
            return None
        reason = _reads.bypass_reason(state, info)
        if reason is None and info.problem is not None:
            reason = "unsupported_mapping"
        if reason is None:
            reason = _hook_after_ours(state)
        if reason is None:
            return _reads.serve(state, info)
        runtime = _runtime.current
        if reason is not _reads.NOT_A_GET and runtime is not None:
            runtime.stats.bypass(info.name, reason)
        return None
    if state.is_update or state.is_delete or state.is_insert:
        mapper = state.bind_mapper
        route = None if mapper is None else registry.route(mapper.class_)
        if route is not None and _runtime.current is not None:
            return _writes.bulk_write(state, route)
    return None


_warned_hooks: set[str] = set()


def _hook_after_ours(state: ORMExecuteState) -> str | None:
    """A do_orm_execute hook that runs after ours, as a bypass reason (else None).

    Returning a hit skips the hooks after ours, and such a hook may be the one
    that adds a tenant's criteria: serving would hand out another tenant's row.
    """
    hooks = state.session.dispatch.do_orm_execute
    if len(hooks) == 1:
        return None
    later = list(hooks)
    later = later[later.index(_on_execute) + 1 :] if _on_execute in later else []
    if not later:
        return None
    name = f"{later[0].__module__}.{later[0].__qualname__}"
    if name not in _warned_hooks:
        _warned_hooks.add(name)
        log.warning(
            "the do_orm_execute hook %s runs after sqlmodel-cache's, so a cache hit would "
            "skip it: gets go to the database while it is there. Register it to run first "
            "(event.listen(Session, 'do_orm_execute', hook, insert=True)); the cache then "
            "sees what it does to each statement",
            name,
        )
    return f"hook_after:{name}"


# Attached once, at import, to the base classes: every Session (the one inside
# an AsyncSession too), Engine and Pool. A tuple so that tools (the benchmark's
# "no library" row) can detach exactly what we attach.
HOOKS = (
    (Session, "do_orm_execute", _on_execute),
    (Session, "after_flush", _writes._after_flush),
    (Session, "after_commit", _writes._after_commit),
    (Session, "after_transaction_end", _writes._after_transaction_end),
    (Session, "after_begin", _writes._after_begin),
    (Engine, "before_cursor_execute", _writes._on_cursor_execute),
    (Engine, "begin", _writes._on_begin),
    (Engine, "commit", _writes._on_commit),
    (Engine, "rollback", _writes._on_rollback),
    (Pool, "checkin", _writes._on_checkin),
)
for _target, _name, _hook in HOOKS:
    event.listen(_target, _name, _hook)


@contextmanager
def detached() -> Iterator[None]:
    """As if sqlmodel-cache were not installed: no runtime and none of its listeners, for
    benchmarks and differential tests. The runtime is set aside, not reset."""
    runtime, _runtime.current = _runtime.current, None
    for target, name, hook in HOOKS:
        event.remove(target, name, hook)
    try:
        yield
    finally:
        for target, name, hook in HOOKS:
            event.listen(target, name, hook)
        _runtime.current = runtime
