"""The sync face of an async transport, for listeners that always run sync code.

Inside SQLAlchemy's greenlet (an AsyncSession at work) a call awaits the async
transport on the session's own event loop; anywhere else (a plain Session, in
a script or a worker thread) it uses the transport's blocking twin. Either way
the listeners see one synchronous transport and nothing is written twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.util import await_only

from ._compat import in_greenlet

_METHODS = (
    "get",
    "set",
    "delete",
    "lease",
    "fill",
    "fill_many",
    "release",
    "delete_model",
    "invalidate",
)


def _bridged(awaitable: Callable[..., Any], blocking: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        if in_greenlet():
            return await_only(awaitable(*args))
        return blocking(*args)

    return call


class Bridge:
    """Offers, as plain methods, each operation that both faces of the transport have."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        for name in _METHODS:
            awaitable = getattr(transport, name, None)
            blocking = getattr(transport.sync, name, None)
            if awaitable is not None and blocking is not None:
                setattr(self, name, _bridged(awaitable, blocking))
