# The two commands a newcomer needs:  `make demo`  and  `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: demo test system-deps ui ui-demo bench clean-data compile

# Packages are installed by uv (from PyPI, into the venv): the same resolution as pip's, in a fraction of the time
# (the test extras from an empty cache: 26 s against pip's 3 min here).
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(BIN)/uv: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv

# Bytecode is compiled when installing (--compile-bytecode) and for the project's own modules before each run
# (`compile`): every command, Dagster run worker and code server imports dagster, dbt, pandas and the project
# afresh, and where PYTHONDONTWRITEBYTECODE is set (as on this project's CI machines) nothing else writes the
# .pyc files, so each process would compile every module from source again: 9 s of every command's 11 s start-up
# here, against 4.5 s with them.
$(VENV)/.installed: pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'
	@touch $@

compile: $(VENV)/.installed
	@$(BIN)/python -m compileall -q -j 0 batch_platform bench tests >/dev/null

## install, then land and run the platform end to end on the embedded default (DuckDB + SQLite)
demo: $(VENV)/.installed compile
	$(BIN)/batch-platform demo

## Debian packages the tests drive for real, installed when missing: Chromium (the UI test's browser, used by
## Playwright from /usr/bin/chromium, nothing downloaded at run time), PostgreSQL and Redis (production mode's
## servers, started by tests/test_production_services.py on loopback ports and stopped after it)
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	  else sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; fi; fi

## install with the dev extras (and the Debian packages above), then run the test suite (benchmarks excluded)
test: $(VENV)/.installed-dev system-deps compile
	$(BIN)/pytest

## the daily cycle running by itself on live dates: UI and daemon on http://127.0.0.1:3000, reports on :3001
## (data in .data/live; the upstream feed publishes each morning at 06:00 New York)
ui: $(VENV)/.installed compile
	$(BIN)/batch-platform ui

## the Dagster UI (and daemon) over what `make demo` recorded (2013 replay dates)
ui-demo: $(VENV)/.installed compile
	$(BIN)/batch-platform ui --replay

## benchmarks: platform against a raw baseline measured in the same run; writes bench/RESULTS.md
bench: $(VENV)/.installed-dev compile
	$(BIN)/python -m bench

## forget the data and the recorded runs (keeps dagster_home/dagster.yaml)
clean-data:
	rm -rf .data
	find dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
