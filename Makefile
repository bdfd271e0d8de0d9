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
	rm -rf $(DEMO_DIR)/din $(DEMO_DIR)/prectr_v2
	$(BIN)/prectr train configs/din_small.yaml --log $(DEMO_DIR)/world --out $(DEMO_DIR)/din
	$(BIN)/prectr evaluate $(DEMO_DIR)/din --world $(DEMO_DIR)/world
	$(BIN)/prectr train configs/prectr_v2_small.yaml --log $(DEMO_DIR)/world \
		--out $(DEMO_DIR)/prectr_v2
	$(BIN)/prectr evaluate $(DEMO_DIR)/prectr_v2 --world $(DEMO_DIR)/world
	$(BIN)/prectr report $(DEMO_DIR)/din $(DEMO_DIR)/prectr_v2 --out $(DEMO_DIR)/report.html

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
	$(BIN)/python benchmarks/quality.py --preset bench --configs configs/dnn_bench.yaml \
		configs/lr_bench.yaml configs/deepfm_bench.yaml configs/dcnv2_bench.yaml \
		configs/din_bench.yaml configs/two_model_bench.yaml configs/prectr_v1_bench.yaml \
		configs/prectr_v2_bench.yaml

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
