SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHON := $(CURDIR)/$(BIN)/python

.PHONY: help setup gen gen-check lint fmt test dev bench clean

help: ## List the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	[ -x $(BIN)/python ] || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(STAMP) ## Create .venv with everything the platform and its tests need.

gen: setup ## Regenerate gen/ from proto/ (offline, idempotent).
	buf generate 2> >(grep -v '^Writing mypy' >&2)
	mkdir -p gen/descriptors
	buf build --as-file-descriptor-set --exclude-source-info -o gen/descriptors/supportmesh.binpb
	find gen/python/supportmesh -type d -exec touch {}/__init__.py \;

gen-check: gen ## Fail when gen/ differs from what proto/ generates.
	@git add --intent-to-add gen >/dev/null 2>&1 || true
	@git diff --exit-code --stat -- gen || { echo "gen/ is stale: run 'make gen' and commit"; exit 1; }

lint: setup ## buf format/lint/breaking, ruff, mypy (strict outside gen/), import contracts.
	buf format --diff --exit-code
	buf lint
	tools/buf-breaking
	ruff check .
	ruff format --check .
	mypy
	lint-imports

fmt: setup ## Format protos and Python in place.
	buf format -w
	ruff format .
	ruff check --fix .

test: setup ## Run the test suite against real PostgreSQL, Valkey, NATS and Envoy.
	$(BIN)/python -m pytest

dev: setup ## Start the whole platform on the embedded real stack (Ctrl-C stops it).
	$(BIN)/supportmesh dev

bench: setup ## Run the benchmarks (figures and ratios, not pass/fail).
	for bench in bench/[a-z]*.py; do echo "== $$bench"; $(BIN)/python "$$bench"; done

clean: ## Remove the venv and local state.
	rm -rf $(VENV) .supportmesh .pytest_cache .mypy_cache .ruff_cache
