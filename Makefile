# Every target sets up what it needs: a fresh machine runs `make demo` or `make test` directly.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

# The test matrix (noxfile.py): lint and types, the documentation build, the package check,
# then the suite on the newest versions, on the oldest versions pyproject.toml allows and in
# a sync-only install without greenlet. Environments live in .nox/ and are reused (-r).
# The three suites run at once: each has a PostgreSQL database of its own (noxfile.py), and
# they mostly wait on servers, so together they take about half as long as one after the
# other on two cores. `.venv/bin/nox -r` runs all six sessions one after the other.
CHECKS := lint docs package
SUITES := tests floors nogreenlet

.PHONY: install demo services lint typecheck test soak soak-stateful bench bench-scale clean

# The developer's environment: the package (editable) with every runtime extra, and every
# dependency group of pyproject.toml (test, lint, docs, bench, nox). pip >= 25.1 reads
# the groups (PEP 735), hence the upgrade first.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[redis,async,postgres,otel]" --group dev
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python examples/quickstart.py

services:
	bash scripts/services.sh

lint: install
	$(BIN)/ruff check sqlmodel_cache tests examples benchmarks scripts noxfile.py
	$(BIN)/ruff format --check sqlmodel_cache tests examples benchmarks scripts noxfile.py

typecheck: install
	$(BIN)/mypy

test: install services
	$(BIN)/nox -r -s $(CHECKS)
	$(MAKE) --no-print-directory -j3 --output-sync=target $(addprefix nox-,$(SUITES))

# One nox session (make nox-floors, ...); its output is printed when it ends.
nox-%: install
	$(BIN)/nox -r -s $*

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
# docs/scale.png (matplotlib comes with the bench dependency group).
bench-scale: install services
	$(BIN)/python benchmarks/scale.py

clean:
	rm -rf $(VENV) .nox .venv-floor .venv-nogreenlet .venv-sa20 .pytest_cache .mypy_cache \
		.ruff_cache dist site
