"""Another process that writes: ``python -m tests._writer DB_URL REDIS_URL PREFIX ID NAME``.

Renames one Hero through a cached session and commits, then prints the
wall-clock time at which its commit (and so its invalidation) returned.
"""

import sys
import time

import redis
import sqlalchemy as sa
from sqlmodel import Session

from sqlmodel_cache import SQLModelCache
from sqlmodel_cache.transport import RedisSyncTransport
from tests.models import Hero


def main() -> None:
    db_url, redis_url, prefix, ident, name = sys.argv[1:6]
    SQLModelCache.configure(RedisSyncTransport(redis.Redis.from_url(redis_url)), key_prefix=prefix)
    engine = sa.create_engine(db_url)
    with Session(engine) as session:
        hero = session.get(Hero, int(ident))
        assert hero is not None
        hero.name = name
        session.commit()
    print(time.time(), flush=True)


if __name__ == "__main__":
    main()
