"""Transparent, commit-invalidated caching of ``session.get()`` for SQLModel and SQLAlchemy."""

from ._cache import SQLModelCache
from ._config import BreakerConfig, CacheConfig, L1Config, Settings
from ._errors import CacheError, ConfigurationError, TransportError
from ._registry import CachedModel, cached
from ._stats import CacheStats, ModelStats

__all__ = [
    "BreakerConfig",
    "CacheConfig",
    "CacheError",
    "CacheStats",
    "CachedModel",
    "ConfigurationError",
    "L1Config",
    "ModelStats",
    "SQLModelCache",
    "Settings",
    "TransportError",
    "cached",
]
__version__ = "0.1.0"
