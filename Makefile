# Two set-up commands for a fresh machine: `make demo` and `make test`.
# Both bootstrap .venv with pip; re-running is a no-op unless pyproject.toml changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Offline machine: every entry point (xai-gate, the tests, the benchmarks) applies the one list
# in pipelines/offline.py before any library reads the environment.
export PYTHONUNBUFFERED := 1

.PHONY: demo test lint format bench clean example browser postgres mutation

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.stamp-runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $@ $(VENV)/.stamp-runtime

demo: $(VENV)/.stamp-runtime
	$(BIN)/xai-gate demo

# The browser test drives Debian's Chromium; install it when we may (root), else say so.
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -qq chromium >/dev/null || \
	    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; \
	  else echo "the browser test needs Debian's chromium: sudo apt-get install chromium"; fi; }

# The shared-database test starts its own PostgreSQL from Debian's binaries.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -qq postgresql >/dev/null || \
	    { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }; \
	  else echo "the PostgreSQL test needs Debian's postgresql: sudo apt-get install postgresql"; fi; }

# pytest exits 5 when it collected nothing: that must fail, never pass silently.
test: $(VENV)/.stamp-test browser postgres
	@$(BIN)/python -m pytest --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing the run"; exit 1; fi; \
	exit $$rc

# Speed and memory against anchors measured in the same run (pytorch-grad-cam and Captum
# come with the test extra). Run it on an idle machine; `make bench ARGS=--quick` smoke-tests.
bench: $(VENV)/.stamp-test
	$(BIN)/python -m benchmarks $(ARGS)

# Mutation testing of the verdict's safety modules ([tool.mutmut] in pyproject.toml), then the
# score per module; fails while a mutant survives that tests/mutation/equivalent.toml does not
# explain. About an hour on 2 cores; not part of `make test`.
mutation: $(VENV)/.stamp-test
	$(BIN)/pip install --quiet -e '.[test,dev,mutation]'
	rm -rf mutants
	$(BIN)/mutmut run --max-children $${MUTATION_JOBS:-2} || true
	$(BIN)/python tests/mutation/report.py

lint: $(VENV)/.stamp-test
	$(BIN)/ruff check --no-cache .

format: $(VENV)/.stamp-test
	$(BIN)/ruff check --no-cache --fix .
	$(BIN)/ruff format .

# The committed example store: the demo at reduced size, through a local MLflow server.
example: $(VENV)/.stamp-runtime
	$(BIN)/xai-gate example --dest mlruns_example

clean:
	rm -rf mlflow.db mlruns mlartifacts demo_data .pytest_cache mutants
