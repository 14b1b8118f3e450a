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
# COLIEE's XML code (coliee-ja/civil.xml) is Japanese: its own index, beside the English one.
JAPANESE := $(filter %.xml,$(LEXRERANK_CORPUS))
LEXRERANK_INDEX ?= $(if $(JAPANESE),statutes-ja,statutes)
export LEXRERANK_INDEX
EXAMPLE_QUERY := $(if $(JAPANESE),未成年者が親の同意なく結んだ契約は取り消せるか,A minor may rescind a contract without consent)
EXAMPLE_QUERIES := $(if $(JAPANESE),$(DATA)/coliee-ja/train/riteval_R04_jp.xml,$(DATA)/coliee/train/riteval_R04_en.xml)
export HF_HUB_OFFLINE := 1
export LEXRERANK_DATA := $(DATA)

.PHONY: help setup system venv up down status run test test-unit lint typecheck clean

help:
	@echo "make run    set up (idempotent), start the stack, index $(notdir $(LEXRERANK_CORPUS)) as $(LEXRERANK_INDEX)"
	@echo "make test   unit + integration tests against the real services"
	@echo "make typecheck   mypy on the packages ([tool.mypy] in pyproject.toml)"
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
	@echo "  $(LEXRERANK) search \"$(EXAMPLE_QUERY)\" --index $(LEXRERANK_INDEX) --reranker default"
	@echo "  $(LEXRERANK) eval --queries $(EXAMPLE_QUERIES) --index $(LEXRERANK_INDEX) --reranker default"
	@echo "The gateway (OpenSearch-compatible; reranks _search with search_pipeline=lexrerank):"
	@echo "  curl -s -XPOST 'http://127.0.0.1:8000/$(LEXRERANK_INDEX)/_search?search_pipeline=lexrerank' -H 'content-type: application/json' -d '{\"size\": 3, \"_source\": [\"caption\"], \"query\": {\"match\": {\"content\": \"$(EXAMPLE_QUERY)\"}}, \"ext\": {\"rerank\": {\"explain\": true}}}'"
	@echo "Inside OpenSearch (plugin lexrerank-search-pipeline; pipeline lexrerank defined by up --serve):"
	@echo "  curl -s -XPOST 'http://127.0.0.1:9200/$(LEXRERANK_INDEX)/_search?search_pipeline=lexrerank' -H 'content-type: application/json' -d '{\"size\": 3, \"_source\": [\"caption\"], \"query\": {\"match\": {\"content\": \"$(EXAMPLE_QUERY)\"}}}'"
	@echo "  $(BIN)/python -c 'from opensearchpy import OpenSearch; r = OpenSearch(\"http://127.0.0.1:8000\").search(index=\"$(LEXRERANK_INDEX)\", params={\"search_pipeline\": \"lexrerank\"}, body={\"size\": 3, \"query\": {\"match\": {\"content\": \"$(EXAMPLE_QUERY)\"}}}); print(r[\"ext\"][\"rerank\"], [h[\"_id\"] for h in r[\"hits\"][\"hits\"]])'"

test: up
	$(BIN)/python -m pytest -q

test-unit: venv
	$(BIN)/python -m pytest -q tests/unit

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
