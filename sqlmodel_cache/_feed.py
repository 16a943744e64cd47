"""Cross-process invalidation: every process publishes, processes with an L1 listen.

One Redis pub/sub channel under the key prefix carries, per commit, the keys
it invalidated: a first line naming the sending process, then one key per line
(a line ending in ``*`` is a whole model's prefix). Every process publishes,
with or without an L1 of its own, since any of them may write. A process skips
its own messages: it dropped those rows from its L1 already. The listener is a
daemon thread on a blocking client, for sync and async apps alike: it must keep
running whatever event loops come and go.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._l1 import L1

_Reader: Any
try:
    from hiredis import Reader as _Reader
except ImportError:  # redis[hiredis] is the extra we name, but plain redis-py works too
    _Reader = None

log = logging.getLogger("sqlmodel_cache")

_POLL = 0.1  # seconds between checks of the stop flag
_MAX_BACKOFF = 2.0
_PING_EVERY = 0.5  # seconds between heartbeats on the subscription
_SILENCE = 2.0  # seconds without any reply after which the subscription counts as lost


def message(origin: str, keys: Sequence[str], prefixes: Sequence[str]) -> str:
    """One message: the sender, then a line per key or prefix."""
    return "\n".join([origin, *keys, *(prefix + "*" for prefix in prefixes)])


def parse(data: bytes | str) -> tuple[str, list[str], list[str]]:
    """The sender, keys and prefixes of one message."""
    text = data.decode() if isinstance(data, bytes) else data
    origin, _, body = text.partition("\n")
    keys, prefixes = [], []
    for line in body.split("\n"):
        if line.endswith("*"):
            prefixes.append(line[:-1])
        elif line:
            keys.append(line)
    return origin, keys, prefixes


def _receiver(conn: Any) -> Callable[[], list[Any]]:
    """What Redis sent on conn's subscription, waiting up to _POLL seconds ([] if nothing)."""
    if _Reader is None:  # redis-py without hiredis: its own parser, slower per message

        def parsed() -> list[Any]:
            if not conn.can_read(timeout=_POLL):
                return []
            return [conn.read_response(disconnect_on_error=False, push_request=True)]

        return parsed
    # With hiredis, read the socket (redis-py's, once it connected and authenticated)
    # straight into a reader of our own: a wake-up costs a recv and a C parse.
    sock = conn._sock
    sock.settimeout(_POLL)
    reader = _Reader()

    def raw() -> list[Any]:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return []
        if not data:
            raise ConnectionError("Redis closed the invalidation feed's connection")
        reader.feed(data)
        replies = []
        while (reply := reader.gets()) is not False:
            replies.append(reply)
        return replies

    return raw


class Feed:
    """Listens on the invalidation channel and applies others' messages to the local L1."""

    def __init__(self, client: Any, channel: str, l1: L1, origin: str) -> None:
        self._client = client
        self.channel = channel
        self._l1 = l1
        self.origin = origin
        self._own = (origin + "\n").encode()  # how this process's own messages begin
        # Told of every invalidation another process sends, before L1 drops it.
        self.listeners: list[Callable[[list[str], list[str]], None]] = []
        self.subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._listen, name="sqlmodel-cache-feed", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def restarted(self, origin: str) -> Feed:
        """A feed of its own for a forked child (the parent's thread is not there)."""
        return Feed(self._client, self.channel, self._l1, origin)

    def _listen(self) -> None:
        backoff = _POLL
        while not self._stop.is_set():
            # A connection of our own rather than redis-py's PubSub: this thread wakes
            # on every commit of every process, this one's included, and each wake-up
            # competes for the GIL with a request waiting on its own reply.
            conn = self._client.connection_pool.make_connection()
            try:
                conn.connect()
                conn.send_command("SUBSCRIBE", self.channel)
                receive = _receiver(conn)
                heard = pinged = time.monotonic()
                while not self._stop.is_set():
                    replies = receive()
                    now = time.monotonic()
                    if replies:
                        heard = now
                        for reply in replies:
                            if self._apply(reply):
                                backoff = _POLL
                    elif now - heard > _SILENCE:
                        # A partition may leave the socket open and quiet: without a
                        # reply to our pings, messages could be missed unnoticed.
                        raise ConnectionError(f"no reply from Redis for {_SILENCE} s")
                    if now - pinged >= _PING_EVERY:
                        conn.send_command("PING")
                        pinged = now
            except Exception as exc:  # noqa: BLE001 - the feed must outlive any error
                if self.subscribed.is_set():
                    log.warning("lost the invalidation feed, in-process tier off: %r", exc)
                self.subscribed.clear()
                self._l1.suspend()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            finally:
                with contextlib.suppress(Exception):  # closing a broken connection
                    conn.disconnect()
        self._l1.suspend()

    def _apply(self, reply: Any) -> bool:
        """Act on one reply on the subscription; True when it confirms the subscription."""
        if not isinstance(reply, list) or len(reply) != 3:  # hiredis gives a list subclass
            return False  # a PING's reply: heard is all it says
        kind, _channel, data = reply
        if kind == b"message":
            if data.startswith(self._own):
                return False  # this process dropped those rows already
            _origin, keys, prefixes = parse(data)
            for listener in self.listeners:
                listener(keys, prefixes)
            self._l1.drop(keys, prefixes)
            return False
        if kind == b"subscribe":
            # Anything cached before this moment may have missed a message.
            self._l1.resume()
            self.subscribed.set()
            return True
        return False
