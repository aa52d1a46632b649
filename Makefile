# Two entry points for a fresh machine: `make demo` (train on the embedded digits, no network) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $@

demo: $(VENV)/.installed  ## train the conv net on the embedded 8x8 digits; prints test accuracy, writes logs/ and checkpoints
	$(PY) -m recipes.digits_cnn fit

test: $(VENV)/.installed  ## the whole suite, slow real-data tests included (they skip without ../shared/data)
	$(PY) -m pytest -n auto --maxprocesses 4  # pytest-xdist: one worker per core, at most 4

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed
	$(PY) benchmarks/loop_overhead.py
