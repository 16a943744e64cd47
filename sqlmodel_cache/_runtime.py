"""The configured cache: tiers, transport, settings and counters, with fail-open I/O.

Every transport call goes through the same gate: the circuit breaker must let
it through, and invalidations that could not be delivered earlier are
delivered first. So after an outage no entry is read or filled before the
deletions that were due while the cache was away.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._breaker import CLOSED, Breaker
from ._codec import ABSENT, Unencodable, freeze, mutable_positions, parse, thaw
from ._config import Settings
from ._errors import ConfigurationError, unreachable
from ._feed import Feed, message
from ._flights import Flights
from ._forks import reset_after_fork
from ._l1 import L1
from ._pending import Pending
from ._registry import Keyspace, ModelInfo
from ._stats import Stats
from .transport import LeasingTransport

if TYPE_CHECKING:
    from ._writes import Writes

log = logging.getLogger("sqlmodel_cache")

NOT_CONFIGURED = (
    "SQLModelCache is not configured: call SQLModelCache.configure() at startup, "
    "before the first session.get() of a cached model"
)

# The fill token of transports without leases: fills are best effort.
UNGUARDED = b""
# Why a miss gets no fill token: another reader holds the key's lease, or the
# cache could not be reached.
LEASED = "leased"
UNAVAILABLE = "unavailable"
# Why an entry could not answer a get (see Runtime._decode).
UNREADABLE = "unreadable"
PARTIAL = "partial"
OTHER_CLASS = "other_class"

Found = tuple[ModelInfo, list[Any]]  # a row: its class, and its column values


class Fill:
    """A row read under a lease, encoded, waiting to be stored; entry is its L1 form
    (None when its model has no L1)."""

    __slots__ = ("body", "entry", "epoch", "info", "key", "payload", "token", "ttl")

    def __init__(
        self,
        info: ModelInfo,
        body: str,
        key: str,
        token: bytes,
        payload: bytes,
        ttl: int,
        epoch: int,
        entry: tuple[ModelInfo, list[Any], tuple[int, ...]] | None,
    ) -> None:
        self.info = info
        self.body = body
        self.key = key
        self.token = token
        self.payload = payload
        self.ttl = ttl
        self.epoch = epoch
        self.entry = entry


class Held:
    """Keys a committing transaction holds in L2 (see Runtime.hold): the runtime that holds
    them, their models' names, the fills sent along, the function that reads the
    replies, and the monotonic time after which a hold may have expired."""

    __slots__ = ("fills", "keys", "names", "replies", "runtime", "until")

    def __init__(
        self,
        runtime: Runtime,
        keys: list[str],
        names: list[str],
        fills: Sequence[Fill],
        replies: Callable[[], list[bool]],
        until: float,
    ) -> None:
        self.runtime = runtime
        self.keys = keys
        self.names = names
        self.fills = fills
        self.replies = replies
        self.until = until


def _nothing() -> None:
    return None


def complete(values: list[Any], required: Iterable[int] | None) -> bool:
    """Whether values hold every column a get needs (None: a whole row by construction)."""
    return required is None or all(values[i] is not ABSENT for i in required)


def channel_of(key_prefix: str) -> str:
    """The pub/sub channel of invalidations under a key prefix."""
    return f"{key_prefix}:invalidations"


class _Throttle:
    """Lets one warning of each kind through per interval, so an outage is not a log flood."""

    def __init__(self, interval: float = 60.0) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}

    def __call__(self, kind: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(kind, -self._interval) < self._interval:
            return False
        self._last[kind] = now
        return True


class Runtime:
    """One configure() call's live state: L1, then the transport (L2), then the database."""

    def __init__(
        self,
        settings: Settings,
        transport: Any,
        l1: L1 | None = None,
        feed: Feed | None = None,
        origin: str = "",
        make_tiers: Callable[[], tuple[L1 | None, Feed | None]] | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport  # synchronous: the configured one, or a Bridge to it
        self.prefix = settings.key_prefix + ":"
        self.default_ttl = settings.default_ttl
        self.enabled = settings.enabled
        self.snapshot_isolation = settings.snapshot_isolation
        self.max_entry_bytes = settings.max_entry_bytes
        self.stats = Stats()
        self.flights = Flights()
        self.l1 = l1
        self.feed = feed
        self.origin = origin
        # Builds L1 and its feed the first time a model asks for them, if none exist yet
        # (a model with CacheConfig(l1=True) declared after configure(l1=False), say).
        self._make_tiers = make_tiers if l1 is None else None
        self._tiers_lock = threading.Lock()
        if feed is not None:  # other processes' commits, too
            feed.listeners.append(self.flights.invalidated)
        reset_after_fork(self)
        self.breaker = Breaker(settings.breaker.failures, settings.breaker.cooldown)
        self.prober: threading.Thread | None = None  # the breaker's latest probe
        self.pending = Pending()
        self._delivering = threading.Lock()
        self._blind_until = 0.0  # no reads before this (lost invalidations, no way to drop all)
        self._longest_ttl = settings.default_ttl
        self._l1_models: dict[ModelInfo, L1 | None] = {}
        # Engine -> (its execution options, why a get outside a transaction may not use
        # the cache): see _reads._session_reason.
        self.engine_reasons: weakref.WeakKeyDictionary[Any, tuple[Any, str | None]] = (
            weakref.WeakKeyDictionary()
        )
        self._throttle = _Throttle()
        self._warned_models: set[str] = set()
        self._warned_uncacheable: set[str] = set()
        # Chosen once: lease-guarded fills when the transport can, else best effort;
        # publishing invalidations to other processes' L1 when it can publish.
        self.leasing = isinstance(transport, LeasingTransport)
        self._fetch = self._lease if self.leasing else self._get
        self._store = self._store_guarded if self.leasing else self._store_unguarded
        self._fill_many = getattr(transport, "fill_many", None)
        self._lease_many = getattr(transport, "lease_many", None) if self.leasing else None
        self._begin_fills = getattr(transport, "begin_fill_many", None) if self.leasing else None
        self.channel = channel_of(settings.key_prefix) if hasattr(transport, "invalidate") else None
        holds = self.leasing and self.channel is not None and getattr(transport, "holds", False)
        self._begin_hold = transport.begin_hold if holds else None
        # A hold lives lease_ttl; past half of it, a commit no longer counts on it.
        self._hold_for = getattr(transport, "lease_ttl", 0.0) / 2
        self._delete_model = getattr(transport, "delete_model", None)
        # Called by close() (reset()): what runs on this configuration's behalf stops.
        self.on_close: list[Callable[[], None]] = []

    def close(self) -> None:
        for hook in self.on_close:
            hook()
        if self.feed is not None:
            self.feed.close()

    def _after_fork(self) -> None:
        """In a forked child: fresh locks and flights, an empty L1 that serves nothing until
        the child's own feed listens, and a name of its own on the invalidation channel
        (else it would skip the parent's messages as its own)."""
        self.origin = uuid.uuid4().hex
        self.flights = Flights()
        self.stats = Stats()
        self._tiers_lock = threading.Lock()
        self._delivering = threading.Lock()
        self.pending._after_fork()
        self.breaker._after_fork()
        if self.l1 is not None:
            self.l1._after_fork(usable=self.feed is None)
        if self.feed is not None:
            self.feed = self.feed.restarted(self.origin)
            self.feed.listeners.append(self.flights.invalidated)

    def l1_for(self, info: ModelInfo) -> L1 | None:
        """The in-process tier a model uses: its own setting, else the global one."""
        try:
            return self._l1_models[info]
        except KeyError:
            pass
        wanted = info.config.l1 if info.config.l1 is not None else self.settings.l1 is not None
        if wanted and self.l1 is None and self._make_tiers is not None:
            with self._tiers_lock:
                if self._make_tiers is not None:
                    self.l1, self.feed = self._make_tiers()
                    self._make_tiers = None
                    if self.feed is not None:
                        self.feed.listeners.append(self.flights.invalidated)
        tier = self._l1_models[info] = self.l1 if wanted else None
        return tier

    # -- the gate --------------------------------------------------------------

    def _failed(self, action: str, name: str | None, exc: Exception) -> None:
        self.stats.error(name)
        self.breaker.failure(at_once=unreachable(exc))
        if self._throttle(action):
            log.warning("cache %s failed, the database answers instead: %r", action, exc)

    def _ready(self) -> bool:
        """Whether the transport may be called now."""
        if self._blind_until and not self._sight_back():
            return False
        if self._delivering.locked():
            return False  # invalidations are on their way: L2 may still hold their rows
        if self.breaker.state is not CLOSED:
            # Probe once the cool-down is over, but never on a request's time: a
            # stalled Redis would cost that request a whole timeout.
            if self.breaker.allow():
                self.prober = threading.Thread(
                    target=self._probe, name="sqlmodel-cache-probe", daemon=True
                )
                self.prober.start()
            return False
        if self.pending.waiting and not self._deliver_pending():
            return False
        return not self._blind_until

    def _probe(self) -> None:
        """The breaker's probe: deliver the invalidations waiting, else read one key."""
        if self.pending.waiting:
            self._deliver_pending(wait=True)  # reports to the breaker either way
            return
        try:
            self.transport.get(f"{self.prefix}probe")
        except Exception as exc:  # noqa: BLE001 - the breaker hears of it
            self._failed("probe", None, exc)
        else:
            self.breaker.success()

    def _sight_back(self) -> bool:
        """Whether the blind spell after lost invalidations is over."""
        if time.monotonic() < self._blind_until:
            return False
        self._blind_until = 0.0
        return True

    def _deliver_pending(self, *, wait: bool = False) -> bool:
        """Deliver the invalidations that failed before; True when none is left waiting.

        Meanwhile readers do not use the cache (they go to the database): L2 may
        still hold the rows. Once delivered, L1 and the flights in progress drop
        them too, so a row read from L2 during the delivery is never kept.
        """
        if not self._delivering.acquire(blocking=wait):
            return False
        try:
            keys, prefixes, everything = self.pending.take()
            if everything:
                keys, prefixes = [], [self.prefix]
            if prefixes and self._delete_model is None:
                # Nothing can drop those entries: stop reading until they have expired.
                self._blind_until = time.monotonic() + self._longest_ttl
                prefixes = []
            try:
                self._send(keys, prefixes)
            except Exception as exc:  # noqa: BLE001
                self.pending.restore(keys, prefixes, everything)
                self._failed("invalidate", None, exc)
                return False
            self.breaker.success()
            self.flights.invalidated(keys, prefixes)
            if self.l1 is not None:
                self.l1.drop(keys, prefixes)
            self.pending.done()
            return True
        finally:
            self._delivering.release()

    def deliver_pending_now(self) -> None:
        """One attempt at the invalidations still waiting, whatever the breaker says."""
        if self.pending.waiting:
            self._deliver_pending(wait=True)

    def _send(
        self, keys: Sequence[str], prefixes: Sequence[str], fills: Sequence[Fill] = ()
    ) -> list[bool]:
        """Delete keys and prefixes in L2 and tell the other processes; then store fills
        (keys none of them deletes), in the same round trip where the transport can.
        Whether each fill was stored."""
        for prefix in prefixes:
            assert self._delete_model is not None
            self._delete_model(prefix)
        if self.channel is not None:
            if keys or prefixes:
                news = message(self.origin, keys, prefixes)
                if fills and self.leasing:
                    items = [(f.key, f.token, f.payload, f.ttl) for f in fills]
                    return self.transport.invalidate(keys, self.channel, news, items)  # type: ignore[no-any-return]
                self.transport.invalidate(keys, self.channel, news)
        elif keys:
            self.transport.delete(*keys)
        return self._store(fills) if fills else []

    # -- reads and fills ---------------------------------------------------------

    def _get(self, key: str) -> tuple[bytes | None, bytes | None]:
        return self.transport.get(key), UNGUARDED

    def _lease(self, key: str) -> tuple[bytes | None, bytes | None]:
        return self.transport.lease(key)  # type: ignore[no-any-return]

    def recall(self, info: ModelInfo, key: str) -> tuple[Found | None, int]:
        """((member, values), _) from the in-process tier, else (None, the L1 epoch to fill
        with); member is the class of the row (info itself, or a subclass)."""
        l1 = self.l1_for(info)
        if l1 is None:
            return None, 0
        entry = l1.get(key)
        if entry is not None:
            stored, values, positions, _expires = entry
            found = info.family.get(stored.codec.fingerprint)
            if found is not None and complete(values, found[1]):
                self.stats.hit(info.name, key, l1=True)
                return (found[0], thaw(values, positions)), 0
        return None, l1.epoch  # read before L2, so an invalidation meanwhile is seen

    @staticmethod
    def _remember(l1: L1, key: str, member: ModelInfo, values: list[Any], epoch: int) -> None:
        """Keep a private copy of values in L1 (the caller's instance owns values)."""
        positions = mutable_positions(values)
        l1.put(key, member, freeze(values, positions), positions, epoch)

    def fetch(
        self, info: ModelInfo, key: str, epoch: int
    ) -> tuple[Found | None, bytes | None, str | None]:
        """An L2 read: ((member, values), None, None) on a hit; on a miss (None, token,
        None) when this reader may fill, else (None, None, the reason it may not)."""
        why_not = UNAVAILABLE
        token = None
        if self._ready():
            try:
                data, token = self._fetch(key)
                if data is not None:
                    found = self._decode(info, key, data)
                    if type(found) is tuple:
                        self.breaker.success()
                        self.stats.hit(info.name, key)
                        l1 = self.l1_for(info)
                        if l1 is not None:
                            self._remember(l1, key, *found, epoch)
                        return found, None, None
                    if found is OTHER_CLASS:  # another class's row: the database says None
                        self.stats.miss(info.name, key)
                        return None, None, OTHER_CLASS
                    if found is UNREADABLE:
                        self._unreadable(info, key)
                    if self.leasing:  # replace it under a lease of our own
                        self.transport.delete(key)
                        data, token = self._fetch(key)
                self.breaker.success()
                why_not = LEASED
            except Exception as exc:  # noqa: BLE001 - fail-open: any transport error is a miss
                self._failed("read", info.name, exc)
                token = None
        self.stats.miss(info.name, key)
        return None, token, None if token is not None else why_not

    def lease_entry(self, info: ModelInfo, key: str) -> tuple[bytes | None, bytes | None]:
        """An entry that is not a row (a natural key's): (value, None) when stored, else
        (None, the lease to fill it under, or None)."""
        if not self._ready():
            return None, None
        try:
            found = self._fetch(key)
        except Exception as exc:  # noqa: BLE001 - fail-open
            self._failed("read", info.name, exc)
            return None, None
        self.breaker.success()
        return found

    def drop_entry(self, info: ModelInfo, key: str) -> None:
        """Delete an entry found stale (a natural key's whose row changed)."""
        if not self._ready():
            return
        try:
            self.transport.delete(key)
        except Exception as exc:  # noqa: BLE001 - it stays stale, and is checked again
            self._failed("delete", info.name, exc)
        else:
            self.breaker.success()

    def fetch_many(
        self, info: ModelInfo, keys: Sequence[str], epoch: int
    ) -> list[tuple[Found | None, bytes | None, str | None]]:
        """fetch() of each key, in one round trip where the transport can; an entry that
        cannot answer a get of info is handled as fetch() handles it (rare: one by one)."""
        if not self._ready():
            for key in keys:
                self.stats.miss(info.name, key)
            return [(None, None, UNAVAILABLE)] * len(keys)
        try:
            replies = self._fetch_many(keys)
        except Exception as exc:  # noqa: BLE001 - fail-open
            self._failed("read", info.name, exc)
            for key in keys:
                self.stats.miss(info.name, key)
            return [(None, None, UNAVAILABLE)] * len(keys)
        self.breaker.success()
        answers: list[tuple[Found | None, bytes | None, str | None]] = []
        l1 = self.l1_for(info)
        for key, (data, token) in zip(keys, replies):
            if data is None:
                self.stats.miss(info.name, key)
                answers.append((None, token, None if token is not None else LEASED))
                continue
            found = self._decode(info, key, data)
            if type(found) is not tuple:
                answers.append(self.fetch(info, key, epoch))
                continue
            self.stats.hit(info.name, key)
            if l1 is not None:
                self._remember(l1, key, *found, epoch)
            answers.append((found, None, None))
        return answers

    def _fetch_many(self, keys: Sequence[str]) -> list[tuple[bytes | None, bytes | None]]:
        if self._lease_many is not None:
            return self._lease_many(keys)  # type: ignore[no-any-return]
        return [self._fetch(key) for key in keys]

    def _decode(self, info: ModelInfo, key: str, data: bytes) -> Found | str:
        """The class and values of an entry for a get of info, else why it cannot serve one:
        UNREADABLE (not a valid entry: replace it), PARTIAL (it lacks columns this get
        loads: replace it with a whole row) or OTHER_CLASS (a valid entry of a class that
        info does not cover: leave it)."""
        if len(data) > self.max_entry_bytes:
            return UNREADABLE
        entry = parse(data)
        if entry is None:
            return UNREADABLE
        fingerprint = entry[1]
        found = info.family.get(fingerprint)
        if found is None:
            return OTHER_CLASS if fingerprint in info.keyspace.members else UNREADABLE
        member, required = found
        values = member.codec.values(entry)
        if values is None:
            return UNREADABLE
        # Defence in depth: an entry must hold the row its key names.
        if self.prefix + member.template.body([values[i] for i in member.pk_positions]) != key:
            return UNREADABLE
        if not complete(values, required):
            return PARTIAL
        return member, values

    def _unreadable(self, info: ModelInfo, key: str) -> None:
        if info.name not in self._warned_models:
            self._warned_models.add(info.name)
            log.warning(
                "ignoring an unreadable cache entry for %s (%s); it is replaced", info.name, key
            )

    def prepare(
        self,
        info: ModelInfo,
        member: ModelInfo,
        key: str,
        token: bytes,
        values: list[Any],
        ttl: int,
        epoch: int,
    ) -> Fill | None:
        """A row of class member, read by a get of info under key's lease, made ready to
        store: encoded now, since the caller's instance may change its values later.
        None (and the lease released) when the row cannot be cached."""
        try:
            payload = member.codec.encode(values)
        except Unencodable as exc:
            self.stats.unfilled(info.name, f"uncacheable:{exc.column}")
            self._uncacheable(member, exc)
            self.release(info, key, token)
            return None
        if len(payload) > self.max_entry_bytes:
            self.stats.unfilled(info.name, "too_large")
            self.release(info, key, token)
            return None
        entry = None
        if self.l1_for(info) is not None:
            positions = mutable_positions(values)
            entry = (member, freeze(values, positions), positions)
        return Fill(info, key[len(self.prefix) :], key, token, payload, ttl, epoch, entry)

    def fill(self, fills: Sequence[Fill]) -> list[bool]:
        """Store rows under their leases, in one round trip where the transport can;
        whether each was stored (False: a lease was lost, or the cache unreachable)."""
        if not self._ready():
            return self._unfilled(fills)
        try:
            stored = self._store(fills)
        except Exception as exc:  # noqa: BLE001
            self._failed("fill", fills[0].info.name, exc)
            return self._unfilled(fills)
        self.breaker.success()
        return self._stored(fills, stored)

    def start_fill(self, fills: Sequence[Fill]) -> Callable[[], None]:
        """fill(fills) in two halves where the transport can: sent now, while the caller
        goes on to wait for something else (the database), and the replies read by the
        returned function. Elsewhere the returned function does the whole fill."""
        if self._begin_fills is None or not self._ready():

            def whole() -> None:
                self.fill(fills)

            return whole
        try:
            replies = self._begin_fills([(f.key, f.token, f.payload, f.ttl) for f in fills])
        except Exception as exc:  # noqa: BLE001
            self._failed("fill", fills[0].info.name, exc)
            self._unfilled(fills)
            return _nothing

        def finish() -> None:
            try:
                stored = replies()
            except Exception as exc:  # noqa: BLE001
                self._failed("fill", fills[0].info.name, exc)
                self._unfilled(fills)
            else:
                self.breaker.success()
                self._stored(fills, stored)

        return finish

    def _unfilled(self, fills: Sequence[Fill]) -> list[bool]:
        for fill in fills:
            self.stats.unfilled(fill.info.name, UNAVAILABLE)
        return [False] * len(fills)

    def _stored(self, fills: Sequence[Fill], stored: Sequence[bool]) -> list[bool]:
        """Count what a store did and keep the stored rows in L1."""
        for fill, ok in zip(fills, stored):
            name = fill.info.name
            if not ok:  # an invalidation took the lease: the row may be stale already
                self.stats.unfilled(name, "lease_lost")
                continue
            self._longest_ttl = max(self._longest_ttl, fill.ttl)
            self.stats.fill(name)
            l1 = self.l1_for(fill.info)
            if l1 is not None and fill.entry is not None:
                l1.put(fill.key, *fill.entry, fill.epoch)
        return list(stored)

    def _store_guarded(self, fills: Sequence[Fill]) -> list[bool]:
        items = [(f.key, f.token, f.payload, f.ttl) for f in fills]
        if self._fill_many is not None:
            return self._fill_many(items)  # type: ignore[no-any-return]
        return [self.transport.fill(*item) for item in items]

    def _store_unguarded(self, fills: Sequence[Fill]) -> list[bool]:
        for fill in fills:
            self.transport.set(fill.key, fill.payload, fill.ttl)
        return [True] * len(fills)

    def _uncacheable(self, info: ModelInfo, exc: Unencodable) -> None:
        """Say once per model, loudly, which column keeps its rows out of the cache."""
        if info.name in self._warned_uncacheable:
            return
        self._warned_uncacheable.add(info.name)
        column = exc.column or "?"
        sql_type = info.column_types.get(column)
        log.warning(
            "%s rows are not cached: column %s (%r) loaded a value with no exact form (%s); "
            "such gets are answered by the database (SQLModelCache.explain(%s) and "
            "stats().by_model[%r].unfilled say more)",
            info.name,
            column,
            sql_type,
            exc.reason,
            info.name,
            info.name,
        )

    def release(self, info: ModelInfo, key: str, token: bytes) -> None:
        """Give up a lease this reader will not fill, so the next reader may."""
        if token is UNGUARDED or not self._ready():
            return  # an unreleased lease just expires
        try:
            self.transport.release(key, token)
        except Exception as exc:  # noqa: BLE001
            self._failed("release", info.name, exc)
        else:
            self.breaker.success()

    # -- holds: a commit's invalidation, sent while the database commits -----------

    def hold(self, writes: Writes, fills: Sequence[Fill]) -> Held | None:
        """Just before the database commits writes: replace their rows in L2 with holds,
        tell other processes and send fills, in one write whose replies settle() reads
        after the commit. From the hold until its release nobody can read or fill those
        keys, so a row read before the commit can never be stored: no round trip is left
        to wait for after the commit. None where the transport has no holds, for writes
        of whole models, or when the cache is not ready (the commit then invalidates
        after the database has answered, as always)."""
        if self._begin_hold is None or writes.whole or not self._ready():
            return None
        keys, names = self._keys_of(writes)
        if not keys:
            return None
        items = [(f.key, f.token, f.payload, f.ttl) for f in fills]
        until = time.monotonic() + self._hold_for
        try:
            assert self.channel is not None
            replies = self._begin_hold(keys, self.channel, message(self.origin, keys, ()), items)
        except Exception as exc:  # noqa: BLE001 - the commit invalidates the usual way
            self._failed("invalidate", names[0], exc)
            return None
        return Held(self, keys, names, fills, replies, until)

    def settle(self, held: Held, *, committed: bool) -> bool:
        """After the database's commit (or its failure): read the hold's replies and
        release the holds. True when a commit's rows are invalidated; False when the
        caller must still invalidate them (the replies were lost, or the commit took so
        long that a hold may have expired before it ended), and after a failed commit."""
        try:
            stored = held.replies()
        except Exception as exc:  # noqa: BLE001
            self._failed("invalidate", held.names[0], exc)
            self._unfilled(held.fills)
            return False
        self.breaker.success()
        self._stored(held.fills, stored)
        # Only now is the hold surely in place: a reader's call on another connection
        # may have reached Redis before it, although sent after it, and taken the old
        # row. Rows loaded before this point are not to be kept or shared.
        self.flights.invalidated(held.keys, ())
        if self.l1 is not None:
            self.l1.drop(held.keys, ())
        try:
            self.transport.unhold(held.keys)
        except Exception as exc:  # noqa: BLE001 - the holds expire on their own
            self._failed("release", held.names[0], exc)
        if not committed or time.monotonic() > held.until:
            return False
        for name in held.names:
            self.stats.invalidated(name)
        return True

    # -- invalidation -------------------------------------------------------------

    def invalidate(self, bodies: Iterable[tuple[Keyspace, str]]) -> None:
        """Delete the entries of these (keyspace, key body) pairs, in every tier and process."""
        keys: list[str] = []
        names: list[str] = []
        for info, body in bodies:
            keys.append(self.prefix + body)
            names.append(info.name)
        if keys:
            self._invalidate(names, keys, ())

    def _keys_of(self, writes: Writes) -> tuple[list[str], list[str]]:
        """The keys of the rows writes touched, and the name of each one's model."""
        keys: list[str] = []
        names: list[str] = []
        for space, bodies in writes.rows.items():
            for body in bodies:
                keys.append(self.prefix + body)
                names.append(space.name)
        return keys, names

    def invalidate_writes(self, writes: Writes, fills: Sequence[Fill] = ()) -> None:
        """Delete every entry a committed transaction's writes made stale, then store the
        rows it read and did not write (fills), in one round trip where the transport can."""
        keys, names = self._keys_of(writes)
        if writes.whole:
            self.invalidate_models(writes.whole)
        if keys:
            self._invalidate(names, keys, (), fills)
        elif fills:
            self.fill(fills)

    def drop_models(self, keyspaces: Iterable[Keyspace]) -> None:
        """Every entry of these keyspaces, in every tier and process (an operator's call:
        a transport that cannot drop them is an error, not a warning)."""
        self._require_delete_model("invalidate_model()")
        for keyspace in keyspaces:
            self._invalidate([keyspace.name], [], (f"{self.prefix}{keyspace.name}:",))

    def clear(self) -> None:
        """Every entry under the key prefix, in every tier and process."""
        self._require_delete_model("clear()")
        self._invalidate([], [], (self.prefix,))

    def _require_delete_model(self, operation: str) -> None:
        if self._delete_model is None:
            raise ConfigurationError(
                f"{operation} needs a transport with delete_model(prefix); "
                f"{type(self.transport).__name__} has none"
            )

    def invalidate_models(self, keyspaces: Iterable[Keyspace]) -> None:
        """Delete every entry of these keyspaces (writes whose rows are unknown)."""
        for info in keyspaces:
            prefix = f"{self.prefix}{info.name}:"
            if self._delete_model is None:
                self.stats.error(info.name)
                if self._throttle("whole-model"):
                    log.warning(
                        "cannot drop every %s entry: %s has no delete_model(); entries of "
                        "rows written in bulk may be stale until their TTL",
                        info.name,
                        type(self.transport).__name__,
                    )
                self.flights.invalidated((), [prefix])
                if self.l1 is not None:
                    self.l1.drop((), [prefix])
                continue
            self._invalidate([info.name], [], (prefix,))

    def _invalidate(
        self,
        names: list[str],
        keys: list[str],
        prefixes: tuple[str, ...],
        fills: Sequence[Fill] = (),
    ) -> None:
        self.flights.invalidated(keys, prefixes)  # no reader may take a row loaded before
        if not self._ready():
            self.pending.add(keys, prefixes)  # delivered before the next read or fill
            self._unfilled(fills)
        else:
            try:
                stored = self._send(keys, prefixes, fills)
            except Exception as exc:  # noqa: BLE001
                self.pending.add(keys, prefixes)
                self._failed("invalidate", names[0] if names else None, exc)
                self._unfilled(fills)
            else:
                self.breaker.success()
                for name in names:
                    self.stats.invalidated(name)
                self._stored(fills, stored)
        if self.l1 is not None:  # after L2, so a reader cannot bring the old row back
            self.l1.drop(keys, prefixes)


current: Runtime | None = None
