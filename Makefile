# NOME — every target uses the project's own .venv (made by `make install`).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint format bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@echo "make: creating $(VENV) with NOME and its development tools (a minute or two)"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar on -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## create .venv with NOME and its development tools

run: $(STAMP) ## serve on 127.0.0.1:8080 (embedded SQLite + in-process Redis; no servers needed)
	NOME_IMPORT_FILE_URLS=$${NOME_IMPORT_FILE_URLS:-1} $(BIN)/nome serve

lint: $(STAMP) ## ruff (lint + format check), mypy --strict, and the architecture's import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP) ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint ## linters, then every test (needs PostgreSQL and Redis on 127.0.0.1)
	$(BIN)/pytest -q

test-fast: $(STAMP) ## unit and stateful tests (projection properties need Redis)
	$(BIN)/pytest -q tests/unit tests/stateful

bench: $(STAMP) ## benchmarks, each as a ratio against a baseline from the same run
	$(BIN)/python -m bench

clean: ## remove the venv, caches and the embedded database
	rm -rf $(VENV) .nome .pytest_cache .mypy_cache .ruff_cache .hypothesis
