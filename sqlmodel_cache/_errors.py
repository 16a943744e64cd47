"""Exceptions raised by sqlmodel-cache."""


class CacheError(Exception):
    """Base class of every error this library raises."""


class ConfigurationError(CacheError):
    """The library, a model or a call is set up wrongly."""


class TransportError(CacheError):
    """A cache backend failed; the core treats it as a miss (fail-open)."""
