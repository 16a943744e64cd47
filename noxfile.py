"""The test matrix, one nox session per environment (``make test`` runs them all).

    .venv/bin/nox -r -s lint tests floors nogreenlet docs package

- ``lint``: ruff (check and format) and mypy (strict).
- ``tests``: the suite on the newest version of every dependency.
- ``floors``: the suite on the oldest versions pyproject.toml allows (scripts/floors.py).
- ``nogreenlet``: a sync-only install, ``pip install sqlmodel-cache[redis,postgres]``, where
  greenlet is absent: the tests that need AsyncSession are left out.
- ``docs``: ``mkdocs build --strict``.
- ``package``: builds the sdist and the wheel and checks them (twine, wheel contents).

Every session runs on the Python that runs nox, in an environment of its own under .nox/,
made with uv when it is installed (``nox[uv]``, as ``make install`` does) and with virtualenv
otherwise; environments are reused between runs (``-r``), so only the first run installs much.

Sessions inherit the environment: ``TEST_REDIS_URL``, ``TEST_REDIS_CLUSTER_PORT`` and the
rest reach the tests as they are. ``TEST_DATABASE_URL`` (default: the suite's own,
postgresql+psycopg://postgres@127.0.0.1:5432/sqlmodel_cache_test) names the server and the
first part of the database: each of the three suite sessions uses a database of its own,
``<name>_tests``, ``<name>_floors``, ``<name>_nogreenlet``, so that they never drop each
other's tables and can run at the same time (``make test`` runs them so). Arguments after
``--`` go to pytest, e.g. ``nox -s tests -- -x tests/test_api.py``.
"""

from __future__ import annotations

import os
import re
import tarfile
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests", "floors", "nogreenlet", "docs", "package"]

ROOT = Path(__file__).resolve().parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
# The package, editable, with every runtime extra.
EVERYTHING = ("-e", ".[redis,async,postgres,otel]")
INIT = ROOT / "sqlmodel_cache" / "__init__.py"
LINTED = ("sqlmodel_cache", "tests", "examples", "benchmarks", "scripts", "noxfile.py")
# Inside the wheel: what `import sqlmodel_cache.testing` and type checkers rely on.
WHEEL_MUST_HOLD = (
    "sqlmodel_cache/__init__.py",
    "sqlmodel_cache/py.typed",
    "sqlmodel_cache/testing/__init__.py",
    "sqlmodel_cache/testing/plugin.py",
)


# tests/conftest.py's default for TEST_DATABASE_URL.
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/sqlmodel_cache_test"


def suite_env(session: nox.Session) -> dict[str, str]:
    """TEST_DATABASE_URL for this session: its database name gets ``_<session>``."""
    url = urlsplit(os.environ.get("TEST_DATABASE_URL") or DEFAULT_DATABASE_URL)
    database = url.path.lstrip("/") or "sqlmodel_cache_test"
    database = f"{database}_{session.name}"[:63]  # PostgreSQL's limit on a name
    return {"TEST_DATABASE_URL": urlunsplit(url._replace(path=f"/{database}"))}


def group(*names: str) -> tuple[str, ...]:
    """The requirements of PEP 735 dependency groups (any pip, any nox backend)."""
    return nox.project.dependency_groups(PYPROJECT, *names)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, mypy --strict (the whole project, per pyproject)."""
    session.install(*EVERYTHING, *group("lint", "test"))
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite on the newest versions."""
    session.install(*EVERYTHING, *group("test"))
    session.run("pytest", "-q", *session.posargs, env=suite_env(session))


@nox.session
def floors(session: nox.Session) -> None:
    """The whole suite on the oldest versions pyproject.toml allows."""
    pins = session.run("python", "scripts/floors.py", silent=True)
    assert isinstance(pins, str)
    # Beside the environment, not in session.create_tmp(): that would point TMPDIR into this
    # tree, where pytester's projects would then find our own pyproject.toml.
    constraints = Path(session.virtualenv.location) / "floors.txt"
    constraints.write_text(pins)
    session.log("floors: " + " ".join(pins.split()))
    session.install(*EVERYTHING, *group("test"), "-c", str(constraints))
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs, env=suite_env(session))


@nox.session
def nogreenlet(session: nox.Session) -> None:
    """A sync-only install (SQLAlchemy 2.1 no longer requires greenlet): AsyncSession left out."""
    session.install("-e", ".[redis,postgres]", *group("test"))
    session.run(
        "python",
        "-c",
        "import importlib.util, sys; "
        "sys.exit('greenlet got installed in the nogreenlet environment: '"
        "'something now requires it' if importlib.util.find_spec('greenlet') else 0)",
    )
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "not greenlet",
        "--ignore=tests/test_async.py",
        *session.posargs,
        env=suite_env(session),
    )


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site builds without a warning."""
    session.install("-e", ".", *group("docs"))
    with tempfile.TemporaryDirectory(prefix="sqlmodel-cache-site-") as site:
        session.run(
            "mkdocs", "build", "--strict", "--site-dir", site, env={"NO_MKDOCS_2_WARNING": "1"}
        )


@nox.session
def package(session: nox.Session) -> None:
    """sdist and wheel build, pass `twine check --strict` and hold what they must."""
    session.install("build", "twine")
    with tempfile.TemporaryDirectory(prefix="sqlmodel-cache-dist-") as tmp:
        session.run("python", "-m", "build", "--outdir", tmp, str(ROOT))
        dist = Path(tmp)
        wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
        if len(wheels) != 1 or len(sdists) != 1:
            session.error(f"expected one wheel and one sdist, got {sorted(dist.iterdir())}")
        session.run("twine", "check", "--strict", str(wheels[0]), str(sdists[0]))
        version = re.search(r'^__version__ = "([^"]+)"', INIT.read_text(), re.MULTILINE)
        if version is None or f"-{version[1]}-" not in wheels[0].name:
            session.error(f"{wheels[0].name} is not the version sqlmodel_cache/__init__.py gives")

        with zipfile.ZipFile(wheels[0]) as wheel:
            names = set(wheel.namelist())
        missing = [name for name in WHEEL_MUST_HOLD if name not in names]
        if missing:
            session.error(f"{wheels[0].name} lacks {missing}")
        if not any(name.endswith(".dist-info/licenses/LICENSE") for name in names):
            session.error(f"{wheels[0].name} lacks the LICENSE file")
        strays = sorted({name.split("/")[0] for name in names} - {"sqlmodel_cache"})
        if any(not top.endswith(".dist-info") for top in strays):
            session.error(f"{wheels[0].name} holds more than sqlmodel_cache: {strays}")

        with tarfile.open(sdists[0]) as sdist:
            members = {name.split("/", 1)[-1] for name in sdist.getnames()}
        for needed in ("LICENSE", "README.md", "pyproject.toml", "sqlmodel_cache/py.typed"):
            if needed not in members:
                session.error(f"{sdists[0].name} lacks {needed}")
        junk = sorted(m for m in members if m.split("/")[0] in {".venv", ".nox", ".git"})
        if junk:
            session.error(f"{sdists[0].name} holds {junk[:5]}...")
        session.log(f"{wheels[0].name}: {len(names)} files; {sdists[0].name}: {len(members)}")
