# Set-up and the two commands the README opens with. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8
export JAX_PLATFORMS ?= cpu
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test test-fast test-slow demo demo-data demo-train demo-eval bench clean

$(STAMP): setup.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[envs,import,dev]"
	touch $(STAMP)

install: $(STAMP)

# Everything, slow (multi-process, end-to-end) tests included: what CI runs.
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=25 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests

# The main job end to end on the embedded default: data, training on 8 fake CPU devices, evaluation.
DEMO_CONFIG := experiments/tiny_demo.py
DEMO_DIR := demo_output
DEMO_DATASETS := sentencepiece,cartpole,babyai_gotoredball,metaworld_reach
DEMO_SEED ?= 0
demo: demo-data demo-train demo-eval

demo-data: $(STAMP)
	$(BIN)/gato-data build --config $(DEMO_CONFIG) --dataset=$(DEMO_DATASETS) --skip_built \
	  --config.data.data_dir=$(DEMO_DIR)/data

demo-train: $(STAMP)
	$(BIN)/gato-train --config $(DEMO_CONFIG) --workdir $(DEMO_DIR) --config.seed=$(DEMO_SEED) \
	  --config.data.data_dir=$(DEMO_DIR)/data

demo-eval: $(STAMP)
	$(BIN)/gato-eval --config $(DEMO_CONFIG) --workdir $(DEMO_DIR) --config.data.data_dir=$(DEMO_DIR)/data

clean:
	rm -rf $(VENV) demo_output .pytest_cache
