"""Exceptions raised by sqlmodel-cache."""


class CacheError(Exception):
    """Base class of every error this library raises."""


class ConfigurationError(CacheError):
    """The library, a model or a call is set up wrongly."""


class TransportError(CacheError):
    """A cache backend failed; the core treats it as a miss (fail-open).

    ``unreachable`` is true when the backend could not be reached at all (refused,
    timed out): the circuit breaker then opens at once.
    """

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def unreachable(exc: BaseException) -> bool:
    """Whether an error says the cache cannot be reached (as opposed to a bad reply)."""
    if isinstance(exc, TransportError):
        return exc.unreachable
    return isinstance(exc, (ConnectionError, TimeoutError))
