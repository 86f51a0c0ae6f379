# ORCH-Next. `make up` runs the local stack, `make test` the test suite; both install into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install lock up test test-fast doctor bench clean ci ci-preflight ci-lint ci-layers ci-test ci-diff-cover ci-sbom ci-secrets ci-eol

# `make test` arguments (CI adds coverage); RUFF_STRICT=1 makes lint findings fail CI; DIFF_COVER_MIN is the
# share of changed lines (against the previous commit) the tests must cover.
PYTEST_ARGS    ?=
RUFF_STRICT    ?= 1
DIFF_COVER_MIN ?= 80
CI_OUT         := .ci/out
SBOM_DIR       := observability/sbom

# Every install comes from the locks: requirements-dev.lock (runtime + dev tools, what make and CI install) and
# requirements.lock (runtime only, what a production host installs), every package pinned with its hashes, for
# every platform and Python 3.11+. `make lock` refreshes them from pyproject.toml's ranges, keeping today's
# pins; `make lock UPGRADE=1` moves everything to the newest allowed, `make lock UPGRADE=prefect` one package.
LOCK     := requirements.lock
DEV_LOCK := requirements-dev.lock
PIP      := $(BIN)/python -m pip --disable-pip-version-check
UPGRADE  ?=
UV_FLAGS := --quiet --universal --generate-hashes --python-version 3.11 --custom-compile-command 'make lock' \
            $(if $(filter 1,$(UPGRADE)),--upgrade,$(addprefix --upgrade-package ,$(filter-out 1,$(UPGRADE))))

install: $(STAMP)

$(STAMP): pyproject.toml $(DEV_LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ORCH-Next needs Python 3.11+; found " + sys.version.split()[0] + " (run: make PYTHON=python3.11 ...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes --no-deps -r $(DEV_LOCK)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	@$(PIP) check >/dev/null || { $(PIP) check; echo "make: $(DEV_LOCK) does not satisfy pyproject.toml; run: make lock" >&2; exit 1; }
	$(BIN)/python -m orch.stack.prefect_template
	@touch $(STAMP)

# The build backend (pyproject's build-system.requires) is locked too: installs build without isolation. The
# lock is made with the uv that the lock pins (needs only the venv, so it works when the lock is stale).
BUILD_REQS = $(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'
UV_PIN := $(shell sed -n 's/^uv==\([^ ]*\).*/==\1/p' $(DEV_LOCK) 2>/dev/null)
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(PIP) install --quiet 'uv$(UV_PIN)'
	$(BUILD_REQS) \
		| $(BIN)/uv pip compile pyproject.toml - --extra dev $(UV_FLAGS) -o $(DEV_LOCK)
	$(BUILD_REQS) \
		| $(BIN)/uv pip compile pyproject.toml - -c $(DEV_LOCK) $(UV_FLAGS) -o $(LOCK)
	@$(MAKE) --no-print-directory install

up: $(STAMP)
	exec $(BIN)/orch up

# The suite runs on TEST_WORKERS processes (pytest-xdist, one test module per worker at a time, each worker with
# its own Prefect server): most of a test's time is waiting for processes and servers, so two share two cores.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest --numprocesses=$(TEST_WORKERS) --dist=loadfile $(PYTEST_ARGS)

# Everything but the tests marked slow (whole stacks, worker processes, deployment runs): a quick loop while
# developing. `make test` (and so CI) still runs all of them.
test-fast: $(STAMP)
	$(BIN)/python -m pytest --numprocesses=$(TEST_WORKERS) --dist=loadfile -m 'not slow' $(PYTEST_ARGS)

doctor: $(STAMP)
	$(BIN)/orch doctor

bench: $(STAMP)
	$(BIN)/python scripts/bench_startup.py
	$(BIN)/python scripts/bench_dispatch.py
	$(BIN)/python scripts/bench_dispatch_memory.py
	$(BIN)/python scripts/bench_queue_scale.py
	$(BIN)/python scripts/bench_api.py
	$(BIN)/python scripts/bench_analysis.py
	$(BIN)/python scripts/bench_monitoring.py
	$(BIN)/python scripts/bench_corruption.py
	$(BIN)/python scripts/bench_hosts.py
	$(BIN)/python scripts/bench_console.py
	$(BIN)/python scripts/bench_supply_chain.py
	$(BIN)/python scripts/bench_backup.py

# What .ci/run runs, in order; everything offline. Outputs (coverage, reports) go to .ci/out/.
ci: $(STAMP) ci-preflight ci-lint ci-layers ci-test ci-diff-cover ci-sbom ci-secrets ci-eol

ci-preflight: $(STAMP)
	.ci/preflight.sh

ci-lint: $(STAMP)
	@$(BIN)/ruff check . || { test "$(RUFF_STRICT)" != 1 && echo "ci: ruff findings above are advisory (RUFF_STRICT=1 fails on them)"; }

# The import contracts in pyproject.toml ([tool.importlinter]): layers point down, orch imports none of the others.
ci-layers: $(STAMP)
	$(BIN)/lint-imports --no-cache

ci-test: $(STAMP)
	@mkdir -p $(CI_OUT) && rm -f $(CI_OUT)/.coverage*
	COVERAGE_FILE=$(CURDIR)/$(CI_OUT)/.coverage $(MAKE) --no-print-directory test \
		PYTEST_ARGS="--cov --cov-report=xml:$(CI_OUT)/coverage.xml --cov-report=term:skip-covered --durations=25 $(PYTEST_ARGS)"

ci-diff-cover: $(STAMP)
	@if git rev-parse --verify --quiet HEAD~1 >/dev/null; then \
		$(BIN)/diff-cover $(CI_OUT)/coverage.xml --compare-branch=HEAD~1 --fail-under=$(DIFF_COVER_MIN); \
	else echo "ci: no previous commit; diff coverage not checked"; fi

ci-sbom: $(STAMP)
	rm -rf $(SBOM_DIR)/keys
	$(BIN)/python scripts/sbom/generate_sbom.py --out $(SBOM_DIR)/sbom.json
	$(BIN)/python scripts/sbom/sign_sbom.py --sbom $(SBOM_DIR)/sbom.json --out $(SBOM_DIR)/sbom.sig --keys-dir $(SBOM_DIR)/keys
	$(BIN)/python scripts/sbom/verify_sbom.py --sbom $(SBOM_DIR)/sbom.json --sig $(SBOM_DIR)/sbom.sig --keys-dir $(SBOM_DIR)/keys

ci-secrets: $(STAMP)
	$(BIN)/python scripts/ops/scan_secrets.py

ci-eol: $(STAMP)
	$(BIN)/python scripts/ops/check_eol.py
	$(BIN)/python scripts/ops/resource_guard.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
