# Every target sets up what it needs: a fresh machine runs `make demo` or `make test` directly.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: install demo services lint typecheck test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The oldest SQLAlchemy minor we support gets the whole suite too.
COMPAT := .venv-sa20
$(COMPAT)/.installed: pyproject.toml
	test -x $(COMPAT)/bin/python || $(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/python -m pip install -q --upgrade pip
	$(COMPAT)/bin/python -m pip install -q -e ".[dev]" "sqlalchemy>=2.0.30,<2.1"
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/python examples/quickstart.py

services:
	bash scripts/services.sh

lint: install
	$(BIN)/ruff check sqlmodel_cache tests examples benchmarks
	$(BIN)/ruff format --check sqlmodel_cache tests examples benchmarks

typecheck: install
	$(BIN)/mypy

test: install $(COMPAT)/.installed services lint typecheck
	$(BIN)/pytest -q
	$(COMPAT)/bin/pytest -q -p no:cacheprovider

bench: install services
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) $(COMPAT) .pytest_cache .mypy_cache .ruff_cache
