"""Fork safety: a forked child (gunicorn --preload, multiprocessing) starts clean.

The child inherits memory but only the forking thread: locks another thread held
stay held, the invalidation feed's thread is gone, and L1 holds rows that no
listener will ever drop. Every object with such state registers here, and its
``_after_fork()`` runs in the child before anything else does.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class ForkAware(Protocol):
    def _after_fork(self) -> None: ...


_objects: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def reset_after_fork(obj: ForkAware) -> None:
    """Have obj._after_fork() run in every child forked from now on."""
    _objects.add(obj)


def _in_child() -> None:
    for obj in list(_objects):
        obj._after_fork()


if hasattr(os, "register_at_fork"):  # pragma: no branch - every POSIX Python
    os.register_at_fork(after_in_child=_in_child)
