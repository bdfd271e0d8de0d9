# Quick start: `make demo` runs the main job end to end, `make test` runs the whole suite.
# Both create .venv when it is missing and install what they need into it.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: demo test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/prectr simulate --preset small --seed 0 --out $(DEMO_DIR)/world --overwrite
	$(BIN)/prectr validate $(DEMO_DIR)/world
	$(BIN)/prectr score $(DEMO_DIR)/world --rankers logging popularity random

test: $(STAMP)
	$(BIN)/ruff check prectr tests benchmarks
	$(BIN)/ruff format --check prectr tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check --fix prectr tests benchmarks
	$(BIN)/ruff format prectr tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/simulate.py
	$(BIN)/python benchmarks/metrics.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
