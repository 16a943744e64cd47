"""Another process on the same cache: ``python -m tests._worker DB_URL REDIS_URL PREFIX [l1]``.

Reads commands from stdin, one per line, and answers each with one line:
``write ID NAME`` renames a Hero through a cached session and commits (``ok``);
``read ID`` answers the name a cached get returns, then the database's;
``tier ID`` answers where a cached get of the row came from: ``l1``, ``l2`` or ``db``;
``news`` waits (up to 5 s) for an invalidation to reach this process's L1 since the last
``tier`` and answers ``yes`` or ``no``. With ``l1`` the cache has its in-process tier on,
and the worker answers ``ready`` once its invalidation feed listens.
"""

import sys

import redis
import sqlalchemy as sa
from sqlmodel import Session

from sqlmodel_cache import SQLModelCache, _runtime
from sqlmodel_cache.transport import RedisSyncTransport
from tests.models import Hero


def main() -> None:
    db_url, redis_url, prefix, *flags = sys.argv[1:]
    transport = RedisSyncTransport(redis.Redis.from_url(redis_url))
    SQLModelCache.configure(transport, key_prefix=prefix, l1="l1" in flags)
    engine = sa.create_engine(db_url)
    runtime = _runtime.current
    assert runtime is not None
    if runtime.feed is not None:
        print("ready" if runtime.feed.subscribed.wait(5) else "no feed", flush=True)
    epoch = 0
    for line in sys.stdin:
        command, *args = line.split()
        if command == "news":
            assert runtime.l1 is not None
            print("yes" if runtime.l1.wait_past(epoch, 5) else "no", flush=True)
            continue
        ident = int(args[0])
        with Session(engine) as session:
            if runtime.l1 is not None:
                epoch = runtime.l1.epoch
            before = SQLModelCache.stats()
            hero = session.get(Hero, ident)
            if command == "write":
                assert hero is not None
                hero.name = args[1]
                session.commit()
                answer = "ok"
            elif command == "tier":
                after = SQLModelCache.stats()
                hits, l1_hits = after.hits - before.hits, after.l1_hits - before.l1_hits
                answer = "l1" if l1_hits else "l2" if hits else "db"
            else:
                truth = session.execute(sa.text(f"SELECT name FROM hero WHERE id = {ident}"))
                answer = f"{hero.name if hero else None} {truth.scalar()}"
        # Answered once the session has ended: its fills (sent as it ends) have landed.
        print(answer, flush=True)
    engine.dispose()


if __name__ == "__main__":
    main()
