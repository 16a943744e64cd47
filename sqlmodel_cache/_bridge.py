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
    "lease_many",
    "fill",
    "fill_many",
    "release",
    "delete_model",
    "invalidate",
    "unhold",
)
# Calls in two halves: the call sends, and the function it returns reads the replies.
_BEGINNINGS = ("begin_fill_many", "begin_hold")


def _bridged(awaitable: Callable[..., Any], blocking: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        if in_greenlet():
            return await_only(awaitable(*args))
        return blocking(*args)

    return call


def _bridged_beginning(
    awaitable: Callable[..., Any], blocking: Callable[..., Any]
) -> Callable[..., Any]:
    def begin(*args: Any) -> Callable[[], Any]:
        if in_greenlet():
            replies = await_only(awaitable(*args))
            return lambda: await_only(replies())
        return blocking(*args)  # type: ignore[no-any-return]

    return begin


class Bridge:
    """Offers, as plain methods, each operation that both faces of the transport have.
    Holds only when both faces hold (see Runtime.hold)."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        for names, bridge in ((_METHODS, _bridged), (_BEGINNINGS, _bridged_beginning)):
            for name in names:
                awaitable = getattr(transport, name, None)
                blocking = getattr(transport.sync, name, None)
                if awaitable is not None and blocking is not None:
                    setattr(self, name, bridge(awaitable, blocking))
        self.holds = bool(getattr(transport, "holds", False))
        self.lease_ttl = getattr(transport, "lease_ttl", 0.0)
