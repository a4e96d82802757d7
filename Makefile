# `make demo` and `make test` work on a fresh machine with Python 3.11+ and pip.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck bench bench-venvs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/keel demo

test: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadgroup

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

# Peers live in their own environments: their pins clash with ours.
.venv-mlflow/.installed:
	$(PYTHON) -m venv .venv-mlflow
	.venv-mlflow/bin/python -m pip install --quiet 'mlflow>=3,<4'
	touch $@

bench-venvs: .venv-mlflow/.installed

bench: $(STAMP) bench-venvs
	$(BIN)/python bench/tracking.py --mlflow-python .venv-mlflow/bin/python

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
