# ORCH-Next. `make up` runs the local stack, `make test` the test suite; both install into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install up test doctor bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ORCH-Next needs Python 3.11+; found " + sys.version.split()[0] + " (run: make PYTHON=python3.11 ...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

up: $(STAMP)
	exec $(BIN)/orch up

test: $(STAMP)
	$(BIN)/python -m pytest

doctor: $(STAMP)
	$(BIN)/orch doctor

bench: $(STAMP)
	$(BIN)/python scripts/bench_startup.py
	$(BIN)/python scripts/bench_dispatch.py
	$(BIN)/python scripts/bench_analysis.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
