# Two commands do all set-up on a fresh machine with python3 and make:
#   make demo   - create .venv, install, run the demo
#   make test   - create .venv, install, lint, type-check, test with coverage, build the docs
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := trio_resilience tests examples benchmarks

.PHONY: test demo lint typecheck pytest docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,demo,plot,docs]'
	touch $(STAMP)

test: $(STAMP) lint typecheck pytest docs

lint: $(STAMP)
	$(BIN)/ruff check $(PACKAGES)
	$(BIN)/ruff format --check $(PACKAGES)

typecheck: $(STAMP)
	$(BIN)/mypy --strict trio_resilience tests/typing

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

clean:
	rm -rf $(VENV) .coverage .pytest_cache .mypy_cache .ruff_cache
