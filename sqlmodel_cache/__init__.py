"""Transparent, commit-invalidated caching of ``session.get()`` for SQLModel and SQLAlchemy."""

from typing import TYPE_CHECKING, Any

from ._cache import SQLModelCache
from ._config import BreakerConfig, CacheConfig, L1Config, Settings
from ._errors import CacheError, ConfigurationError, TransportError
from ._registry import CachedModel, cached
from ._sessions import CachedSession
from ._stats import CacheStats, ModelStats

if TYPE_CHECKING:
    from ._async_sessions import AsyncCachedSession

__all__ = [
    "AsyncCachedSession",
    "BreakerConfig",
    "CacheConfig",
    "CacheError",
    "CacheStats",
    "CachedModel",
    "CachedSession",
    "ConfigurationError",
    "L1Config",
    "ModelStats",
    "SQLModelCache",
    "Settings",
    "TransportError",
    "cached",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # AsyncCachedSession needs greenlet, which a sync-only install lacks: imported on use.
    if name == "AsyncCachedSession":
        from ._async_sessions import AsyncCachedSession

        return AsyncCachedSession
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
