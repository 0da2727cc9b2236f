# The two README commands are `make demo` and `make test`; each sets up .venv
# on a fresh machine first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup demo test test-fast test-all lint bench clean lock

setup: $(STAMP)

# torch's CPU build is installed first and pinned, so no dependency can pull a CUDA build.
# constraints.txt pins every other package to the release CI tested (`make lock` refreshes it).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]' torch==2.13.0
	# The image sample's data (cluster/data/image_data.py reads its files, never imports it); its wheel
	# declares tensorflow, which nothing here uses, hence --no-deps.
	$(BIN)/python -m pip install -q --no-deps animal-mnist==0.4
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/evalctl demo

# What CI runs (.ci/run): every tier but `slow`.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q --durations=25

# Pure unit tests: no Ray, no subprocesses, no real model (under a minute); for editing metrics or config.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not ray and not head and not multinode and not cli and not heavy and not slow and not real_model" -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Each benchmark prints ratios measured side by side in one run (minutes each on 2 cores).
bench: $(STAMP)
	$(BIN)/python benchmarks/eval_throughput.py
	$(BIN)/python benchmarks/serve_load.py
	$(BIN)/python benchmarks/trial_overhead.py
	$(BIN)/python benchmarks/sweep_asha.py
	$(BIN)/python benchmarks/registry_load.py

clean:
	rm -rf $(VENV) .pytest_cache

# Refresh constraints.txt: a throwaway venv installed from pyproject.toml alone (the newest releases
# it allows), frozen. Then `make clean test`, and commit constraints.txt with what it changed.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV) && $(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q torch==2.13.0
	$(LOCK_VENV)/bin/python -m pip install -q -e '.[dev]' torch==2.13.0
	$(LOCK_VENV)/bin/python -m pip list --format=freeze --exclude-editable \
	  | grep -v -i -E '^(torch|pip|setuptools|wheel)==' > constraints.txt
	rm -rf $(LOCK_VENV)
