# Set-up and the two commands the README opens with. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8
export JAX_PLATFORMS ?= cpu
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test test-fast test-slow test-studies demo demo-data demo-train demo-eval bench clean

$(STAMP): setup.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[envs,import,dev,tpu,serve]"
	touch $(STAMP)

install: $(STAMP)

# What CI runs: the unit tests on two workers, then the slow (multi-process, end-to-end) tests one at a
# time (they start processes, join ports and time heartbeats: no neighbour stealing their cores).
# Whole studies and benchmarks at tiny counts are `make test-studies`.
test: test-fast test-slow

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=10 -m "not slow and not study" tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q --durations=25 -m "slow and not study" tests

test-studies: $(STAMP)
	$(BIN)/python -m pytest -q -m study tests

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
