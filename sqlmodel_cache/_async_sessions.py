"""``AsyncCachedSession``: see ``_sessions``. A module of its own: it needs greenlet."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy.orm import Mapper
from sqlalchemy.util import EMPTY_DICT
from sqlmodel.ext.asyncio.session import AsyncSession

from ._many import get_many
from ._reads import NOT_HERE, recall_get
from ._sessions import bare

_O = TypeVar("_O")


class AsyncCachedSession(AsyncSession):
    """SQLModel's ``AsyncSession`` with a ``get()`` that answers L1 hits without a greenlet."""

    async def get_many(self, entity: type[_O], idents: Sequence[Any]) -> list[_O | None]:
        """``await SQLModelCache.aget_many(self, entity, idents)``."""
        return await self.run_sync(get_many, entity, idents)

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
        if bare(options, populate_existing, with_for_update, identity_token, execution_options):
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

    async def close(self) -> None:
        if self.sync_session.get_transaction() is None:
            # Nothing began (the gets were L1 hits): closing only forgets the session's
            # objects, with no I/O, so it needs no greenlet.
            self.sync_session.close()
            return
        await super().close()

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        if self.sync_session.get_transaction() is None:
            self.sync_session.close()  # as close(): no task, no greenlet, nothing to cancel
            return
        await super().__aexit__(type_, value, traceback)
