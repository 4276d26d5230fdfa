# Every target sets up what it needs: a virtualenv in .venv, and the system programs the local
# Kafka broker and test PostgreSQL need (scripts/system-deps.sh).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The local-system plug-ins, each a distribution of its own (consumers/*/pyproject.toml).
PLUGINS := consumers/legacy_postgres consumers/file_drop consumers/rest_api

.PHONY: help test lint demo bench venv clean

help:
	@echo "make demo   run HQ, a tracker and 11 country adapters on a secured local Kafka broker"
	@echo "make test   lint, type-check and run the tests on real Kafka and PostgreSQL"
	@echo "make bench  the benchmarks; figures printed and written to bench/results.json"

# The runtime dependencies at the versions of requirements.lock (-c): the tests run what the
# image runs, and a release upstream cannot change a clean checkout's results.
$(STAMP): pyproject.toml requirements.lock $(addsuffix /pyproject.toml,$(PLUGINS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]' $(addprefix -e ,$(PLUGINS))
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests consumers bench
	$(BIN)/ruff format --check src tests consumers bench
	$(BIN)/mypy

test: $(STAMP)
	bash scripts/system-deps.sh kafka postgres chromium promtool
	$(MAKE) lint
	$(BIN)/pytest

bench: $(STAMP)
	bash scripts/system-deps.sh postgres
	bash scripts/system-deps.sh kafka
	$(BIN)/python -m bench

demo: $(STAMP)
	bash scripts/system-deps.sh kafka
	$(BIN)/notice-bus demo

clean:
	rm -rf $(VENV) .notice-bus .pytest_cache .mypy_cache .ruff_cache
