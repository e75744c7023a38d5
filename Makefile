# Two commands do all set-up on a fresh machine with python3 and make:
#   make demo   - create .venv, install, run the demo
#   make test   - create .venv, install, lint, type-check, test with coverage, build the docs
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := trio_resilience tests examples benchmarks

.PHONY: test demo lint typecheck pytest docs bench clean services mutation

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,demo,plot,docs,redis,httpx,prometheus,otel]'
	touch $(STAMP)

test: $(STAMP) services lint typecheck pytest docs

lint: $(STAMP)
	$(BIN)/ruff check $(PACKAGES)
	$(BIN)/ruff format --check $(PACKAGES)

typecheck: $(STAMP)
	$(BIN)/mypy --strict trio_resilience tests/typing

# The Redis tests start their own redis-server, and a 3-master Redis Cluster, on free
# loopback ports; install the Debian package where it is missing (as root, with
# apt-get), else those tests skip.
services:
	@{ command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null; \
	  else echo "redis-server missing: the Redis tests will be skipped"; fi; }

pytest: $(STAMP)
	$(BIN)/coverage run -m pytest -q
	$(BIN)/coverage report --fail-under=95

docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -b html -q docs docs/_build/html

demo: $(STAMP)
	$(BIN)/trio-resilience demo

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(BIN)/python benchmarks/run_all.py

# Mutation testing of the breaker, retry, budget and shedding modules (slow: not in CI).
mutation: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check mutmut
	$(BIN)/mutmut run --max-children 2; $(BIN)/mutmut results | tail -n 5

clean:
	rm -rf $(VENV) .coverage .pytest_cache .mypy_cache .ruff_cache
