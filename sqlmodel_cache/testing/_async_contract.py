"""The contract suite for asyncio transports: the same tests, each call awaited on the test's
own event loop (an asyncio.Runner: no pytest-asyncio needed)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from ..transport import AsyncCacheTransport, CacheTransport, LeasingTransport
from ._contract import Keys, LeasingTransportContract

# Operations the core uses only when both faces of an async transport offer them.
OPTIONAL = ("lease", "fill", "release", "fill_many", "delete_model", "invalidate")


class Blocking:
    """An async transport's coroutine methods as blocking calls, each run to completion on
    the test's event loop, so every test of the sync suite checks the async transport."""

    def __init__(self, awaited: Any, runner: asyncio.Runner) -> None:
        self.awaited = awaited
        self.runner = runner

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.awaited, name)
        if not inspect.iscoroutinefunction(method):
            return method  # sync, the blocking twin, and plain attributes

        def call(*args: Any) -> Any:
            return self.runner.run(method(*args))

        return call


class AsyncTransportContract(LeasingTransportContract):
    """The suite for an AsyncCacheTransport: define ``make_transport()`` (or override the
    ``async_transport`` fixture) to return one. Lease tests run when it has
    lease/fill/release; its ``sync`` twin must see the same keys and leases.
    """

    @pytest.fixture
    def async_transport(self) -> Any:
        """The async transport under test."""
        return self.make_transport()

    @pytest.fixture
    def transport(self, async_transport: Any) -> Iterator[Blocking]:
        # The test's own event loop: closing it shuts down what the transport started there.
        with asyncio.Runner() as runner:
            yield Blocking(async_transport, runner)

    @pytest.fixture
    def leasing_transport(self, transport: Blocking) -> Blocking:
        missing = [name for name in ("lease", "fill", "release") if not hasattr(transport, name)]
        if missing:
            pytest.skip(f"{type(transport.awaited).__name__} has no {', '.join(missing)}")
        return transport

    def test_satisfies_the_protocol(self, async_transport: Any) -> None:
        assert isinstance(async_transport, AsyncCacheTransport)
        for name in ("get", "set", "delete"):
            # The core tells an async transport by its get being a coroutine function.
            assert inspect.iscoroutinefunction(getattr(async_transport, name)), name
        assert isinstance(async_transport.sync, CacheTransport)
        assert not inspect.iscoroutinefunction(async_transport.sync.get)

    def test_satisfies_the_leasing_protocol(self, leasing_transport: Blocking) -> None:
        for name in ("lease", "fill", "release"):
            assert inspect.iscoroutinefunction(getattr(leasing_transport.awaited, name)), name
        assert isinstance(leasing_transport.sync, LeasingTransport)

    def test_both_faces_offer_the_same_operations(self, async_transport: Any) -> None:
        # An operation only one face has is never used: a lease the twin lacks would
        # silently leave the stale-fill race open.
        one_face = [
            name
            for name in OPTIONAL
            if hasattr(async_transport, name) != hasattr(async_transport.sync, name)
        ]
        assert one_face == []

    def test_the_sync_twin_sees_the_same_keys(self, transport: Blocking, key: Keys) -> None:
        twin = transport.sync
        transport.set(key("a"), b"[a]", 60)
        assert twin.get(key("a")) == b"[a]"
        twin.set(key("b"), b"[b]", 60)
        assert transport.get(key("b")) == b"[b]"
        transport.delete(key("b"))
        assert twin.get(key("b")) is None
        twin.delete(key("a"))
        assert transport.get(key("a")) is None

    def test_the_sync_twin_shares_the_leases(self, leasing_transport: Blocking, key: Keys) -> None:
        twin = leasing_transport.sync
        _, token = leasing_transport.lease(key("row"))
        assert twin.lease(key("row")) == (None, None)
        assert twin.fill(key("row"), token, b"[row]", 60) is True
        assert leasing_transport.lease(key("row")) == (b"[row]", None)
        _, token = twin.lease(key("other"))
        leasing_transport.delete(key("other"))
        assert twin.fill(key("other"), token, b"[old]", 60) is False

    def test_a_second_event_loop_sees_the_same_keys(self, transport: Blocking, key: Keys) -> None:
        transport.set(key("row"), b"[row]", 60)
        assert asyncio.run(transport.awaited.get(key("row"))) == b"[row]"
        asyncio.run(transport.awaited.delete(key("row")))
        assert transport.get(key("row")) is None

    def lease_at_once(
        self, transport: Any, key: str, readers: int
    ) -> list[tuple[bytes | None, bytes | None]]:
        """What lease(key) gave each of readers tasks started together on one loop."""
        lease: Callable[[str], Awaitable[tuple[bytes | None, bytes | None]]]
        lease = transport.awaited.lease

        async def read_at_once() -> list[tuple[bytes | None, bytes | None]]:
            return await asyncio.gather(*(lease(key) for _ in range(readers)))

        found: list[tuple[bytes | None, bytes | None]] = transport.runner.run(read_at_once())
        return found
