"""The transport contract suite: what the core relies on from every transport, as tests."""

from __future__ import annotations

import inspect
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ..transport import CacheTransport, LeasingTransport
from ._pubsub import Subscription, redis_subscription

SHORT_TTL = 1  # seconds: the shortest TTL an int allows
# A real-time wait gives expiry this much longer than the TTL before calling it a failure.
GRACE = 2.0
# A published message reaches a subscriber on a healthy Redis within a millisecond.
MESSAGE_WAIT = 2.0

PAYLOADS = {
    "empty": b"",
    "nul": b"\x00",
    "nul-inside": b"row\x00row\x00",
    "not-utf8": b"\xff\xfe\x80\xc3(",
    "every-byte": bytes(range(256)),
    "crlf": b"$5\r\nhello\r\n",  # what a RESP reply looks like
    "one-mib": bytes(range(256)) * 4096,
}
KEY_NAMES = (
    "Hero:id=1",
    "Hero:id%3D1",  # the escaped spelling of a different key
    "hero:id=1",
    "Hero:name=a:b",
    "Hero:name=a%3Ab",
    "Hero:name=50%",
    "Hero:name=Zoë",
    "Hero:name=日本語",
    "Hero:name=🦸",
    "Hero:name=with space",
    "Hero:name=*?[]\\",
)
GLOB_NAMES = ("H*o", "H?ro", "[H]ero", "He\\ro")  # each a glob pattern that matches "Hero"


class Keys:
    """Builds a test's keys under its namespace and remembers them, to delete afterwards."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.made: list[str] = []

    def __call__(self, name: str) -> str:
        key = f"{self.namespace}:{name}"
        self.made.append(key)
        return key


class TransportContract:
    """get/set/delete with expiry: what every transport must do (see the package docstring).

    Subclass it in a test module as ``Test...`` and either define ``make_transport()``
    or override the ``transport`` fixture (which may then use other fixtures).
    """

    def make_transport(self) -> Any:
        """A new transport on an empty or shared store; keys of other tests may be there."""
        raise NotImplementedError(f"{type(self).__name__} must define make_transport()")

    def advance_clock(self, seconds: float) -> bool:
        """Move the transport's test clock on and return True, if it has one.

        Without one (the default) the expiry test stores 1-second entries and waits.
        """
        return False

    def subscribe(self, transport: Any, channel: str) -> Subscription | None:
        """A subscription to channel where invalidate() publishes, or None (not checked).

        Redis transports get one by default.
        """
        return redis_subscription(transport, channel)

    @pytest.fixture
    def transport(self) -> Any:
        """The transport under test."""
        return self.make_transport()

    @pytest.fixture
    def namespace(self) -> str:
        """The prefix of every key a test uses; override it to use a prefix of your own."""
        return f"smc-contract-{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def key(self, transport: Any, namespace: str) -> Iterator[Keys]:
        """key(name): a key under namespace; the test's keys are deleted afterwards."""
        keys = Keys(namespace)
        yield keys
        if keys.made:
            transport.delete(*keys.made)

    def test_satisfies_the_protocol(self, transport: Any) -> None:
        assert isinstance(transport, CacheTransport)
        for name in ("get", "set", "delete"):
            # The core takes a transport whose get is a coroutine function for an async one.
            assert not inspect.iscoroutinefunction(getattr(transport, name)), name

    def test_get_of_a_missing_key_is_none(self, transport: Any, key: Keys) -> None:
        assert transport.get(key("missing")) is None

    @pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
    def test_set_then_get_returns_the_same_bytes(
        self, transport: Any, key: Keys, payload: bytes
    ) -> None:
        transport.set(key("row"), payload, 60)
        found = transport.get(key("row"))
        assert type(found) is bytes
        assert found == payload

    def test_set_overwrites(self, transport: Any, key: Keys) -> None:
        transport.set(key("row"), b"first", 60)
        transport.set(key("row"), b"second", 60)
        assert transport.get(key("row")) == b"second"

    def test_delete_removes_the_given_keys_only(self, transport: Any, key: Keys) -> None:
        for name in "abc":
            transport.set(key(name), name.encode(), 60)
        transport.delete(key("a"), key("b"), key("absent"))
        assert [transport.get(key(name)) for name in "abc"] == [None, None, b"c"]
        transport.delete(key("absent"))  # absent keys: no error
        transport.delete()  # no keys: no error
        assert transport.get(key("c")) == b"c"

    def test_keys_may_hold_any_printable_text(self, transport: Any, key: Keys) -> None:
        for number, name in enumerate(KEY_NAMES):
            transport.set(key(name), str(number).encode(), 60)
        found = [transport.get(key(name)) for name in KEY_NAMES]
        assert found == [str(number).encode() for number in range(len(KEY_NAMES))]
        transport.delete(key(KEY_NAMES[0]))
        assert transport.get(key(KEY_NAMES[0])) is None
        assert transport.get(key(KEY_NAMES[1])) == b"1"

    def test_entries_expire_after_their_ttl(self, transport: Any, key: Keys) -> None:
        start = time.monotonic()
        expiring = self._store_expiring(transport, key)
        kept = key("kept")
        transport.set(kept, b"kept", 60)
        assert all(transport.get(name) is not None for name in expiring), "expired at once"
        if self.advance_clock(0.0):  # a test clock: step to just before and after each TTL
            elapsed = 0.0
            for ttl in sorted(set(expiring.values())):
                due = [name for name, after in expiring.items() if after == ttl]
                self.advance_clock(ttl - 0.01 - elapsed)
                assert all(transport.get(name) is not None for name in due), f"before {ttl} s"
                self.advance_clock(0.02)
                elapsed = ttl + 0.01
                assert [transport.get(name) for name in due] == [None] * len(due), f"{ttl} s"
        else:
            _wait_for_expiry(transport, expiring, start)
        assert transport.get(kept) == b"kept"

    def _store_expiring(self, transport: Any, key: Keys) -> dict[str, float]:
        """Store entries that must expire: {key: seconds from now}."""
        transport.set(key("set"), b"short", SHORT_TTL)
        return {key("set"): SHORT_TTL}


def _wait_for_expiry(transport: Any, expiring: dict[str, float], start: float) -> None:
    """Poll until every key is gone, none sooner than its TTL nor much later.

    A real clock has no hook to move it: the wait is on the condition itself (each
    key read back as None), bounded by a deadline, not a sleep that hopes.
    """
    pending = dict(expiring)
    deadline = start + max(expiring.values()) + GRACE
    while pending:
        for name, ttl in list(pending.items()):
            if transport.get(name) is None:
                elapsed = time.monotonic() - start  # start was taken before the write
                assert elapsed >= ttl - 0.05, f"{name} expired after {elapsed:.2f} s, TTL {ttl}"
                del pending[name]
        assert time.monotonic() < deadline, f"{sorted(pending)} outlived their TTL"
        time.sleep(0.01)


def _require(transport: Any, name: str) -> Any:
    """transport's optional method name, or skip the test."""
    method = getattr(transport, name, None)
    if method is None:
        tested = getattr(transport, "awaited", transport)  # the async suite's: what it runs
        pytest.skip(f"{type(tested).__name__} has no {name}()")
    return method


class LeasingTransportContract(TransportContract):
    """The contract, plus lease-guarded fills and, where present, lease_many, fill_many,
    delete_model and invalidate.

    ``lease_ttl``: set it to the lease TTL the transport was built with, to check that
    an abandoned lease expires.
    """

    lease_ttl: float | None = None

    @pytest.fixture
    def leasing_transport(self, transport: Any) -> Any:
        """The transport, for the lease tests."""
        return transport

    def _store_expiring(self, transport: Any, key: Keys) -> dict[str, float]:
        expiring = super()._store_expiring(transport, key)
        if hasattr(transport, "lease"):
            _, token = transport.lease(key("filled"))
            assert token is not None and transport.fill(key("filled"), token, b"v", SHORT_TTL)
            expiring[key("filled")] = SHORT_TTL
            if self.lease_ttl is not None:  # a reader that died between lease and fill
                assert transport.lease(key("abandoned"))[1] is not None
                expiring[key("abandoned")] = self.lease_ttl
        return expiring

    def test_satisfies_the_leasing_protocol(self, leasing_transport: Any) -> None:
        assert isinstance(leasing_transport, LeasingTransport)

    def test_a_lease_on_a_miss_gives_a_token(self, leasing_transport: Any, key: Keys) -> None:
        value, token = leasing_transport.lease(key("row"))
        assert value is None
        assert type(token) is bytes and token

    def test_a_second_lease_on_the_key_gives_nothing(
        self, leasing_transport: Any, key: Keys
    ) -> None:
        assert leasing_transport.lease(key("row"))[1] is not None
        assert leasing_transport.lease(key("row")) == (None, None)
        assert leasing_transport.lease(key("other"))[1] is not None  # leases are per key

    def test_concurrent_leases_give_one_token(self, leasing_transport: Any, key: Keys) -> None:
        readers = 8
        found = self.lease_at_once(leasing_transport, key("row"), readers)
        assert sorted(token is not None for _, token in found) == [False] * (readers - 1) + [True]
        assert all(value is None for value, _ in found)

    def lease_at_once(
        self, transport: Any, key: str, readers: int
    ) -> list[tuple[bytes | None, bytes | None]]:
        """What lease(key) gave each of readers threads asking at the same moment."""
        start = threading.Barrier(readers)

        def read() -> tuple[bytes | None, bytes | None]:
            start.wait()
            found: tuple[bytes | None, bytes | None] = transport.lease(key)
            return found

        with ThreadPoolExecutor(readers) as pool:
            return [future.result() for future in [pool.submit(read) for _ in range(readers)]]

    def test_a_lease_on_a_hit_gives_the_value(self, leasing_transport: Any, key: Keys) -> None:
        leasing_transport.set(key("row"), b"\x00row", 60)
        assert leasing_transport.lease(key("row")) == (b"\x00row", None)

    def test_a_fill_under_the_lease_stores_the_value_once(
        self, leasing_transport: Any, key: Keys
    ) -> None:
        _, token = leasing_transport.lease(key("row"))
        assert leasing_transport.fill(key("row"), token, b"[row]", 60) is True
        assert leasing_transport.get(key("row")) == b"[row]"
        assert leasing_transport.lease(key("row")) == (b"[row]", None)
        assert leasing_transport.fill(key("row"), token, b"[again]", 60) is False
        assert leasing_transport.get(key("row")) == b"[row]"

    def test_a_delete_after_the_lease_defeats_the_fill(
        self, leasing_transport: Any, key: Keys
    ) -> None:
        # The stale-fill race: a reader leased and read the old row, then a commit
        # invalidated the key; the reader's fill must not bring the old row back.
        _, stale = leasing_transport.lease(key("row"))
        leasing_transport.delete(key("row"))
        _, fresh = leasing_transport.lease(key("row"))  # a reader after the commit
        assert fresh is not None and fresh != stale
        assert leasing_transport.fill(key("row"), stale, b"[old]", 60) is False
        assert leasing_transport.fill(key("row"), fresh, b"[new]", 60) is True
        assert leasing_transport.get(key("row")) == b"[new]"
        _, stale = leasing_transport.lease(key("gone"))
        leasing_transport.delete(key("gone"))
        assert leasing_transport.fill(key("gone"), stale, b"[old]", 60) is False
        assert leasing_transport.get(key("gone")) is None

    def test_a_release_lets_the_next_reader_lease(self, leasing_transport: Any, key: Keys) -> None:
        _, token = leasing_transport.lease(key("row"))
        leasing_transport.release(key("row"), b"\x00lease:not-the-holder")
        assert leasing_transport.lease(key("row")) == (None, None)  # still held
        leasing_transport.release(key("row"), token)
        assert leasing_transport.get(key("row")) is None
        assert leasing_transport.lease(key("row"))[1] is not None
        assert leasing_transport.fill(key("row"), token, b"[late]", 60) is False

    def test_a_release_leaves_a_value_alone(self, leasing_transport: Any, key: Keys) -> None:
        _, token = leasing_transport.lease(key("row"))
        leasing_transport.delete(key("row"))
        leasing_transport.set(key("row"), b"[stored]", 60)
        leasing_transport.release(key("row"), token)
        assert leasing_transport.get(key("row")) == b"[stored]"

    def test_a_fill_with_a_foreign_token_fails(self, leasing_transport: Any, key: Keys) -> None:
        _, token = leasing_transport.lease(key("row"))
        _, other = leasing_transport.lease(key("other"))
        assert leasing_transport.fill(key("row"), b"\x00lease:forged", b"[x]", 60) is False
        assert leasing_transport.fill(key("row"), other, b"[x]", 60) is False
        assert leasing_transport.fill(key("never-leased"), token, b"[x]", 60) is False
        assert leasing_transport.get(key("never-leased")) is None
        leasing_transport.set(key("stored"), b"[stored]", 60)
        assert leasing_transport.fill(key("stored"), token, b"[x]", 60) is False
        assert leasing_transport.get(key("stored")) == b"[stored]"
        assert leasing_transport.fill(key("row"), token, b"[row]", 60) is True

    def test_fill_many_reports_each_fill(self, leasing_transport: Any, key: Keys) -> None:
        fill_many = _require(leasing_transport, "fill_many")
        tokens = {name: leasing_transport.lease(key(name))[1] for name in "abc"}
        leasing_transport.delete(key("b"))  # invalidated since its lease
        fills = [
            (key("a"), tokens["a"], b"[a]", 60),
            (key("b"), tokens["b"], b"[b]", 60),
            (key("c"), tokens["a"], b"[c]", 60),  # another key's token
        ]
        assert fill_many(fills) == [True, False, False]
        assert leasing_transport.get(key("a")) == b"[a]"
        assert leasing_transport.get(key("b")) is None
        assert leasing_transport.get(key("c")) != b"[c]"
        assert fill_many([]) == []

    def test_lease_many_answers_each_key_as_lease_would(
        self, leasing_transport: Any, key: Keys
    ) -> None:
        lease_many = _require(leasing_transport, "lease_many")
        leasing_transport.set(key("hit"), b"[hit]", 60)
        _, theirs = leasing_transport.lease(key("leased"))
        answers = lease_many([key("hit"), key("leased"), key("free"), key("free")])
        assert answers[0] == (b"[hit]", None)
        assert answers[1] == (None, None)
        (value, token), second = answers[2], answers[3]
        assert value is None and token is not None and second == (None, None)
        assert leasing_transport.fill(key("free"), token, b"[free]", 60)
        assert leasing_transport.fill(key("leased"), theirs, b"[theirs]", 60)
        assert lease_many([]) == []

    def test_delete_model_removes_every_key_under_the_prefix_only(
        self, leasing_transport: Any, key: Keys
    ) -> None:
        delete_model = _require(leasing_transport, "delete_model")
        doomed = [key(f"Hero:id={n}") for n in range(1200)]  # more than one SCAN batch
        for name in doomed:
            leasing_transport.set(name, b"v", 60)
        _, token = leasing_transport.lease(key("Hero:id=leased"))
        kept = [key("Heroine:id=1"), key("Team:id=1"), key("Hero"), key("Hero-id=1")]
        for name in kept:
            leasing_transport.set(name, b"kept", 60)
        delete_model(f"{key.namespace}:Hero:")
        assert [name for name in doomed if leasing_transport.get(name) is not None] == []
        assert [leasing_transport.get(name) for name in kept] == [b"kept"] * len(kept)
        # A lease goes too: the fill of a read that began before the bulk write fails.
        assert leasing_transport.fill(key("Hero:id=leased"), token, b"[old]", 60) is False

    @pytest.mark.parametrize("name", GLOB_NAMES)
    def test_delete_model_reads_glob_characters_literally(
        self, leasing_transport: Any, key: Keys, name: str
    ) -> None:
        delete_model = _require(leasing_transport, "delete_model")
        leasing_transport.set(key(f"{name}:id=1"), b"v", 60)
        leasing_transport.set(key("Hero:id=1"), b"kept", 60)
        delete_model(f"{key.namespace}:{name}:")
        assert leasing_transport.get(key(f"{name}:id=1")) is None
        assert leasing_transport.get(key("Hero:id=1")) == b"kept"

    def test_invalidate_deletes_publishes_and_fills(
        self, leasing_transport: Any, key: Keys
    ) -> None:
        invalidate = _require(leasing_transport, "invalidate")
        channel = f"{key.namespace}:invalidations"
        subscription = self.subscribe(leasing_transport, channel)
        try:
            leasing_transport.set(key("a"), b"[a]", 60)
            _, read_before = leasing_transport.lease(key("b"))  # a reader mid-read
            _, token = leasing_transport.lease(key("c"))  # the committer's own fill
            _, stale = leasing_transport.lease(key("d"))
            leasing_transport.delete(key("d"))
            fills = [(key("c"), token, b"[c]", 60), (key("d"), stale, b"[d]", 60)]
            message = f"origin\n{key('a')}\n{key('b')}"
            assert invalidate([key("a"), key("b")], channel, message, fills) == [True, False]
            assert leasing_transport.get(key("a")) is None
            assert leasing_transport.fill(key("b"), read_before, b"[old]", 60) is False
            assert leasing_transport.get(key("c")) == b"[c]"
            assert leasing_transport.get(key("d")) is None
            if subscription is not None:
                assert subscription.next_message(MESSAGE_WAIT) == message.encode()
            assert invalidate([], channel, "nothing", []) == []
            if subscription is not None:
                assert subscription.next_message(MESSAGE_WAIT) == b"nothing"
        finally:
            if subscription is not None:
                subscription.close()
