"""Every ```python block of README.md and docs/**/*.md runs, against real services.

One test per page. A page's blocks run in order in one namespace, like a doctest
session, in a fresh ``python`` process (SQLModel's metadata is global: two pages
may both define ``class Hero(SQLModel, table=True)``). Markers, each an HTML
comment on the line right before a fence (invisible on the site and on PyPI):

- ``<!-- not run: REASON -->``: the block is not run (it needs a package we do not
  install, a server listening, ...). Counted; keep them few.
- ``<!-- run: new process -->``: from this block on, a new process and namespace
  (a page that shows several complete programs, each defining its own ``Hero``).

Before running, the service URLs the docs show (``redis://localhost:6379/0``,
``postgresql+psycopg://user:pass@localhost/app``...) become the test's own, every
key prefix given to ``SQLModelCache.configure()`` (the default included) gets a
unique head so the page's keys are its own (they are deleted afterwards, and
nothing else is), each process runs in a directory of its own (SQLite files land
there), and a process that uses PostgreSQL gets a database of its own, dropped after.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from .conftest import PG_URL, REDIS_URL, _ensure_pg_database

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PYTHON = {"python", "py", "python3"}
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(?P<reason>\S.*?)\s*-->\s*$")
NEW_PROCESS = re.compile(r"^\s*<!--\s*run:\s*new process\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
REDIS_PLACEHOLDER = re.compile(r"redis://localhost:6379(?:/\d+)?")
PG_PLACEHOLDER = re.compile(r"(?P<driver>postgresql(?:\+\w+)?)://user:pass@localhost(?::\d+)?/\w+")
MAX_NOT_RUN = 4  # across all pages: keep them few
PAGE_TIMEOUT = 240  # seconds, per process


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    line: int  # 1-based line of the block's first line of code
    language: str
    code: str
    not_run: str | None  # the reason given by a "not run" marker
    new_process: bool


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].strip().split(" ")[0].strip("{}.").lower()
        before = lines[index - 1] if index else ""
        body: list[str] = []
        end = index + 1
        while end < len(lines):
            closing = lines[end].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(fence[0]):
                break
            body.append(lines[end][len(indent) :] if lines[end].startswith(indent) else lines[end])
            end += 1
        else:
            raise AssertionError(f"{path}:{index + 1}: this fence is never closed")
        not_run = NOT_RUN.match(before)
        found.append(
            Block(
                line=index + 2,
                language=language,
                code="\n".join(body) + "\n",
                not_run=not_run["reason"] if not_run else None,
                new_process=NEW_PROCESS.match(before) is not None,
            )
        )
        index = end + 1
    return found


def page_id(path: Path) -> str:
    """The test id of a page: its file name (its path below docs/ when nested)."""
    docs = ROOT / "docs"
    return str(path.relative_to(docs)) if path.is_relative_to(docs) else path.name


def groups(path: Path) -> list[list[Block]]:
    """The page's runnable Python blocks, split where a new process starts."""
    runs: list[list[Block]] = []
    for block in blocks(path):
        if block.language not in PYTHON or block.not_run is not None:
            continue
        if block.new_process or not runs:
            runs.append([])
        runs[-1].append(block)
    return runs


def localized(code: str, redis_url: str, pg_url: str | None) -> str:
    """code with the docs' placeholder service URLs replaced by the test's."""
    code = REDIS_PLACEHOLDER.sub(redis_url, code)
    if pg_url is not None:
        url = sa.make_url(pg_url)

        def database(match: re.Match[str]) -> str:
            return url.set(drivername=match["driver"]).render_as_string(hide_password=False)

        code = PG_PLACEHOLDER.sub(database, code)
    return code


# What the page's process runs: the key prefix guard, then each block, compiled under
# the Markdown file's name and line numbers so that tracebacks point into the page.
DRIVER = r"""
import json, sys, traceback, types

spec = json.load(open(sys.argv[1], encoding="utf-8"))

from sqlmodel_cache import SQLModelCache

_configure = SQLModelCache.configure.__func__


def _configure_with_own_prefix(cls, transport=None, *, key_prefix="sqlmodelcache", **options):
    return _configure(cls, transport, key_prefix=spec["prefix"] + key_prefix, **options)


SQLModelCache.configure = classmethod(_configure_with_own_prefix)
main = types.ModuleType("__main__")
main.__file__ = spec["path"]
sys.modules["__main__"] = main
try:
    for block in spec["blocks"]:
        source = "\n" * (block["line"] - 1) + block["code"]
        try:
            exec(compile(source, spec["path"], "exec"), main.__dict__)
        except BaseException:
            traceback.print_exc()
            print(f"\n{spec['path']}:{block['line']}: the block starting here failed",
                  file=sys.stderr)
            sys.exit(1)
finally:
    SQLModelCache.reset()
"""


@contextlib.contextmanager
def own_database(base_url: str, name: str) -> Iterator[str]:
    """A PostgreSQL database of this process's own next to base_url's, dropped after."""
    url = sa.make_url(base_url)
    _ensure_pg_database(base_url)  # the admin connection needs a reachable server
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    database = f"{url.database}_{name}"[:63]
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
        yield url.set(database=database).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def delete_keys(prefix: str) -> None:
    """Delete the keys under prefix (the page's own), and no others."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


def run(path: Path, group: list[Block], workdir: Path, number: int) -> None:
    """Run one group of blocks in a fresh process; fail with its output if it fails."""
    slug = re.sub(r"\W+", "_", path.stem.lower())
    token = f"smcdocs-{slug}-{uuid.uuid4().hex[:8]}-"
    workdir.mkdir(parents=True)
    uses_pg = any(PG_PLACEHOLDER.search(block.code) for block in group)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(delete_keys, token)
        pg_url = None
        if uses_pg:
            pg_url = cleanup.enter_context(own_database(PG_URL, f"{slug}_{number}_{token[-9:-1]}"))
        spec = {
            "path": str(path),
            "prefix": token,
            "blocks": [
                {"line": block.line, "code": localized(block.code, REDIS_URL, pg_url)}
                for block in group
            ],
        }
        spec_file = workdir / "blocks.json"
        spec_file.write_text(json.dumps(spec), encoding="utf-8")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "REDIS_URL": REDIS_URL,
        }
        if pg_url is not None:
            env["DATABASE_URL"] = pg_url
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, str(spec_file)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=PAGE_TIMEOUT,
            check=False,
        )
    if done.returncode != 0:
        pytest.fail(
            f"{page_id(path)}: a block failed (exit status {done.returncode})\n"
            f"--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-8000:]}",
            pytrace=False,
        )


def needs_greenlet(path: Path) -> bool:
    """Whether the page's code uses asyncio (AsyncSession needs greenlet, which the
    sync-only install lacks: its run leaves such pages out)."""
    return any("async" in block.code for group in groups(path) for block in group)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(path, marks=[pytest.mark.greenlet] if needs_greenlet(path) else [])
        for path in PAGES
    ],
    ids=page_id,
)
def test_page_runs(path: Path, tmp_path: Path) -> None:
    """The page's Python blocks run, in order, each group in a process of its own."""
    for number, group in enumerate(groups(path)):
        run(path, group, tmp_path / f"process{number}", number)


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_fences_declare_a_language(path: Path) -> None:
    """A block without a language could hide Python from the runner: say ```text."""
    untagged = [block.line - 1 for block in blocks(path) if not block.language]
    assert not untagged, f"{page_id(path)}: fences without a language at lines {untagged}"


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_markers_sit_on_python_blocks(path: Path) -> None:
    """A marker before a block that is not Python is a mistake (it would skip nothing)."""
    wrong = [
        block.line - 1
        for block in blocks(path)
        if (block.not_run is not None or block.new_process) and block.language not in PYTHON
    ]
    assert not wrong, f"{page_id(path)}: markers before non-Python fences at lines {wrong}"


def test_few_blocks_are_not_run() -> None:
    """Every Python block runs unless marked, with a reason; and such blocks stay few."""
    skipped = [
        f"{page_id(path)}:{block.line - 1}: {block.not_run}"
        for path in PAGES
        for block in blocks(path)
        if block.language in PYTHON and block.not_run is not None
    ]
    assert len(skipped) <= MAX_NOT_RUN, "too many blocks are not run:\n" + "\n".join(skipped)


def test_the_collector_sees_the_python_blocks() -> None:
    """The collector finds the blocks the docs hold (guards against a broken parser)."""
    found = {page_id(path): len(groups(path)) for path in PAGES}
    assert found["README.md"] >= 1
    assert found["index.md"] >= 3  # the three complete programs of the quickstart
    assert sum(len(group) for path in PAGES for group in groups(path)) >= 30
