# lexrerank: `make run` sets everything up and runs the main job; `make test` runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
LEXRERANK := $(BIN)/lexrerank
DATA ?= $(abspath ../shared/data)
COLIEE_CODE := $(DATA)/coliee/civil_code_en-1to724-2.txt
SAMPLE_CORPUS := lexrerank/sample/sample_statutes.jsonl
LEXRERANK_CORPUS ?= $(if $(wildcard $(COLIEE_CODE)),$(COLIEE_CODE),$(SAMPLE_CORPUS))
export HF_HUB_OFFLINE := 1
export LEXRERANK_DATA := $(DATA)

.PHONY: help setup system venv up down status run test test-unit lint clean

help:
	@echo "make run    set up (idempotent), start the stack, index $(notdir $(LEXRERANK_CORPUS))"
	@echo "make test   unit + integration tests against the real services"
	@echo "make up | down | status | lint"

setup: system venv

system:
	@bash deploy/local/install-system-packages.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

up: setup
	$(LEXRERANK) up

down:
	@if [ -x $(LEXRERANK) ]; then $(LEXRERANK) down; fi

status:
	$(LEXRERANK) status

run: up
	$(LEXRERANK) index --corpus "$(LEXRERANK_CORPUS)"
	$(LEXRERANK) up --serve
	@echo
	@echo "OpenSearch, Redis, a rerank worker and the gateway run in the background (make down stops them)."
	@echo "Command line:"
	@echo "  $(LEXRERANK) search \"A minor may rescind a contract without consent\" --reranker default"
	@echo "  $(LEXRERANK) eval --queries $(DATA)/coliee/train/riteval_R04_en.xml --reranker default"
	@echo "The gateway (OpenSearch-compatible; reranks _search with search_pipeline=lexrerank):"
	@echo "  curl -s -XPOST 'http://127.0.0.1:8000/statutes/_search?search_pipeline=lexrerank' -H 'content-type: application/json' -d '{\"size\": 3, \"_source\": [\"caption\"], \"query\": {\"match\": {\"content\": \"A minor may rescind a contract\"}}, \"ext\": {\"rerank\": {\"explain\": true}}}'"
	@echo "  $(BIN)/python -c 'from opensearchpy import OpenSearch; r = OpenSearch(\"http://127.0.0.1:8000\").search(index=\"statutes\", params={\"search_pipeline\": \"lexrerank\"}, body={\"size\": 3, \"query\": {\"match\": {\"content\": \"A minor may rescind a contract\"}}}); print(r[\"ext\"][\"rerank\"], [h[\"_id\"] for h in r[\"hits\"][\"hits\"]])'"

test: up
	$(BIN)/python -m pytest -q

test-unit: venv
	$(BIN)/python -m pytest -q tests/unit

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
