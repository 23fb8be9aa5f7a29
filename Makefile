# Quick start:  make run   (end to end on the local stack)   |   make test   (all tests)
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
DEMO_EVENTS ?= 20000

.PHONY: help setup up down status run test unit lint fmt clean bench bench-jvm java-test chaos fuzz

help:
	@echo "make setup | up | down | status | run | test | bench | chaos | lint | fmt | clean"

setup:  ## install everything (idempotent, cached)
	@bash infra/setup.sh

up: setup  ## start kafka, registry, clickhouse, prometheus on 127.0.0.1, create topics/schema/tables, start the loader and the HTTP API
	@bash infra/stack.sh up
	@$(PY) -m meterflow.cli init
	@bash infra/stack.sh start loader
	@bash infra/stack.sh start api

down:
	@bash infra/stack.sh down

status:
	@bash infra/stack.sh status

run: up  ## demo: produce events, run the JVM job until windows close, wait for the loader, print usage and draft invoices
	@$(PY) -m meterflow.cli produce --count $(DEMO_EVENTS)
	@time $(PY) -m meterflow.cli job --bounded
	@$(PY) -m meterflow.cli load --wait 120
	@$(PY) -m meterflow.cli usage
	@$(PY) -m meterflow.cli close --preview

# Throughput and latency of the metering job vs a plain-copy baseline (several minutes).
BENCH_ARGS ?=
CLOSE_BENCH_ARGS ?=
bench: up
	@$(PY) -m benchmarks.bench_metering $(BENCH_ARGS)
	@$(PY) -m benchmarks.bench_close $(CLOSE_BENCH_ARGS)

bench-jvm: up  ## the JVM path: both workloads, metering only and with rating (medians of 3 each)
	@for w in long-tail heavy-hitter; do for m in --no-rating ""; do \
	  $(PY) -m benchmarks.bench_metering --engine jvm --workload $$w $$m $(BENCH_ARGS) || exit 1; \
	done; done

# The fault harness (tests/chaos): 5 runs, each killing every component once under SDK load,
# the 10-minute ClickHouse outage included (about 2 hours). A reduced run is in `make test`.
CHAOS_ARGS ?=
chaos: up
	@$(PY) -m tests.chaos $(CHAOS_ARGS)

lint: setup
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .

fmt:
	@.venv/bin/ruff format . && .venv/bin/ruff check --fix .

java-test: setup  ## JUnit tests of the JVM functions against tests/vectors (offline)
	@mvn -q -B -o -f java/pom.xml test

# Coverage-guided fuzzing (tests/fuzz, atheris) of the reference decoder and of the definition
# loaders, FUZZ_SECONDS each, then the decoder's corpus and its mutants against the JVM decoder.
# Findings go to build/fuzz/<harness>/ (crash-*, disagreements.jsonl). A 20 s run of each
# harness is in the unit tests.
FUZZ_SECONDS ?= 300
fuzz: setup
	@for h in decoding definitions; do mkdir -p build/fuzz/$$h && \
	  $(PY) tests/fuzz/fuzz_$$h.py -max_total_time=$(FUZZ_SECONDS) -timeout=30 \
	    -artifact_prefix=build/fuzz/$$h/ build/fuzz/$$h/corpus || exit 1; done
	@$(PY) tests/fuzz/differential.py --mutants 100000

unit: setup
	@.venv/bin/pytest -q tests/unit

# Lint, start the stack, run every test (unit + integration), stop the stack even on failure.
# The tests start their own loaders (one of them on the loader's metrics port), so the stack's
# loader from `make up` is stopped first.
# pytest exits 5 when it collected no test: that fails here like any other non-zero exit.
test: setup lint java-test
	@trap 'bash infra/stack.sh down' EXIT; \
	  bash infra/stack.sh up && bash infra/stack.sh stop loader && \
	  $(PY) -m meterflow.cli init && .venv/bin/pytest tests

clean: down
	rm -rf var
