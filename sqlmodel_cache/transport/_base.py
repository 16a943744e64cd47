"""The transport contract: three methods, checked structurally, plus optional atomic ones."""

from __future__ import annotations

import secrets
from typing import Protocol, runtime_checkable

# A lease is stored in place of the value; no payload starts with this byte.
LEASE_MARK = b"\x00lease:"
# A committing transaction's hold on a key (a lease that counts its holders): readers
# see a lease, so nobody fills the key until the last holder's commit is over.
HOLD_MARK = LEASE_MARK + b"hold:"


def new_lease_token() -> bytes:
    """A fresh lease token, distinguishable from any payload."""
    return LEASE_MARK + secrets.token_hex(8).encode()


@runtime_checkable
class CacheTransport(Protocol):
    """A synchronous byte store with expiry. Any object with these methods will do."""

    def get(self, key: str) -> bytes | None:
        """Return the stored value, or None when absent or expired."""
        ...

    def set(self, key: str, value: bytes, ttl: int) -> None:
        """Store value under key for ttl seconds."""
        ...

    def delete(self, *keys: str) -> None:
        """Remove keys; absent keys are ignored."""
        ...


@runtime_checkable
class AsyncCacheTransport(Protocol):
    """An asyncio byte store with expiry, for AsyncSession apps.

    ``sync`` is a CacheTransport on the same store: plain Sessions, which have
    no event loop of their own, use it (RedisAsyncTransport builds one).
    """

    @property
    def sync(self) -> CacheTransport:
        """A blocking transport on the same store."""
        ...

    async def get(self, key: str) -> bytes | None:
        """Return the stored value, or None when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        """Store value under key for ttl seconds."""
        ...

    async def delete(self, *keys: str) -> None:
        """Remove keys; absent keys are ignored."""
        ...


@runtime_checkable
class LeasingTransport(CacheTransport, Protocol):
    """A transport whose fills cannot overwrite a later invalidation (the stale-fill race).

    On a miss, ``lease`` atomically installs a token in place of the value;
    ``fill`` stores the value only while that token is still there; ``delete``
    removes values and tokens alike, so a write committed after the reader
    took its lease defeats the reader's fill.
    """

    def lease(self, key: str) -> tuple[bytes | None, bytes | None]:
        """Return (value, None) on a hit; on a miss (None, token) when the caller now
        holds the key's lease, or (None, None) when another caller does."""
        ...

    def fill(self, key: str, token: bytes, value: bytes, ttl: int) -> bool:
        """Store value for ttl seconds if token still holds the key's lease."""
        ...

    def release(self, key: str, token: bytes) -> None:
        """Give up a lease without filling (so other readers may fill)."""
        ...
