# The two commands a newcomer needs: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: help setup test lint demo chaos bench bench-upload bench-operator bench-3m bench-10m bench-scaling lock dev-up dev-down image

help:
	@echo "make demo     set up and run a demo import end to end"
	@echo "make test     set up and run the whole test suite"
	@echo "make chaos    a longer chaos campaign: imports under killed components (tests/operator/chaos.py)"
	@echo "make bench    run the benchmarks (bench/)"
	@echo "make dev-up   start the local cluster (a real node), MinIO, operator, API (.dev/env)"
	@echo "make dev-down stop everything dev-up started, leaving the machine as it was"
	@echo "make image    build the container images locally (base, pause, product; buildah)"

setup:
	@scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup
	@scripts/run-tests.sh

demo: setup
	@scripts/demo.sh

# A longer chaos campaign than the one in `make test` (tests/operator/chaos.py): imports
# into four catalogs while the operator, loaders, MinIO and the API server are killed at
# random; prints the seed, the faults injected and whether every invariant held.
chaos: setup
	CHAOS_IMPORTS=$${CHAOS_IMPORTS:-40} CHAOS_FAULTS=$${CHAOS_FAULTS:-30} \
	CHAOS_CATALOGS=$${CHAOS_CATALOGS:-4} \
	CHAOS_KINDS=$${CHAOS_KINDS:-operator,loader,minio,apiserver,cancel} scripts/run-tests.sh -s \
	  tests/operator/test_chaos.py -o timeout=3600

bench: setup
	$(PY) -m bench
	$(PY) -m bench.upload
	$(PY) -m bench.apply_to_job

# The operator: time from applying a ProductImport to its Job's creation, then long queues
# (20 imports with 1,000 and 10,000 behind them), 200 catalogs under a running limit, and
# fairness between two namespaces (bench/operator_scale.py; about 30 minutes).
bench-operator: setup
	$(PY) -m bench.apply_to_job
	$(PY) -m bench.operator_scale

# The upload API alone: a 1 GiB upload through the API vs. a direct put into MinIO.
bench-upload: setup
	$(PY) -m bench.upload

dev-up: setup
	@$(PY) -m devenv up

dev-down:
	@if [[ -x $(PY) ]]; then $(PY) -m devenv down; fi

# The images the dev node runs, built here with buildah (no registry is reachable): the
# base from Debian packages (cached in ~/.cache/productimport/images), the pause image,
# and the product image from the Dockerfile, tagged as the chart names it.
image: setup
	$(PY) -m devenv.images build

# The optional large run: 10M rows (~5.5 GB per file) under DuckDB's memory limit (1GB).
bench-3m: setup
	BENCH_ROWS=3000000 BENCH_MEMORY_LIMIT=1GB $(PY) -m bench

bench-10m: setup
	BENCH_ROWS=10000000 $(PY) -m bench

# A 10M-row merge in one process against the same merge partitioned over 1, 2 and 4
# merge workers (docs/scaling.md; about 40 minutes, a 10M-row catalog built first).
bench-scaling: setup
	$(PY) -m bench.scaling

# Regenerate the locks (runtime: the image; dev: the tools, same pins) after changing dependencies in pyproject.toml (needs uv: pip install uv).
lock:
	uv pip compile pyproject.toml -o requirements.lock --python-version 3.11
	uv pip compile pyproject.toml --extra dev -c requirements.lock -o requirements-dev.lock --python-version 3.11
