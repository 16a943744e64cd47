"""``AsyncCachedSession``: see ``_sessions``. A module of its own: it needs greenlet."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy.orm import Mapper
from sqlalchemy.util import EMPTY_DICT
from sqlmodel.ext.asyncio.session import AsyncSession

from ._reads import NOT_HERE, recall_get

_O = TypeVar("_O")


class AsyncCachedSession(AsyncSession):
    """SQLModel's ``AsyncSession`` with a ``get()`` that answers L1 hits without a greenlet."""

    async def get(
        self,
        entity: type[_O] | Mapper[_O],
        ident: Any,
        *,
        options: Sequence[Any] | None = None,
        populate_existing: bool | None = None,
        with_for_update: Any = None,
        identity_token: Any = None,
        execution_options: Any = EMPTY_DICT,
    ) -> _O | None:
        if not (
            options
            or populate_existing
            or with_for_update is not None
            or identity_token is not None
            or execution_options
        ):
            found = recall_get(self.sync_session, entity, ident, connect=False)
            if found is not NOT_HERE:
                return found  # type: ignore[no-any-return]
        return await super().get(
            entity,
            ident,
            options=options,
            populate_existing=populate_existing,
            with_for_update=with_for_update,
            identity_token=identity_token,
            execution_options=execution_options,
        )
