"""``python -m sqlmodel_cache``: the same command as the ``sqlmodel-cache`` script."""

from ._cli import main

if __name__ == "__main__":
    main()
