"""The ``sqlmodel-cache`` command (lands here)."""


def main() -> None:
    raise SystemExit("sqlmodel-cache: no commands yet")
