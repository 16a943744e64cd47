"""The ``sqlmodel-cache`` command: check Redis, read one entry, flush entries, explain a model.

Run as ``sqlmodel-cache ...`` or ``python -m sqlmodel_cache ...``. Failures the
user can act on (Redis unreachable, a bad URL, a model that cannot be imported)
end in one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from . import __version__
from ._cache import SQLModelCache
from ._codec import VERSION, parse
from ._errors import CacheError
from ._feed import message
from ._registry import ModelInfo, registry
from ._runtime import channel_of
from .transport._base import HOLD_MARK, LEASE_MARK
from .transport._redis import RedisSyncTransport, _glob_escape

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_PREFIX = "sqlmodelcache"
PINGS = 5  # timed PINGs; ping reports their median
_SCAN_BATCH = 500

F = TypeVar("F", bound=Callable[..., Any])


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:  # a malformed URL: from_url says so
        return None


def _redacted(url: str) -> str:
    """url without its password, to print."""
    password = _password(url)
    return url.replace(f":{password}@", ":***@") if password else url


def _failure(url: str, text: str) -> click.ClickException:
    """A one-line error naming url, with no password in it."""
    if url not in text:
        text = f"{url}: {text}"
    password = _password(url)
    if password:
        text = text.replace(f":{password}@", ":***@")
    return click.ClickException(" ".join(text.split()))


@contextlib.contextmanager
def _reporting(url: str) -> Iterator[None]:
    """Turns a Redis or configuration failure into a one-line error naming url."""
    try:
        yield
    except CacheError as exc:  # ConfigurationError (a bad URL), TransportError
        raise _failure(url, str(exc)) from None
    except (redis.RedisError, RedisClusterException, OSError) as exc:
        cause = str(exc) or type(exc).__name__
        raise _failure(url, f"cannot reach Redis at {url}: {cause}") from None


def _connect(url: str, cluster: bool) -> RedisSyncTransport:
    """A transport on url, with the library's safe timeouts."""
    with _reporting(url):
        return RedisSyncTransport.from_url(url, cluster=cluster)


def _redis_options(command: F) -> F:
    """--url and --cluster, shared by every command that talks to Redis."""
    command = click.option(
        "--cluster",
        is_flag=True,
        help="The URL names a node of a Redis Cluster.",
    )(command)
    return click.option(
        "--url",
        envvar="REDIS_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="Redis URL (redis://, rediss://, unix://); the REDIS_URL environment "
        "variable, if set, is the default.",
    )(command)


def _import_model(target: str) -> type:
    """The class named by ``module:Model`` (``module:Outer.Model`` too), imported as
    ``python -m`` would: from the current directory first."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise click.ClickException(f"expected module:Model, got {target!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is one line
        cause = f"{type(exc).__name__}: {exc}"
        raise click.ClickException(f"cannot import {module_name!r}: {cause}") from None
    for name in attribute.split("."):
        try:
            found = getattr(found, name)
        except AttributeError:
            raise click.ClickException(f"{module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(found, type):
        raise click.ClickException(f"{target} is not a class, it is {found!r}")
    return found


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sqlmodel-cache")
def cli() -> None:
    """Operate the Redis side of sqlmodel-cache: check the server, read an entry,
    flush a model's entries (every process's in-process tier too), explain a model.

    Keys look like PREFIX:Model:field=value, PREFIX being the key_prefix given to
    SQLModelCache.configure() (sqlmodelcache by default).
    """


# -- ping ----------------------------------------------------------------------------------


@cli.command(short_help="Check that Redis answers, and how fast.")
@_redis_options
def ping(url: str, cluster: bool) -> None:
    """Check that Redis answers: round-trip time, server version, cluster or not."""
    transport = _connect(url, cluster)
    client: Any = transport.client
    # On a cluster, the timed PINGs go to one node (a plain PING goes to every node).
    one = {"target_nodes": RedisCluster.DEFAULT_NODE} if cluster else {}
    with _reporting(url):
        client.ping()  # connects (every node, on a cluster): the timed PINGs below do not
        times = []
        for _ in range(PINGS):
            start = time.perf_counter()
            client.ping(**one)
            times.append((time.perf_counter() - start) * 1000)
        server = client.info("server", **one)
        if cluster:
            primaries = len(client.get_primaries())
            shape = f"Redis Cluster, {len(client.get_nodes())} nodes ({primaries} primaries)"
        elif server.get("redis_mode") == "cluster":
            shape = "a Redis Cluster node: pass --cluster to use the whole cluster"
        else:
            shape = "standalone"
    click.echo(f"{_redacted(url)}: reachable")
    click.echo(f"  latency: {statistics.median(times):.2f} ms (median of {PINGS} PINGs)")
    click.echo(f"  version: Redis {server.get('redis_version', 'unknown')}")
    click.echo(f"  mode:    {shape}")


# -- inspect -------------------------------------------------------------------------------


def _model_of(key: str) -> str | None:
    """The model name in a cache key, or None when key does not have that form.

    Escaped key values hold no ``:`` or ``=``: the first part with an ``=`` is the first
    field, the one before it the model (the prefix before that may hold ``:`` itself).
    """
    parts = key.split(":")
    first = next((i for i, part in enumerate(parts) if "=" in part), 0)
    return parts[first - 1] if first >= 2 and parts[first - 1] else None


def _ttl_text(milliseconds: int) -> str:
    if milliseconds == -1:
        return "none (kept until deleted)"
    if milliseconds < 0:
        return "-"
    return f"{milliseconds / 1000:.1f} s"


def _decoded(entry: list[Any], info: ModelInfo, target: str) -> list[str]:
    """Lines showing entry's values decoded by the model's codec (or why they cannot be)."""
    found = info.family.get(entry[1])  # the model, or a cached subclass stored under its key
    if found is None:
        return [
            f"fingerprint {entry[1]} does not match {target}'s ({info.codec.fingerprint}): "
            "an entry for another version of the model's schema, read as a miss"
        ]
    member = found[0]
    values = member.codec.values(entry)
    if values is None:
        return [f"the values do not decode as {member.name}'s: read as a miss"]
    columns = member.codec.columns
    width = max((len(name) for name in columns), default=0)
    lines = [f"decoded as {member.cls.__module__}:{member.cls.__qualname__}:"]
    return lines + [f"  {name:<{width}} = {value!r}" for name, value in zip(columns, values)]


def _describe(value: bytes, info: ModelInfo | None, target: str) -> list[str]:
    """What a stored value is, as lines of the report."""
    if value.startswith(HOLD_MARK):
        holders = value[len(HOLD_MARK) :].decode(errors="replace")
        return [f"state:       held by a committing transaction ({holders} holder(s))"]
    if value.startswith(LEASE_MARK):
        return ["state:       lease held by a reader (its database read is in flight)"]
    entry = parse(value)
    if entry is None:
        lines = ["state:       not a sqlmodel-cache entry"]
        with contextlib.suppress(ValueError, RecursionError):
            other = json.loads(value)
            if type(other) is list and len(other) >= 2 and type(other[0]) is int:
                lines[0] += f" of this version (format {other[0]}; this library reads {VERSION})"
        preview = value[:60]
        lines.append(f"starts with: {preview!r}" + (" ..." if len(value) > 60 else ""))
        return lines
    lines = [
        "state:       entry",
        f"format:      {entry[0]}",
        f"fingerprint: {entry[1]}",
        "values (as stored, one per column):",
    ]
    lines += [f"  {json.dumps(item, ensure_ascii=False)}" for item in entry[2:]]
    if info is not None:
        lines += _decoded(entry, info, target)
    return lines


@cli.command(short_help="Decode what Redis holds under one key.")
@_redis_options
@click.option(
    "--model",
    "target",
    metavar="MODULE:MODEL",
    help="Decode the values with this model's codec, e.g. myapp.models:Hero.",
)
@click.argument("key")
def inspect(url: str, cluster: bool, target: str | None, key: str) -> None:
    """Show what Redis holds under KEY: an entry, a lease, a hold, or nothing.

    KEY is a whole key, e.g. sqlmodelcache:Hero:id=42.
    """
    info = None
    if target is not None:
        info = registry.info(_import_model(target))
        if info is None:
            raise click.ClickException(f"{target} is not a cached model")
    transport = _connect(url, cluster)
    client: Any = transport.client
    with _reporting(url):
        kind = client.type(key).decode()
        value = client.get(key) if kind == "string" else None
        ttl = client.pttl(key)
    click.echo(f"key:         {key}")
    click.echo(f"model:       {_model_of(key) or '? (not PREFIX:Model:field=value)'}")
    if kind == "none":
        click.echo("state:       absent")
        return
    click.echo(f"ttl:         {_ttl_text(ttl)}")
    if value is None:
        click.echo(f"state:       not a sqlmodel-cache entry (a Redis {kind})")
        return
    click.echo(f"size:        {len(value)} bytes")
    for line in _describe(value, info, target or ""):
        click.echo(line)


# -- flush ---------------------------------------------------------------------------------


@cli.command(short_help="Delete a model's entries, or all, in every tier.")
@_redis_options
@click.option(
    "--prefix",
    default=DEFAULT_PREFIX,
    show_default=True,
    help="The key_prefix given to SQLModelCache.configure().",
)
@click.option("--all", "everything", is_flag=True, help="Every entry under the prefix.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (--all).")
@click.argument("model", required=False)
def flush(
    url: str, cluster: bool, prefix: str, everything: bool, yes: bool, model: str | None
) -> None:
    """Delete the entries of MODEL (a class name, as in keys), or --all under the prefix.

    Also publishes the invalidation, so that every process's in-process tier (L1)
    drops those rows too. Safe while applications run: their next gets read the
    database and refill.
    """
    if not prefix or not prefix.isprintable():
        raise click.UsageError(f"--prefix must be a non-empty printable string, got {prefix!r}")
    if everything == (model is not None):
        raise click.UsageError("give either MODEL or --all")
    if model is not None and not model.isidentifier():
        raise click.UsageError(f"MODEL must be a class name as in keys, got {model!r}")
    scope = f"{prefix}:{model}:" if model is not None else f"{prefix}:"
    if everything and not yes:
        question = f"Delete every entry under {prefix}: at {_redacted(url)}?"
        if not sys.stdin.isatty():
            raise click.ClickException(
                f"refusing to delete every entry under {prefix}: without --yes "
                "(no terminal to confirm on)"
            )
        click.confirm(question, abort=True)
    transport = _connect(url, cluster)
    client: Any = transport.client
    with _reporting(url):
        # delete_model deletes what it finds, but does not count it: count first.
        match = _glob_escape(scope) + "*"
        found = sum(1 for _ in client.scan_iter(match=match, count=_SCAN_BATCH))
        transport.delete_model(scope)
        # Processes skip messages of their own origin: this one is nobody's.
        news = message(uuid.uuid4().hex, [], [scope])
        listeners = client.publish(channel_of(prefix), news)
    what = f"{model} entries" if model is not None else "entries"
    click.echo(f"deleted {found} key(s) of {what} under {prefix}: at {_redacted(url)}")
    published = f"published the invalidation on {channel_of(prefix)}"
    if cluster:  # PUBLISH counts the listeners of one node only
        click.echo(published)
    else:
        click.echo(f"{published} ({listeners} process(es) with an L1 listening)")


# -- explain -------------------------------------------------------------------------------


@cli.command(short_help="Whether and how a model is cached.")
@click.argument("target", metavar="MODULE:MODEL")
def explain(target: str) -> None:
    """Whether and how a model is cached (key, TTL, tiers), and if not, why.

    MODULE:MODEL names the class, e.g. myapp.models:Hero; the module is imported
    from the current directory as python -m would. The report shows the library's
    defaults, since the application's configure() does not run here.
    """
    model = _import_model(target)
    try:
        report = SQLModelCache.explain(model)
    except CacheError as exc:
        raise click.ClickException(f"{target}: {exc}") from None
    click.echo(str(report))


def main() -> None:
    """The console script's entry point."""
    cli(prog_name="sqlmodel-cache")
