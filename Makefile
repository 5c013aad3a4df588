# img2spec: every user-facing command. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
# MLflow tracking defaults to sqlite:///mlflow.db in the repo (see src/img2spec/tracking.py)
MLFLOW_PORT ?= 5000
OPTUNA_PORT ?= 8080
UI_WAIT_S ?= 60
PREDICT_INPUT ?= data/raw/images
PREDICT_OUT ?= predictions
PREDICT_MODEL ?= models/img2spec
PYTEST_ARGS ?=
UV_PIN := uv==0.13.8
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help setup repro readme test test-slow tune tune-apply tune-dashboard ui mlflow-server predict bench figures push pull clean

HELP_VARS := MLFLOW_PORT OPTUNA_PORT PREDICT_INPUT PREDICT_OUT PREDICT_MODEL PYTHON TEST_WORKERS
help:  ## list the targets, with the current values of the variables they mention
	@on=; off=; if [ -t 1 ]; then on=$$(printf '\033[36m'); off=$$(printf '\033[0m'); fi; \
	$(foreach v,$(HELP_VARS),$(v)='$($(v))') awk -v on="$$on" -v off="$$off" \
	  'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{ \
	    text = $$2; out = ""; \
	    while (match(text, /\$$\([A-Za-z_]+\)/)) { name = substr(text, RSTART + 2, RLENGTH - 3); \
	      val = (name in ENVIRON) ? ENVIRON[name] : substr(text, RSTART, RLENGTH); \
	      out = out substr(text, 1, RSTART - 1) val; text = substr(text, RSTART + RLENGTH) } \
	    printf "  %s%-15s%s %s\n", on, $$1, off, out text }' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# uv installs the same pinned tree ~4x faster than pip (44 s against ~3.5 min here); pip if uv cannot be had
	@if $(BIN)/python -m pip install --quiet $(UV_PIN) 2>/dev/null; then \
	  echo "$(BIN)/uv pip install -r requirements.lock"; \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock && \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .; \
	else \
	  echo "uv unavailable: installing with pip"; \
	  $(BIN)/python -m pip install --quiet --upgrade pip && \
	  $(BIN)/python -m pip install --quiet -r requirements.lock && \
	  $(BIN)/python -m pip install --quiet --no-deps -e .; \
	fi
	@# bagpipes writes its IGM grid into site-packages on first import: once here, not raced by test workers
	$(BIN)/python -c "import bagpipes" >/dev/null
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the pinned dependencies (idempotent)

repro: setup  ## run the whole DVC pipeline (default: offline mock survey), then refresh the README's table
	$(BIN)/dvc repro
	$(BIN)/img2spec readme

readme: setup  ## re-render the README's evaluation table from metrics/evaluate.json
	$(BIN)/img2spec readme

test: setup  ## run the fast test suite (offline, $(TEST_WORKERS) pytest-xdist workers, one test file per worker; CI=true also installs PostgreSQL)
	@if [ "$${CI:-}" = "true" ]; then bash scripts/ci_postgres.sh; fi
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-slow: setup  ## run only the slow end-to-end tests (minutes each; installs Debian's chromium for the MLflow UI check)
	@if [ "$${CI:-}" = "true" ]; then bash scripts/ci_postgres.sh; fi
	bash scripts/install_browser.sh
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

tune: setup  ## Optuna study of the VAE and CNN (params: tune)
	$(BIN)/img2spec tune

tune-apply: setup  ## write the best tuned params into params.yaml
	$(BIN)/img2spec tune --apply

tune-dashboard: setup  ## optuna-dashboard on the study storage
	$(BIN)/optuna-dashboard --host 127.0.0.1 --port $(OPTUNA_PORT) $${OPTUNA_STORAGE:-sqlite:///optuna.db}

ui: setup  ## MLflow UI on http://127.0.0.1:$(MLFLOW_PORT); prints the comparison view's link once the server answers
	@link="http://127.0.0.1:$(MLFLOW_PORT)$$($(BIN)/python -c 'from img2spec import tracking; print(tracking.ui_path(tracking.experiment(tracking.PIPELINE_EXPERIMENT, ".", tracking.PIPELINE_DESCRIPTION)))' 2>/dev/null)"; \
	$(BIN)/mlflow ui --host 127.0.0.1 --port $(MLFLOW_PORT) \
	  --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} --default-artifact-root ./mlartifacts & pid=$$!; \
	trap 'kill $$pid 2>/dev/null' INT TERM; \
	for i in $$(seq 1 $(UI_WAIT_S)); do \
	  if $(BIN)/python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "http://127.0.0.1:$(MLFLOW_PORT)/" 2>/dev/null; then \
	    echo "compare pipeline runs: $$link"; break; fi; \
	  kill -0 $$pid 2>/dev/null || { echo "error: the MLflow UI exited before answering" >&2; exit 1; }; \
	  [ $$i -lt $(UI_WAIT_S) ] || echo "warning: no answer on port $(MLFLOW_PORT) after $(UI_WAIT_S) s; still waiting for: $$link" >&2; \
	  sleep 1; done; \
	wait $$pid

mlflow-server: setup  ## team MLflow server: PostgreSQL backend, proxied artifacts, 127.0.0.1 (env: MLFLOW_BACKEND_STORE_URI or PG*, MLFLOW_HOST, MLFLOW_PORT)
	MLFLOW_PORT=$${MLFLOW_PORT:-$(MLFLOW_PORT)} bash scripts/mlflow_server.sh

predict: setup  ## predict spectra: make predict PREDICT_INPUT=dir PREDICT_OUT=dir
	$(BIN)/img2spec predict $(PREDICT_INPUT) --model $(PREDICT_MODEL) --out $(PREDICT_OUT) --plot

figures: setup  ## figure of a few mock galaxies; mock realism report vs SDSS (reports/mock_realism.json, docs/mock.md)
	$(BIN)/img2spec mock-figure --out docs/mock_galaxies.png
	$(BIN)/img2spec mock-realism --out reports/mock_realism.json --figures reports/realism --readme docs/mock.md

bench: setup  ## benchmarks: speed, memory, scaling, science (writes reports/bench.json)
	$(BIN)/python bench/run_all.py

push: setup  ## dvc push data and models to the default remote
	$(BIN)/dvc push

pull: setup  ## dvc pull data and models from the default remote
	$(BIN)/dvc pull

clean:  ## remove pipeline outputs and caches (keeps .venv, mlflow.db, optuna.db)
	rm -rf data models reports/figures .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
