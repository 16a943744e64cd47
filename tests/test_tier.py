"""The L1 store on its own: expiry, its bound, and the epoch that guards every put."""

from sqlmodel_cache import L1Config
from sqlmodel_cache._l1 import L1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tier(maxsize: int = 3, ttl: float = 10.0) -> tuple[L1, Clock]:
    clock = Clock()
    return L1(L1Config(maxsize=maxsize, ttl=ttl), usable=True, timer=clock), clock


def put(l1: L1, key: str) -> None:
    l1.put(key, "member", [key], (), l1.epoch)


def live(l1: L1, *keys: str) -> list[str]:
    return [key for key in keys if l1.get(key) is not None]


def test_a_row_expires_after_the_ttl():
    l1, clock = tier(ttl=10.0)
    put(l1, "a")
    clock.now += 9.9
    assert live(l1, "a") == ["a"]
    clock.now += 0.1
    assert live(l1, "a") == []
    assert len(l1) == 0


def test_a_full_tier_drops_its_oldest_row_and_a_refilled_row_starts_again():
    l1, clock = tier(maxsize=3)
    for key in "abc":
        put(l1, key)
        clock.now += 1
    put(l1, "a")  # filled again: now the newest, with a new expiry
    put(l1, "d")  # full: b, the oldest, goes
    assert live(l1, "a", "b", "c", "d") == ["a", "c", "d"]
    assert len(l1) == 3


def test_a_full_tier_drops_expired_rows_first():
    l1, clock = tier(maxsize=3, ttl=10.0)
    put(l1, "a")
    put(l1, "b")
    clock.now += 5
    put(l1, "c")
    clock.now += 6  # a and b expired, c has 4 s left
    put(l1, "d")
    assert list(l1._entries) == ["c", "d"]


def test_a_put_after_an_invalidation_is_refused():
    l1, _ = tier()
    epoch = l1.epoch  # read before the (slow) read of the row
    l1.drop(["a"])
    l1.put("a", "member", ["old"], (), epoch)
    assert live(l1, "a") == []


def test_an_unusable_tier_serves_nothing():
    l1, _ = tier()
    put(l1, "a")
    l1.suspend()
    assert live(l1, "a") == []
    put(l1, "a")
    assert len(l1) == 0
    l1.resume()
    assert live(l1, "a") == []  # starts empty
