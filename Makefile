# Two entry points from a fresh clone: `make main` (the main job) and `make test` (the test suite).
# Both build the virtual environment first; torch is pinned to the CPU build for machines without a GPU, and
# constraints.txt pins the packages whose versions change the documented figures.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup main test

$(BIN)/.installed: pyproject.toml constraints.txt scripts/install_wordnet.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/python scripts/install_wordnet.py
	touch $@

setup: $(BIN)/.installed

main: setup
	HF_HUB_OFFLINE=1 $(BIN)/python run_instruct_tuning.py

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q
