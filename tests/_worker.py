"""Another process on the same cache: ``python -m tests._worker DB_URL REDIS_URL PREFIX``.

Reads commands from stdin, one per line, and answers each with one line:
``write ID NAME`` renames a Hero through a cached session and commits (``ok``);
``read ID`` answers the name a cached get returns, then the database's.
"""

import sys

import redis
import sqlalchemy as sa
from sqlmodel import Session

from sqlmodel_cache import SQLModelCache
from sqlmodel_cache.transport import RedisSyncTransport
from tests.models import Hero


def main() -> None:
    db_url, redis_url, prefix = sys.argv[1:4]
    SQLModelCache.configure(RedisSyncTransport(redis.Redis.from_url(redis_url)), key_prefix=prefix)
    engine = sa.create_engine(db_url)
    for line in sys.stdin:
        command, ident, *rest = line.split()
        with Session(engine) as session:
            hero = session.get(Hero, int(ident))
            if command == "write":
                assert hero is not None
                hero.name = rest[0]
                session.commit()
                answer = "ok"
            else:
                truth = session.execute(sa.text(f"SELECT name FROM hero WHERE id = {int(ident)}"))
                answer = f"{hero.name if hero else None} {truth.scalar()}"
        # Answered once the session has ended: its fills (sent as it ends) have landed.
        print(answer, flush=True)
    engine.dispose()


if __name__ == "__main__":
    main()
