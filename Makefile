# Every target sets up what it needs: a fresh machine runs `make demo` or `make test` directly.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: install demo services lint typecheck test soak soak-stateful bench bench-scale clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The oldest versions pyproject.toml allows (SQLAlchemy 2.0, the first SQLModel,
# redis-py 5...) get the whole suite too: scripts/floors.py reads them from it.
FLOOR := .venv-floor
$(FLOOR)/.installed: pyproject.toml scripts/floors.py
	test -x $(FLOOR)/bin/python || $(PYTHON) -m venv $(FLOOR)
	$(FLOOR)/bin/python -m pip install -q --upgrade pip
	$(PYTHON) scripts/floors.py > $(FLOOR)/floors.txt
	$(FLOOR)/bin/python -m pip install -q -e ".[dev]" -c $(FLOOR)/floors.txt
	touch $@

# A sync-only install, as `pip install sqlmodel-cache[redis]` gives it: no greenlet
# (SQLAlchemy 2.1 no longer requires it). Tests that need AsyncSession are left out.
NOGREENLET := .venv-nogreenlet
$(NOGREENLET)/.installed: pyproject.toml
	test -x $(NOGREENLET)/bin/python || $(PYTHON) -m venv $(NOGREENLET)
	$(NOGREENLET)/bin/python -m pip install -q --upgrade pip
	$(NOGREENLET)/bin/python -m pip install -q -e ".[redis,postgres,test]"
	$(NOGREENLET)/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('greenlet') is not None)" \
		|| { echo "greenlet got installed in $(NOGREENLET)"; exit 1; }
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

test: install $(FLOOR)/.installed $(NOGREENLET)/.installed services lint typecheck
	$(BIN)/pytest -q
	$(FLOOR)/bin/pytest -q -p no:cacheprovider
	$(NOGREENLET)/bin/pytest -q -p no:cacheprovider -m "not greenlet" --ignore=tests/test_async.py

# Production soak: gunicorn (4 sync workers, --preload) and uvicorn (2 workers) on
# PostgreSQL, with a Redis of its own killed, stalled and restarted empty under load.
# Prints a table and PASS/FAIL verdicts; SOAK_PHASE seconds per phase.
soak: install services
	$(BIN)/python benchmarks/soak.py

# The stateful test, long: SOAK_EXAMPLES interleavings of SOAK_STEPS steps each.
soak-stateful: install services
	SOAK_EXAMPLES=$${SOAK_EXAMPLES:-400} SOAK_STEPS=$${SOAK_STEPS:-60} \
		$(BIN)/pytest -q -s -p no:cacheprovider tests/test_stateful.py

bench: install services
	$(BIN)/python benchmarks/bench.py

# 100,000 rows, Zipf reads, 1/2/4 worker processes: prints a table and redraws
# docs/scale.png (matplotlib comes with the bench extra).
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"
	touch $@

bench-scale: $(BENCH_STAMP) services
	$(BIN)/python benchmarks/scale.py

clean:
	rm -rf $(VENV) $(FLOOR) $(NOGREENLET) .venv-sa20 .pytest_cache .mypy_cache .ruff_cache
