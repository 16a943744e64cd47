"""Print the oldest version pyproject.toml allows of each runtime dependency, as pins.

    python scripts/floors.py > floors.txt
    pip install -e ".[redis,async,postgres,otel]" --group test -c floors.txt

(what ``nox -s floors`` does). Reads ``>=`` floors from ``[project].dependencies``
and the runtime extras, so the "oldest versions" suite tests exactly what the
package metadata promises; the development tools of the dependency groups float.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

RUNTIME_EXTRAS = ("redis", "async", "postgres", "otel")
_FLOOR = re.compile(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*[^;]*?>=\s*([0-9][^,;\s]*)")


def floors(pyproject: Path) -> dict[str, str]:
    """Package name -> its floor, over the dependencies and the runtime extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    specs = list(project["dependencies"])
    for extra in RUNTIME_EXTRAS:
        specs += project["optional-dependencies"][extra]
    found: dict[str, str] = {}
    for spec in specs:
        match = _FLOOR.match(spec)
        if match is None:
            continue
        name = match.group(1).lower().replace("_", "-")
        found[name] = max(found.get(name, match.group(3)), match.group(3), key=_version)
    return found


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "pyproject.toml"
    for name, version in sorted(floors(path).items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
