"""A WSGI app configured at import, for ``gunicorn --preload`` (sync workers).

``GET /`` answers Hero 1's name, ``POST /?name=x`` renames it; every answer carries
the serving process's pid in ``X-Pid``. The master imports this module, warms its
in-process tier with Hero 1, and then forks the workers: each inherits that tier.
"""

import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import sqlalchemy as sa
from sqlmodel import Session

from sqlmodel_cache import SQLModelCache
from sqlmodel_cache.transport import RedisSyncTransport
from tests.models import Hero

engine = sa.create_engine(os.environ["DATABASE_URL"])
# SQLAlchemy's advice for forking servers: a child must not reuse the parent's pooled
# connections.
os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
SQLModelCache.configure(
    RedisSyncTransport.from_url(os.environ["REDIS_URL"]),
    key_prefix=os.environ["CACHE_KEY_PREFIX"],
    l1=True,
)
with Session(engine) as warm:
    warm.get(Hero, 1)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    with Session(engine) as session:
        hero = session.get(Hero, 1)
        assert hero is not None
        if environ["REQUEST_METHOD"] == "POST":
            hero.name = parse_qs(environ["QUERY_STRING"])["name"][0]
            session.commit()
        name = hero.name
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Pid", str(os.getpid()))])
    return [name.encode()]
