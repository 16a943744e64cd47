"""Sessions whose ``get()`` answers an L1 hit before SQLAlchemy builds a statement.

``CachedSession`` (here) and ``AsyncCachedSession`` (``_async_sessions``, which
needs greenlet) are drop-in subclasses of SQLModel's ``Session`` and
``AsyncSession``. A ``get()`` with no options that
the in-process tier can answer skips the statement, the ``do_orm_execute``
dispatch and the result machinery; anything else (options, locks,
``populate_existing``, an object already in the identity map, changes to
autoflush, a hook of someone else's, an L1 miss) takes the ordinary path, which
the listeners serve as for any session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy.orm import Mapper
from sqlalchemy.util import EMPTY_DICT
from sqlmodel import Session

from ._many import get_many
from ._reads import NOT_HERE, recall_get

_O = TypeVar("_O")


def bare(
    options: Any, populate_existing: Any, with_for_update: Any, identity_token: Any, execution: Any
) -> bool:
    """Whether get()'s arguments leave it a bare get, the only kind answered before the ORM."""
    return not (
        options
        or populate_existing
        or with_for_update is not None
        or identity_token is not None
        or execution
    )


class CachedSession(Session):
    """``sqlmodel.Session`` with a ``get()`` that answers L1 hits at identity-map cost."""

    def get_many(self, entity: type[_O], idents: Sequence[Any]) -> list[_O | None]:
        """``SQLModelCache.get_many(self, entity, idents)``."""
        return get_many(self, entity, idents)

    def get(
        self,
        entity: type[_O] | Mapper[_O],
        ident: Any,
        *,
        options: Sequence[Any] | None = None,
        populate_existing: bool | None = None,
        with_for_update: Any = None,
        identity_token: Any = None,
        execution_options: Any = EMPTY_DICT,
        bind_arguments: Any = None,
    ) -> _O | None:
        asked = (options, populate_existing, with_for_update, identity_token, execution_options)
        if not bind_arguments and bare(*asked):
            found = recall_get(self, entity, ident)
            if found is not NOT_HERE:
                return found  # type: ignore[no-any-return]
        return super().get(
            entity,
            ident,
            options=options,
            populate_existing=populate_existing,
            with_for_update=with_for_update,
            identity_token=identity_token,
            execution_options=execution_options,
            bind_arguments=bind_arguments,
        )
