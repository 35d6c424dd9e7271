# transformer-pl — every target creates .venv (pinned, torch first) on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= default
TORCH_VERSION := 2.13.0

# Offline and telemetry hygiene: these libraries phone home otherwise.
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
# Local copies of the reference datasets, when they sit beside the checkout.
ifneq ($(wildcard ../shared/data),)
export TPL_DATA_DIR ?= $(abspath ../shared/data)
endif

# A local Prefect server for scheduled runs (`make prefect-server`, then `make deploy`).
PREFECT_SERVER_PORT ?= 4200
LOCAL_PREFECT_API := http://127.0.0.1:$(PREFECT_SERVER_PORT)/api

.PHONY: install run test test-fast ui serve prefect-server deploy bench lint format clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)  ## the whole pipeline on embedded defaults
	$(BIN)/tpl run --profile $(PROFILE)

# Test-only extras (the Hugging Face conversion's parity tests build models with transformers).
TEST_EXTRAS := $(VENV)/.test-extras
$(TEST_EXTRAS): $(STAMP)
	$(BIN)/python -m pip install --quiet -c requirements.lock transformers==5.24.0
	touch $(TEST_EXTRAS)

test: $(TEST_EXTRAS)  ## the whole test suite, end-to-end pipeline runs included (~40 min on 2 cores)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(TEST_EXTRAS)  ## unit and integration tests without the slow ones (~4 min)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

ui: $(STAMP)  ## MLflow UI on the same store the pipeline writes to (one user: one worker, no GenAI job runners)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --workers 1 --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(abspath mlflow.db)} --host 127.0.0.1 --port 5000

serve: $(STAMP)  ## serve the champion model over HTTP (tpl serve: the registered request limits)
	$(BIN)/tpl serve --model transformer-pl-$${DATASET:-imdb} --host 127.0.0.1 --port 5001

prefect-server: $(STAMP)  ## a Prefect server (API + UI) on 127.0.0.1 for scheduled runs
	$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_SERVER_PORT)

deploy: $(STAMP)  ## serve the pipeline on its schedule (params.yaml schedule.cron, or CRON=...)
	PREFECT_API_URL=$${PREFECT_API_URL:-$(LOCAL_PREFECT_API)} $(BIN)/tpl deploy --profile $(PROFILE) $(if $(CRON),--cron "$(CRON)")

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c requirements.lock transformers==5.24.0
	$(BIN)/python bench/model_throughput.py

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
