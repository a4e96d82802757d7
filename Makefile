# `make demo` and `make test` work on a fresh machine with Python 3.11+ and pip.
PYTHON     ?= python3
VENV       ?= .venv
BIN        := $(VENV)/bin
# Two stamps, one virtualenv: the demo needs Keel and its `demo` extra only; `make test`
# adds the dev extras (Ray, XGBoost, LightGBM, ONNX, moto, …) on top.
DEMO_STAMP := $(VENV)/.installed-demo
STAMP      := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck bench bench-venvs browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# --no-compile: Python compiles what the demo imports when it first runs; compiling
# every module of pandas, scipy and scikit-learn up front takes time and ~180 MB.
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-compile -e '.[demo]'
	touch $(DEMO_STAMP)

# PyTorch (for the evals' embedding model) is pinned to the CPU build first, so that
# sentence-transformers does not pull a CUDA build of several GB.
TORCH      ?= torch==2.13.0

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet '$(TORCH)'
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	touch $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/keel demo

test: $(STAMP) .venv-kserve/.installed .venv-mlflow/.installed browser web-runtime
	$(BIN)/ruff check src tests bench examples scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadgroup

# The report and UI tests drive Debian's Chromium headless; there is no browser download.
# Where apt is not ours to run, the browser tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is not installed: the browser tests will skip (apt-get install chromium)"; fi; }

# onnxruntime-web for the browser bundle of `keel models export --edge`, from the npm registry
# at build time (checked against its pinned integrity); the page never loads it from a CDN.
# Without npm, the export refuses only the browser part and its tests skip, saying why.
WEB_RUNTIME := src/keel/models/edge/web_runtime/onnxruntime-web.json
.PHONY: web-runtime
web-runtime: $(STAMP)
	@test -f $(WEB_RUNTIME) || { \
	  if command -v npm >/dev/null 2>&1; then $(BIN)/python scripts/fetch_onnxruntime_web.py; \
	  else echo "npm is not installed: the edge browser bundle and its tests will skip"; fi; }

# KServe's own Python client, to test Keel's server with it: its pins (pandas<3) clash with ours.
.venv-kserve/.installed:
	$(PYTHON) -m venv .venv-kserve
	.venv-kserve/bin/python -m pip install --quiet 'kserve>=0.14'
	touch $@

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples scripts
	$(BIN)/ruff format --check src tests bench examples scripts

typecheck: $(STAMP)
	$(BIN)/mypy

# Peers live in their own environments: their pins clash with ours. The MLflow one also
# drives the compatibility tests: the unmodified mlflow client against `keel server`.
.venv-mlflow/.installed:
	$(PYTHON) -m venv .venv-mlflow
	.venv-mlflow/bin/python -m pip install --quiet 'mlflow>=3,<4'
	touch $@

.venv-evidently/.installed:
	$(PYTHON) -m venv .venv-evidently
	.venv-evidently/bin/python -m pip install --quiet 'evidently>=0.7,<0.8' 'pandas<3'
	touch $@

.venv-dvc/.installed:
	$(PYTHON) -m venv .venv-dvc
	.venv-dvc/bin/python -m pip install --quiet 'dvc>=3,<4'
	touch $@

# LiteLLM's proxy, the peer of bench/gateway.py: its pins clash with ours.
.venv-litellm/.installed:
	$(PYTHON) -m venv .venv-litellm
	.venv-litellm/bin/python -m pip install --quiet 'litellm[proxy]>=1.100,<2'
	touch $@

# Feast 0.67, the peer of bench/features.py, with its Redis online store: its pins clash with ours.
.venv-feast/.installed:
	$(PYTHON) -m venv .venv-feast
	.venv-feast/bin/python -m pip install --quiet 'feast[redis]==0.67.0'
	touch $@

bench-venvs: .venv-mlflow/.installed .venv-evidently/.installed .venv-dvc/.installed .venv-litellm/.installed

# Each benchmark finds its peer's virtualenv beside the repository and prints ratios.
bench: $(STAMP) bench-venvs
	$(BIN)/python bench/tracking.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/evals.py
	$(BIN)/python bench/guardrails.py
	$(BIN)/python bench/rag.py
	$(BIN)/python bench/batch.py
	$(BIN)/python bench/drift.py
	$(BIN)/python bench/data.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/edge.py
	$(BIN)/python bench/stream.py
	$(BIN)/python bench/jobs.py

# The feature store against Feast: Redis at 127.0.0.1:6379, about 10 minutes. Feast's join at
# full scale needs more than the 14 GB the bench allows it (--max-rss-gb); `--scale 0.5` compares it.
.PHONY: bench-features
bench-features: $(STAMP) .venv-feast/.installed
	$(BIN)/python bench/features.py

# Tracking through `keel server` against `mlflow server`, both on SQLite (a few minutes), then
# the unmodified mlflow client pointed at each of the two servers.
.PHONY: bench-server
bench-server: $(STAMP) .venv-mlflow/.installed
	$(BIN)/python bench/server.py
	$(BIN)/python bench/mlflow_client.py

# The web UI at scale in Chromium: 100,000 runs, a 1,000,000-point chart, 100 runs overlaid.
.PHONY: bench-ui
bench-ui: $(STAMP) browser
	cd bench && ../$(BIN)/python ui.py

# The README's two screenshots of the UI, taken by its browser tests.
.PHONY: screenshots
screenshots: $(STAMP) browser
	KEEL_TEST_ARTIFACTS=.test-artifacts $(BIN)/python -m pytest -q -p no:randomly \
	  tests/server/ui/test_ui_runs.py::test_compare_two_runs_in_the_browser \
	  tests/server/ui/test_ui_monitoring.py::test_heatmap_marks_the_shifted_features_and_not_the_unshifted_before_the_shift
	mkdir -p docs
	cp .test-artifacts/ui/compare.png docs/ui-compare.png
	cp .test-artifacts/ui/monitoring.png docs/ui-monitoring.png

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
