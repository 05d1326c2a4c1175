# The two commands a newcomer needs:  `make demo`  and  `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: demo test ui bench clean-data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

## install, then land and run the platform end to end on the embedded default (DuckDB + SQLite)
demo: $(VENV)/.installed
	$(BIN)/batch-platform demo

## install with the dev extras, then run the test suite (benchmarks excluded)
test: $(VENV)/.installed-dev
	$(BIN)/pytest

## the Dagster UI (and daemon) on http://127.0.0.1:3000, over what the demo recorded
ui: $(VENV)/.installed
	$(BIN)/dagster dev -w workspace.yaml

## benchmarks: tables of ratios against a baseline measured in the same run
bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench

## forget the data and the recorded runs (keeps dagster_home/dagster.yaml)
clean-data:
	rm -rf .data
	find dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
